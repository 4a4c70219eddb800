"""Layer programs: fingerprint, SymPy form, recognition of known layers, reports."""

import dataclasses
import random
import statistics
import time

import pytest

from evoprog.programs.known import KNOWN_LAYERS
from evoprog.programs.layer_space import LayerSpace as L
from evoprog.programs.mutation import mutate
from evoprog.programs.report import describe
from evoprog.programs.sampling import random_program
from evoprog.programs.space import Space, get_space

BN_RELU = L.seed_text
S0_DIV = "a = v1 * x\ng = sigmoid(a)\nn = x * g\ns = group_std(x)\ny = n / s"
S0_RECIPROCAL = ("s = group_std(x)\nr = 1.0 / s\ndead = batch_mean(x)\na = x * v1\n"
                 "g = sigmoid(a)\nt = g * r\nunused = t * v0\ny = x * t")
S0_SCALED = S0_DIV + "\ny = y * 2.5\ny = y + 0.1"


def p(text: str):
    return L.parse(text)


def test_layer_space_is_registered_with_its_hooks():
    assert get_space("layer") is L
    assert isinstance(L, Space)
    program = p(S0_DIV)
    assert dataclasses.replace(L, max_length=8).fingerprint(program) == L.fingerprint(program)


def test_dead_code_shares_the_hash_and_the_fingerprint():
    seed = p(BN_RELU)
    padded = p("t = batch_var(x)\nq = t * v0\n" + BN_RELU + "z = exp(y)")
    assert L.hash(seed) == L.hash(padded)
    assert L.fingerprint(seed) == L.fingerprint(padded)


@pytest.mark.parametrize("a, b", [
    (S0_DIV, S0_RECIPROCAL),
    (BN_RELU, "mu = batch_mean(x)\nnmu = mu * -1.0\nd = nmu + x\ns = batch_std(x)\n"
              "n = d / s\ny = max(0.0, n)"),
    # A variance plus the default eps under sqrt is the std aggregate.
    (S0_DIV, "a = v1 * x\ng = sigmoid(a)\nn = x * g\ns = group_var(x)\ns = s + 0.00001\n"
             "s = sqrt(s)\ny = n / s"),
])
def test_different_texts_of_one_layer_share_a_fingerprint(a, b):
    assert L.hash(p(a)) != L.hash(p(b))
    assert L.fingerprint(p(a)) == L.fingerprint(p(b))


@pytest.mark.parametrize("a, b", [
    (S0_DIV, S0_DIV.replace("v1", "v0")),  # v0 and v1 have different probe values
    (S0_DIV, S0_DIV.replace("group_std", "instance_std")),  # groups of several channels
    (S0_DIV, S0_DIV.replace("group_std", "layer_std")),
    (S0_DIV, S0_DIV.replace("s = group_std(x)", "s = group_var(x)\ns = sqrt(s)")),  # eps
    (BN_RELU, BN_RELU.replace("batch", "instance")),
    ("y = x + v0", "y = x * v1"),
])
def test_different_layers_have_different_fingerprints(a, b):
    assert L.fingerprint(p(a)) != L.fingerprint(p(b))


def test_known_layers_have_distinct_fingerprints_and_finite_outputs():
    probes = [L.probe(k.program()) for k in KNOWN_LAYERS.values()]
    assert len({fp for fp, _ in probes}) == len(KNOWN_LAYERS)
    assert all(finite for _, finite in probes)
    fp, finite = L.probe(p("t = x * 0.0\nt = log(t)\ny = x + t"))
    assert not finite and len(fp) == 16


def test_layer_fingerprint_is_cheap(one_thread):
    program = p(S0_RECIPROCAL + "\ny = max(y, 0.0)\nb = batch_std(y)\ny = y / b")
    times = []
    for _ in range(40):
        start = time.perf_counter()
        L.fingerprint(program)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.005


@pytest.mark.parametrize("name", sorted(KNOWN_LAYERS))
def test_each_known_layer_is_recognized_as_itself(name):
    r = L.recognize(KNOWN_LAYERS[name].program())
    assert r is not None and r.name == name
    assert r.constants == {"scale": 1.0, "shift": 0.0}
    assert r.to_json() == {"family": name, "constants": {"scale": 1.0, "shift": 0.0}}


def test_evonorm_s0_is_recognized_in_other_forms_with_its_constants():
    for text in (S0_DIV, S0_RECIPROCAL):
        r = L.recognize(p(text))
        assert r.name == "evonorm_s0"
        assert r.constants == {"scale": 1.0, "shift": 0.0}
        assert str(r) == "EvoNorm-S0 (scale=1, shift=0)"
    r = L.recognize(p(S0_SCALED))
    assert r.name == "evonorm_s0"
    assert r.constants == pytest.approx({"scale": 2.5, "shift": 0.1})
    assert str(r) == "EvoNorm-S0 (scale=2.5, shift=0.1)"


@pytest.mark.parametrize("text", [
    S0_DIV.replace("v1", "v0"),
    S0_DIV.replace("group_std", "instance_std"),
    S0_DIV.replace("s = group_std(x)", "s = group_var(x)\ns = sqrt(s)"),  # no eps
    BN_RELU.replace("batch", "instance"),
    BN_RELU.replace("y = max(n, 0.0)", "l = n * 0.01\ny = max(n, l)"),  # leaky ReLU
    "y = x * v1",
])
def test_other_layers_are_not_recognized(text):
    assert L.recognize(p(text)) is None


def test_bn_relu_seed_simplifies_to_the_textbook_expression():
    sym = L.simplify(L.seed())
    assert sym.text() == "y = Max(0, (x - batch_mean(x))/batch_std(x))"
    assert set(sym.symbols) == {"x", "v0", "v1"}
    assert "Abs" not in str(L.simplify(p("v = batch_var(x)\nr = sqrt(v)\ny = x / r")).outputs)


def test_describe_known_layers():
    for name, known in KNOWN_LAYERS.items():
        d = describe(L, known.program())
        assert d.simplified is not None and d.simplified.startswith("y = ")
        assert d.recognized.name == name
        assert d.to_json()["recognized"]["family"] == name
    d = describe(L, p(S0_RECIPROCAL))
    assert "dead" not in d.pruned and "group_std(x)" in d.simplified


def test_describe_random_and_mutated_layer_programs_within_a_time_bound():
    rng = random.Random(5)
    programs = [random_program(L, rng, rng.randint(1, 10)) for _ in range(100)]
    program = L.seed()
    for _ in range(100):
        program, _ = mutate(program, L, rng)
        programs.append(program)
    for program in programs:
        start = time.perf_counter()
        d = describe(L, program)
        assert time.perf_counter() - start < 6.0, program
        assert d.pruned
        assert d.simplified is None or d.simplified.startswith("y = ")

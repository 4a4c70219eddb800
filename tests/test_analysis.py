"""Functional fingerprints: equal functions share one, different functions do not."""

import statistics
import time

import torch

from evoprog.programs.fingerprint import make_probe, quantized_bytes, updates
from evoprog.programs.known import KNOWN
from evoprog.programs.ops import Layout
from evoprog.programs.program import parse_program
from evoprog.programs.space import OptimizerSpace as S

EXPLICIT_LION = """\
lr = lr * 0.0001
c = m * 0.9
t = g * 0.1
c = c + t
update = sign(c)
update = update * lr
m2 = m * 0.99
t2 = g * 0.01
m = m2 + t2
"""


def test_textually_different_lion_forms_share_a_fingerprint():
    a, b = KNOWN["lion"].program(), parse_program(EXPLICIT_LION)
    assert S.hash(a) != S.hash(b)
    assert S.fingerprint(a) == S.fingerprint(b)


def test_momentum_kept_in_v_instead_of_m_is_the_same_function():
    swapped = parse_program(EXPLICIT_LION.replace("m", "v").replace("v2", "q"))
    assert S.fingerprint(swapped) == S.fingerprint(parse_program(EXPLICIT_LION))


def test_float_noise_does_not_split_and_small_changes_do():
    base = parse_program("t = g * 0.3\nupdate = t * 0.7")
    same = parse_program("t = g * 0.21\nupdate = t * 1.0")  # 0.3*0.7 != 0.21 in floats
    other = parse_program("t = g * 0.21\nupdate = t * 1.001")
    assert S.fingerprint(base) == S.fingerprint(same)
    assert S.fingerprint(base) != S.fingerprint(other)


def test_state_and_schedule_and_layout_matter():
    seed = S.seed()
    lion = KNOWN["lion"].program()
    assert S.fingerprint(seed) != S.fingerprint(lion)
    # Same first step, different momentum: differs from step 2 on.
    assert S.fingerprint(KNOWN["signum"].program(beta=0.9)) != \
        S.fingerprint(KNOWN["signum"].program(beta=0.8))
    # lr read from the schedule vs a constant 1.0.
    assert S.fingerprint(parse_program("update = g * lr")) != \
        S.fingerprint(parse_program("update = g * 1.0"))
    # Per-tensor norm vs global norm.
    assert S.fingerprint(parse_program("n = norm(g)\nupdate = g / n")) != \
        S.fingerprint(parse_program("n = global_norm(g)\nupdate = g / n"))


# Pairs of different update rules that saturate (a division by a state that stays zero,
# then clip): a small probe with one magnitude per row saw the same values for both.
SATURATED_PAIRS = [
    ("v = invert(-0.6799)\nm = interp(g, m, 0.9)\nsqrt_v = sqrt(v)\nupdate = m / sqrt_v\n"
     "wd = max(w, 0.01)\nupdate = update + wd\nlr = lr * 0.001\nupdate = clip(update, lr)",
     "m = interp(g, m, 0.9)\nsqrt_v = sqrt(v)\nupdate = m - sqrt_v\nwd = max(w, 0.01)\n"
     "update = update + wd\nlr = lr * 0.001\nupdate = clip(update, lr)"),
    ("m = interp(g, g, 0.9)\nsqrt_v = sqrt(v)\nupdate = m / sqrt_v\nlr = lr * 0.000611\n"
     "update = clip(update, lr)",
     "m = interp(g, m, 0.6662)\nsqrt_v = sqrt(v)\nupdate = m / sqrt_v\nlr = lr * 0.000611\n"
     "update = clip(update, lr)\nv = eps()\nm = dot(lr, update)"),
]


def test_saturating_programs_are_told_apart():
    small = make_probe(layout=Layout(((3, 4), (5,))), scales=(1e-3, 1.0, 1e2))
    for a, b in SATURATED_PAIRS:
        pa, pb = parse_program(a), parse_program(b)
        assert S.fingerprint(pa) != S.fingerprint(pb)
        seen = [updates(p, S.state, small) for p in (pa, pb)]
        assert quantized_bytes(seen[0]) == quantized_bytes(seen[1])  # why the spread exists


def test_quantized_values_keep_about_six_digits_and_one_form_for_specials():
    a = torch.tensor([1.0, -0.0, 1e-13, float("nan"), float("inf"), 0.3 * 0.7],
                     dtype=torch.float64)
    b = torch.tensor([0.99999999999, 0.0, -1e-14, -float("nan"), float("inf"), 0.21],
                     dtype=torch.float64)
    assert quantized_bytes(a) == quantized_bytes(b)
    assert quantized_bytes(a)[1] is False
    assert quantized_bytes(torch.tensor([1.0, 2.0]))[1] is True
    for near in (1.00001, 1.0 - 1e-5, -1.0, float("-inf")):
        assert quantized_bytes(torch.tensor([near]))[0] != quantized_bytes(torch.tensor([1.0]))[0]


def test_non_finite_outputs_become_tokens():
    fp, finite = S.probe(parse_program("t = g * 0.0\nu = g / t\nupdate = exp(u)"))
    assert not finite and len(fp) == 16
    assert S.probe(S.seed())[1]


def test_analysis_is_cheap_per_child(one_thread):
    program = parse_program(S.seed_text + "t0 = cosh(update)\nt1 = t0 * m\nm = interp(m, t1, 0.5)")
    times = []
    for _ in range(60):
        start = time.perf_counter()
        assert S.invalid_reason(program) is None
        S.hash(program)
        S.fingerprint(program)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.005

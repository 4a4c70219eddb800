"""The layer family: ops, space, known layers, runtime module, export, Pareto selection."""

from __future__ import annotations

import importlib.util
import random
import sys

import pytest
import torch

from evoprog.programs.known import KNOWN_LAYERS, get_known
from evoprog.programs.layer_export import export_known_layer, export_layer
from evoprog.programs.layer_module import ProgramLayer
from evoprog.programs.layer_ops import aggregate, group_count
from evoprog.programs.layer_space import LayerSpace
from evoprog.programs.mutation import mutate
from evoprog.programs.program import ProgramError, format_program, parse_program
from evoprog.programs.sampling import random_program
from evoprog.programs.space import get_space
from evoprog.search.pareto import dominates, pareto_front, pareto_tournament

EPS = 1e-5


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def load_class(source: str, name: str, tmp_path):
    path = tmp_path / f"{name.lower()}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"exported_{name.lower()}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(sys.modules) >= {"torch"}
    return getattr(module, name)


def group_var(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    g = x.reshape(n, groups, c // groups, h, w)
    mean = g.mean(dim=(2, 3, 4), keepdim=True)
    var = ((g - mean) ** 2).mean(dim=(2, 3, 4), keepdim=True)
    return var.expand_as(g).reshape(n, c, h, w)


def formula_s0(x, v1, groups):
    return x * torch.sigmoid(v1 * x) / torch.sqrt(group_var(x, groups) + EPS)


def formula_s1(x, groups):
    return x * torch.sigmoid(x) / torch.sqrt(group_var(x, groups) + EPS)


def formula_b0(x, v1, batch_var):
    mean_hw = x.mean(dim=(2, 3), keepdim=True)
    var_hw = ((x - mean_hw) ** 2).mean(dim=(2, 3), keepdim=True)
    return x / torch.maximum(torch.sqrt(batch_var + EPS), v1 * x + torch.sqrt(var_hw + EPS))


def biased_batch_var(x):
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    return ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)


def randomize(module: torch.nn.Module, seed: int = 0) -> dict:
    """Random gamma, beta, v0, v1 (so the test sees them used); returns their values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name != "beta" else 0.0))
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_group_count_falls_back_to_largest_divisor():
    assert group_count(64) == 32
    assert group_count(40) == 20
    assert group_count(24) == 24
    assert group_count(7) == 7
    assert group_count(66) == 22


@pytest.mark.parametrize("channels", [64, 40])
def test_exported_s0_and_s1_match_the_formula(tmp_path, channels):
    groups = group_count(channels)
    x = torch.randn(3, channels, 5, 4) * 2 + 0.5
    s0 = load_class(export_known_layer("evonorm_s0"), "EvoNormS0", tmp_path)(channels)
    p = randomize(s0)
    assert s0.groups == groups and p["v1"].shape == (1, channels, 1, 1)
    for mode in (True, False):
        s0.train(mode)
        want = formula_s0(x, p["v1"], groups) * p["gamma"] + p["beta"]
        assert (s0(x) - want).abs().max().item() < 1e-5
    s1 = load_class(export_known_layer("evonorm_s1"), "EvoNormS1", tmp_path)(channels)
    p = randomize(s1, seed=1)
    assert not hasattr(s1, "v1")
    want = formula_s1(x, groups) * p["gamma"] + p["beta"]
    assert (s1(x) - want).abs().max().item() < 1e-5


def test_exported_b0_matches_the_formula_in_train_and_eval(tmp_path):
    cls = load_class(export_known_layer("evonorm_b0"), "EvoNormB0", tmp_path)
    b0 = cls(40, eps=EPS, momentum=0.1)
    p = randomize(b0)
    x1, x2, x3 = (torch.randn(4, 40, 6, 6) * s + s for s in (1.0, 2.0, 3.0))
    running = torch.ones(1, 40, 1, 1)
    for x in (x1, x2):
        out = b0(x)
        want = formula_b0(x, p["v1"], biased_batch_var(x)) * p["gamma"] + p["beta"]
        assert (out - want).abs().max().item() < 1e-5
        running = 0.9 * running + 0.1 * biased_batch_var(x)
    assert b0.running_var.shape == (1, 40, 1, 1)
    assert (b0.running_var - running).abs().max().item() < 1e-6
    b0.eval()
    want = formula_b0(x3, p["v1"], running) * p["gamma"] + p["beta"]
    assert (b0(x3) - want).abs().max().item() < 1e-5
    assert (b0.running_var - running).abs().max().item() < 1e-6  # eval leaves it alone


@pytest.mark.parametrize("name", sorted(KNOWN_LAYERS))
def test_runtime_module_matches_exported_module(tmp_path, name):
    known = KNOWN_LAYERS[name]
    cls = load_class(export_known_layer(name), known.class_name, tmp_path)
    exported, runtime = cls(40), ProgramLayer(known.program(), 40)
    randomize(exported)
    runtime.load_state_dict(exported.state_dict())  # strict: the same keys
    assert set(exported.state_dict()) == set(runtime.state_dict())
    for x in (torch.randn(4, 40, 5, 5) * 2 + 1, torch.randn(6, 40) - 1):
        for mode in (True, False, True):
            exported.train(mode)
            runtime.train(mode)
            a, b = exported(x), runtime(x)
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (name, mode)
    for key, value in exported.state_dict().items():
        assert torch.allclose(value, runtime.state_dict()[key]), key


def test_random_programs_export_and_match_the_runtime(tmp_path):
    rng = random.Random(3)
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    for k in range(12):
        program = random_program(LayerSpace, rng, rng.randint(2, 8))
        cls = load_class(export_layer(program, f"Random{k}"), f"Random{k}", tmp_path)
        exported = cls(8).double()
        runtime = ProgramLayer(program, 8).double()
        randomize(runtime)
        exported.load_state_dict(runtime.state_dict())  # strict: the same keys
        for mode in (True, False):
            exported.train(mode)
            runtime.train(mode)
            a, b = exported(x), runtime(x)
            assert a.shape == b.shape == x.shape
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True), program


@pytest.mark.parametrize("text", ["y = max(x, 0.5)", "y = max(0.5, x)"])
def test_runtime_and_export_share_the_gradient_at_ties(tmp_path, text):
    # Entries equal to the constant: torch.maximum would give them half the gradient,
    # clamp (which the exported layer writes) all of it, as the runtime module does.
    program = parse_program(text)
    cls = load_class(export_layer(program, "Tie"), "Tie", tmp_path)
    x = torch.tensor([[0.5, 0.25], [0.75, 0.5]]).reshape(1, 4, 1, 1)
    grads = []
    for layer in (cls(4), ProgramLayer(program, 4)):
        leaf = x.clone().requires_grad_(True)
        layer(leaf).sum().backward()
        grads.append(leaf.grad.flatten().tolist())
    assert grads[0] == grads[1]
    assert grads[1][0] == grads[1][3] == 1.0  # the ties


@pytest.mark.parametrize("text", ["y = max(x, 0.0)", "y = max(0.0, x)"])
def test_max_with_zero_is_relu_in_the_runtime_and_the_export(tmp_path, text):
    """max(x, 0) runs as torch.relu: the same values, and at x = 0 the gradient 0 of
    nn.ReLU, in the runtime module and the exported layer alike."""
    program = parse_program(text)
    source = export_layer(program, "Rectifier")
    assert "torch.relu(x)" in source
    x = torch.tensor([[0.0, -0.5], [0.75, 0.0]]).reshape(1, 4, 1, 1)
    for layer in (load_class(source, "Rectifier", tmp_path)(4), ProgramLayer(program, 4)):
        leaf = x.clone().requires_grad_(True)
        out = layer(leaf)
        out.sum().backward()
        assert torch.equal(out, torch.relu(x))
        assert leaf.grad.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


def test_runtime_batch_norm_seed_matches_torch_batch_norm():
    layer = ProgramLayer(LayerSpace.seed(), 6)
    bn = torch.nn.BatchNorm2d(6, eps=EPS)
    x = torch.randn(5, 6, 4, 4) * 3 + 2
    assert (layer(x) - torch.relu(bn(x))).abs().max().item() < 1e-5
    assert torch.allclose(layer.running_mean.flatten(), bn.running_mean, atol=1e-6)


def test_runtime_module_follows_its_dtype_after_first_use():
    """Constants are made on the input's device and dtype, so a layer used in float32
    and then converted computes in float64, as a fresh float64 layer does."""
    program = LayerSpace.parse("t = v1 * x\ns = sigmoid(t)\nn = x * s\n"
                               "d = group_std(x)\ny = n / d\ny = y + 0.1\n")
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    used = ProgramLayer(program, 8)
    used(x.float())
    converted, fresh = used.double()(x), ProgramLayer(program, 8).double()(x)
    assert converted.dtype == torch.float64
    assert torch.equal(converted, fresh)


def test_aggregates_reduce_over_their_axes():
    x = torch.randn(4, 6, 3, 3)
    assert torch.allclose(aggregate(x, x, "layer_mean"), x.mean((1, 2, 3), keepdim=True))
    assert torch.allclose(aggregate(x, x, "instance_var"),
                          x.var((2, 3), unbiased=False, keepdim=True))
    assert torch.allclose(aggregate(x, x, "batch_std"),
                          torch.sqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + EPS))
    g = aggregate(x, x, "group_mean", groups=3)
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(
        g[:, 0].flatten(), x[:, :2].mean((1, 2, 3)))


def test_layer_space_is_registered_and_seed_is_bn_relu():
    space = get_space("layer")
    assert space is LayerSpace
    assert space.hash(space.seed()) == space.hash(get_known("bn_relu").program())


@pytest.mark.parametrize("name", sorted(KNOWN_LAYERS))
def test_known_layers_are_valid_and_round_trip(name):
    known = KNOWN_LAYERS[name]
    assert known.family == "layer"
    program = known.program()
    assert LayerSpace.invalid_reason(program) is None
    assert parse_program(format_program(program)) == program
    assert parse_program(LayerSpace.listing(program)) == program


def test_known_layers_have_distinct_hashes():
    hashes = {LayerSpace.hash(k.program()) for k in KNOWN_LAYERS.values()}
    assert len(hashes) == len(KNOWN_LAYERS)


def test_mutation_of_layer_programs_stays_in_the_space():
    rng = random.Random(0)
    program = LayerSpace.seed()
    seen = set()
    for _ in range(60):
        child, mutation = mutate(program, LayerSpace, rng)
        assert LayerSpace.invalid_reason(child) is None
        assert parse_program(format_program(child)) == child
        assert all(ins.op in LayerSpace.ops for ins in child)
        seen.add(mutation.kind)
        program = child
    assert len(seen) >= 4
    x = torch.randn(2, 8, 3, 3)
    assert ProgramLayer(program, 8)(x).shape == x.shape  # still runs, one output per input


def test_random_start_programs_are_valid():
    rng = random.Random(1)
    for length in (1, 3, 6):
        program = random_program(LayerSpace, rng, length)
        assert len(program) == length
        assert LayerSpace.invalid_reason(program) is None


@pytest.mark.parametrize("text, message", [
    ("y = batch_mean(x, v1)", "batch_mean takes 1 argument"),
    ("y = x ** 2", r"powers are written as calls: square\(x\)"),
    ("y = v0 * 2.0", "'y' does not depend on 'x'"),
    ("z = x * 2.0", "never assigns 'y'"),
    ("x = x * 2.0\ny = x * 1.0", "cannot be assigned"),
    ("y = sign(x)", "not in the layer space"),
    ("y = q * x", "reads 'q' before it is defined"),
])
def test_malformed_layer_programs_give_clear_errors(text, message):
    with pytest.raises(ProgramError, match=message):
        LayerSpace.parse(text)


def test_runtime_and_export_refuse_invalid_programs():
    with pytest.raises(ProgramError, match="does not depend on 'x'"):
        ProgramLayer(parse_program("y = v1 + 1.0"), 4)
    with pytest.raises(ProgramError, match="not a valid layer program"):
        export_layer(parse_program("y = sign(x)"))


def test_pareto_front_and_tournament():
    scores = [{"a": 0.9, "b": 0.1}, {"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.4},
              {"a": 0.1, "b": 0.9}, {"a": 0.9, "b": 0.05}, {"a": float("nan"), "b": 1.0}]
    assert pareto_front(scores) == [0, 1, 3, 5]
    assert pareto_front([{"a": 1.0}, {"a": 1.0}]) == [0, 1]
    rng = random.Random(0)
    picks = {pareto_tournament(scores[:5], 5, rng) for _ in range(200)}
    assert picks == {0, 1, 3}

    class Watched(random.Random):
        """A generator that remembers the samples it draws (the tournament's entrants)."""

        def sample(self, population, k, **kwargs):
            self.drawn = super().sample(population, k, **kwargs)
            return self.drawn

    watched, dominated_picks = Watched(1), 0
    for _ in range(300):  # a sample's pick is on the front of that sample
        index = pareto_tournament(scores, 2, watched)
        assert index in watched.drawn
        (other,) = set(watched.drawn) - {index}
        assert not dominates(scores[other], scores[index], ["a", "b"]), watched.drawn
        dominated_picks += index in (2, 4)  # dominated in the whole set, not in the pair
    assert dominated_picks > 0


def test_state_dicts_hold_only_what_the_pruned_program_reads(tmp_path):
    # The first batch_std is dead: neither module keeps a buffer for it, so the live
    # statistic is ``running_var`` in both and a trained runtime layer loads exactly.
    program = parse_program("s = batch_std(x)\na = square(x)\ns = batch_std(a)\ny = x / s")
    runtime = ProgramLayer(program, 6)
    assert set(runtime.state_dict()) == {"gamma", "beta", "running_var"}
    for _ in range(5):
        runtime(torch.randn(8, 6, 3, 3) * 3 + 1)
    exported = load_class(export_layer(program, "Dead"), "Dead", tmp_path)(6)
    exported.load_state_dict(runtime.state_dict())
    x = torch.randn(4, 6, 3, 3)
    runtime.eval()
    exported.eval()
    assert torch.allclose(exported(x), runtime(x), rtol=1e-6)


def test_exported_division_keeps_the_epsilon_where_the_divisor_can_underflow(tmp_path):
    program = parse_program("a = sigmoid(x)\ny = x / a")
    exported = load_class(export_layer(program, "Div"), "Div", tmp_path)(3)
    x = torch.tensor([[-20.0, -90.0, -110.0]])
    want = ProgramLayer(program, 3)(x)
    assert torch.isfinite(want).all()
    assert torch.allclose(exported(x), want)


def test_exported_division_by_a_product_of_stds_keeps_the_epsilon(tmp_path):
    # std**4 of a constant channel is eps**2 = 1e-10: without the + 1e-8 the exported
    # layer's output is about 100 times the runtime's.
    program = parse_program("s = instance_std(x)\ns2 = s * s\ns4 = s2 * s2\ny = x / s4")
    exported = load_class(export_layer(program, "Prod"), "Prod", tmp_path)(2)
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    x[:, 1] = 0.5
    want = ProgramLayer(program, 2).double()(x)
    assert torch.allclose(exported.double()(x), want, rtol=1e-9)


@pytest.mark.parametrize("text", [
    "pself = abs(x)\nself = square(x)\ny = pself + self",
    "p_x = abs(x)\n_x = square(x)\ny = p_x + _x",
    "_var = abs(x)\nv = batch_var(x)\ns = sqrt(v)\nz = x / s\ny = z + _var",
])
def test_renamed_variables_stay_distinct_from_the_programs_own(tmp_path, text):
    # self and _x cannot be python locals of forward; their new names must not be taken.
    program = parse_program(text)
    exported = load_class(export_layer(program, "Renamed"), "Renamed", tmp_path)(3)
    x = torch.randn(4, 3, 2, 2)
    assert torch.allclose(exported(x), ProgramLayer(program, 3)(x))


def test_export_refuses_a_class_name_the_file_needs():
    for name in ("nn", "torch", "class", "_Layer", "max", "len"):
        with pytest.raises(ProgramError, match="cannot name a class"):
            export_layer(LayerSpace.seed(), name)


def test_the_running_variance_is_the_biased_one_as_its_docstring_says(tmp_path):
    """An exported batch-statistics layer keeps the biased variance in its running
    average (as the search did): B / (B - 1) times smaller than nn.BatchNorm2d's."""
    source = export_known_layer("bn_relu")
    assert "B / (B - 1) times larger" in source
    assert "running variance" not in export_known_layer("evonorm_s0").split("import")[0]
    layer = load_class(source, "BNReLU", tmp_path)(3, momentum=1.0)
    torch_bn = torch.nn.BatchNorm2d(3, momentum=1.0)
    x = torch.randn(4, 3, 2, 2)  # B = 16 values per channel
    layer(x), torch_bn(x)
    (running_var,) = [b for name, b in layer.named_buffers() if name.startswith("running_var")]
    assert torch.allclose(running_var.reshape(-1) * 16 / 15, torch_bn.running_var, rtol=1e-5)

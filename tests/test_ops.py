"""The op registry: shapes, safe semantics, torch/SymPy agreement, layout-aware ops."""

from __future__ import annotations

import math
import zlib

import pytest
import sympy
import torch

from evoprog.programs.interpreter import CompiledProgram
from evoprog.programs.layer_ops import LAYER_OPS
from evoprog.programs.ops import (
    ALIASES,
    EPS,
    INFIX,
    LION_K_OPS,
    LION_SPACE_OPS,
    OPS,
    Layout,
    newton_schulz,
    resolve_op_name,
)
from evoprog.programs.space import OptimizerSpace

# The registry also holds the layer family's ops (NCHW aggregates, sigmoid); the
# flat-tensor checks below are about the optimizer ops.
OPTIMIZER_OPS = sorted(set(OPS) - set(LAYER_OPS))

LAYOUT = Layout(((3, 4), (4,), (2, 2)))
N = LAYOUT.numel
BATCH = 2

# Reductions and combinations whose SymPy meaning involves an opaque Function
# (norm, dot, ...) cannot be evaluated numerically from SymPy.
OPAQUE = {"norm", "global_norm", "dot", "cosine_sim", "clip_by_global_norm",
          "l2_normalize", "orthogonalize"}


def _call(name: str, *args: torch.Tensor, layout: Layout = LAYOUT) -> torch.Tensor:
    op = OPS[name]
    if op.needs_layout:
        return op.torch_fn(*args, layout=layout)
    return op.torch_fn(*args)


def _random_inputs(arity: int, shape, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for _ in range(arity)]


# ---------------------------------------------------------------- registry


def test_layout_sizes():
    assert LAYOUT.sizes == (12, 4, 4)
    assert LAYOUT.numel == 20
    assert Layout.of([torch.zeros(3, 4), torch.zeros(5)]).shapes == ((3, 4), (5,))


def test_lion_space_has_45_distinct_registered_ops():
    assert len(LION_SPACE_OPS) == 45
    assert len(set(LION_SPACE_OPS)) == 45
    missing = [name for name in LION_SPACE_OPS if name not in OPS]
    assert missing == []


def test_lion_k_ops_registered_and_disjoint():
    assert set(LION_K_OPS) == {"soft_sign", "clip", "l2_normalize", "orthogonalize"}
    assert all(name in OPS for name in LION_K_OPS)
    assert not set(LION_K_OPS) & set(LION_SPACE_OPS)
    assert set(OPTIMIZER_OPS) == set(LION_SPACE_OPS) | set(LION_K_OPS)


def test_registry_names_match_keys_and_infix_aliases_resolve():
    for key, op in OPS.items():
        assert op.name == key
        assert op.arity in (0, 1, 2, 3)
    for op_name in INFIX:
        assert OPS[op_name].arity == 2
    for alias, target in ALIASES.items():
        assert resolve_op_name(alias) == target
    assert resolve_op_name("interpolate") == "interp"
    assert resolve_op_name("sqrt") == "sqrt"
    assert resolve_op_name("no_such_op") is None


def test_optimizer_space_uses_every_registered_op():
    assert set(OptimizerSpace.ops) == set(OPTIMIZER_OPS)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", OPTIMIZER_OPS)
def test_op_runs_on_full_flat_tensors(name):
    op = OPS[name]
    args = _random_inputs(op.arity, (BATCH, N), seed=1)
    out = _call(name, *args)
    assert isinstance(out, torch.Tensor)
    assert out.is_floating_point()
    assert torch.broadcast_shapes(out.shape, (BATCH, N)) == (BATCH, N)
    if op.arity and name != "global_norm":
        assert out.shape == (BATCH, N)


@pytest.mark.parametrize("name", OPTIMIZER_OPS)
def test_op_runs_on_scalar_shaped_inputs(name):
    op = OPS[name]
    args = _random_inputs(op.arity, (BATCH, 1), seed=2)
    out = _call(name, *args)
    assert out.is_floating_point()
    assert torch.broadcast_shapes(out.shape, (BATCH, N)) == (BATCH, N)
    # A scalar-shaped value stands for the same value at every position: the result
    # must equal the op applied to the inputs spread over the full flat size.
    spread = _call(name, *(a.expand(BATCH, N) for a in args))
    assert torch.allclose(torch.broadcast_to(out, (BATCH, N)),
                          torch.broadcast_to(spread, (BATCH, N)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(n for n in OPTIMIZER_OPS if OPS[n].arity >= 2))
def test_op_broadcasts_mixed_full_and_scalar_arguments(name):
    op = OPS[name]
    full = _random_inputs(1, (BATCH, N), seed=3)[0]
    scalars = _random_inputs(op.arity - 1, (BATCH, 1), seed=4)
    out = _call(name, full, *scalars)
    assert out.shape == (BATCH, N)


# ---------------------------------------------------------------- safe semantics

# Ops whose results can legitimately overflow or blow up on randn inputs.
UNBOUNDED = {"power", "tan"}


@pytest.mark.parametrize("name", sorted(set(OPTIMIZER_OPS) - UNBOUNDED))
def test_op_finite_on_typical_inputs(name):
    op = OPS[name]
    args = _random_inputs(op.arity, (BATCH, N), seed=5)
    out = _call(name, *args)
    assert torch.isfinite(out).all(), name


def test_division_and_reciprocal_by_zero_are_finite():
    x = torch.tensor([[1.0, -2.0, 0.0]])
    zero = torch.zeros(1, 3)
    div = OPS["div"].torch_fn(x, zero)
    assert torch.isfinite(div).all()
    assert div[0, 0].item() == pytest.approx(1.0 / EPS, rel=1e-6)
    recip = OPS["reciprocal"].torch_fn(zero)
    assert torch.isfinite(recip).all()
    assert recip[0, 0].item() == pytest.approx(1.0 / EPS, rel=1e-6)


def test_sqrt_and_logs_of_negative_numbers_use_the_magnitude():
    x = torch.tensor([[-4.0, -100.0, -0.5]], dtype=torch.float64)
    assert torch.allclose(OPS["sqrt"].torch_fn(x), torch.sqrt(-x))
    assert torch.allclose(OPS["log"].torch_fn(x), torch.log(-x))
    assert torch.allclose(OPS["log2"].torch_fn(x), torch.log2(-x))
    assert torch.allclose(OPS["log10"].torch_fn(x), torch.log10(-x))
    assert torch.allclose(OPS["log1p"].torch_fn(x), torch.log1p(-x))
    assert torch.allclose(OPS["cbrt"].torch_fn(x), -torch.abs(x) ** (1 / 3))


def test_sqrt_is_correctly_rounded_leaves_its_input_and_keeps_its_gradient():
    """sqrt on the CPU takes numpy's root outside autograd: correctly rounded (the float64
    root rounded to float32) for zeros, infinities, NaN and subnormals too, without
    writing into its argument; with autograd it is torch's, gradient and all."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5000, generator=gen) * torch.exp(torch.randn(4, 5000, generator=gen) * 20)
    x[:, ::7] = 0.0
    x[0, :4] = torch.tensor([math.inf, -math.inf, math.nan, 1e-41])
    before = x.clone()
    root = OPS["sqrt"].torch_fn(x)
    assert torch.equal(x.nan_to_num(), before.nan_to_num())
    exact = torch.sqrt(x.double().abs()).float()
    assert torch.equal(root.isnan(), exact.isnan())
    assert torch.equal(root.nan_to_num(), exact.nan_to_num())
    assert root[0, 3].item() > 0  # a subnormal's root is not flushed to zero

    leaf = torch.tensor([4.0, -9.0], requires_grad=True)
    OPS["sqrt"].torch_fn(leaf).sum().backward()
    assert torch.allclose(leaf.grad, torch.tensor([0.25, -1 / 6]))


def test_log_of_zero_is_minus_inf_only():
    zero = torch.zeros(1, 1)
    for name in ("log", "log2", "log10"):
        value = OPS[name].torch_fn(zero)
        assert not torch.isnan(value).any()
        assert value.item() == -math.inf
    assert OPS["log1p"].torch_fn(zero).item() == 0.0
    assert OPS["sqrt"].torch_fn(zero).item() == 0.0


def test_inverse_trig_clamps_into_the_domain():
    two = torch.tensor([[2.0, -2.0]])
    assert torch.allclose(OPS["arcsin"].torch_fn(two), torch.tensor([[math.pi / 2, -math.pi / 2]]))
    assert torch.allclose(OPS["arccos"].torch_fn(two), torch.tensor([[0.0, math.pi]]))
    assert torch.isfinite(OPS["arctanh"].torch_fn(two)).all()
    assert OPS["arccosh"].torch_fn(torch.tensor([[0.5]])).item() == 0.0


def test_power_uses_magnitude_of_base():
    x = torch.tensor([[-4.0, 9.0]])
    y = torch.tensor([[0.5, 0.5]])
    assert torch.allclose(OPS["power"].torch_fn(x, y), torch.tensor([[2.0, 3.0]]))


def test_clip_soft_sign_and_interp_meanings():
    x = torch.tensor([[-3.0, -0.2, 0.0, 0.4, 5.0]])
    assert torch.equal(OPS["clip"].torch_fn(x, torch.tensor(-1.0)),
                       torch.tensor([[-1.0, -0.2, 0.0, 0.4, 1.0]]))
    soft = OPS["soft_sign"].torch_fn(x, torch.tensor(1e-4))
    assert torch.allclose(soft, torch.sign(x), atol=1e-3)
    a, b = torch.tensor([[2.0]]), torch.tensor([[10.0]])
    assert OPS["interp"].torch_fn(a, b, torch.tensor(0.25)).item() == pytest.approx(4.0)


@pytest.mark.parametrize(("name", "reference"), [("max", torch.maximum), ("min", torch.minimum)])
def test_max_and_min_give_torch_values_whatever_side_the_scalar_is_on(name, reference):
    # Against a scalar they run as clamps (a cheaper backward); the values, NaN and the
    # dtype stay those of torch.maximum and torch.minimum.
    x = torch.tensor([[-2.0, 0.5, math.nan, 3.0]], dtype=torch.float64)
    for scalar in (torch.tensor(0.5), torch.tensor(math.nan), torch.tensor(-1.0)):
        for a, b in ((x, scalar), (scalar, x), (x, x.flip(-1)), (scalar, scalar)):
            got, want = OPS[name].torch_fn(a, b), reference(a, b)
            assert got.dtype == want.dtype and torch.equal(got.isnan(), want.isnan())
            assert torch.equal(got.nan_to_num(), want.nan_to_num())


@pytest.mark.parametrize("weight", [torch.tensor(0.9), torch.rand(3, 4, dtype=torch.float64),
                                    torch.rand(3, 1)])
@pytest.mark.parametrize("end_dtype", [torch.float32, torch.float64])
def test_interp_is_one_fused_lerp_of_any_dtypes(weight, end_dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen)
    y = torch.randn(3, 4, generator=gen, dtype=end_dtype)
    out = OPS["interp"].torch_fn(x, y, weight)
    expected = (1 - weight.double()) * x.double() + weight.double() * y.double()
    assert out.dtype == torch.promote_types(x.dtype, end_dtype)
    assert torch.allclose(out.double(), expected, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- torch vs SymPy

# Points are drawn inside each op's (unclamped) domain so the safe torch semantics
# and the exact SymPy meaning coincide.
DOMAIN = {
    "arcsin": (-0.9, 0.9), "arccos": (-0.9, 0.9), "arctanh": (-0.9, 0.9),
    "arccosh": (1.1, 3.0), "tan": (-1.2, 1.2),
}


def _sample(rng: torch.Generator, low: float, high: float) -> float:
    value = low + (high - low) * torch.rand((), generator=rng, dtype=torch.float64).item()
    return value


def _point(name: str, arity: int, rng: torch.Generator) -> list[float]:
    low, high = DOMAIN.get(name, (-2.0, 2.0))
    values = []
    for _ in range(arity):
        v = _sample(rng, low, high)
        # Stay away from zero so 1/(x+eps) and log|x| match 1/x and log|x| closely.
        if abs(v) < 0.1:
            v = 0.1 if v >= 0 else -0.1
        values.append(v)
    return values


ELEMENTWISE = sorted(set(OPTIMIZER_OPS) - OPAQUE)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_torch_and_sympy_agree(name):
    op = OPS[name]
    symbols = sympy.symbols(f"x0:{op.arity}", real=True) if op.arity else ()
    expr = sympy.sympify(op.sympy_fn(*symbols))
    rng = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    for _ in range(5):
        point = _point(name, op.arity, rng)
        expected = float(expr.subs(dict(zip(symbols, point, strict=True))))
        args = [torch.tensor([[p]], dtype=torch.float64) for p in point]
        got = op.torch_fn(*args).to(torch.float64).reshape(-1)[0].item()
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), (name, point)


def test_opaque_sympy_meanings_keep_their_arguments():
    symbols = sympy.symbols("x0:3")
    for name in sorted(OPAQUE):
        op = OPS[name]
        expr = op.sympy_fn(*symbols[:op.arity])
        assert expr.free_symbols == set(symbols[:op.arity]), name


# ---------------------------------------------------------------- layout-aware ops


def _segments(x: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(x, list(LAYOUT.sizes), dim=-1))


def test_norm_is_per_segment():
    x = _random_inputs(1, (BATCH, N), seed=6)[0]
    out = _call("norm", x)
    for seg, norm_seg in zip(_segments(x), _segments(out), strict=True):
        expected = torch.linalg.vector_norm(seg, dim=-1, keepdim=True)
        assert torch.allclose(norm_seg, expected.expand_as(norm_seg), rtol=1e-5)
    # The segments really are different (guards against a global norm in disguise).
    firsts = [s[:, 0] for s in _segments(out)]
    assert not torch.allclose(firsts[0], firsts[1])


def test_global_norm_is_over_everything():
    x = _random_inputs(1, (BATCH, N), seed=7)[0]
    out = _call("global_norm", x)
    expected = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    assert torch.allclose(torch.broadcast_to(out, (BATCH, N)),
                          expected.expand(BATCH, N), rtol=1e-5)
    # Rows are separate seeds: each gets its own norm.
    assert out.reshape(BATCH, -1)[0, 0] != out.reshape(BATCH, -1)[1, 0]


def test_dot_cosine_sim_and_l2_normalize_are_per_segment():
    x, y = _random_inputs(2, (BATCH, N), seed=8)
    dot = _call("dot", x, y)
    cos = _call("cosine_sim", x, y)
    unit = _call("l2_normalize", x)
    for xs, ys, ds, cs, us in zip(_segments(x), _segments(y), _segments(dot),
                                  _segments(cos), _segments(unit), strict=True):
        d = (xs * ys).sum(-1, keepdim=True)
        c = d / (xs.norm(dim=-1, keepdim=True) * ys.norm(dim=-1, keepdim=True))
        assert torch.allclose(ds, d.expand_as(ds), rtol=1e-5, atol=1e-6)
        assert torch.allclose(cs, c.expand_as(cs), rtol=1e-4, atol=1e-6)
        assert torch.allclose(us.norm(dim=-1), torch.ones(BATCH), rtol=1e-5)


def test_clip_by_global_norm():
    x = _random_inputs(1, (BATCH, N), seed=9)[0]
    total = torch.linalg.vector_norm(x, dim=-1)
    clipped = _call("clip_by_global_norm", x, torch.tensor(1.0))
    assert torch.allclose(torch.linalg.vector_norm(clipped, dim=-1), torch.ones(BATCH),
                          rtol=1e-5)
    big = torch.tensor(10.0 * total.max().item())
    assert torch.allclose(_call("clip_by_global_norm", x, big), x)


def test_segment_sum_with_single_tensor_layout():
    layout = Layout(((5,),))
    x = torch.arange(10, dtype=torch.float32).reshape(2, 5)
    assert torch.equal(layout.segment_sum(x), x.sum(-1, keepdim=True))


def test_orthogonalize_matrix_and_vector_segments():
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(BATCH, N, generator=gen)
    out = _call("orthogonalize", x)
    assert out.shape == (BATCH, N)
    assert torch.isfinite(out).all()
    segs = LAYOUT.segments(out)
    for b in range(BATCH):
        for seg, shape in zip(segs, LAYOUT.shapes, strict=True):
            if len(shape) >= 2:
                s = torch.linalg.svdvals(seg[b])
                assert s.min() > 0.5 and s.max() < 1.5, (shape, s)
            else:
                assert seg[b].norm().item() == pytest.approx(1.0, rel=1e-5)


def test_newton_schulz_orthogonalizes_tall_and_wide_matrices():
    gen = torch.Generator().manual_seed(11)
    for shape in ((3, 7), (7, 3), (4, 4)):
        matrix = torch.randn(*shape, generator=gen)
        out = newton_schulz(matrix)
        assert out.shape == shape
        s = torch.linalg.svdvals(out)
        assert s.min() > 0.5 and s.max() < 1.5, (shape, s)
        # Same singular vectors as the input: the polar factor, roughly.
        u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        assert torch.allclose(out, u @ vh, atol=0.35)


# ---------------------------------------------------------------- compiled programs


def _adamw_paper_step(w, g, m, v, lr):
    m = 0.1 * g + 0.9 * m
    v = 0.001 * g * g + 0.999 * v
    update = (m / (torch.sqrt(v) + EPS) + 0.01 * w) * (lr * 0.001)
    return update, m, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_seed_matches_adamw_paper_formula(dtype):
    # float32 rounds the constants (1 - 0.999 is 1.00005e-3 there), hence the tolerance.
    rtol = 2e-4 if dtype == torch.float32 else 1e-10
    gen = torch.Generator().manual_seed(12)
    compiled = CompiledProgram(OptimizerSpace.seed(), LAYOUT, dtype=dtype)
    w = torch.randn(BATCH, N, generator=gen, dtype=dtype)
    m = torch.zeros(BATCH, N, dtype=dtype)
    v = torch.zeros(BATCH, N, dtype=dtype)
    ref_w, ref_m, ref_v = w.clone(), m.clone(), v.clone()
    for step in (1, 2, 3):
        g = torch.randn(BATCH, N, generator=gen, dtype=dtype)
        lr = torch.tensor([[1.0], [0.5]], dtype=dtype)
        env = {"w": w, "g": g, "m": m, "v": v, "lr": lr,
               "step": torch.full((BATCH, 1), float(step), dtype=dtype)}
        out = compiled(env)
        update, m, v = out["update"], out["m"], out["v"]
        ref_update, ref_m, ref_v = _adamw_paper_step(ref_w, g, ref_m, ref_v, lr)
        assert update.dtype == dtype
        assert torch.allclose(update, ref_update, rtol=rtol, atol=1e-12)
        assert torch.allclose(m, ref_m, rtol=rtol, atol=1e-12)
        assert torch.allclose(v, ref_v, rtol=rtol, atol=1e-12)
        # The caller's environment is not modified in place.
        assert env["m"] is not m
        w = w - update
        ref_w = ref_w - ref_update
    # After the first step the update is not just sign-like: state mattered.
    assert not torch.allclose(update.abs(), update.abs().mean())


def test_compiled_program_runs_constant_and_layout_ops():
    from evoprog.programs.program import parse_program

    program = parse_program("a = pi()\nb = norm(g)\nupdate = a * b\nupdate = update * g")
    gen = torch.Generator().manual_seed(13)
    g = torch.randn(BATCH, N, generator=gen)
    out = CompiledProgram(program, LAYOUT)({"g": g})
    expected = math.pi * _call("norm", g) * g
    assert torch.allclose(out["update"], expected, rtol=1e-5)

"""The op registry: every function a program may call, with torch and SymPy meanings.

Programs run on *flat* tensors: the last dimension holds all parameters (or all
features) end to end, leading dimensions are batch (several seeds of one run). A
``Layout`` says where each tensor's segment lies, so per-tensor reductions such as
``norm`` act on each parameter separately while ``global_norm`` acts on all of them.

Semantics are safe so that random programs rarely crash: division and reciprocal add
1e-8 to the denominator, sqrt and the logarithms take |x|, inverse trigonometric
functions clamp their argument into the domain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import sympy
import torch

EPS = 1e-8


@dataclass(frozen=True)
class Layout:
    """Shapes of the tensors laid end to end along the last dimension."""

    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, tensors) -> Layout:
        return cls(tuple(tuple(t.shape) for t in tensors))

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @cached_property
    def numel(self) -> int:
        return sum(self.sizes)

    @cached_property
    def _ids_by_device(self) -> dict[torch.device, torch.Tensor]:
        return {}

    def _segment_ids(self, device: torch.device) -> torch.Tensor:
        """Each element's segment index, made once per device: per-tensor reductions need
        it at every call, in every training step and every fingerprint probe."""
        ids = self._ids_by_device.get(device)
        if ids is None:
            ids = torch.repeat_interleave(torch.arange(len(self.sizes)),
                                          torch.tensor(self.sizes)).to(device)
            self._ids_by_device[device] = ids
        return ids

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """Broadcast a scalar-shaped (..., 1) value to the full flat size."""
        return x.expand(*x.shape[:-1], self.numel) if x.shape[-1:] != (self.numel,) else x

    def segment_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Per-segment sums, broadcast back over each segment."""
        x = self.full(x)
        if len(self.sizes) == 1:
            return x.sum(-1, keepdim=True)
        ids = self._segment_ids(x.device)
        sums = torch.zeros(*x.shape[:-1], len(self.sizes), dtype=x.dtype, device=x.device)
        sums = sums.index_add(-1, ids, x)
        return sums.index_select(-1, ids)

    def segments(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Views of each segment with its own shape (batch dimensions kept)."""
        x = self.full(x)
        parts = torch.split(x, list(self.sizes), dim=-1)
        return [p.reshape((*x.shape[:-1], *s)) for p, s in zip(parts, self.shapes, strict=True)]


@dataclass(frozen=True)
class Op:
    name: str
    arity: int
    torch_fn: Callable
    sympy_fn: Callable
    needs_layout: bool = False
    commutative: bool = False
    doc: str = ""


def _norm(x, layout: Layout):
    return torch.sqrt(layout.segment_sum(x * x))


def _global_norm(x, layout: Layout):
    return torch.sqrt((layout.full(x) ** 2).sum(-1, keepdim=True))


def _dot(x, y, layout: Layout):
    return layout.segment_sum(x * y)


def _cosine_sim(x, y, layout: Layout):
    return _dot(x, y, layout) / (_norm(x, layout) * _norm(y, layout) + EPS)


def _clip_by_global_norm(x, c, layout: Layout):
    scale = torch.clamp(torch.abs(c) / (_global_norm(x, layout) + EPS), max=1.0)
    return x * scale


def _l2_normalize(x, layout: Layout):
    return x / (_norm(x, layout) + EPS)


def newton_schulz(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalize the last two dimensions (quintic Newton-Schulz)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    transposed = matrix.shape[-2] > matrix.shape[-1]
    x = matrix.transpose(-2, -1) if transposed else matrix
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.transpose(-2, -1)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.transpose(-2, -1) if transposed else x


def _orthogonalize(x, layout: Layout):
    x = layout.full(x)
    batch = x.shape[:-1]
    parts = []
    for seg, shape in zip(layout.segments(x), layout.shapes, strict=True):
        if len(shape) >= 2:
            # Columns named, not -1: a (0, n) parameter has no rows to infer them from.
            matrix = seg.reshape(*batch, shape[0], math.prod(shape[1:]))
            parts.append(newton_schulz(matrix).reshape(*batch, -1))
        else:
            flat = seg.reshape(*batch, -1)
            parts.append(flat / (flat.norm(dim=-1, keepdim=True) + EPS))
    return torch.cat(parts, dim=-1)


def _const(value: float):
    def fn():
        return torch.tensor(value, dtype=torch.float64)  # callers cast to their dtype
    return fn


def _safe_div(x, y):
    return x / (y + EPS)


def _against_scalar(clamp, elementwise):
    """``elementwise`` (torch.maximum or minimum), run as ``clamp`` when one side is a
    scalar (a constant such as ReLU's 0), as the exported layers write it: the same
    values, and a backward of two passes where maximum's takes five (it splits the
    gradient at ties; clamp gives it to the tensor)."""
    def fn(x, y):
        if y.dim() == 0:
            return clamp(x, y)
        return clamp(y, x) if x.dim() == 0 else elementwise(x, y)
    return fn


_maximum = _against_scalar(torch.clamp_min, torch.maximum)
_minimum = _against_scalar(torch.clamp_max, torch.minimum)

# Equal forms of a symmetric op with one constant argument (on either side), which the
# interpreter runs instead: max(x, 0) is ReLU, whose backward is one fused pass where
# clamp's takes two (a layer evaluation of BN-ReLU is 11% faster); its gradient at
# x = 0 is 0, as torch.relu's. The exported layers write the same.
WITH_CONSTANT: dict[tuple[str, float], Callable] = {("max", 0.0): torch.relu}


def _interp(x, y, a):
    """(1-a)*x + a*y in one fused pass (``torch.lerp``), which needs x and y of one dtype."""
    if x.dtype == y.dtype:
        return torch.lerp(x, y, a if a.dtype == x.dtype or a.dim() == 0 else a.to(x.dtype))
    return (1 - a) * x + a * y


_NUMPY_ROOTS = (torch.float32, torch.float64)  # the dtypes numpy takes the root of


def _sqrt_abs(x):
    """sqrt(|x|). On the CPU outside autograd numpy takes the root, in place: torch's CPU
    kernel takes a slow path for every vector of floats holding an exact zero, and
    gradients are full of them (a fifth of the digits MLP's: pixels blank in a whole
    minibatch, units the ReLU switched off), which made it four times slower on an
    AdamW second moment (benchmarks/step_parts.py). numpy's root is the processor's own
    instruction, correctly rounded."""
    a = torch.abs(x)
    if a.device.type != "cpu" or a.requires_grad or a.dtype not in _NUMPY_ROOTS:
        return torch.sqrt(a)
    values = a.numpy()
    np.sqrt(values, out=values)
    return a


S = sympy
_SNorm = sympy.Function("norm")
_SGlobalNorm = sympy.Function("global_norm")
_SDot = sympy.Function("dot")
_SOrth = sympy.Function("orthogonalize")


def _unary(name, fn, sfn, doc=""):
    return Op(name, 1, fn, sfn, doc=doc)


_OP_LIST: list[Op] = [
    # constants
    Op("pi", 0, _const(math.pi), lambda: S.pi),
    Op("e", 0, _const(math.e), lambda: S.E),
    Op("eps", 0, _const(EPS), lambda: S.Float(EPS)),
    # unary
    _unary("abs", torch.abs, S.Abs),
    _unary("cos", torch.cos, S.cos),
    _unary("sin", torch.sin, S.sin),
    _unary("tan", torch.tan, S.tan),
    _unary("arcsin", lambda x: torch.asin(torch.clamp(x, -1.0, 1.0)), S.asin),
    _unary("arccos", lambda x: torch.acos(torch.clamp(x, -1.0, 1.0)), S.acos),
    _unary("arctan", torch.atan, S.atan),
    _unary("sinh", torch.sinh, S.sinh),
    _unary("cosh", torch.cosh, S.cosh),
    _unary("tanh", torch.tanh, S.tanh),
    _unary("arcsinh", torch.asinh, S.asinh),
    _unary("arccosh", lambda x: torch.acosh(torch.clamp(x, min=1.0)), S.acosh),
    _unary("arctanh", lambda x: torch.atanh(torch.clamp(x, -1 + 1e-6, 1 - 1e-6)), S.atanh),
    _unary("exp", torch.exp, S.exp),
    _unary("exp2", torch.exp2, lambda x: 2**x),
    _unary("exp10", lambda x: torch.pow(10.0, x), lambda x: 10**x),
    _unary("expm1", torch.expm1, lambda x: S.exp(x) - 1),
    _unary("log", lambda x: torch.log(torch.abs(x)), lambda x: S.log(S.Abs(x))),
    _unary("log10", lambda x: torch.log10(torch.abs(x)), lambda x: S.log(S.Abs(x), 10)),
    _unary("log2", lambda x: torch.log2(torch.abs(x)), lambda x: S.log(S.Abs(x), 2)),
    _unary("log1p", lambda x: torch.log1p(torch.abs(x)), lambda x: S.log(1 + S.Abs(x))),
    _unary("square", torch.square, lambda x: x**2),
    _unary("sqrt", _sqrt_abs, lambda x: S.sqrt(S.Abs(x))),
    _unary("cube", lambda x: x * x * x, lambda x: x**3),
    _unary("cbrt", lambda x: torch.sign(x) * torch.abs(x) ** (1 / 3),
           lambda x: S.sign(x) * S.Abs(x) ** S.Rational(1, 3)),
    _unary("sign", torch.sign, S.sign),
    _unary("reciprocal", lambda x: 1.0 / (x + EPS), lambda x: 1 / x),
    Op("norm", 1, _norm, _SNorm, needs_layout=True, doc="L2 norm of each tensor"),
    _unary("invert", lambda x: 1.0 - x, lambda x: 1 - x, doc="1 - x"),
    _unary("negative", torch.neg, lambda x: -x),
    # reductions and combinations
    Op("global_norm", 1, _global_norm, _SGlobalNorm, needs_layout=True,
       doc="L2 norm over all tensors"),
    Op("interp", 3, _interp,
       lambda x, y, a: (1 - a) * x + a * y, doc="(1-a)*x + a*y"),
    Op("dot", 2, _dot, _SDot, needs_layout=True, commutative=True,
       doc="inner product of each tensor"),
    Op("cosine_sim", 2, _cosine_sim,
       lambda x, y: _SDot(x, y) / (_SNorm(x) * _SNorm(y)), needs_layout=True,
       commutative=True),
    Op("clip_by_global_norm", 2, _clip_by_global_norm,
       lambda x, c: x * S.Min(1, S.Abs(c) / _SGlobalNorm(x)), needs_layout=True),
    Op("power", 2, lambda x, y: torch.pow(torch.abs(x), y), lambda x, y: S.Abs(x) ** y,
       doc="|x|**y"),
    Op("add", 2, torch.add, lambda x, y: x + y, commutative=True),
    Op("sub", 2, torch.sub, lambda x, y: x - y),
    Op("mul", 2, torch.mul, lambda x, y: x * y, commutative=True),
    Op("div", 2, _safe_div, lambda x, y: x / y, doc="x / (y + 1e-8)"),
    Op("max", 2, _maximum, S.Max, commutative=True),
    Op("min", 2, _minimum, S.Min, commutative=True),
    # Lion-K maps: gradients of other convex functions in place of sign
    Op("soft_sign", 2, lambda x, t: torch.tanh(x / (torch.abs(t) + EPS)),
       lambda x, t: S.tanh(x / S.Abs(t)), doc="tanh(x / |tau|)"),
    Op("clip", 2, lambda x, c: torch.maximum(torch.minimum(x, torch.abs(c)), -torch.abs(c)),
       lambda x, c: S.Max(S.Min(x, S.Abs(c)), -S.Abs(c)), doc="clamp x to [-|c|, |c|]"),
    Op("l2_normalize", 1, _l2_normalize, lambda x: x / _SNorm(x), needs_layout=True,
       doc="x / norm(x), per tensor"),
    Op("orthogonalize", 1, _orthogonalize, _SOrth, needs_layout=True,
       doc="Newton-Schulz orthogonalization of each matrix; vectors are normalized"),
]

OPS: dict[str, Op] = {op.name: op for op in _OP_LIST}

# Ops that reduce over all parameters together (not each tensor): an optimizer runs
# them over the parameters of every group at once, one device and dtype at a time.
ACROSS_PARAMETERS: tuple[str, ...] = ("global_norm", "clip_by_global_norm")


def across_parameters(op_names: Iterable[str]) -> list[str]:
    """Those of these ops that reduce over all parameters together, sorted."""
    return sorted(set(op_names) & set(ACROSS_PARAMETERS))


def per_kind_note(across: Iterable[str]) -> str:
    """What an optimizer running these ops (``across_parameters``) does with parameters
    on several devices or of several dtypes."""
    return (f"{' and '.join(across)}: the parameters are on several devices or of several "
            "dtypes, and the norm is taken over those of one device and dtype at a time; "
            "the search took it over all parameters together")

# Binary ops written infix in program text.
INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}

# Other spellings accepted when reading program text.
ALIASES = {"interpolate": "interp", "neg": "negative", "maximum": "max", "minimum": "min"}

# The 45 functions of the released Lion search space.
LION_SPACE_OPS: tuple[str, ...] = (
    "pi", "e", "eps",
    "abs", "cos", "sin", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "arcsinh", "arccosh", "arctanh", "exp", "exp2", "exp10", "expm1", "log", "log10",
    "log2", "log1p", "square", "sqrt", "cube", "cbrt", "sign", "reciprocal", "norm",
    "invert", "negative",
    "global_norm", "interp", "dot", "cosine_sim", "clip_by_global_norm", "power",
    "add", "sub", "mul", "div", "max", "min",
)
LION_K_OPS: tuple[str, ...] = ("soft_sign", "clip", "l2_normalize", "orthogonalize")


def resolve_op_name(name: str) -> str | None:
    name = ALIASES.get(name, name)
    return name if name in OPS else None

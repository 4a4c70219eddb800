"""Layer ops: ``sigmoid`` and the mean/var/std aggregates, registered into the shared ``OPS``.

Registering them in the one registry lets the shared parser, printer, mutation and hashing
handle layer programs unchanged. The registry's torch meaning of an aggregate is its
training-mode meaning with default ``eps`` and groups; the layer module runs aggregates
itself (``aggregate`` below) so that it can use its own ``eps``, groups and running
averages. Tensors are NCHW (or NC): channels on dimension 1.
"""

from __future__ import annotations

import sympy
import torch

from .ops import OPS, Op

DEFAULT_EPS = 1e-5
MAX_GROUPS = 32
AXES = ("batch", "instance", "group", "layer")
"""batch: N,H,W; instance: H,W; group: H,W and C/G channels; layer: C,H,W."""
STATS = ("mean", "var", "std")

AGGREGATES: dict[str, tuple[str, str]] = {
    f"{axis}_{stat}": (axis, stat) for axis in AXES for stat in STATS}
"""Op name -> (axis, statistic)."""


def group_count(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """The largest divisor of ``channels`` that is at most ``max_groups``."""
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


def _dims(axis: str, ndim: int) -> tuple[int, ...]:
    spatial = tuple(range(2, ndim))
    return {"batch": (0, *spatial), "instance": spatial, "layer": (1, *spatial)}[axis]


def _per_channel(stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N, G, 1) group statistics as (N, C, 1, 1): each channel gets its group's value."""
    n, groups, c = x.shape[0], stat.shape[1], x.shape[1]
    return stat.expand(n, groups, c // groups).reshape(n, c, *[1] * (x.dim() - 2))


def moments(a: torch.Tensor, x: torch.Tensor, axis: str, groups: int,
            need_var: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean and biased variance of ``a`` (broadcast to ``x``'s shape) over ``axis``.

    Results keep reduced dimensions so they broadcast against ``x``; group statistics
    come back per (sample, channel): shape (N, C, 1, 1). The variance is computed in two
    passes (mean, then mean squared deviation): on the CPU that is several times faster
    than ``torch.var_mean`` at these sizes, forward and backward, and as exact.
    """
    a = a.expand_as(x) if a.shape != x.shape else a
    if axis == "group":
        n = x.shape[0]
        mean, var = _mean_var(a.reshape(n, groups, -1), (-1,), need_var)
        return _per_channel(mean, x), None if var is None else _per_channel(var, x)
    dims = _dims(axis, x.dim())
    if not dims:  # instance statistics of an NC tensor: each value is its own instance
        return a, torch.zeros_like(a) if need_var else None
    return _mean_var(a, dims, need_var)


def _mean_var(a: torch.Tensor, dims: tuple[int, ...],
              need_var: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    mean = a.mean(dim=dims, keepdim=True)
    if not need_var:
        return mean, None
    deviation = a - mean
    return mean, (deviation * deviation).mean(dim=dims, keepdim=True)


def aggregate(a: torch.Tensor, x: torch.Tensor, op: str, eps: float = DEFAULT_EPS,
              groups: int | None = None) -> torch.Tensor:
    """Training-mode value of aggregate ``op`` applied to ``a`` in a layer whose input is
    ``x``. ``std`` is ``sqrt(var + eps)``, variances are biased."""
    axis, stat = AGGREGATES[op]
    groups = group_count(x.shape[1]) if groups is None else groups
    mean, var = moments(a, x, axis, groups, need_var=stat != "mean")
    if stat == "mean":
        return mean
    return var if stat == "var" else torch.sqrt(var + eps)


def _registry_fn(name: str):
    def fn(a: torch.Tensor) -> torch.Tensor:
        if a.dim() < 2:  # no channel dimension: the tensor is its own statistic
            a = a.reshape(1, -1)
        return aggregate(a, a, name)
    return fn


def _sympy_aggregate(name: str):
    """An undefined SymPy function of that name; a std is positive (eps > 0), a variance
    nonnegative, so SymPy can drop ``Abs`` around them and order them against 0."""
    stat = AGGREGATES[name][1]
    assumptions = {"std": {"positive": True}, "var": {"nonnegative": True}}.get(
        stat, {"real": True})
    function = sympy.Function(name, **assumptions)
    return lambda a: function(a)


LAYER_OPS: tuple[str, ...] = ("sigmoid", *AGGREGATES)
"""Ops only layer programs use (the optimizer exporter has no code for them)."""

_NEW = [Op("sigmoid", 1, torch.sigmoid, lambda a: 1 / (1 + sympy.exp(-a)),
           doc="1 / (1 + exp(-x))")]
_NEW += [Op(name, 1, _registry_fn(name), _sympy_aggregate(name),
            doc=f"{stat} over the {axis} axes" + (" (sqrt(var + eps))" if stat == "std" else ""))
         for name, (axis, stat) in AGGREGATES.items()]
for _op in _NEW:
    OPS.setdefault(_op.name, _op)

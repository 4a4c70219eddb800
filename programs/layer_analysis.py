"""Analysis of layer programs: functional fingerprint, SymPy form, recognition.

A layer program is a function of one NCHW tensor ``x`` and the per-channel ``v0``, ``v1``,
so it is probed by running it, in training-mode semantics (aggregates are batch
statistics, as in ``layer_ops.aggregate`` and ``ProgramLayer`` in training), on fixed
float64 inputs. The probe inputs are chosen so that different functions look different:
channels have very different scales and offsets (so ``std`` and ``sqrt(var)`` differ by
their ``eps``, and mean subtraction matters), ``v0`` and ``v1`` are per-channel values away
from their initial 0 and 1, and groups are neither single channels nor all channels
(so group, instance and layer statistics all differ).

Recognition fits ``y = scale * known(x) + shift`` for each known layer on one set of
inputs and verifies the fit on others; a per-channel affine ``gamma, beta`` follows the
program, so such a program is the known layer up to its constants.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial

import torch

from .fingerprint import quantized_bytes
from .interpreter import Binding, CompiledProgram
from .known import KNOWN_LAYERS
from .layer_ops import AGGREGATES, DEFAULT_EPS, aggregate
from .program import Instruction, Program, ProgramError
from .recognize import Recognition
from .symbolic import SymbolicProgram, to_sympy

# Recognition tolerance: wide enough for the 1e-8 of guarded division and reordered
# float arithmetic, far below what a different eps or a different constant changes.
RTOL = 1e-5
ATOL = 1e-8


@dataclass(frozen=True)
class LayerProbe:
    """Fixed inputs of one layer run: ``x`` (N, C, H, W), ``v0``/``v1`` (1, C, 1, 1)."""

    x: torch.Tensor
    v0: torch.Tensor
    v1: torch.Tensor
    groups: int


def make_layer_probe(shape: tuple[int, int, int, int], groups: int, seed: int) -> LayerProbe:
    """Channels scaled from 0.05 to 5 with offsets of their own size, in float64."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    channel = (1, c, 1, 1)
    scale = torch.logspace(-1.3, 0.7, c, dtype=torch.float64)[torch.randperm(c, generator=gen)]
    offset = torch.randn(c, generator=gen, dtype=torch.float64) * scale
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale.reshape(channel)
         + offset.reshape(channel))
    v0 = (torch.rand(c, generator=gen, dtype=torch.float64) * 1.6 - 0.8).reshape(channel)
    v1 = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).reshape(channel)
    return LayerProbe(x, v0, v1, groups)


FINGERPRINT_PROBES = (make_layer_probe((4, 8, 3, 3), 4, seed=20201006),
                      make_layer_probe((6, 4, 2, 2), 2, seed=20201007))
VERIFY_PROBES = (make_layer_probe((5, 6, 3, 2), 3, seed=31),
                 make_layer_probe((3, 8, 2, 3), 2, seed=37))

def run_layer(program: Program, probe: LayerProbe, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """The program's ``y`` on the probe, in training mode, broadcast to ``x``'s shape."""
    x = probe.x

    def bind(index: int, ins: Instruction) -> Binding | None:
        if ins.op not in AGGREGATES:
            return None
        return partial(aggregate, op=ins.op, eps=eps, groups=probe.groups), (ins.args[0], "x")

    compiled = CompiledProgram(program, None, "cpu", torch.float64, bind=bind)
    with torch.no_grad():
        env = compiled({"x": x, "v0": probe.v0, "v1": probe.v1})
    y = env.get("y")
    if y is None:
        raise ProgramError("the program never assigns 'y'")
    y = y.to(torch.float64)
    return y.expand_as(x) if y.shape != x.shape else y


def layer_probe(program: Program, family: str = "layer") -> tuple[str, bool]:
    """(fingerprint, whether ``y`` stayed finite) of a pruned layer program."""
    digest, finite = hashlib.sha256(f"{family}|y".encode()), True
    for probe in FINGERPRINT_PROBES:
        values, probe_finite = quantized_bytes(run_layer(program, probe))
        digest.update(values)
        finite = finite and probe_finite
    return digest.hexdigest()[:16], finite


def layer_sympy(program: Program, inputs: tuple[str, ...], outputs: tuple[str, ...],
                simplify: bool = True) -> SymbolicProgram:
    """The outputs as SymPy expressions of the inputs, with aggregates as functions
    (``batch_mean(x)``) and whole-number constants exact (``Max(0, ...)``, not ``0.0``)."""
    return to_sympy(program, inputs, outputs, (), simplify=simplify, exact_integers=True)


def _affine(program: Program, scale: float, shift: float) -> Program:
    """``y = scale * y + shift`` appended to the program."""
    return Program(program.instructions + (Instruction("y", "mul", ("y", scale)),
                                           Instruction("y", "add", ("y", shift))))


def _tidy(value: float, identity: float) -> float:
    """Fitted constants to 6 significant digits, the identity value when that close."""
    if abs(value - identity) <= 1e-6 * max(1.0, abs(identity)):
        return identity
    return float(f"{value:.6g}")


_TEMPLATE_OUTPUTS: dict[str, torch.Tensor] = {}


def _template_output(name: str) -> torch.Tensor:
    out = _TEMPLATE_OUTPUTS.get(name)
    if out is None:
        program = KNOWN_LAYERS[name].program()
        out = _TEMPLATE_OUTPUTS[name] = torch.cat(
            [run_layer(program, p).flatten() for p in FINGERPRINT_PROBES])
    return out


def _fit(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float] | None:
    """Least-squares (scale, shift) with ``ours ~ scale * theirs + shift``, if it holds."""
    centered = theirs - theirs.mean()
    spread = float((centered * centered).sum())
    if spread <= 1e-12 * theirs.numel():
        return None
    scale = float((centered * (ours - ours.mean())).sum()) / spread
    shift = float(ours.mean()) - scale * float(theirs.mean())
    if abs(scale) < 1e-6 or not torch.allclose(scale * theirs + shift, ours, rtol=RTOL,
                                               atol=ATOL):
        return None
    return scale, shift


def layer_recognize(program: Program) -> Recognition | None:
    """The known layer (a key of ``KNOWN_LAYERS``) this program computes, up to
    ``y = scale * known + shift``, verified on inputs the fit did not see; else None."""
    try:
        ours = torch.cat([run_layer(program, p).flatten() for p in FINGERPRINT_PROBES])
    except ProgramError:
        return None
    if not bool(torch.isfinite(ours).all()):
        return None
    for name in KNOWN_LAYERS:
        fitted = _fit(ours, _template_output(name))
        if fitted is None:
            continue
        tidy = (_tidy(fitted[0], 1.0), _tidy(fitted[1], 0.0))
        for scale, shift in dict.fromkeys((tidy, fitted)):
            template = _affine(KNOWN_LAYERS[name].program(), scale, shift)
            if all(_same(run_layer(program, p), run_layer(template, p))
                   for p in VERIFY_PROBES):
                return Recognition(name, {"scale": scale, "shift": shift})
    return None


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.isfinite(a).all()) and torch.allclose(a, b, rtol=RTOL, atol=ATOL)


"""Functional fingerprints: a hash of what a program computes on fixed random inputs.

Two programs that differ in text but compute the same update rule (``c = m*0.9;
c = c + g*0.1`` against ``c = interp(g, m, 0.9)``) get the same fingerprint, so a search
can serve the second from the first one's evaluation. The pruned program runs for a few
steps with its state carried, as in training, in float64 on a fixed layout (a matrix and
a vector, so per-tensor reductions differ from global ones) and a batch of rows whose
gradients have different magnitudes. Only the outputs that are not state are hashed
(an optimizer's ``update``): where a program keeps its momentum (``m`` or ``v``) is an
internal detail, while every step's update is what training sees. Values are rounded to
six significant digits so float noise does not split equal functions; NaN and infinities
become tokens.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache, partial

import torch

from .ops import OPS, Layout
from .program import Program

STEPS = 4
DIGITS = 6
# Smaller magnitudes are float noise around an exact zero (e.g. ``m - m``).
ZERO = 1e-12
LAYOUT = Layout(((3, 4), (5,)))
GRAD_SCALES = (1e-3, 1.0, 1e2)
LR_SCHEDULE = (1.0, 0.8, 0.5, 0.3)
SEED = 20230213


@dataclass(frozen=True)
class Probe:
    """Fixed inputs for every step: one row per gradient magnitude."""

    w: torch.Tensor
    grads: tuple[torch.Tensor, ...]
    lrs: tuple[torch.Tensor, ...]
    steps: tuple[torch.Tensor, ...]
    layout: Layout


def make_probe(layout: Layout = LAYOUT, scales: tuple[float, ...] = GRAD_SCALES,
               steps: int = STEPS, seed: int = SEED) -> Probe:
    gen = torch.Generator().manual_seed(seed)
    rows = len(scales)
    scale = torch.tensor(scales, dtype=torch.float64).unsqueeze(-1)
    w = torch.randn(rows, layout.numel, generator=gen, dtype=torch.float64)
    grads = tuple(torch.randn(rows, layout.numel, generator=gen, dtype=torch.float64) * scale
                  for _ in range(steps))
    lrs = tuple(torch.full((rows, 1), LR_SCHEDULE[i % len(LR_SCHEDULE)],
                           dtype=torch.float64) for i in range(steps))
    counts = tuple(torch.full((rows, 1), float(i + 1), dtype=torch.float64)
                   for i in range(steps))
    return Probe(w, grads, lrs, counts, layout)


_PROBE = make_probe()
_CONSTANTS: dict[float, torch.Tensor] = {}


def float64_constant(value: float) -> torch.Tensor:
    """A cached float64 scalar: probes reuse one tensor per constant."""
    tensor = _CONSTANTS.get(value)
    if tensor is None:
        tensor = _CONSTANTS[value] = torch.tensor(value, dtype=torch.float64)
    return tensor


def _compile(program: Program, layout: Layout) -> list[tuple[str, object, tuple]]:
    """Steps of (output, function, args): a lighter CompiledProgram for float64 probes."""
    steps = []
    for ins in program.instructions:
        op = OPS[ins.op]
        if op.arity == 0:
            steps.append((ins.out, None, (float64_constant(float(op.torch_fn())),)))
            continue
        fn = partial(op.torch_fn, layout=layout) if op.needs_layout else op.torch_fn
        steps.append((ins.out, fn, tuple(a if isinstance(a, str) else float64_constant(float(a))
                                         for a in ins.args)))
    return steps


def run_steps(program: Program, state: tuple[str, ...], watched: tuple[str, ...],
              probe: Probe = _PROBE, inputs: dict[str, torch.Tensor] | None = None,
              ) -> list[dict[str, torch.Tensor]]:
    """Run ``program`` for the probe's steps with state carried and ``w -= update``.

    Returns, per step, the watched outputs (full-size float64 tensors). ``inputs``
    overrides the starting state (zeros by default).
    """
    compiled = _compile(program, probe.layout)
    rows, n = probe.w.shape
    zeros = torch.zeros(rows, n, dtype=torch.float64)
    carried = {name: zeros for name in state}
    if inputs:
        carried.update(inputs)
    w = probe.w
    out = []
    with torch.no_grad():
        for t, g in enumerate(probe.grads):
            env = {"w": w, "g": g, "lr": probe.lrs[t], "step": probe.steps[t], **carried}
            for name, fn, args in compiled:
                if fn is None:
                    env[name] = args[0]
                    continue
                env[name] = fn(*[env[a] if isinstance(a, str) else a for a in args])
            values = {o: _full(env.get(o, zeros), rows, n) for o in watched}
            carried = {s: _full(env[s], rows, n) for s in state}
            out.append(values)
            if "update" in env:
                w = w - _full(env["update"], rows, n)
    return out


def _full(x: torch.Tensor, rows: int, n: int) -> torch.Tensor:
    return x.to(torch.float64).expand(rows, n) if x.shape != (rows, n) else x


_FORMAT = f"%.{DIGITS}g"


def quantize(x: torch.Tensor) -> str:
    """Rounded text of the values; NaN and infinities print as tokens."""
    return ",".join(_FORMAT % v for v in _quantized_values(x))


def _quantized_values(x: torch.Tensor) -> list[float]:
    """The values as ``quantize`` prints them: noise around zero made an exact 0.0."""
    x = torch.where(x.abs() < ZERO, torch.zeros_like(x), x) + 0.0  # -0.0 becomes 0.0
    return x.flatten().tolist()


@lru_cache(maxsize=16)
def _text_format(watched: tuple[str, ...], steps: int, size: int) -> str:
    """A %-format that prints ``quantize`` of every watched output of every step,
    ``o:v,v,...|o:v,...``, from all the values in that order: one formatting call for
    the whole probe is faster than one per value."""
    one = ",".join([_FORMAT] * size)
    return "|".join(f"{o}:{one}" for _ in range(steps) for o in watched)


def fingerprint_and_finite(program: Program, outputs: tuple[str, ...],
                           state: tuple[str, ...], family: str) -> tuple[str, bool]:
    """The fingerprint, and whether the non-state outputs stayed finite on the probe.

    ``program`` should be pruned already (dead code costs time, not correctness).
    """
    watched = tuple(o for o in outputs if o not in state) or outputs
    steps = run_steps(program, state, watched)
    # Every watched output of every step, in the order the text lists them, quantized
    # in one pass (quantizing keeps NaN and infinities as they are).
    stacked = torch.stack([step[o] for step in steps for o in watched])
    values = _quantized_values(stacked)
    text = family + "|" + _text_format(watched, len(steps), stacked[0].numel()) % tuple(values)
    finite = all(map(math.isfinite, values))
    return hashlib.sha256(text.encode()).hexdigest()[:16], finite


def fingerprint(program: Program, outputs: tuple[str, ...], state: tuple[str, ...],
                family: str) -> str:
    """Hash of the outputs that are not state, at every step, on the fixed probe."""
    return fingerprint_and_finite(program, outputs, state, family)[0]

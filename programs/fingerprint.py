"""Functional fingerprints: a hash of what a program computes on fixed random inputs.

Two programs that differ in text but compute the same update rule (``c = m*0.9;
c = c + g*0.1`` against ``c = interp(g, m, 0.9)``) get the same fingerprint, so a search
can serve the second from the first one's evaluation. The pruned program runs for a few
steps with its state carried, as in training, in float64 on a fixed layout (matrices and
a vector, so per-tensor reductions differ from global ones) and a batch of rows whose
gradients have different magnitudes, every value with a magnitude of its own (see
``make_probe``). Only the outputs that are not state are hashed
(an optimizer's ``update``): where a program keeps its momentum (``m`` or ``v``) is an
internal detail, while every step's update is what training sees. Values are rounded to
20 significant bits (about six decimal digits) so float noise does not split equal
functions; NaN and the infinities keep one form each.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .interpreter import CompiledProgram
from .ops import Layout
from .program import Program

STEPS = 4
# Significant bits kept of each value: about six significant decimal digits.
BITS = 20
# Smaller magnitudes are float noise around an exact zero (e.g. ``m - m``).
ZERO = 1e-12
# Two matrices and a vector, 64 values a row.
LAYOUT = Layout(((4, 8), (8,), (4, 6)))
GRAD_SCALES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e2)
# Each value's own magnitude, log-uniform between these (for w, and for its gradient).
ELEMENT_SCALES = (1e-4, 10.0)
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
               steps: int = STEPS, seed: int = SEED,
               element_scales: tuple[float, float] | None = None) -> Probe:
    """Random inputs: row ``i``'s gradients are scaled by ``scales[i]``.

    With ``element_scales`` every value of ``w`` and of the gradient also gets its own
    fixed magnitude, log-uniform in that range, as parameters of a network differ.
    Saturating ops (``sign``, ``clip``, ``max``, a division by a state that stays zero)
    map most inputs of one probe row to the same few values, so without this spread two
    different programs often agree on every value the probe shows: differences hide
    where one term is tiny beside another, and only a wide range of magnitudes per row
    reaches them."""
    gen = torch.Generator().manual_seed(seed)
    rows, n = len(scales), layout.numel
    scale = torch.tensor(scales, dtype=torch.float64).unsqueeze(-1)
    w = torch.randn(rows, n, generator=gen, dtype=torch.float64)
    if element_scales is not None:
        w = w * _log_uniform(gen, rows, n, element_scales)
        scale = scale * _log_uniform(gen, rows, n, element_scales)
    grads = tuple(torch.randn(rows, n, generator=gen, dtype=torch.float64) * scale
                  for _ in range(steps))
    lrs = tuple(torch.full((rows, 1), LR_SCHEDULE[i % len(LR_SCHEDULE)],
                           dtype=torch.float64) for i in range(steps))
    counts = tuple(torch.full((rows, 1), float(i + 1), dtype=torch.float64)
                   for i in range(steps))
    return Probe(w, grads, lrs, counts, layout)


def _log_uniform(gen: torch.Generator, rows: int, n: int,
                 bounds: tuple[float, float]) -> torch.Tensor:
    low, high = math.log(bounds[0]), math.log(bounds[1])
    return torch.exp(low + (high - low) * torch.rand(rows, n, generator=gen,
                                                     dtype=torch.float64))


# The inputs every optimizer fingerprint is computed on.
PROBE = make_probe(element_scales=ELEMENT_SCALES)


def run_steps(program: Program, state: tuple[str, ...], watched: tuple[str, ...],
              probe: Probe = PROBE, inputs: dict[str, torch.Tensor] | None = None,
              ) -> list[dict[str, torch.Tensor]]:
    """Run ``program`` for the probe's steps with state carried and ``w -= update``.

    Returns, per step, the watched outputs (full-size float64 tensors). ``inputs``
    overrides the starting state (zeros by default).
    """
    compiled = CompiledProgram(program, probe.layout, "cpu", torch.float64)
    rows, n = probe.w.shape
    zeros = torch.zeros(rows, n, dtype=torch.float64)
    carried = {name: zeros for name in state}
    if inputs:
        carried.update(inputs)
    w = probe.w
    out = []
    with torch.no_grad():
        for t, g in enumerate(probe.grads):
            env = compiled({"w": w, "g": g, "lr": probe.lrs[t], "step": probe.steps[t],
                            **carried})
            values = {o: _full(env.get(o, zeros), rows, n) for o in watched}
            carried = {s: _full(env[s], rows, n) for s in state}
            out.append(values)
            if "update" in env:
                w = w - _full(env["update"], rows, n)
    return out


def updates(program: Program, state: tuple[str, ...], probe: Probe = PROBE) -> torch.Tensor:
    """The program's ``update`` at every step of ``probe``: (steps, rows, values)."""
    return torch.stack([step["update"] for step in run_steps(program, state, ("update",),
                                                             probe)])


def _full(x: torch.Tensor, rows: int, n: int) -> torch.Tensor:
    return x.to(torch.float64).expand(rows, n) if x.shape != (rows, n) else x


def quantized_bytes(x: torch.Tensor) -> tuple[bytes, bool]:
    """The values rounded to ``BITS`` significant bits, as bytes to hash, and whether they
    are all finite.

    Each value becomes (mantissa, exponent) with an integer mantissa of ``BITS`` bits,
    scaled by powers of two only, so the rounding itself is exact; noise around zero is
    an exact zero, and NaN and the infinities keep one form each. Computed in numpy: on
    the probe's few hundred values a numpy call costs a fraction of a torch one.
    """
    v = x.detach().to("cpu", torch.float64).numpy().ravel()
    v = np.where(np.abs(v) < ZERO, 0.0, v)  # also makes -0.0 a 0.0
    mantissa, exponent = np.frexp(v)  # v = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
    mantissa = np.round(mantissa * 2.0**BITS)
    # Rounding up can carry into one more bit (0.99999999 -> 1.0): renormalize.
    carry = np.abs(mantissa) == 2.0**BITS
    if carry.any():
        mantissa = np.where(carry, mantissa / 2, mantissa)
        exponent = exponent + carry
    finite = bool(np.isfinite(v).all())
    if not finite:
        mantissa = np.where(np.isnan(mantissa), np.nan, mantissa)  # one NaN bit pattern
    return mantissa.tobytes() + exponent.astype(np.int32).tobytes(), finite


def fingerprint_and_finite(program: Program, outputs: tuple[str, ...],
                           state: tuple[str, ...], family: str) -> tuple[str, bool]:
    """The fingerprint, and whether the non-state outputs stayed finite on the probe.

    ``program`` should be pruned already (dead code costs time, not correctness).
    """
    watched = tuple(o for o in outputs if o not in state) or outputs
    steps = run_steps(program, state, watched)
    # Every watched output of every step, quantized in one pass.
    values, finite = quantized_bytes(torch.stack([step[o] for step in steps
                                                  for o in watched]))
    text = f"{family}|{','.join(watched)}|{len(steps)}|".encode()
    return hashlib.sha256(text + values).hexdigest()[:16], finite

"""Update rules that cannot train, told apart on the fingerprint probe before training.

The dataflow check of a space (``update`` must depend on ``g``) misses rules that read
``g`` but cannot follow it. Five such signs are read off the pruned program's updates
on the probe (``fingerprint.PROBE``: gradient magnitudes from 1e-4 to 1e2, four steps
with the state carried and ``w -= update``):

- **zero**: every update is below ``fingerprint.ZERO`` (1e-12), which no float32 weight
  notices (``g * 0.0``, or Lion with a learning rate of 1e-13);
- **sign-blind**: the updates stay the same when every gradient is negated (``g * g``,
  ``abs(g)``, ``g - g``), so the rule moves the weights the same way whichever way the
  loss falls;
- **ascent**: at every step and in every row the update climbs the gradient
  (``sum(update * g) < 0``);
- **blow-up**: the first update moves some weight by more than ``BLOW_UP`` in every row,
  whatever the gradient's magnitude;
- **too large a step**: the first update moves at least half the weights by
  ``LARGEST_STEP`` or more in every row. The search feeds ``lr`` = 1 at the first step
  and tier A only multiplies it by 1 to 10, so such a rule starts with steps larger than
  a network's initial weights (the best sign-based steps on the proxy tasks are 3e-3 to
  1e-2; no child that training kept in the searches below moved half its weights by more
  than 0.072 in every row).

Without these checks such children are trained until a numeric filter stops them.
Replayed on the stores of two searches from the AdamW seed (``benchmarks/analysis.py``), the checks
refuse 1,630 of the 3,182 children that training rejected in a 19,067-child search and
287 of 757 in a 2,000-child one, and none of the 4,084 and 949 it kept.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .fingerprint import PROBE, ZERO, Probe, quantized_bytes, updates
from .program import Program

BLOW_UP = 1e3
LARGEST_STEP = 0.3
# The probe with every gradient negated, and all else (weights, lr, steps) the same.
NEGATED: Probe = replace(PROBE, grads=tuple(-g for g in PROBE.grads))


def futile_reason(program: Program, state: tuple[str, ...]) -> str | None:
    """Why the pruned update rule ``program`` cannot train, or None when it may."""
    ups = updates(program, state)  # (steps, rows, values)
    if bool((ups.abs() < ZERO).all()):
        return f"the update is below {ZERO:g} at every probe step"
    if quantized_bytes(ups)[0] == quantized_bytes(updates(program, state, NEGATED))[0]:
        return "the update ignores the sign of g"
    if bool(((ups * torch.stack(PROBE.grads)).sum(-1) < 0).all()):
        return "the update climbs the gradient at every probe step"
    first = ups[0].abs()
    if bool((first.amax(-1) > BLOW_UP).all()):
        return f"the first update exceeds {BLOW_UP:g} at every gradient scale"
    if bool((first.median(-1).values >= LARGEST_STEP).all()):
        return (f"the first update moves half the weights by {LARGEST_STEP:g} or more at "
                "every gradient scale")
    return None

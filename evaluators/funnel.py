"""Funnel selection: every candidate gets the cheap tier, only the best go further.

A program's record is the list of its per-tier results, cheapest first; it stops
growing at the first tier where the program is not promoted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..programs.program import Program
from .result import EvalResult
from .tasks import TIERS

Evaluator = Callable[[Program, str, str], EvalResult]  # (program, task name, tier)


def promote(results: Sequence[EvalResult], fraction: float) -> list[int]:
    """Indices of the results to promote: the best ``ceil(fraction * n)`` of the ``ok``
    ones by fitness (ties go to the earlier index), best first. Rejected and failed
    results are never promoted."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    ok = [i for i, r in enumerate(results) if r.ok]
    count = min(len(ok), math.ceil(fraction * len(results)))
    return sorted(ok, key=lambda i: (-float(results[i].fitness), i))[:count]


def funnel(programs: Sequence[Program], task_name: str, promote_fraction: float = 0.25,
           tiers: Sequence[str] = TIERS, first: Sequence[EvalResult] | None = None,
           evaluator: Evaluator | None = None) -> list[list[EvalResult]]:
    """Evaluate ``programs`` on the first tier, promote the best ``promote_fraction`` to
    the next tier, and so on. Returns, per program, its results tier by tier.

    ``first`` gives already known first-tier results (e.g. from the search), so only
    promoted programs cost anything more.
    """
    if evaluator is None:
        from . import evaluate as evaluator
    records: list[list[EvalResult]] = [[] for _ in programs]
    alive = list(range(len(programs)))
    for depth, tier in enumerate(tiers):
        if depth == 0 and first is not None:
            if len(first) != len(programs):
                raise ValueError("one first-tier result per program is needed")
            results = list(first)
        else:
            results = [evaluator(programs[i], task_name, tier) for i in alive]
        for i, result in zip(alive, results, strict=True):
            records[i].append(result)
        if depth + 1 < len(tiers):
            alive = [alive[j] for j in promote(results, promote_fraction)]
    return records

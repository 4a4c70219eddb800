"""Score one program on several tasks at one tier: the search's unit of evaluation.

Tasks run in the order given and the first one that does not end ``ok`` decides the
outcome (list the cheapest first). The combined fitness is the mean of the tasks'
fitness (each already normalized against the AdamW seed, or the layer task's mean
accuracy), and ``metrics["scores"]`` holds one score per task for Pareto selection;
a single layer task keeps its own per-architecture scores instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..programs.program import Program
from .device import machine
from .result import EvalResult


def evaluate_suite(program: Program, tasks: Sequence[str], tier: str = "A",
                   **overrides: Any) -> tuple[EvalResult, list[dict[str, Any]]]:
    """(combined result, one evaluation record per task that ran); ``overrides``
    replace task settings (see ``get_task``)."""
    from . import evaluate

    if not tasks:
        raise ValueError("at least one task is needed")
    start = time.perf_counter()
    suite = {"tasks": list(tasks), "tier": tier, "machine": machine()}
    records: list[dict[str, Any]] = []
    results: dict[str, EvalResult] = {}
    for name in tasks:
        result = evaluate(program, name, tier, **overrides)
        records.append({"task": name, "tier": tier, **result.to_dict()})
        results[name] = result
        if not result.ok:
            reason = result.reason if len(tasks) == 1 else f"{name}: {result.reason}"
            combined = EvalResult(None, result.status, reason, dict(suite))
            combined.seconds = time.perf_counter() - start
            return combined, records
    if len(tasks) == 1:
        only = results[tasks[0]]
        metrics = {**only.metrics, **suite}
        fitness = float(only.fitness)
    else:
        scores = {name: float(r.fitness) for name, r in results.items()}
        metrics = {"scores": scores, **suite}
        fitness = sum(scores.values()) / len(scores)
    combined = EvalResult(fitness, "ok", None, metrics)
    combined.seconds = time.perf_counter() - start
    return combined, records

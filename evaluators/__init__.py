"""Evaluators: score candidate programs on proxy tasks.

``evaluate(program, "digits_mlp", tier="A")`` is all a search worker needs;
``get_task(name, tier)`` gives the task object itself (its name, tier, family, and
settings such as seeds and steps). The search's ``--funnel`` promotes its best
programs to the costlier tiers B and C.
"""

from __future__ import annotations

import time
from typing import Any

from ..programs.program import Program
from .device import device, machine
from .result import STATUSES, EvalResult
from .tasks import TIERS, CharLM, DigitsCNN, DigitsMLP, Task, TrainingTask
from .trainer import Filters

TASKS: dict[str, type[TrainingTask]] = {
    cls.name: cls for cls in (DigitsMLP, DigitsCNN, CharLM)
}
"""Task name -> class; ``TASKS[name](tier)`` gives the task with that tier's settings."""

DEFAULT_TASKS = {"optimizer": ("digits_mlp",), "layer": ("digits_layers",)}
"""What a search of each family scores on unless told otherwise (tier A: fast)."""


def get_task(name: str, tier: str = "A", **overrides: Any) -> Task:
    """The registered task called ``name`` at ``tier``; ValueError naming the known tasks
    (or tiers) otherwise. ``overrides`` replace settings of an optimizer task's tier
    (e.g. ``lr_scales=(1, 3, 10)``); every task takes ``time_limit`` (seconds for one
    evaluation; None: no limit)."""
    from .layer_tasks import LAYER_TASKS

    factories = {**TASKS, **LAYER_TASKS}
    try:
        factory = factories[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r} (known tasks: {', '.join(sorted(factories))})") from None
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} (known tiers: {', '.join(TIERS)})")
    if name not in TASKS and set(overrides) - {"time_limit"}:
        raise ValueError(f"task {name!r} takes no settings such as "
                         f"{', '.join(overrides)}")
    return factory(tier, **overrides)


def task_family(name: str) -> str:
    """The family (``optimizer`` or ``layer``) whose programs the named task scores."""
    return get_task(name).family


def evaluate(program: Program, task_name: str = "digits_mlp", tier: str = "A",
             **overrides: Any) -> EvalResult:
    """Evaluate ``program`` on the named task and tier (settings ``overrides`` as in
    ``get_task``); ``seconds`` is the call's wall time (the first call per process and
    task settings also scores the AdamW seed, see tasks); ``metrics["machine"]`` names
    the kind of machine the score is exact for (see ``machine``)."""
    start = time.perf_counter()
    result = get_task(task_name, tier, **overrides).evaluate(program)
    result.metrics["machine"] = machine()
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["DEFAULT_TASKS", "STATUSES", "TASKS", "TIERS", "CharLM",
           "DigitsCNN", "DigitsMLP", "EvalResult", "Filters", "Task", "device", "evaluate",
           "get_task", "machine", "task_family"]

"""Evaluators: score candidate programs on proxy tasks.

``evaluate(program, "digits_mlp")`` is all a search worker needs; ``get_task`` gives the
task object itself (its name, tier, family, and knobs such as seeds and steps).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..programs.program import Program
from .result import STATUSES, EvalResult
from .tasks import DigitsMLP, Task
from .trainer import Filters

TASKS: dict[str, Callable[[], Task]] = {
    DigitsMLP.name: DigitsMLP,
}
"""Task name -> factory giving the task with its default settings."""


def get_task(name: str) -> Task:
    """The registered task called ``name``; ValueError naming the known tasks otherwise."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r} (known tasks: {', '.join(sorted(TASKS))})") from None
    return factory()


def evaluate(program: Program, task_name: str = "digits_mlp") -> EvalResult:
    """Evaluate ``program`` on the named task; ``seconds`` is the wall time of the call."""
    start = time.perf_counter()
    result = get_task(task_name).evaluate(program)
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["STATUSES", "TASKS", "DigitsMLP", "EvalResult", "Filters", "Task", "evaluate",
           "get_task"]

"""How far the training loop running in this process has got, for a command to show:
a tier-C evaluation trains for minutes. A search's workers show nothing; the loop only
pays a lookup per step when no one watches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Watcher = Callable[[int, int], None]  # (step done, steps in this training loop)

_watcher: ContextVar[Watcher | None] = ContextVar("training_watcher", default=None)
_reference: ContextVar[str | None] = ContextVar("training_reference", default=None)


@contextmanager
def watching(callback: Watcher) -> Iterator[None]:
    """Call ``callback(step, steps)`` after every training step run inside the block."""
    token = _watcher.set(callback)
    try:
        yield
    finally:
        _watcher.reset(token)


def report_step(step: int, steps: int) -> None:
    """Tell the watcher, if any, that ``step`` of ``steps`` is done."""
    callback = _watcher.get()
    if callback is not None:
        callback(step, steps)


@contextmanager
def training_reference(name: str) -> Iterator[None]:
    """Mark the training loops run inside the block as training ``name``, a reference a
    score is measured against, not the program the command is showing."""
    token = _reference.set(name)
    try:
        yield
    finally:
        _reference.reset(token)


def reference_in_training() -> str | None:
    """The reference being trained now (see ``training_reference``), if any."""
    return _reference.get()

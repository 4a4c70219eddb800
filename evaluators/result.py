"""The outcome of evaluating one program on one task.

Results cross process boundaries (Ray workers) and land in SQLite as JSON, so they turn
into plain dicts of JSON-able values and back; nothing is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "rejected", "failed")
"""``ok``: trained to the end and has a fitness. ``rejected``: a cheap filter stopped a
program that runs but trains badly (nan, diverged, no progress). ``failed``: the program
could not be run at all (it raised, or its outputs have an impossible shape)."""


@dataclass
class EvalResult:
    fitness: float | None
    status: str
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if (self.fitness is None) == (self.status == "ok"):
            raise ValueError("a result has a fitness exactly when its status is 'ok'")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values only (tensors and numpy values become lists/floats)."""
        return {
            "fitness": None if self.fitness is None else float(self.fitness),
            "status": self.status,
            "reason": self.reason,
            "metrics": _plain(self.metrics),
            "seconds": float(self.seconds),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        return cls(
            fitness=data.get("fitness"),
            status=data["status"],
            reason=data.get("reason"),
            metrics=dict(data.get("metrics") or {}),
            seconds=float(data.get("seconds") or 0.0),
        )


def _plain(value: Any) -> Any:
    """Recursively convert to JSON-able Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and numpy scalars
        return _plain(value.tolist())
    raise TypeError(f"metric value of type {type(value).__name__} is not JSON-able")

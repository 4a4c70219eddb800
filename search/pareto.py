"""Pareto selection over per-architecture scores (the layer search's tournament).

A layer must do well on several architectures at once; rather than averaging the
scores away, the tournament picks a random member of the sample's Pareto front.
Missing or non-finite scores count as the worst possible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def _value(scores: dict[str, float], key: str) -> float:
    v = scores.get(key)
    return v if v is not None and math.isfinite(v) else -math.inf


def dominates(a: dict[str, float], b: dict[str, float], keys: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (higher wins)."""
    va = [_value(a, k) for k in keys]
    vb = [_value(b, k) for k in keys]
    return all(x >= y for x, y in zip(va, vb, strict=True)) and va != vb


def pareto_front(scores: list[dict[str, float]]) -> list[int]:
    """Indices of the entries no other entry dominates, in input order."""
    keys = sorted({k for s in scores for k in s})
    return [i for i, s in enumerate(scores)
            if not any(dominates(o, s, keys) for j, o in enumerate(scores) if j != i)]


def pareto_tournament(scores: list[dict[str, float]], size: int,
                      rng: random.Random) -> int:
    """Index of a random front member of a random sample of ``size`` entries."""
    sample = rng.sample(range(len(scores)), min(size, len(scores)))
    front = pareto_front([scores[i] for i in sample])
    return sample[rng.choice(front)]

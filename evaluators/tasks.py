"""Proxy tasks: small, fast training runs that score a candidate optimizer program.

Every task comes in tiers A, B and C of rising cost (B about 10x A, C about 100x A on
one CPU core) for funnel selection. A task reports a raw ``metric`` (higher is better)
and its fitness is that metric divided by the metric of the Lion paper's AdamW seed
program on the same task and tier (``OptimizerSpace.seed()``): 1.0 matches the seed,
above 1.0 beats it. The seed's metric is computed once per process and task settings
(with the progress filter and the time limit off) and cached.

``lr_scales`` trains every seed at several multiples of the program's ``lr`` input in
the same vectorized run, and the raw metric is the best scale's mean over seeds, so a
program is not judged by a learning-rate constant it happened to inherit (sign-based
updates such as Lion want a larger one than the AdamW seed's ``lr * 0.001``). The seed's
reference metric is taken over the same scales.

Before training, a rule that the fingerprint probe shows cannot train (it ignores the
sign of ``g``, climbs the gradient, or starts with far too large a step:
``programs/futility.py``) is rejected with a reason starting ``static:``, at the cost of
two probe runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..programs.program import Program
from .cnn import FlatCNN
from .data import VOCAB_SIZE, Split, char_windows, digits
from .mlp import FlatMLP
from .progress import training_reference
from .result import EvalResult
from .trainer import Filters, FlatModel, train

TIERS = ("A", "B", "C")
TIER_A_LR_SCALES = (1.0, 3.0, 10.0)
"""Tier A's learning-rate multipliers: they cover the best rates of the AdamW seed (x1-3)
and of sign-based updates written with the seed's constant (x3-10, see
benchmarks/README.md). Tiers B and C train one scale (x1) by default."""


class Task:
    """A way to score a program of one family at one tier of cost."""

    name: str = ""
    tier: str = "A"
    family: str = ""

    def evaluate(self, program: Program) -> EvalResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, tier={self.tier!r})"


@dataclass(frozen=True)
class Settings:
    """The knobs of one training task; tiers are presets of these."""

    seeds: tuple[int, ...] = (0, 1)
    steps: int = 200
    batch_size: int = 128
    size: tuple[int, ...] = ()  # the model's widths, meaning set by the task
    filters: Filters = field(default_factory=Filters)
    probe: int | None = None  # training examples used for the initial/progress loss
    lr_scales: tuple[float, ...] = (1.0,)  # multiples of ``lr`` tried side by side

    def __post_init__(self) -> None:
        if not self.lr_scales or not all(math.isfinite(s) and s > 0 for s in self.lr_scales):
            raise ValueError(f"lr_scales must be positive numbers, got {self.lr_scales!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1, got {self.steps} "
                             f"and {self.batch_size}")


_SEED_METRICS: dict[tuple, float | None] = {}


class TrainingTask(Task):
    """An optimizer task: train a flat model per seed, all seeds in one vectorized run.

    Subclasses give ``TIER_SETTINGS``, ``model()``, ``data()`` and ``score()``.
    Keyword overrides replace single settings of the chosen tier, e.g.
    ``DigitsMLP(steps=30)``; ``probe_checks=False`` turns off just that filter and
    ``time_limit=None`` lifts just the time limit.
    """

    family = "optimizer"
    TIER_SETTINGS: ClassVar[dict[str, Settings]] = {}

    def __init__(self, tier: str = "A", normalize: bool = True, **overrides: Any):
        if tier not in self.TIER_SETTINGS:
            raise ValueError(f"unknown tier {tier!r} (known tiers: {', '.join(TIERS)})")
        self.tier = tier
        self.normalize = normalize
        if "seeds" in overrides:
            overrides["seeds"] = tuple(int(s) for s in overrides["seeds"])
        if "lr_scales" in overrides:
            overrides["lr_scales"] = tuple(float(s) for s in overrides["lr_scales"])
        if overrides.get("filters") is None:
            overrides.pop("filters", None)
        one_filter = {}  # single filters, the tier's others kept
        probe_checks = overrides.pop("probe_checks", None)
        if probe_checks is not None:
            one_filter["probe_checks"] = bool(probe_checks)
        if "time_limit" in overrides:  # None: no limit
            one_filter["time_limit"] = overrides.pop("time_limit")
        self.settings = replace(self.TIER_SETTINGS[tier], **overrides)
        if one_filter:
            self.settings = replace(self.settings,
                                    filters=replace(self.settings.filters, **one_filter))

    def model(self) -> FlatModel:
        raise NotImplementedError

    def data(self) -> Split:
        raise NotImplementedError

    def score(self, metrics: dict[str, Any]) -> float:
        """The raw metric of one lr scale's metrics (means over seeds), higher is better."""
        raise NotImplementedError

    def metric(self, result: EvalResult) -> float:
        """The raw score of an ``ok`` result (its best scale), higher is better."""
        return self.score(result.metrics)

    def run(self, program: Program, settings: Settings | None = None) -> EvalResult:
        """Train without normalizing; fitness is the raw metric."""
        s = self.settings if settings is None else settings
        result = train(program, self.model(), self.data(), s.seeds, s.steps, s.batch_size,
                       s.filters, s.probe, lr_scales=s.lr_scales, score=self.score)
        if result.ok:
            result.fitness = self.metric(result)
            result.metrics["metric"] = result.fitness
        return result

    def seed_metric(self) -> float | None:
        """The AdamW seed's raw metric at these settings (None if the seed fails here)."""
        from ..programs.space import OptimizerSpace

        lenient = replace(self.settings, filters=replace(self.settings.filters,
                                                         progress_step=None, time_limit=None))
        key = (type(self).__name__, self.tier, lenient)  # data can depend on the tier
        if key not in _SEED_METRICS:
            with training_reference("now the AdamW seed that fitness is relative to"):
                seed = self.run(OptimizerSpace.seed(), lenient)
            _SEED_METRICS[key] = seed.fitness if seed.ok else None
        return _SEED_METRICS[key]

    def evaluate(self, program: Program) -> EvalResult:
        """Refuse a rule the probe shows cannot train (``static: ...``), else train it
        and normalize its metric by the seed's."""
        from ..programs.space import OptimizerSpace

        start = time.perf_counter()
        futile = (OptimizerSpace.futile_reason(program)
                  if self.settings.filters.probe_checks else None)
        if futile is not None:
            return EvalResult(None, "rejected", f"static: {futile}", {"steps": 0},
                              time.perf_counter() - start)
        result = self.run(program)
        if result.ok and self.normalize:
            reference = self.seed_metric()
            result.metrics["seed_metric"] = reference
            if reference is not None and reference > 0:
                result.fitness = result.fitness / reference
        result.seconds = time.perf_counter() - start
        return result


class DigitsMLP(TrainingTask):
    """Train an MLP (ReLU; tier A 64-128-128-10) on scikit-learn's digits with a cosine
    schedule fed to the program as ``lr``. Metric: mean over seeds of the validation
    accuracy (360 held-out images) after the last step, at the best lr scale."""

    name = "digits_mlp"
    TIER_SETTINGS = {
        "A": Settings(seeds=(0, 1), steps=200, batch_size=128, size=(128, 128),
                      filters=Filters(progress_step=50, time_limit=15.0),
                      lr_scales=TIER_A_LR_SCALES),
        "B": Settings(seeds=(0, 1, 2), steps=800, batch_size=256, size=(256, 256),
                      filters=Filters(progress_step=100, time_limit=150.0)),
        "C": Settings(seeds=(0, 1, 2, 3), steps=3000, batch_size=512, size=(512, 512),
                      filters=Filters(progress_step=200, time_limit=1500.0)),
    }

    def __init__(self, tier: str = "A", normalize: bool = True,
                 hidden: Sequence[int] | None = None, **overrides: Any):
        if hidden is not None:
            overrides["size"] = tuple(hidden)
        super().__init__(tier, normalize, **overrides)

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.settings.size

    def model(self) -> FlatModel:
        data = digits()
        return FlatMLP((data.features, *self.settings.size, data.classes))

    def data(self) -> Split:
        return digits()

    def score(self, metrics: dict[str, Any]) -> float:
        return metrics["val_accuracy"]


class DigitsCNN(TrainingTask):
    """Train a small CNN (3x3 convolutions with ReLU, one 2x2 max-pool, a linear
    classifier; tier A channels 6-12) on the digits as 8x8 images. Metric: mean
    validation accuracy at the best lr scale, as for ``digits_mlp``."""

    name = "digits_cnn"
    TIER_SETTINGS = {
        "A": Settings(seeds=(0, 1), steps=100, batch_size=32, size=(6, 12),
                      filters=Filters(progress_step=30, time_limit=15.0), probe=256,
                      lr_scales=TIER_A_LR_SCALES),
        "B": Settings(seeds=(0, 1, 2), steps=600, batch_size=128, size=(16, 32),
                      filters=Filters(progress_step=100, time_limit=150.0), probe=512),
        "C": Settings(seeds=(0, 1, 2, 3), steps=2000, batch_size=256, size=(32, 64, 64),
                      filters=Filters(progress_step=200, time_limit=1500.0), probe=512),
    }

    def model(self) -> FlatModel:
        return FlatCNN(side=8, channels=self.settings.size, classes=digits().classes)

    def data(self) -> Split:
        return digits()

    def score(self, metrics: dict[str, Any]) -> float:
        return metrics["val_accuracy"]


class CharLM(TrainingTask):
    """Train a tiny causal transformer on next-character prediction over Python's own
    standard library source (see ``data.char_windows``). ``size`` is (context, width,
    layers, heads). Metric: ``1 - val_loss / ln(vocab)`` (mean validation loss over
    seeds, at the best lr scale), the share of the uniform guess's loss that training
    removed (0 for a uniform model, 1 for a perfect one)."""

    name = "char_lm"
    TIER_SETTINGS = {
        "A": Settings(seeds=(0, 1), steps=80, batch_size=8, size=(32, 32, 1, 2),
                      filters=Filters(progress_step=25, time_limit=15.0), probe=64,
                      lr_scales=TIER_A_LR_SCALES),
        "B": Settings(seeds=(0, 1), steps=400, batch_size=32, size=(64, 48, 2, 4),
                      filters=Filters(progress_step=100, time_limit=150.0), probe=128),
        "C": Settings(seeds=(0, 1, 2), steps=1500, batch_size=64, size=(64, 64, 2, 4),
                      filters=Filters(progress_step=200, time_limit=1500.0), probe=256),
    }
    VAL_WINDOWS = {"A": 128, "B": 256, "C": 512}

    def model(self) -> FlatModel:
        from .transformer import FlatTransformer

        context, width, layers, heads = self.settings.size
        return FlatTransformer(VOCAB_SIZE, context, width, layers, heads)

    def data(self) -> Split:
        context = self.settings.size[0]
        train_windows = min(20_000, 900_000 // (context + 1))
        return char_windows(context, train_windows, self.VAL_WINDOWS.get(self.tier, 256))

    def score(self, metrics: dict[str, Any]) -> float:
        value = 1.0 - metrics["val_loss"] / math.log(VOCAB_SIZE)
        metrics["loss_reduction"] = value
        return value

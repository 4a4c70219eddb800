"""Score a layer program: train small CNNs on 8x8 digits with it at every norm site.

Checks run cheapest first and stop at the first that fires, each with its reason:
static validity ("failed"); a probe forward of one layer in train and eval mode that
gives NaN/Inf ("rejected: nan"); stability under stress (a tiny batch at a raised
learning rate: the largest gradient norm over a few steps is NaN or above a threshold,
"rejected: unstable"); then training per architecture with NaN checks every step and
the EvoNorms quality filter (validation accuracy below ``min_accuracy`` at
``quality_step``, "rejected: quality"). An architecture's score is its validation
accuracy, averaged over the tier's seeds (one training run each: a single run's accuracy
varies by about a point with the seed); fitness is the mean score over the
architectures; ``metrics["scores"]`` holds one score per architecture for the Pareto
tournament.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import nn

from ..programs.layer_module import ProgramLayer
from ..programs.layer_space import LayerSpace
from ..programs.program import Program
from .data import Split, digits
from .device import device
from .layer_models import ARCHITECTURES
from .progress import report_step
from .result import EvalResult
from .tasks import Task

SIDE = 8  # digits are 8x8


class _Reject(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LayerSettings:
    """The knobs of a layer task; tiers are presets of these."""

    architectures: tuple[str, ...] = ("resnet", "mobilenet", "plain")
    steps: int = 100
    batch_size: int = 64
    lr: float = 0.01  # Adam
    width: int = 8
    max_groups: int = 32
    seeds: tuple[int, ...] = (0,)  # a training run per seed and architecture, averaged
    quality_step: int | None = 100  # None: no quality filter
    min_accuracy: float = 0.2
    stress_batch: int = 2
    stress_lr_scale: float = 10.0
    stress_steps: int = 5
    max_grad_norm: float = 1e3
    time_limit: float | None = None  # seconds for the whole evaluation


LAYER_TIERS = {
    "A": LayerSettings(),
    "B": LayerSettings(steps=400, width=16, seeds=(0, 1)),
    "C": LayerSettings(steps=1500, width=32, seeds=(0, 1, 2)),
}


def _images(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, 1, SIDE, SIDE)


def accuracy(model: nn.Module, split: Split) -> float:
    """Validation accuracy in eval mode (running averages for batch aggregates)."""
    model.train(False)  # eval mode: batch aggregates use their running averages
    with torch.no_grad():
        logits = model(_images(split.x_val))
    model.train()
    if not torch.isfinite(logits).all():
        raise _Reject("nan: validation logits are NaN/Inf")
    return (logits.argmax(-1) == split.y_val).float().mean().item()


class LayerTask(Task):
    """A layer program's fitness: mean validation accuracy over several architectures."""

    family = "layer"

    def __init__(self, tier: str = "A", settings: LayerSettings | None = None,
                 name: str = "digits_layers", **overrides: Any):
        self.name, self.tier = name, tier
        self.settings = replace(settings or LAYER_TIERS[tier], **overrides)

    def _factory(self, program: Program):
        return partial(ProgramLayer, program, max_groups=self.settings.max_groups)

    def _model(self, arch: str, program: Program, seed: int) -> nn.Module:
        """The architecture with the program at its norm sites, initialized on the CPU
        (the same weights on every device), then moved to the process's device."""
        torch.manual_seed(seed)
        return ARCHITECTURES[arch](self._factory(program), width=self.settings.width).to(
            device())

    def evaluate(self, program: Program) -> EvalResult:
        start = time.perf_counter()
        reason = LayerSpace.invalid_reason(program)
        if reason:
            return EvalResult(None, "failed", f"static: {reason}")
        metrics: dict = {}
        try:
            with torch.random.fork_rng():
                self._probe(program)
                metrics["stress_grad_norm"] = self._stress(program)
                runs = {arch: [self._train(arch, program, seed, start, metrics)
                               for seed in self.settings.seeds]
                        for arch in self.settings.architectures}
                scores = {arch: sum(accs) / len(accs) for arch, accs in runs.items()}
        except _Reject as stop:
            return EvalResult(None, "rejected", stop.reason, metrics,
                              time.perf_counter() - start)
        except torch.OutOfMemoryError:
            raise  # the device's state, not the program's: see search.workers
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            return EvalResult(None, "failed", f"{type(error).__name__}: {error}"[:500],
                              metrics, time.perf_counter() - start)
        metrics["scores"] = scores
        if len(self.settings.seeds) > 1:
            metrics["seed_scores"] = runs
        fitness = sum(scores.values()) / len(scores)
        return EvalResult(fitness, "ok", None, metrics, time.perf_counter() - start)

    def _probe(self, program: Program) -> None:
        """One layer on a random NCHW batch, train then eval mode: outputs must be finite."""
        torch.manual_seed(self.settings.seeds[0])
        layer = ProgramLayer(program, 8, max_groups=self.settings.max_groups).to(device())
        x = torch.randn(4, 8, SIDE, SIDE).to(device())
        for mode in ("train", "eval"):
            layer.train(mode == "train")
            with torch.no_grad():
                if not torch.isfinite(layer(x)).all():
                    raise _Reject(f"nan: the layer's output is NaN/Inf on a probe batch "
                                  f"({mode} mode)")

    def _stress(self, program: Program) -> float:
        """Largest gradient norm over a few steps with a tiny batch and a raised lr."""
        s = self.settings
        split = digits().to(device())
        model = self._model(s.architectures[0], program, s.seeds[0])
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr * s.stress_lr_scale)
        generator = torch.Generator().manual_seed(s.seeds[0] + 1)
        largest = 0.0
        for step in range(s.stress_steps):
            index = torch.randint(len(split.y_train), (s.stress_batch,),
                                  generator=generator).to(device())
            loss = nn.functional.cross_entropy(model(_images(split.x_train[index])),
                                               split.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf).item()
            if not math.isfinite(norm) or norm > s.max_grad_norm:
                raise _Reject(f"unstable: gradient norm {norm:.3g} at stress step {step + 1} "
                              f"(batch {s.stress_batch}, lr x{s.stress_lr_scale:g}; "
                              f"limit {s.max_grad_norm:g})")
            largest = max(largest, norm)
            optimizer.step()
        return largest

    def _train(self, arch: str, program: Program, seed: int, start: float,
               metrics: dict) -> float:
        s = self.settings
        split = digits().to(device())
        model = self._model(arch, program, seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
        generator = torch.Generator().manual_seed(seed)  # minibatches drawn on the CPU
        acc = None  # the accuracy at the quality step, once reached
        for step in range(1, s.steps + 1):
            index = torch.randint(len(split.y_train), (s.batch_size,),
                                  generator=generator).to(device())
            loss = nn.functional.cross_entropy(model(_images(split.x_train[index])),
                                               split.y_train[index])
            if not torch.isfinite(loss):
                raise _Reject(f"nan: {arch} training loss is NaN/Inf at step {step}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step == s.quality_step:
                acc = accuracy(model, split)
                lowest = metrics.setdefault("quality_accuracy", {})  # lowest over seeds
                lowest[arch] = min(acc, lowest.get(arch, acc))
                if acc < s.min_accuracy:
                    raise _Reject(f"quality: {arch} validation accuracy {acc:.3f} < "
                                  f"{s.min_accuracy:g} after {step} steps")
            report_step(step, s.steps)
            if s.time_limit is not None and time.perf_counter() - start > s.time_limit:
                raise _Reject(f"time limit: {s.time_limit:g} s exceeded ({arch}, step {step})")
        # A quality check at the last step already measured the final accuracy.
        return acc if acc is not None and s.quality_step == s.steps else \
            accuracy(model, split)


def small_batch(tier: str = "A", **overrides: Any) -> LayerTask:
    """The layer task at batch size 8, where batch statistics are noisy (the EvoNorms
    paper's point); held out of the default search suite, for transfer."""
    return LayerTask(tier, replace(LAYER_TIERS[tier], batch_size=8),
                     name="digits_layers_small_batch", **overrides)


LAYER_TASKS: dict[str, Callable[..., LayerTask]] = {
    "digits_layers": LayerTask, "digits_layers_small_batch": small_batch}
"""Task name -> factory; ``LAYER_TASKS[name](tier, **settings)`` gives the task at that
tier, with those ``LayerSettings`` replaced."""

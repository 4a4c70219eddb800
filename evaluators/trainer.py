"""Train a flat model with a candidate update rule, stopping early on the cheap filters.

One vectorized run trains every (seed, learning-rate scale) pair as one row of the flat
parameters: rows are grouped by scale, and the program's ``lr`` input is the cosine
schedule times the row's scale. A scale's score is the mean over its seeds; the run's
score is the best scale's (ties go to the earlier scale). The program runs without its
dead code, and one that never reads ``lr`` trains a single scale that stands for all.

Most random programs are useless, and most useless ones show it within a few steps, so
the filters run every step (or once, at ``progress_step``). Checks, cheapest first: the
program raises or its outputs have an impossible shape ("failed", the whole candidate);
a row's loss or update is NaN/Inf ("nan"); a row's loss exceeds a multiple of its
initial loss or its update is huge ("diverged"); a row's training loss has not fallen
enough after ``progress_step`` steps ("no progress"); the run has used more than
``time_limit`` seconds ("time limit", the whole candidate; checked after every step, and
every step is bounded because programs longer than ``MAX_INSTRUCTIONS`` are refused).

A row that trips a numeric filter takes its scale out of the run (a scale's mean needs
all its seeds) and the other scales train on without it, so a good program is not
rejected for a learning rate that is too large for it. The candidate is rejected only
when every scale has failed, with the reason of the scale that lasted longest.

The initial loss and the progress check use the loss on the training split (or an
evenly spaced ``probe`` subset of it), not a minibatch loss, so minibatch noise cannot
decide whether a slow program counts as making progress.
"""

from __future__ import annotations

import ctypes
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import torch

from ..programs.analysis import instruction_reads_input_first, undefined_read_error
from ..programs.interpreter import CompiledProgram
from ..programs.ops import Layout
from ..programs.program import Program
from ..programs.space import OptimizerSpace
from .data import Split
from .device import device as default_device
from .progress import report_step
from .result import EvalResult

MAX_REASON_CHARS = 500
MAX_INSTRUCTIONS = 200  # bounds one step's cost: longer programs fail before training

Score = Callable[[dict[str, Any]], float]


class FlatModel(Protocol):
    """A model for R rows (seeds) at once whose parameters are one flat (R, N) tensor.

    A model may also offer ``loss_and_grad(theta, x, y) -> (losses, grad)``, a faster
    hand-written backward; the trainer uses autograd on ``losses`` otherwise.
    """

    @property
    def layout(self) -> Layout: ...

    def init(self, generators: Sequence[torch.Generator]) -> torch.Tensor: ...

    def losses(self, theta: torch.Tensor, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor: ...

    def evaluate(self, theta: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Filters:
    """Thresholds of the early-rejection filters; each fires per row (see the module)."""

    diverge_loss_ratio: float = 3.0  # minibatch loss above this times the initial loss
    max_update: float = 1e3  # largest |update| entry allowed
    progress_step: int | None = 50  # None: never check progress
    progress_ratio: float = 0.98  # training loss at progress_step must be below this x initial
    time_limit: float | None = None  # seconds for the whole run; None: no limit
    # Before training, refuse rules the fingerprint probe shows cannot train (tasks.py).
    probe_checks: bool = True


class ProgramOutputError(ValueError):
    """A program that reads an undefined name, never assigns ``update``, or whose
    outputs do not broadcast to the (R, N) parameter shape."""


class _Stop(Exception):
    """Internal: the whole candidate is done (failed, time limit, every scale out)."""

    def __init__(self, status: str, reason: str, step: int):
        super().__init__(reason)
        self.status, self.reason, self.step = status, reason, step


def cosine_schedule(step: int, steps: int) -> float:
    """1.0 at step 1, decaying along a half cosine towards 0 at the end of the run."""
    return 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps))


def batch_order(generator: torch.Generator, n: int, batch_size: int,
                steps: int) -> torch.Tensor:
    """(steps, batch_size) example indices: reshuffle every epoch, drop the ragged end."""
    if not 1 <= batch_size <= n or steps < 1:
        raise ValueError(f"a batch of {batch_size} from {n} training examples for {steps} "
                         "steps: the batch must be 1 to the number of examples and the "
                         "steps at least 1")
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    perms = [torch.randperm(n, generator=generator)[: per_epoch * batch_size]
             for _ in range(epochs)]
    return torch.cat(perms).view(-1, batch_size)[:steps]


@cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed big blocks for reuse (once per process).

    By default a tensor above 128 KiB-32 MiB gets fresh pages from mmap and returns them
    on free, so every step's (R, N) temporaries page-fault on first touch; at these
    sizes that costs more than the arithmetic (the AdamW program ran 3x slower, up to
    10x on a busy machine). The price: freed memory stays with the process, up to its
    peak use. Returns whether the setting took (False elsewhere than glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 512 << 20))


def _fit(value: torch.Tensor, shape: torch.Size, name: str) -> torch.Tensor:
    """Broadcast a program output to the parameter shape, or raise ProgramOutputError."""
    if not isinstance(value, torch.Tensor):
        raise ProgramOutputError(f"{name} is not a tensor")
    if value.shape == shape:
        return value
    try:
        if torch.broadcast_shapes(value.shape, shape) == shape:
            return value.expand(shape)
    except RuntimeError:
        pass
    raise ProgramOutputError(
        f"{name} has shape {tuple(value.shape)}, which does not broadcast to {tuple(shape)}")


def _error_reason(exc: Exception) -> str:
    return f"error: {type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]


def probe_split(data: Split, probe: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training examples the initial loss and the progress check use: all of them, or
    ``probe`` evenly spaced ones."""
    if probe is None or probe >= len(data.y_train):
        return data.x_train, data.y_train
    index = torch.linspace(0, len(data.y_train) - 1, probe).long().to(data.y_train.device)
    return data.x_train[index], data.y_train[index]


def compile_program(program: Program, layout: Layout, device: torch.device,
                    dtype: torch.dtype) -> tuple[CompiledProgram, bool]:
    """(the runnable program without dead code, whether it reads ``lr``); raises
    ProgramOutputError for programs that cannot run."""
    if len(program) > MAX_INSTRUCTIONS:
        raise ProgramOutputError(f"the program has {len(program)} instructions "
                                 f"(at most {MAX_INSTRUCTIONS})")
    error = undefined_read_error(program, OptimizerSpace.inputs)
    if error:
        raise ProgramOutputError(error)
    live = OptimizerSpace.prune(program)  # dead code cannot change the result
    reads_lr = instruction_reads_input_first(live, "lr") is not None
    return CompiledProgram(live, layout, device, dtype), reads_lr


def default_score(metrics: dict[str, Any]) -> float:
    return metrics["val_accuracy"]


def train(program: Program, model: FlatModel, data: Split, seeds: Sequence[int], steps: int,
          batch_size: int, filters: Filters = Filters(), probe: int | None = None,
          device: torch.device | None = None, lr_scales: Sequence[float] = (1.0,),
          score: Score = default_score) -> EvalResult:
    """Train one model per (seed, lr scale) pair, all in one batch; fitness = ``score`` of
    the best scale (default: mean validation accuracy over seeds).

    Each seed has its own CPU torch.Generator for init and minibatch order, shared by its
    rows at every scale, so results are bit-for-bit reproducible on CPU and a seed trains
    the same alone as in a batch. A program that never reads ``lr`` trains one scale and
    reports it for all. ``metrics`` hold the best scale's figures, its ``lr_scale`` and
    ``per_scale`` (one entry per scale: status, reason, metrics). Runs on ``device``
    (default: the process's device). ``seconds`` is left at 0 for the caller to fill in;
    the time limit counts from the start of this call.
    """
    start = time.perf_counter()
    keep_freed_memory()
    scales = tuple(float(s) for s in lr_scales)
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"lr_scales must be positive numbers, got {lr_scales!r}")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    device = default_device() if device is None else device
    data = data.to(device)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    with torch.no_grad():
        theta = model.init(generators).to(device)
        order = torch.stack([batch_order(g, len(data.y_train), batch_size, steps)
                             for g in generators]).to(device)
        x_probe, y_probe = probe_split(data, probe)
        initial, _ = model.evaluate(theta, x_probe, y_probe)
    metrics: dict[str, Any] = {"train_loss_initial": _mean(initial.tolist()), "steps": 0}
    deadline = None if filters.time_limit is None else start + filters.time_limit
    try:
        compiled, reads_lr = compile_program(program, model.layout, theta.device,
                                             theta.dtype)
    except Exception as exc:  # any failure to build the program is the program's
        metrics["stopped_at_step"] = 0
        return EvalResult(None, "failed", _error_reason(exc), metrics)
    run = _Run(compiled, model, data, theta, order, initial, filters,
               scales if reads_lr else scales[:1], (x_probe, y_probe), deadline, metrics)
    try:
        with torch.no_grad():  # the update runs without autograd; gradients enable it
            run.train()
    except _Stop as stop:
        metrics["stopped_at_step"] = stop.step
        if stop.status == "rejected" and stop.reason != "time limit":
            metrics["per_scale"] = run.per_scale(scales)
        return EvalResult(None, stop.status, stop.reason, metrics)
    run.finish(score)
    per_scale = run.per_scale(scales)
    metrics["per_scale"] = per_scale
    ok = [entry for entry in per_scale if entry["status"] == "ok"]
    if not ok:
        reason, step = run.last_failure()
        metrics["stopped_at_step"] = step
        return EvalResult(None, "rejected", reason, metrics)
    best = max(ok, key=lambda entry: entry["metric"])  # first of equals: the earlier scale
    metrics.update({k: v for k, v in best.items() if k not in ("status", "reason", "metric")})
    return EvalResult(best["metric"], "ok", None, metrics)


class _Run:
    """The training loop over the rows still alive; scales drop out as they fail."""

    def __init__(self, compiled: CompiledProgram, model: FlatModel, data: Split,
                 theta: torch.Tensor, order: torch.Tensor, initial: torch.Tensor,
                 filters: Filters, scales: tuple[float, ...],
                 probe: tuple[torch.Tensor, torch.Tensor], deadline: float | None,
                 metrics: dict[str, Any]):
        self.compiled, self.model, self.data = compiled, model, data
        self.filters, self.probe, self.deadline, self.metrics = filters, probe, deadline, metrics
        self.scales = scales
        n_seeds, steps = order.shape[0], order.shape[1]
        self.n_seeds, self.steps = n_seeds, steps
        k = len(scales)
        self.theta = theta.repeat(k, 1)  # rows grouped by scale: row = scale * S + seed
        self.batch_size = order.shape[2]
        # (steps, R * B): each step's example indices for every row, flat for index_select
        self.order = order.transpose(0, 1).repeat(1, k, 1).reshape(steps, -1)
        self.initial = initial.repeat(k)
        self.loss_limit = (self.initial * filters.diverge_loss_ratio).tolist()
        self.alive = list(range(k))  # scale indices, in row-block order
        self.outcome: dict[int, dict[str, Any]] = {}  # scale index -> its result so far
        lr = [[cosine_schedule(step, steps) * scale for scale in scales for _ in range(n_seeds)]
              for step in range(1, steps + 1)]
        self.lr = torch.tensor(lr, dtype=torch.float64).to(theta).unsqueeze(-1)  # (steps, R, 1)
        self.step_value = (torch.arange(1, steps + 1, dtype=theta.dtype, device=theta.device)
                           .view(steps, 1, 1).expand(steps, len(self.initial), 1))
        self.loss_and_grad = getattr(model, "loss_and_grad", None) or self._autograd

    def _autograd(self, theta: torch.Tensor, x: torch.Tensor,
                  y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            losses = self.model.losses(leaf, x, y)
            (grad,) = torch.autograd.grad(losses.sum(), leaf)
        return losses.detach(), grad

    def _fail(self, failed: dict[int, tuple[str, int]]) -> None:
        """Take the scales at these block positions out: position -> (reason, step)."""
        for position, (reason, step) in failed.items():
            self.outcome[self.alive[position]] = {"status": "rejected", "reason": reason,
                                                  "stopped_at_step": step}
        keep_positions = [p for p in range(len(self.alive)) if p not in failed]
        self.alive = [self.alive[p] for p in keep_positions]
        if not self.alive:
            reason, step = self.last_failure()
            raise _Stop("rejected", reason, step)
        s = self.n_seeds
        rows = torch.tensor([p * s + i for p in keep_positions for i in range(s)],
                            device=self.theta.device)
        self.theta = self.theta.index_select(0, rows)
        self.m = self.m.index_select(0, rows)
        self.v = self.v.index_select(0, rows)
        steps = self.order.shape[0]
        self.order = (self.order.view(steps, -1, self.batch_size).index_select(1, rows)
                      .reshape(steps, -1))
        self.lr = self.lr.index_select(1, rows)
        self.step_value = self.step_value[:, : len(rows)]
        self.initial = self.initial.index_select(0, rows)
        self.loss_limit = [self.loss_limit[r] for r in rows.tolist()]

    def _check_rows(self, verdicts: list[str | None], step: int) -> None:
        """Fail the scales with a failing row (first failing seed's reason)."""
        failed: dict[int, tuple[str, int]] = {}
        for row, verdict in enumerate(verdicts):
            position = row // self.n_seeds
            if verdict is not None and position not in failed:
                failed[position] = (verdict, step)
        if failed:
            self._fail(failed)

    def train(self) -> None:
        """The training loop; raises _Stop when the whole candidate is done."""
        filters, compiled = self.filters, self.compiled
        x_train, y_train = self.data.x_train, self.data.y_train
        x_shape, y_shape = x_train.shape[1:], y_train.shape[1:]
        self.m = torch.zeros_like(self.theta)
        self.v = torch.zeros_like(self.theta)
        max_update = filters.max_update
        for step in range(1, self.steps + 1):
            index = self.order[step - 1]
            rows = self.theta.shape[0]
            x = x_train.index_select(0, index).view(rows, -1, *x_shape)
            y = y_train.index_select(0, index).view(rows, -1, *y_shape)
            losses, grad = self.loss_and_grad(self.theta, x, y)
            theta = self.theta
            shape = theta.shape
            env = {"w": theta, "g": grad, "m": self.m, "v": self.v,
                   "lr": self.lr[step - 1], "step": self.step_value[step - 1]}
            try:
                out = compiled(env)
                if "update" not in out:
                    raise ProgramOutputError("the program never assigns 'update'")
                update = _fit(out["update"], shape, "update")
                m = _fit(out["m"], shape, "m")
                v = _fit(out["v"], shape, "v")
            except torch.OutOfMemoryError:
                raise  # the device's state, not the program's: see search.workers
            except Exception as exc:  # whatever the program does wrong
                raise _Stop("failed", _error_reason(exc), step) from None
            # One sync per step: each row's loss and update range (NaN propagates).
            checks = torch.stack((losses, update.amax(dim=1), update.amin(dim=1)))
            self.theta, self.m, self.v = theta - update, m, v
            loss_list, high, low = checks.tolist()
            verdicts = [_verdict(loss, limit, hi, lo, max_update) for loss, limit, hi, lo
                        in zip(loss_list, self.loss_limit, high, low, strict=True)]
            if any(verdicts):
                self._check_rows(verdicts, step)
            self.metrics["steps"] = step
            report_step(step, self.steps)
            if self.deadline is not None and time.perf_counter() > self.deadline:
                raise _Stop("rejected", "time limit", step)
            if step == filters.progress_step:
                self._progress(step)

    def _progress(self, step: int) -> None:
        now, _ = self.model.evaluate(self.theta, *self.probe)
        values = now.tolist()
        self._record("train_loss_at_progress_step", values)
        ratio = self.filters.progress_ratio
        verdicts = ["nan" if not math.isfinite(value) else
                    "no progress" if value >= initial * ratio else None
                    for value, initial in zip(values, self.initial.tolist(), strict=True)]
        if any(verdicts):
            self._check_rows(verdicts, step)

    def _record(self, name: str, values: list[float]) -> None:
        """Store per-seed values as their mean, for every live scale."""
        s = self.n_seeds
        for position, scale in enumerate(self.alive):
            self.outcome.setdefault(scale, {})[name] = _mean(values[position * s:
                                                                    (position + 1) * s])

    def finish(self, score: Score) -> None:
        """Final losses and accuracies of the live scales; non-finite ones fail as "nan"."""
        x_probe, y_probe = self.probe
        with torch.no_grad():
            train_loss, _ = self.model.evaluate(self.theta, x_probe, y_probe)
            val_loss, val_acc = self.model.evaluate(self.theta, self.data.x_val,
                                                    self.data.y_val)
        train_losses, val_losses, accuracies = (t.tolist() for t in
                                                (train_loss, val_loss, val_acc))
        s, step = self.n_seeds, self.metrics["steps"]
        for position, scale in enumerate(self.alive):
            part = slice(position * s, (position + 1) * s)
            entry = self.outcome.setdefault(scale, {})
            if not all(math.isfinite(x) for x in train_losses[part] + val_losses[part]):
                entry.update(status="rejected", reason="nan", stopped_at_step=step)
                continue
            entry.update(
                status="ok", reason=None,
                val_accuracy=_mean(accuracies[part]),
                val_loss=_mean(val_losses[part]),
                val_accuracy_per_seed=accuracies[part],
                val_loss_per_seed=val_losses[part],
                train_loss_final=_mean(train_losses[part]),
            )
            entry["metric"] = score(entry)

    def last_failure(self) -> tuple[str, int]:
        """(reason, step) of the scale that failed last; the earliest scale on ties."""
        failed = [o for _, o in sorted(self.outcome.items()) if o.get("status") == "rejected"]
        last = max(failed, key=lambda o: o["stopped_at_step"])
        return last["reason"], last["stopped_at_step"]

    def per_scale(self, scales: tuple[float, ...]) -> list[dict[str, Any]]:
        """One entry per requested scale; a program that ignores ``lr`` trained only the
        first and every scale reports its outcome."""
        entries = []
        for i, scale in enumerate(scales):
            outcome = self.outcome.get(i if len(self.scales) > 1 else 0, {})
            entries.append({"lr_scale": scale, "status": outcome.get("status", "rejected"),
                            "reason": outcome.get("reason"),
                            **{k: v for k, v in outcome.items() if k not in ("status",
                                                                             "reason")}})
        return entries


def _verdict(loss: float, limit: float, high: float, low: float,
             max_update: float) -> str | None:
    """A row's verdict for one step from its loss and its update's largest and smallest
    entries: None (fine), "nan" or "diverged"."""
    if not math.isfinite(loss):
        return "nan"
    if loss > limit:
        return "diverged"
    if not (math.isfinite(high) and math.isfinite(low)):
        return "nan"
    if max(high, -low) > max_update:
        return "diverged"
    return None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)

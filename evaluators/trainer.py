"""Train a flat model with a candidate update rule, stopping early on the cheap filters.

Most random programs are useless, and most useless ones show it within a few steps, so
the filters run every step (or once, at ``progress_step``) and training stops as soon
as one fires. Checks, cheapest first: the program raises or its outputs have an
impossible shape ("failed"); the loss or the update is NaN/Inf ("nan"); the loss
exceeds a multiple of the initial loss or the update is huge ("diverged"); the
training loss has not fallen enough after ``progress_step`` steps ("no progress"); the
run has used more than ``time_limit`` seconds ("time limit", checked after every step,
and every step is bounded because programs longer than ``MAX_INSTRUCTIONS`` are refused).

The initial loss and the progress check use the loss on the training split (or an
evenly spaced ``probe`` subset of it), not a minibatch loss, so minibatch noise cannot
decide whether a slow program counts as making progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..programs.analysis import undefined_reads
from ..programs.interpreter import CompiledProgram
from ..programs.ops import Layout
from ..programs.program import Program
from .data import Split
from .device import device as default_device
from .result import EvalResult

MAX_REASON_CHARS = 500
MAX_INSTRUCTIONS = 200  # bounds one step's cost: longer programs fail before training
INPUTS = ("w", "g", "m", "v", "lr", "step")  # what a program may read at every step


class FlatModel(Protocol):
    """A model for S seeds at once whose parameters are one flat (S, N) tensor."""

    @property
    def layout(self) -> Layout: ...

    def init(self, generators: Sequence[torch.Generator]) -> torch.Tensor: ...

    def losses(self, theta: torch.Tensor, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor: ...

    def evaluate(self, theta: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Filters:
    """Thresholds of the early-rejection filters; each fires if any seed trips it."""

    diverge_loss_ratio: float = 3.0  # minibatch loss above this times the initial loss
    max_update: float = 1e3  # largest |update| entry allowed
    progress_step: int | None = 50  # None: never check progress
    progress_ratio: float = 0.98  # training loss at progress_step must be below this x initial
    time_limit: float | None = None  # seconds for the whole run; None: no limit


class ProgramOutputError(ValueError):
    """A program that reads an undefined name, never assigns ``update``, or whose
    outputs do not broadcast to the (S, N) parameter shape."""


class _Stop(Exception):
    """Internal: a filter fired or the program failed; carries the verdict."""

    def __init__(self, status: str, reason: str, step: int):
        super().__init__(reason)
        self.status, self.reason, self.step = status, reason, step


def cosine_schedule(step: int, steps: int) -> float:
    """1.0 at step 1, decaying along a half cosine towards 0 at the end of the run."""
    return 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps))


def batch_order(generator: torch.Generator, n: int, batch_size: int,
                steps: int) -> torch.Tensor:
    """(steps, batch_size) example indices: reshuffle every epoch, drop the ragged end."""
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    perms = [torch.randperm(n, generator=generator)[: per_epoch * batch_size]
             for _ in range(epochs)]
    return torch.cat(perms).view(-1, batch_size)[:steps]


def _fit(value: torch.Tensor, shape: torch.Size, name: str) -> torch.Tensor:
    """Broadcast a program output to the parameter shape, or raise ProgramOutputError."""
    if not isinstance(value, torch.Tensor):
        raise ProgramOutputError(f"{name} is not a tensor")
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


def train(program: Program, model: FlatModel, data: Split, seeds: Sequence[int], steps: int,
          batch_size: int, filters: Filters = Filters(), probe: int | None = None,
          device: torch.device | None = None) -> EvalResult:
    """Train one model per seed, all in one batch; fitness = mean validation accuracy.

    Each seed has its own CPU torch.Generator for init and minibatch order, so results
    are bit-for-bit reproducible on CPU and a seed trains the same alone as in a batch.
    Runs on ``device`` (default: the process's device). ``seconds`` is left at 0 for
    the caller to fill in; the time limit counts from the start of this call.
    """
    start = time.perf_counter()
    device = default_device() if device is None else device
    data = data.to(device)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    with torch.no_grad():
        theta = model.init(generators).to(device)
        order = torch.stack([batch_order(g, len(data.y_train), batch_size, steps)
                             for g in generators]).to(device)
        x_probe, y_probe = probe_split(data, probe)
        initial, _ = model.evaluate(theta, x_probe, y_probe)
    initial_list = initial.tolist()
    metrics: dict = {"train_loss_initial": _mean(initial_list), "steps": 0}
    deadline = None if filters.time_limit is None else start + filters.time_limit
    try:
        theta = _run(program, model, data, theta, order, initial, filters, metrics,
                     (x_probe, y_probe), deadline)
    except _Stop as stop:
        metrics["stopped_at_step"] = stop.step
        return EvalResult(None, stop.status, stop.reason, metrics)
    with torch.no_grad():
        train_loss, _ = model.evaluate(theta, x_probe, y_probe)
        val_loss, val_acc = model.evaluate(theta, data.x_val, data.y_val)
    losses = train_loss.tolist() + val_loss.tolist()
    if not all(math.isfinite(loss) for loss in losses):
        metrics["stopped_at_step"] = metrics["steps"]
        return EvalResult(None, "rejected", "nan", metrics)
    accuracies = val_acc.tolist()
    metrics.update(
        val_accuracy=_mean(accuracies),
        val_loss=_mean(val_loss.tolist()),
        val_accuracy_per_seed=accuracies,
        val_loss_per_seed=val_loss.tolist(),
        train_loss_final=_mean(train_loss.tolist()),
    )
    return EvalResult(metrics["val_accuracy"], "ok", None, metrics)


def _run(program: Program, model: FlatModel, data: Split, theta: torch.Tensor,
         order: torch.Tensor, initial: torch.Tensor, filters: Filters, metrics: dict,
         probe: tuple[torch.Tensor, torch.Tensor], deadline: float | None) -> torch.Tensor:
    """The training loop; returns the final parameters or raises _Stop."""
    n_seeds, steps = order.shape[0], order.shape[1]
    shape = theta.shape
    try:
        if len(program) > MAX_INSTRUCTIONS:
            raise ProgramOutputError(f"the program has {len(program)} instructions "
                                     f"(at most {MAX_INSTRUCTIONS})")
        missing = undefined_reads(program, INPUTS)
        if missing:
            index, name = missing[0]
            raise ProgramOutputError(f"instruction {index + 1} reads {name!r} before it is "
                                     "defined")
        compiled = CompiledProgram(program, model.layout, theta.device, theta.dtype)
    except Exception as exc:  # any failure to build the program is the program's
        raise _Stop("failed", _error_reason(exc), 0) from None
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    loss_limit = (initial * filters.diverge_loss_ratio).tolist()
    for step in range(1, steps + 1):
        x = data.x_train[order[:, step - 1]]
        y = data.y_train[order[:, step - 1]]
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            losses = model.losses(leaf, x, y)
            (grad,) = torch.autograd.grad(losses.sum(), leaf)
        loss_list = losses.detach().tolist()
        if not all(math.isfinite(loss) for loss in loss_list):
            raise _Stop("rejected", "nan", step)
        if any(loss > limit for loss, limit in zip(loss_list, loss_limit, strict=True)):
            raise _Stop("rejected", "diverged", step)

        env = {"w": theta, "g": grad, "m": m, "v": v,
               "lr": theta.new_full((n_seeds, 1), cosine_schedule(step, steps)),
               "step": theta.new_full((n_seeds, 1), float(step))}
        with torch.no_grad():
            try:
                out = compiled(env)
                if "update" not in out:
                    raise ProgramOutputError("the program never assigns 'update'")
                update = _fit(out["update"], shape, "update")
                m = _fit(out["m"], shape, "m")
                v = _fit(out["v"], shape, "v")
            except Exception as exc:  # whatever the program does wrong
                raise _Stop("failed", _error_reason(exc), step) from None
            peak = update.abs().amax().item()  # NaN propagates; one sync per step
            if not math.isfinite(peak):
                raise _Stop("rejected", "nan", step)
            if peak > filters.max_update:
                raise _Stop("rejected", "diverged", step)
            theta = theta - update
        metrics["steps"] = step
        if deadline is not None and time.perf_counter() > deadline:
            raise _Stop("rejected", "time limit", step)

        if step == filters.progress_step:
            with torch.no_grad():
                now, _ = model.evaluate(theta, *probe)
            metrics["train_loss_at_progress_step"] = _mean(now.tolist())
            if not bool(torch.isfinite(now).all()):
                raise _Stop("rejected", "nan", step)
            if bool((now >= initial * filters.progress_ratio).any()):
                raise _Stop("rejected", "no progress", step)
    return theta


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)

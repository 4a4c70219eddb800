"""Evaluations per second: evoprog's batched evaluator against per-model training loops.

    python benchmarks/throughput.py [--seeds 8] [--repeats 3]

One evaluation = one optimizer trained on ``--seeds`` seeds of the digits_mlp tier-A
task (MLP 64-128-128-10, 200 steps, batch 128, cosine schedule) plus validation. Three
ways, side by side in one process with one thread:

* evoprog: ``DigitsMLP`` with all seeds in one vectorized run, the AdamW program
  interpreted once per step on the flat (S, N) parameters;
* torch.optim: what a user would write, an ``nn.Sequential`` MLP per seed and
  ``torch.optim.AdamW`` with a ``LambdaLR`` cosine schedule, seeds one after another;
* ProgramOptimizer: the same per-seed loop with the AdamW program run by
  ``evoprog.programs.optimizer.ProgramOptimizer``.

All use the same data, steps, batch size and minibatch order. The train-time share is
the fraction of evoprog's evaluation time spent in the training loop (not set-up, data,
initial or final loss evaluation, or reporting).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from evoprog.evaluators import trainer
from evoprog.evaluators.data import digits
from evoprog.evaluators.tasks import DigitsMLP
from evoprog.evaluators.trainer import batch_order, cosine_schedule
from evoprog.programs.known import KNOWN
from evoprog.programs.optimizer import ProgramOptimizer


def per_model_loop(seeds: int, steps: int, batch: int, hidden: tuple[int, ...],
                   make_optimizer: Callable) -> float:
    """Train one nn.Module per seed in turn; returns the mean validation accuracy."""
    data = digits()
    accuracies = []
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        sizes = (data.features, *hidden, data.classes)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        optimizer = make_optimizer(model.parameters())
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i: cosine_schedule(i + 1, steps))
        order = batch_order(gen, len(data.y_train), batch, steps)
        for step in range(steps):
            index = order[step]
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            accuracies.append((model(data.x_val).argmax(-1) == data.y_val).float().mean())
    return float(torch.stack(accuracies).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = DigitsMLP("A", normalize=False, seeds=range(args.seeds),
                     filters=trainer.Filters(progress_step=50))
    steps, batch, hidden = task.steps, task.batch_size, task.hidden
    program = KNOWN["adamw"].program()

    in_loop = [0.0]
    run = trainer._run

    def timed_run(*a, **k):
        start = time.perf_counter()
        try:
            return run(*a, **k)
        finally:
            in_loop[0] += time.perf_counter() - start

    def evoprog() -> float:
        return task.evaluate(program).metrics["val_accuracy"]

    def plain() -> float:
        return per_model_loop(args.seeds, steps, batch, hidden,
                              lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01))

    def programmed() -> float:
        return per_model_loop(args.seeds, steps, batch, hidden,
                              lambda p: ProgramOptimizer(p, program, lr=1.0))

    ways = {"evoprog (batched)": evoprog, "torch.optim AdamW loop": plain,
            "ProgramOptimizer loop": programmed}
    digits()
    evoprog()  # warm-up: imports, caches
    times: dict[str, list[float]] = {name: [] for name in ways}
    accuracy: dict[str, float] = {}
    evoprog_total = 0.0
    trainer._run = timed_run
    try:
        for _ in range(args.repeats):
            for name, way in ways.items():
                start = time.perf_counter()
                accuracy[name] = way()
                elapsed = time.perf_counter() - start
                times[name].append(elapsed)
                if way is evoprog:
                    evoprog_total += elapsed
    finally:
        trainer._run = run
    print(f"digits_mlp tier A, {args.seeds} seeds per evaluation, {steps} steps, batch "
          f"{batch}, median of {args.repeats}, 1 thread")
    print("| way | seconds per evaluation | evaluations/s | val accuracy |")
    print("|---|---|---|---|")
    for name in ways:
        seconds = statistics.median(times[name])
        print(f"| {name} | {seconds:.3f} | {1 / seconds:.2f} | {accuracy[name]:.4f} |")
    ratio = statistics.median(times["torch.optim AdamW loop"]) / statistics.median(
        times["evoprog (batched)"])
    print(f"throughput_ratio: {ratio:.2f}")
    print(f"train_time_share: {in_loop[0] / evoprog_total:.3f}")


if __name__ == "__main__":
    main()

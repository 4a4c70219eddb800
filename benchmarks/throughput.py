"""Evaluations per second: evoprog's batched evaluator against per-model training loops.

    python benchmarks/throughput.py [--seeds 2] [--scales 1,3,10] [--repeats 3] [--no-machine]

One evaluation = the AdamW program scored on the digits_mlp tier-A task (MLP
64-128-128-10, 200 steps, batch 128, cosine schedule): every seed trained at every
learning-rate scale, then validated; the score is the best scale's mean validation
accuracy over seeds. ``--seeds`` and ``--scales`` default to the tier's settings. Three
ways, side by side in one process with one thread:

* evoprog: ``DigitsMLP`` with all (seed, scale) rows in one vectorized run, the AdamW
  program interpreted once per step on the flat (rows, N) parameters;
* torch.optim: what a user would write, an ``nn.Sequential`` MLP per (seed, scale) and
  ``torch.optim.AdamW(lr=1e-3 x scale)`` with a ``LambdaLR`` cosine schedule, one model
  after another;
* ProgramOptimizer: the same per-model loop with the AdamW program run by
  ``evoprog.programs.optimizer.ProgramOptimizer``.

All use the same initial weights, data, steps, batch size, minibatch order and score, so
the three should reach (nearly) the same accuracy. The train-time share is the fraction
of evoprog's evaluation time spent in the training loop (not set-up, data, initial or
final loss evaluation, or reporting).

Then the whole machine, all cores busy (skip with ``--no-machine``), in rounds that
alternate the ways:

* evoprog as a search runs it: one local Ray worker per core, one torch thread each,
  every evaluation a Ray task that also normalizes against the seed (computed once per
  worker in the warm-up, as in any search after its first evaluations);
* the same torch.optim loop in one process with torch's default thread count, as a user
  runs it;
* that loop in one process per core, one thread each: a user who also runs one
  evaluation per core.

``throughput_ratio`` compares the first table's one-thread rows;
``machine_throughput_ratio`` evoprog on all cores against the user's loop as run, and
``machine_ratio_vs_parallel_loops`` against one loop per core.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from evoprog.evaluators import trainer
from evoprog.evaluators.data import digits
from evoprog.evaluators.mlp import FlatMLP
from evoprog.evaluators.tasks import DigitsMLP
from evoprog.evaluators.trainer import batch_order, cosine_schedule
from evoprog.programs.known import KNOWN
from evoprog.programs.optimizer import ProgramOptimizer

DEFAULT_THREADS = torch.get_num_threads()
"""Torch's own thread count for this machine, read before anything changes it."""


def per_model_loop(seeds: int, scales: tuple[float, ...], steps: int, batch: int,
                   hidden: tuple[int, ...], make_optimizer: Callable) -> float:
    """Train one nn.Module per (seed, scale) in turn; returns the best scale's mean
    validation accuracy. ``make_optimizer(parameters, scale)``."""
    data = digits()
    sizes = (data.features, *hidden, data.classes)
    best = -1.0
    for scale in scales:
        accuracies = []
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(seed)
            flat = FlatMLP(sizes)
            theta = flat.init([gen])  # the evaluator's init, then its minibatch order
            order = batch_order(gen, len(data.y_train), batch, steps)
            layers: list[nn.Module] = []
            for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
                layers.append(nn.Linear(a, b))
                if i < len(sizes) - 2:
                    layers.append(nn.ReLU())
            model = nn.Sequential(*layers)
            with torch.no_grad():
                for p, value in zip(model.parameters(), flat.layout.segments(theta),
                                    strict=True):
                    p.copy_(value[0])
            optimizer = make_optimizer(model.parameters(), scale)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda i: cosine_schedule(i + 1, steps))
            for step in range(steps):
                index = order[step]
                loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            with torch.no_grad():
                accuracies.append(float((model(data.x_val).argmax(-1) == data.y_val)
                                        .float().mean()))
        best = max(best, sum(accuracies) / len(accuracies))
    return best


def user_evaluation(seeds: int, scales: tuple[float, ...], steps: int, batch: int,
                    hidden: tuple[int, ...], lr: float) -> float:
    """One evaluation by the user's torch.optim AdamW loop (a top-level function, so that
    worker processes can run it)."""
    return per_model_loop(seeds, scales, steps, batch, hidden,
                          lambda p, s: torch.optim.AdamW(p, lr=lr * s, weight_decay=0.01))


def _user_evaluation_of(settings: tuple) -> float:
    return user_evaluation(*settings)


def _one_thread() -> None:
    torch.set_num_threads(1)


def whole_machine(cores: int, rounds: int, per_core: int, seeds: int,
                  scales: tuple[float, ...], steps: int, batch: int,
                  hidden: tuple[int, ...], lr: float,
                  ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Evaluations per second of each way with all ``cores`` busy, one figure per round
    (each round runs ``per_core`` evaluations per core; the user's single loop:
    per_core), and each way's last validation accuracy."""
    import ray

    from evoprog.search.workers import start_ray

    @ray.remote
    def evoprog_evaluation(text: str) -> float:
        from evoprog.evaluators import evaluate
        from evoprog.programs.program import parse_program

        torch.set_num_threads(1)
        result = evaluate(parse_program(text), "digits_mlp", "A", seeds=range(seeds),
                          lr_scales=scales)
        return result.metrics["val_accuracy"]

    text = str(KNOWN["adamw"].program())
    user = (seeds, scales, steps, batch, hidden, lr)
    start_ray(num_cpus=cores)
    pool = concurrent.futures.ProcessPoolExecutor(
        cores, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread)
    rates: dict[str, list[float]] = {"evoprog": [], "loop": [], "parallel": []}
    accuracy: dict[str, float] = {}
    try:
        # warm-up: every worker and process imports torch, loads the data, and (evoprog)
        # scores the seed it normalizes against
        ray.get([evoprog_evaluation.remote(text) for _ in range(2 * cores)])
        list(pool.map(_user_evaluation_of, [user] * (2 * cores)))
        for _ in range(rounds):
            n = per_core * cores
            start = time.perf_counter()
            values = ray.get([evoprog_evaluation.remote(text) for _ in range(n)])
            rates["evoprog"].append(n / (time.perf_counter() - start))
            accuracy["evoprog"] = values[-1]

            torch.set_num_threads(DEFAULT_THREADS)
            try:
                start = time.perf_counter()
                for _ in range(per_core):
                    accuracy["loop"] = user_evaluation(*user)
                rates["loop"].append(per_core / (time.perf_counter() - start))
            finally:
                torch.set_num_threads(1)

            start = time.perf_counter()
            values = list(pool.map(_user_evaluation_of, [user] * n))
            rates["parallel"].append(n / (time.perf_counter() - start))
            accuracy["parallel"] = values[-1]
    finally:
        pool.shutdown()
        ray.shutdown()
    return rates, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    tier = DigitsMLP("A").settings
    parser.add_argument("--seeds", type=int, default=len(tier.seeds))
    parser.add_argument("--scales", default=",".join(f"{s:g}" for s in tier.lr_scales))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--machine", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the whole machine, all cores busy")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--per-core", type=int, default=2,
                        help="evaluations per core in each whole-machine round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scales = tuple(float(s) for s in args.scales.split(","))
    task = DigitsMLP("A", normalize=False, seeds=range(args.seeds), lr_scales=scales,
                     filters=trainer.Filters(progress_step=tier.filters.progress_step))
    steps, batch, hidden = task.settings.steps, task.settings.batch_size, task.hidden
    program = KNOWN["adamw"].program()
    lr = KNOWN["adamw"].defaults["lr"]

    in_loop = [0.0]
    run = trainer._Run.train

    def timed_run(self):
        start = time.perf_counter()
        try:
            return run(self)
        finally:
            in_loop[0] += time.perf_counter() - start

    def evoprog() -> float:
        return task.evaluate(program).metrics["val_accuracy"]

    def plain() -> float:
        return per_model_loop(args.seeds, scales, steps, batch, hidden,
                              lambda p, s: torch.optim.AdamW(p, lr=lr * s, weight_decay=0.01))

    def programmed() -> float:
        return per_model_loop(args.seeds, scales, steps, batch, hidden,
                              lambda p, s: ProgramOptimizer(p, program, lr=s))

    ways = {"evoprog (batched)": evoprog, "torch.optim AdamW loop": plain,
            "ProgramOptimizer loop": programmed}
    digits()
    evoprog()  # warm-up: imports, caches
    times: dict[str, list[float]] = {name: [] for name in ways}
    accuracy: dict[str, float] = {}
    evoprog_total = 0.0
    trainer._Run.train = timed_run
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
        trainer._Run.train = run
    rows = args.seeds * len(scales)
    print(f"digits_mlp tier A, {args.seeds} seeds x lr scales {args.scales} = {rows} models "
          f"per evaluation, {steps} steps, batch {batch}, median of {args.repeats}, 1 thread")
    print("| way | seconds per evaluation | evaluations/s | best-scale val accuracy |")
    print("|---|---|---|---|")
    for name in ways:
        seconds = statistics.median(times[name])
        print(f"| {name} | {seconds:.3f} | {1 / seconds:.2f} | {accuracy[name]:.4f} |")
    ratio = statistics.median(times["torch.optim AdamW loop"]) / statistics.median(
        times["evoprog (batched)"])
    if args.machine:
        machine, machine_accuracy = whole_machine(args.cores, args.repeats, args.per_core,
                                                  args.seeds, scales, steps, batch, hidden,
                                                  lr)
        print()
        print(f"whole machine: {args.cores} cores, {args.repeats} rounds of "
              f"{args.per_core} evaluations per core, median evaluations/s over the rounds")
        print("| way | processes x threads | evaluations/s per round | median | "
              "best-scale val accuracy |")
        print("|---|---|---|---|---|")
        labels = {"evoprog": ("evoprog, one Ray worker per core", f"{args.cores} x 1"),
                  "loop": ("torch.optim AdamW loop, as run", f"1 x {DEFAULT_THREADS}"),
                  "parallel": ("torch.optim AdamW loop per core", f"{args.cores} x 1")}
        median = {way: statistics.median(machine[way]) for way in labels}
        for way, (label, shape) in labels.items():
            each = ", ".join(f"{rate:.2f}" for rate in machine[way])
            print(f"| {label} | {shape} | {each} | {median[way]:.2f} | "
                  f"{machine_accuracy[way]:.4f} |")
        print(f"machine_throughput_ratio: {median['evoprog'] / median['loop']:.2f}")
        print(f"machine_ratio_vs_parallel_loops: "
              f"{median['evoprog'] / median['parallel']:.2f}")
    print(f"throughput_ratio: {ratio:.2f}")
    print(f"train_time_share: {in_loop[0] / evoprog_total:.3f}")


if __name__ == "__main__":
    main()

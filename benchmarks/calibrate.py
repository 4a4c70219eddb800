"""Every known optimizer on every task and tier, each at its best learning-rate scale.

    python benchmarks/calibrate.py [--tiers AB] [--tasks digits_mlp,...]
                                   [--optimizers adamw,lion,...] [--scales 0.3,1,3,10]

For each (task, tier, optimizer) the known program runs at ``lr = scale x default`` for
every scale; the row shows the scale with the best raw metric (mean over the tier's
seeds), that mean and its spread (standard deviation over seeds). Rejected runs count as
-inf. One thread, CPU unless a GPU is present. Tier C is slow: ask for it with --tiers.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from evoprog.evaluators import TASKS, EvalResult
from evoprog.evaluators.data import VOCAB_SIZE
from evoprog.programs.known import KNOWN

OPTIMIZERS = [k for k, p in KNOWN.items() if p.family == "optimizer"]


def per_seed(task_name: str, result: EvalResult) -> list[float]:
    """The raw metric of each seed."""
    if task_name == "char_lm":
        return [1.0 - loss / math.log(VOCAB_SIZE) for loss in result.metrics["val_loss_per_seed"]]
    return list(result.metrics["val_accuracy_per_seed"])


def best_of(task_name: str, tier: str, name: str, scales: list[float]) -> dict:
    known = KNOWN[name]
    best: dict = {"scale": None, "mean": -math.inf, "std": math.nan, "status": "none"}
    for scale in scales:
        task = TASKS[task_name](tier, normalize=False)
        result = task.evaluate(known.program(lr=known.defaults["lr"] * scale))
        if not result.ok:
            if best["scale"] is None:
                best["status"] = result.reason
            continue
        values = per_seed(task_name, result)
        mean = statistics.fmean(values)
        if mean > best["mean"]:
            std = statistics.pstdev(values)
            best = {"scale": scale, "mean": mean, "std": std, "status": "ok"}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiers", default="AB")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--scales", default="0.3,1,3,10")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scales = [float(s) for s in args.scales.split(",")]
    print("| task | tier | optimizer | best lr scale | metric mean | spread (sd) | note |")
    print("|---|---|---|---|---|---|---|")
    for tier in args.tiers:
        for task_name in args.tasks.split(","):
            start = time.perf_counter()
            for name in args.optimizers.split(","):
                row = best_of(task_name, tier, name, scales)
                scale = "-" if row["scale"] is None else f"{row['scale']:g}"
                print(f"| {task_name} | {tier} | {name} | {scale} | {row['mean']:.4f} | "
                      f"{row['std']:.4f} | {row['status']} |", flush=True)
            print(f"<!-- {task_name} tier {tier}: {time.perf_counter() - start:.0f} s -->",
                  flush=True)


if __name__ == "__main__":
    main()

"""Known optimizers on every task and tier: the best learning rate, and what the
batched ``lr_scales`` setting makes of a fixed learning-rate constant.

    python benchmarks/calibrate.py [--tiers AB] [--tasks digits_mlp,...]
                                   [--optimizers adamw,lion,...] [--scales 0.3,1,3,10]
    python benchmarks/calibrate.py --tiers A --lr 1e-3 --lr-scales "1;1,3,10;0.3,1,3,10"
                                   [--optimizers adamw_paper,lion,signum] [--seeds 2]
                                   [--repeats 3]

Grid mode (no ``--lr-scales``): each known program runs at ``lr = scale x its default``,
one evaluation per scale, and the row shows the scale with the best raw metric (mean over
the tier's seeds), that mean and its spread (standard deviation over seeds).

Batched mode (``--lr-scales``, sets separated by ";"): each known program is written with
the learning-rate constant ``--lr`` (default 1e-3, the AdamW seed's ``lr * 0.001``, as a
program evolved from the seed would carry it) and evaluated once per set with the task's
``lr_scales`` setting, as the search would score it: best scale, metric mean and spread
at that scale, every scale's mean, fitness against the AdamW seed at the same scales, and
seconds per evaluation (median of ``--repeats``; the seed's reference is computed
beforehand and not counted).

Rejected runs count as -inf. One thread, CPU unless a GPU is present. Tier C is slow:
ask for it with --tiers.
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


def per_seed(task_name: str, metrics: dict) -> list[float]:
    """The raw metric of each seed."""
    if task_name == "char_lm":
        return [1.0 - loss / math.log(VOCAB_SIZE) for loss in metrics["val_loss_per_seed"]]
    return list(metrics["val_accuracy_per_seed"])


def best_of(task_name: str, tier: str, name: str, scales: list[float]) -> dict:
    known = KNOWN[name]
    best: dict = {"scale": None, "mean": -math.inf, "std": math.nan, "status": "none"}
    for scale in scales:
        task = TASKS[task_name](tier, normalize=False, lr_scales=(1.0,))
        result = task.evaluate(known.program(lr=known.defaults["lr"] * scale))
        if not result.ok:
            if best["scale"] is None:
                best["status"] = result.reason
            continue
        values = per_seed(task_name, result.metrics)
        mean = statistics.fmean(values)
        if mean > best["mean"]:
            std = statistics.pstdev(values)
            best = {"scale": scale, "mean": mean, "std": std, "status": "ok"}
    return best


def grid(args: argparse.Namespace) -> None:
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


def batched_row(result: EvalResult, task_name: str) -> tuple[str, str, str, str]:
    """(best scale, mean, spread, per-scale means) of one batched evaluation."""
    per_scale = []
    for entry in result.metrics.get("per_scale", []):
        value = f"{entry['metric']:.4f}" if entry["status"] == "ok" else entry["reason"]
        per_scale.append(f"{entry['lr_scale']:g}: {value}")
    if not result.ok:
        return "-", "-inf", "nan", ", ".join(per_scale)
    values = per_seed(task_name, result.metrics)
    return (f"{result.metrics['lr_scale']:g}", f"{result.metrics['metric']:.4f}",
            f"{statistics.pstdev(values):.4f}", ", ".join(per_scale))


def batched(args: argparse.Namespace) -> None:
    sets = [tuple(float(s) for s in part.split(",")) for part in args.lr_scales.split(";")]
    print("| task | tier | seeds | lr_scales | optimizer | best scale | metric mean | "
          "spread (sd) | fitness | s/eval | per-scale means |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tier in args.tiers:
        for task_name in args.tasks.split(","):
            for scales in sets:
                overrides: dict = {"lr_scales": scales}
                if args.seeds:
                    overrides["seeds"] = range(args.seeds)
                task = TASKS[task_name](tier, **overrides)
                task.seed_metric()  # cached: not part of the timed evaluations
                for name in args.optimizers.split(","):
                    program = KNOWN[name].program(lr=args.lr)
                    times = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        result = task.evaluate(program)
                        times.append(time.perf_counter() - start)
                    seconds = statistics.median(times)
                    scale, mean, spread, per_scale = batched_row(result, task_name)
                    fitness = f"{result.fitness:.4f}" if result.ok else result.reason
                    print(f"| {task_name} | {tier} | {len(task.settings.seeds)} | "
                          f"{','.join(f'{s:g}' for s in scales)} | {name} | {scale} | {mean} | "
                          f"{spread} | {fitness} | {seconds:.2f} | {per_scale} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiers", default="AB")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--optimizers", default=None)
    parser.add_argument("--scales", default="0.3,1,3,10", help="grid mode: lr multiples")
    parser.add_argument("--lr-scales", default=None,
                        help='batched mode: ";"-separated lr_scales settings, e.g. "1;1,3,10"')
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="batched mode: the programs' learning-rate constant")
    parser.add_argument("--seeds", type=int, default=None,
                        help="batched mode: seeds 0..n-1 instead of the tier's")
    parser.add_argument("--repeats", type=int, default=1,
                        help="batched mode: evaluations per row; s/eval is their median")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.lr_scales is None:
        args.optimizers = args.optimizers or ",".join(OPTIMIZERS)
        grid(args)
    else:
        args.optimizers = args.optimizers or "adamw_paper,lion,signum"
        batched(args)


if __name__ == "__main__":
    main()

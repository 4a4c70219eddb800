"""Evaluations per second on this machine's GPU against its CPU cores, per task and tier.

    python benchmarks/devices.py [--tasks digits_mlp,digits_cnn,char_lm,digits_layers]
                                 [--tiers A,B] [--evals 32] [--shares 4,8,16]

For each task and tier, the same programs (known optimizers, or known layers for a
layer task, cycled to ``--evals`` evaluations) are evaluated through Ray as a search
evaluates them (a task per evaluation, one torch thread each, results as plain values):

* cpu: one evaluation per CPU core, on the CPU (``EVOPROG_DEVICE=cpu``);
* gpu/K: on the GPU, K evaluations sharing each GPU (``num_gpus=1/K``), for each K in
  ``--shares`` that the CPUs can feed (one core per evaluation).

Each way first runs one untimed round (every worker process starts, scores the seed
reference once and, on the GPU, makes its CUDA context), then the timed evaluations;
evaluations/s = timed evaluations / wall seconds. The ratio column is each way's rate
over the CPU's. Without a GPU only the CPU rows are measured. The last lines are
``evals_per_s <way> <task>@<tier>: <rate>``, one per row.
"""

from __future__ import annotations

import argparse
import os
import time

import ray

from evoprog.evaluators import task_family
from evoprog.programs.known import get_known
from evoprog.programs.program import format_program
from evoprog.search.workers import start_ray

PROGRAMS = {"optimizer": ("adamw_paper", "adamw", "lion", "signum", "adam", "momentum"),
            "layer": ("bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0")}


@ray.remote(max_retries=0)
def evaluate(text: str, task: str, tier: str) -> dict:
    """One evaluation as the search's worker runs it, plus the device it ran on."""
    import torch

    from evoprog.evaluators.device import device
    from evoprog.evaluators.suite import evaluate_suite
    from evoprog.programs.program import parse_program

    torch.set_num_threads(1)
    result, _ = evaluate_suite(parse_program(text), [task], tier)
    return {"status": result.status, "seconds": result.seconds, "device": str(device())}


def measure(texts: list[str], task: str, tier: str, slots: int, gpus: float) -> dict:
    """Evaluations/s of ``texts`` with ``slots`` in flight, each with ``gpus`` of a GPU
    (0: on the CPU)."""
    env = {"EVOPROG_DEVICE": "cpu"} if gpus == 0 else {}
    remote = evaluate.options(num_cpus=1, num_gpus=gpus, runtime_env={"env_vars": env})
    warm = [remote.remote(texts[i % len(texts)], task, tier) for i in range(slots)]
    devices = {r["device"] for r in ray.get(warm)}
    start = time.perf_counter()
    results = ray.get([remote.remote(text, task, tier) for text in texts])
    wall = time.perf_counter() - start
    devices |= {r["device"] for r in results}
    return {"rate": len(texts) / wall, "wall": wall, "devices": sorted(devices),
            "eval_s": sum(r["seconds"] for r in results) / len(results),
            "ok": sum(r["status"] == "ok" for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits_mlp,digits_cnn,char_lm,digits_layers")
    parser.add_argument("--tiers", default="A,B")
    parser.add_argument("--evals", type=int, default=32, help="timed evaluations per way")
    parser.add_argument("--shares", default="4,8,16",
                        help="evaluations sharing one GPU, one way each")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = start_ray()
    cpus, gpus = cluster["cpus"], int(cluster["gpus"])
    ways = [("cpu", cpus, 0.0)]
    for share in (int(k) for k in args.shares.split(",")):
        if gpus and share * gpus <= cpus:
            ways.append((f"gpu/{share}", share * gpus, 1.0 / share))
    print(f"{cpus} CPUs, {gpus} GPUs; {args.evals} timed evaluations per way, one torch "
          f"thread each; programs: "
          + "; ".join(f"{family}s {', '.join(names)}" for family, names in PROGRAMS.items()))
    if not gpus:
        print("no GPU: only the CPU is measured")
    print(f"{'task@tier':<16} {'way':<7} {'in flight':>9} {'seconds':>8} {'evals/s':>8} "
          f"{'s/eval':>7} {'ratio':>6} {'ok':>4}  device")
    summary = []
    for tier in args.tiers.split(","):
        for task in args.tasks.split(","):
            names = PROGRAMS[task_family(task)]
            texts = [format_program(get_known(names[i % len(names)]).program())
                     for i in range(args.evals)]
            cpu_rate = None
            for way, slots, share in ways:
                m = measure(texts, task, tier, slots, share)
                cpu_rate = cpu_rate or m["rate"]
                print(f"{f'{task}@{tier}':<16} {way:<7} {slots:>9} {m['wall']:>8.1f} "
                      f"{m['rate']:>8.2f} {m['eval_s']:>7.2f} {m['rate'] / cpu_rate:>6.2f} "
                      f"{m['ok']:>4}  {','.join(m['devices'])}", flush=True)
                summary.append(f"evals_per_s {way} {task}@{tier}: {m['rate']:.2f}")
    print()
    print("\n".join(summary))
    ray.shutdown()


if __name__ == "__main__":
    main()

"""How far one search driver scales: evaluations per second with 1 and 2 local Ray
workers on the digits_mlp task, and the driver's sustained results per second when
evaluations return at once (so only the driver's own work is measured: mutate, analyse,
record, submit, collect).

    python benchmarks/scaling.py [--budget 160] [--parallel 16] [--pairs 3]
                                 [--driver-budget 2000] [--host-evals 6] [--profile]

Each worker count runs in its own process with ``ray.init(num_cpus=N)`` and the same
search: budget, seed and ``--parallel`` (so both evaluate the same programs). Before timing
starts every worker is warmed up by scoring the seed program once: torch and the data are
loaded and the seed's reference score, which each worker process computes once for
itself, is cached, as it is in any search after its first few evaluations. ``--parallel`` is
generous (births are applied in order, so a shallow queue idles workers behind one slow
evaluation) and the budget large enough that the lone seed evaluation at the start and
the drain at the end weigh little. The machine's speed drifts by tens of percent within
minutes on a shared host, so the 1- and 2-worker searches run in alternating pairs (and
the driver alone after each pair) and the figures are medians over the pairs.

After each pair, the host's own ceiling without Ray or a driver: the seed program's
evaluation timed in one plain process alone, then in two side by side. Two processes
that slow each other down cap what two workers can give at 2 x alone / side by side,
whatever the search does.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _search(store, budget: int, parallel: int, seed: int = 0):
    from evoprog.search.driver import Search, SearchConfig

    config = SearchConfig(budget=budget, population=20, tournament=5, parallel=parallel,
                          seed=seed)
    return Search.start(store, config)


def _evaluate_seed() -> None:
    """The AdamW seed scored on the default optimizer task at tier A, on one torch
    thread as the search's evaluations run."""
    import torch

    from evoprog.evaluators import DEFAULT_TASKS
    from evoprog.evaluators.suite import evaluate_suite
    from evoprog.programs.space import OptimizerSpace

    torch.set_num_threads(1)
    evaluate_suite(OptimizerSpace.seed(), DEFAULT_TASKS["optimizer"], "A")


def measure_workers(workers: int, budget: int, parallel: int) -> dict:
    """One search on ``workers`` local CPUs; runs in a fresh process."""
    import ray

    from evoprog.search.workers import start_ray
    from evoprog.store import Store

    start_ray(num_cpus=workers)

    @ray.remote(num_cpus=1)
    def warm() -> int:
        # Holds the CPU for a second or two, so each warm-up lands in its own worker.
        _evaluate_seed()
        return os.getpid()

    pids = ray.get([warm.remote() for _ in range(workers)])
    assert len(set(pids)) == workers, f"warm-up reached workers {pids}"
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "w.db") as store:
        search = _search(store, budget, parallel)
        start = time.perf_counter()
        search.run()
        seconds = time.perf_counter() - start
        rows = store.individuals(search.run_id)
    evaluated = [r for r in rows if not r["cache_hit"]]
    return {"workers": workers, "seconds": seconds, "evaluated": len(evaluated),
            "eval_s": sum(r["eval_seconds"] for r in evaluated) / max(len(evaluated), 1)}


def measure_driver(budget: int, parallel: int, profile: bool) -> dict:
    """The driver loop with an evaluation that returns a fixed-shape result at once."""
    import hashlib

    import ray

    import evoprog.search.driver as driver
    from evoprog.search.workers import start_ray
    from evoprog.store import Store

    start_ray(num_cpus=2)

    @ray.remote(num_cpus=1)
    def instant(program_text: str, tasks: list[str], tier: str = "A") -> dict:
        # Deterministic fitness from the text, so selection still has something to do.
        digest = hashlib.sha256(program_text.encode()).digest()
        fitness = int.from_bytes(digest[:4], "big") / 2**32
        return {"result": {"status": "ok", "reason": None, "fitness": fitness,
                           "metrics": {"val_acc": fitness, "tasks": tasks}, "seconds": 0.0},
                "evaluations": [], "worker": "instant"}

    driver.evaluate_remote = instant
    ray.get([instant.remote("warm-up", [], "A") for _ in range(8)])  # workers up and ready
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "d.db") as store:
        search = _search(store, budget, parallel)
        profiler = cProfile.Profile() if profile else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        search.run()
        seconds = time.perf_counter() - start
        if profiler:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative") \
                .print_stats(25)
        progress = search.progress
    return {"seconds": seconds, "results": budget, "evaluated": progress.evaluated,
            "cache_hits": progress.cache_hits}


def measure_host(evals: int) -> dict:
    """Seconds per evaluation of the seed program in this plain process (median)."""
    _evaluate_seed()  # data, the seed's reference score
    seconds = []
    for _ in range(evals):
        start = time.perf_counter()
        _evaluate_seed()
        seconds.append(time.perf_counter() - start)
    return {"eval_s": statistics.median(seconds)}


def _children(args: list[str], copies: int = 1) -> list[dict]:
    """Run ``copies`` of this script with ``args`` side by side; their JSON replies."""
    procs = [subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    replies = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"benchmark child {args} failed:\n{err[-3000:]}")
        if err.strip():
            print(err, file=sys.stderr)
        replies.append(json.loads(out.strip().splitlines()[-1]))
    return replies


def _child(args: list[str]) -> dict:
    return _children(args)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=3,
                        help="1-worker/2-worker searches, run alternately; medians reported")
    parser.add_argument("--driver-budget", type=int, default=2000)
    parser.add_argument("--driver-parallel", type=int, default=16)
    parser.add_argument("--host-evals", type=int, default=6,
                        help="seed evaluations per plain process for the host's ceiling")
    parser.add_argument("--profile", action="store_true", help="cProfile the driver loop")
    parser.add_argument("--child", choices=["workers", "driver", "host"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "workers":
        print(json.dumps(measure_workers(args.workers, args.budget, args.parallel)))
        return
    if args.child == "driver":
        print(json.dumps(measure_driver(args.driver_budget, args.driver_parallel,
                                        args.profile)))
        return
    if args.child == "host":
        print(json.dumps(measure_host(args.host_evals)))
        return

    print(f"digits_mlp, budget {args.budget}, --parallel {args.parallel}, "
          f"{os.cpu_count()} cores, {args.pairs} pairs of searches run alternately")
    print(f"{'pair':>5} {'workers':>8} {'seconds':>8} {'evaluated':>10} {'evals/s':>8} "
          f"{'s/eval':>7} {'ratio':>6}")
    ratios, drivers, eval_s, ceilings = [], [], [], []
    for pair in range(1, args.pairs + 1):
        rates, evaluated = [], []
        for n in (1, 2):
            r = _child(["--child", "workers", "--workers", str(n), "--budget",
                        str(args.budget), "--parallel", str(args.parallel)])
            rates.append(r["evaluated"] / r["seconds"])
            evaluated.append(r["evaluated"])
            ratio = f"{rates[1] / rates[0]:>6.2f}" if n == 2 else ""
            print(f"{pair:>5} {n:>8} {r['seconds']:>8.2f} {r['evaluated']:>10} "
                  f"{rates[-1]:>8.2f} {r['eval_s']:>7.3f} {ratio}", flush=True)
            if n == 1:
                eval_s.append(r["eval_s"])
        ratios.append(rates[1] / rates[0])
        if evaluated[0] != evaluated[1]:
            print("warning: the two searches evaluated different numbers of programs")
        # The driver alone between pairs, so its figure sees the same machine.
        drv = _child(["--child", "driver", "--driver-budget", str(args.driver_budget),
                      "--driver-parallel", str(args.driver_parallel)]
                     + (["--profile"] if args.profile else []))
        drivers.append(drv)
        host = ["--child", "host", "--host-evals", str(args.host_evals)]
        alone = _child(host)["eval_s"]
        side_by_side = statistics.mean(r["eval_s"] for r in _children(host, copies=2))
        ceilings.append(2 * alone / side_by_side)
        print(f"{pair:>5}  host: seed evaluation {alone:.3f} s alone, {side_by_side:.3f} s "
              f"two side by side (no Ray): ceiling {ceilings[-1]:.2f}", flush=True)

    driver_rates = [d["results"] / d["seconds"] for d in drivers]
    driver_rate = statistics.median(driver_rates)
    one_eval = statistics.median(eval_s)
    d = drivers[0]
    print(f"\ndriver with instant evaluations: {d['results']} results per run "
          f"({d['evaluated']} evaluated, {d['cache_hits']} cache hits); results/s per pair: "
          + ", ".join(f"{x:.0f}" for x in driver_rates)
          + f"; median {1000 / driver_rate:.2f} ms per result")
    print(f"workers one driver can keep busy on digits_mlp: {one_eval * driver_rate:.0f} "
          f"({one_eval:.3f} s per evaluation x {driver_rate:.0f} results/s)")
    print("2-worker ratios per pair: " + ", ".join(f"{x:.2f}" for x in ratios))
    print(f"host_2_process_ceiling: {statistics.median(ceilings):.2f}")
    print(f"scale_2_workers: {statistics.median(ratios):.2f}")
    print(f"driver_results_per_s: {driver_rate:.0f}")


if __name__ == "__main__":
    main()

"""Can the search reach Lion from AdamW when the fitness rewards Lion?

The rediscovery study asks whether the proxy tasks lead evolution to Lion. This asks the
question under it: with the same driver, mutations, aging population and recognizer,
but a fitness that is the agreement of a candidate's updates with Lion's (mean cosine
similarity over 20 steps of one fixed gradient sequence, state carried), does evolution
from the AdamW paper seed get a Lion-family program into its top 10, and after how
many children? Random search at the same budget is the baseline. Evaluations take
milliseconds, so a study of many thousands of children runs in minutes.

Run: python benchmarks/reachability.py [--seeds 5] [--budget 20000] [--population 50]
         [--tournament 10] [--ops all|lion] [--db reach.db]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

STEPS = 20


def _updates(program) -> list:
    """The program's update at each of STEPS steps of one fixed gradient sequence on a
    matrix and a vector."""
    import torch

    from evoprog.programs.optimizer import ProgramOptimizer

    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(8, 6, generator=gen), torch.randn(6, generator=gen)]
    params = [p.requires_grad_(True) for p in params]
    optimizer = ProgramOptimizer(params, program)
    out = []
    for _ in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 0.1 + 0.05
        before = torch.cat([p.detach().reshape(-1) for p in params])
        optimizer.step()
        out.append(before - torch.cat([p.detach().reshape(-1) for p in params]))
    return out


_LION: list = []  # Lion's updates, computed once per process


def _lion_updates() -> list:
    from evoprog.programs.known import get_known

    if not _LION:
        _LION.extend(_updates(get_known("lion").program()))
    return _LION


def agreement(program_text: str) -> float | None:
    """Mean cosine similarity of the program's updates with Lion's on one fixed probe;
    None if an update is not finite."""
    import torch

    from evoprog.programs.program import parse_program

    torch.set_num_threads(1)
    target = _lion_updates()
    mine = _updates(parse_program(program_text))
    if not all(torch.isfinite(u).all() for u in mine):
        return None
    return float(torch.stack([torch.nn.functional.cosine_similarity(a, b, dim=0)
                              for a, b in zip(mine, target, strict=True)]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=20000)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--tournament", type=int, default=10)
    parser.add_argument("--ops", default="all", choices=("all", "lion"))
    parser.add_argument("--db", type=Path, default=None, help="keep the store here")
    args = parser.parse_args()

    import ray

    import evoprog.search.driver as driver
    from evoprog.programs.space import OptimizerSpace
    from evoprog.search.driver import Search, SearchConfig
    from evoprog.search.rediscover import report_runs
    from evoprog.search.workers import start_ray
    from evoprog.store import Store

    @ray.remote(num_cpus=1)
    def evaluate(program_text: str, tasks: list[str], tier: str = "A") -> dict:
        start = time.perf_counter()
        try:
            fitness = agreement(program_text)
        except (RuntimeError, ValueError) as error:  # a program torch cannot run
            fitness, status, why = None, "failed", str(error)[:200]
        else:
            status = "ok" if fitness is not None else "rejected"
            why = None if fitness is not None else "nan: update not finite"
        return {"result": {"status": status, "reason": why, "fitness": fitness,
                           "metrics": {"tasks": tasks}, "seconds":
                           time.perf_counter() - start},
                "evaluations": [], "worker": "probe"}

    driver.evaluate_remote = evaluate
    start_ray(num_cpus=os.cpu_count())
    ops = list(OptimizerSpace.resolve_ops(args.ops)) if args.ops != "all" else []
    print(f"fitness: agreement with Lion's updates; AdamW seed scores "
          f"{agreement(OptimizerSpace.seed_text):.3f}, Lion 1.000")
    db = args.db or Path(tempfile.mkdtemp()) / "reach.db"
    run_ids: dict[tuple[str, int], int] = {}
    with Store.open(db) as store:
        for seed in range(args.seeds):
            for strategy in ("evolution", "random"):
                config = SearchConfig(budget=args.budget, population=args.population,
                                      tournament=args.tournament, seed=seed,
                                      tasks=["digits_cnn", "char_lm"], strategy=strategy,
                                      ops=ops, parallel=8)
                began = time.perf_counter()
                run_ids[strategy, seed] = Search.start(store, config).run()
                print(f"{strategy} seed {seed}: run {run_ids[strategy, seed]}, "
                      f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        report = report_runs(store, "lion", list(run_ids.values()), None, [])
    print(f"\nbudget {args.budget}, population {args.population}, tournament "
          f"{args.tournament}, ops {args.ops}; store {db}")
    print(f"{'strategy':10} {'seed':>4} {'run':>4} {'found':>5} {'birth':>6} "
          f"{'evaluated':>9} {'best':>6}  found as")
    found: dict[str, list[int]] = {"evolution": [], "random": []}
    for r in report.runs:
        print(f"{r.strategy:10} {r.seed:4d} {r.run_id:4d} {'yes' if r.found else 'no':>5} "
              f"{r.birth if r.found else '-':>6} "
              f"{r.evaluated_by_then if r.found else r.evaluated:9d} "
              f"{r.best_fitness:6.3f}  {r.found_as or '-'}")
        if r.found:
            found[r.strategy].append(r.birth)
    for strategy, births in found.items():
        median = f", median birth {statistics.median(births):.0f}" if births else ""
        print(f"{strategy}_found: {len(births)} of {args.seeds}{median}")


if __name__ == "__main__":
    main()

"""Can the search reach Lion from AdamW (an EvoNorm from BN-ReLU) when the fitness
rewards it?

The rediscovery study asks whether the proxy tasks lead evolution to the target. This
asks the question under it: with the same driver, mutations, aging population and
recognizer, but a fitness that is the agreement of a candidate with the target (Lion:
cosine similarity of its updates with Lion's over 20 steps of one fixed gradient
sequence, state carried, under a decaying learning rate; EvoNorm: one minus the
relative error of its outputs against EvoNorm-S0's on fixed NCHW batches), does
evolution from the warm start get a program of the target family into its top 10, and
after how many children? Random search at the same budget is the baseline. Evaluations
take milliseconds, so a study of many thousands of children runs in minutes.

Run: python benchmarks/reachability.py [--target lion|evonorm] [--seeds 5] [--first-seed 0]
         [--budget 20000] [--population 50] [--tournament 10] [--ops all|lion]
         [--no-random] [--neutral] [--restart-every N [--restart-from seed|best]]
         [--db reach.db]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

STEPS = 20


def _lr(step: int) -> float:
    """The probe's learning rate at ``step``: a cosine decay from 1 to 0.1, as the proxy
    tasks decay theirs, so that a rule that ignores its ``lr`` input (it would not decay)
    agrees less than one that scales its update by it."""
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * step / STEPS))


def _updates(program) -> list:
    """The program's update at each of STEPS steps of one fixed gradient sequence on a
    matrix and a vector, under the decaying learning rate ``_lr``."""
    import torch

    from evoprog.programs.optimizer import ProgramOptimizer

    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(8, 6, generator=gen), torch.randn(6, generator=gen)]
    params = [p.requires_grad_(True) for p in params]
    optimizer = ProgramOptimizer(params, program)
    out = []
    for step in range(STEPS):
        optimizer.param_groups[0]["lr"] = _lr(step)
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
    """Cosine similarity of the program's updates over all STEPS steps, taken as one
    vector, with Lion's on one fixed probe; None if an update is not finite. One
    similarity over all steps, not one per step, so that the updates' sizes from step to
    step count (as the learning rate makes them decay) and only one overall scale is
    free (Lion at any learning rate is Lion)."""
    import torch

    from evoprog.programs.program import parse_program

    torch.set_num_threads(1)
    target = torch.cat(_lion_updates())
    mine = torch.cat(_updates(parse_program(program_text)))
    if not torch.isfinite(mine).all():
        return None
    return float(torch.nn.functional.cosine_similarity(mine, target, dim=0))


def layer_agreement(program_text: str) -> float | None:
    """Mean agreement (1 - relative error, at least 0) of the layer's outputs with
    EvoNorm-S0's, both in training mode, with the same fixed random ``v0``, ``v1``
    wherever a program reads them (so S0's ``sigmoid(v1 * x)`` differs from S1's
    ``sigmoid(x)``), on fixed NCHW batches; None if an output is not finite."""
    import torch

    from evoprog.programs.known import get_known
    from evoprog.programs.layer_module import ProgramLayer
    from evoprog.programs.program import parse_program

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 8, 5, 5, generator=gen) * scale + shift
               for scale, shift in ((1.0, 0.0), (3.0, 1.0), (0.3, -0.5))]
    mine = ProgramLayer(parse_program(program_text), 8, max_groups=4)
    target = ProgramLayer(get_known("evonorm_s0").program(), 8, max_groups=4)
    values = {"v0": 0.5 * torch.randn(1, 8, 1, 1, generator=gen),
              "v1": 1.0 + 0.5 * torch.randn(1, 8, 1, 1, generator=gen)}
    with torch.no_grad():
        for module in (mine, target):
            for name, value in values.items():
                if hasattr(module, name):
                    getattr(module, name).copy_(value)
        pairs = [(mine(x).reshape(-1), target(x).reshape(-1)) for x in batches]
    if not all(torch.isfinite(a).all() for a, _ in pairs):
        return None
    # 1 - relative error (at least 0): the output's scale matters for a layer
    return float(torch.stack([(1 - (a - b).norm() / b.norm()).clamp(min=0.0)
                              for a, b in pairs]).mean())


TARGETS = {  # target -> (family, fitness, tasks recorded with the runs)
    "lion": ("optimizer", agreement, ["digits_cnn", "char_lm"]),
    "evonorm": ("layer", layer_agreement, ["digits_layers"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(TARGETS), default="lion")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="run seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--budget", type=int, default=20000)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--tournament", type=int, default=10)
    parser.add_argument("--ops", default="all", choices=("all", "lion"))
    parser.add_argument("--no-random", action="store_true",
                        help="evolution only, without the random-search baseline")
    parser.add_argument("--neutral", action="store_true",
                        help="evolution keeps children that differ from their parent only "
                             "in dead code (search --neutral)")
    parser.add_argument("--restart-every", type=int, default=0, metavar="N",
                        help="evolution restarts its population every N children "
                             "(search --restart-every; 0: never)")
    parser.add_argument("--restart-from", choices=("seed", "best"), default="seed")
    parser.add_argument("--db", type=Path, default=None, help="keep the store here")
    args = parser.parse_args()

    import ray

    import evoprog.search.driver as driver
    from evoprog.programs.space import get_space
    from evoprog.search.driver import Search, SearchConfig
    from evoprog.search.rediscover import report_runs
    from evoprog.search.workers import start_ray
    from evoprog.store import Store

    @ray.remote(num_cpus=1)
    def evaluate(program_text: str, tasks: list[str], tier: str = "A") -> dict:
        start = time.perf_counter()
        try:
            fitness = score(program_text)
        except (RuntimeError, ValueError) as error:  # a program torch cannot run
            fitness, status, why = None, "failed", str(error)[:200]
        else:
            status = "ok" if fitness is not None else "rejected"
            why = None if fitness is not None else "nan: update not finite"
        return {"result": {"status": status, "reason": why, "fitness": fitness,
                           "metrics": {"tasks": tasks}, "seconds":
                           time.perf_counter() - start},
                "evaluations": [], "worker": "probe"}

    family, score, tasks = TARGETS[args.target]
    space = get_space(family)
    driver.evaluate_remote = evaluate
    start_ray(num_cpus=os.cpu_count())
    ops = list(space.resolve_ops(args.ops)) if args.ops != "all" else []
    print(f"fitness: agreement with {args.target}; the warm start scores "
          f"{score(space.seed_text):.3f}, the target 1.000")
    db = args.db or Path(tempfile.mkdtemp()) / "reach.db"
    run_ids: dict[tuple[str, int], int] = {}
    with Store.open(db) as store:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in ("evolution",) if args.no_random else ("evolution", "random"):
                config = SearchConfig(family=family, budget=args.budget,
                                      population=args.population,
                                      tournament=args.tournament, seed=seed, tasks=tasks,
                                      strategy=strategy, ops=ops, parallel=8,
                                      selection="fitness", neutral=args.neutral,
                                      restart_every=args.restart_every,
                                      restart_from=args.restart_from)
                began = time.perf_counter()
                run_ids[strategy, seed] = Search.start(store, config).run()
                print(f"{strategy} seed {seed}: run {run_ids[strategy, seed]}, "
                      f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        report = report_runs(store, args.target, list(run_ids.values()), None, [])
    print(f"\nbudget {args.budget}, population {args.population}, tournament "
          f"{args.tournament}, ops {args.ops}{', neutral children kept' * args.neutral}"
          + (f", restarts every {args.restart_every} from the {args.restart_from}"
             if args.restart_every else "") + f"; store {db}")
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
        if strategy == "random" and args.no_random:
            continue
        median = f", median birth {statistics.median(births):.0f}" if births else ""
        print(f"{strategy}_found: {len(births)} of {args.seeds}{median}")


if __name__ == "__main__":
    main()

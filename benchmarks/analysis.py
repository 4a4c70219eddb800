"""How much of a search the analysis serves without training, and what it costs.

Default: a real search (the Ray driver, real training on ``--task``) of ``--children``
children from the AdamW seed into a temporary SQLite store; every figure is counted
from the store. A generated program is served without a training run when mutation
discarded it (statically invalid, or the same pruned program as its parent: the
structural cache), when the driver served it from the cache (same structural hash or
functional fingerprint as an earlier individual), or when the evaluator refused it
statically. Programs that started training and were stopped by a numeric filter
(nan, diverged, no progress) count as trained.

    python benchmarks/analysis.py [--children 2000] [--population 100] [--tournament 10]
                                  [--task digits_mlp] [--parallel 0] [--seed 0] [--db PATH]
    python benchmarks/analysis.py --report PATH  # the table for the latest run in a store
    python benchmarks/analysis.py --surrogate    # no training: fitness = hash of fingerprint

Analysis cost (validate, prune, structural hash, functional fingerprint) is timed per
recorded child after the search, in this process on one torch thread.

``--surrogate`` runs aging evolution with the same mutation and analysis but a random
stand-in fitness (a hash of the fingerprint) and no Ray; its population never
concentrates on good programs the way a real search's does, and nothing is rejected by
training, so its figures are no stand-in for a real search's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from evoprog.programs.program import Program, parse_program
from evoprog.programs.space import OptimizerSpace, Space
from evoprog.search.evolution import AgingPopulation, Member, make_child
from evoprog.store import Store

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
WINDOWS = 4  # stretches of the run reported separately


def analysis_seconds(space: Space, program: Program) -> float:
    """Wall time of the per-child analysis the driver runs before deciding to train."""
    t0 = time.perf_counter()
    assert space.invalid_reason(program) is None
    space.prune(program)
    space.hash(program)
    space.fingerprint(program)
    return time.perf_counter() - t0


def _outcome(row: dict, task: str) -> str:
    """'ok', or the status and the filter that stopped the run, without its details."""
    if row["status"] == "ok":
        return "ok"
    reason = (row["reason"] or "unknown").removeprefix(f"{task}: ")
    return f"{row['status']}: {reason.split(':')[0]}"


def _stretches(rows: list[dict], parts: int) -> Iterator[tuple[int, int, int, int]]:
    """(first birth, last birth, programs generated, trained) for equal stretches of
    the recorded children, in birth order."""
    children = [row for row in rows if row["birth"] > 0]
    size = max(1, -(-len(children) // parts))
    for start in range(0, len(children), size):
        part = children[start:start + size]
        generated = sum(1 + r["discarded_invalid"] + r["discarded_same"] for r in part)
        trained = sum(not r["cache_hit"] and not (r["reason"] or "").startswith("static")
                      for r in part)
        yield part[0]["birth"], part[-1]["birth"], generated, trained


def _row(label: str, value: int, total: int) -> str:
    return f"  {label:<50} {value:>7}  {value / total:6.1%}"


@contextmanager
def _mutation_counts() -> Iterator[dict[int, tuple[int, int]]]:
    """Birth -> (invalid, same) of every child the driver makes, read off the Mutation
    that ``make_child`` returns; used to check the store's counts, or to fill them in
    where the driver does not record them."""
    import evoprog.search.driver as driver

    counts: dict[int, tuple[int, int]] = {}
    real: Callable = driver.make_child

    def recording(population, space, run_seed, birth, *rest):
        parent, child, mutation = real(population, space, run_seed, birth, *rest)
        counts[birth] = (mutation.invalid, mutation.same)
        return parent, child, mutation

    driver.make_child = recording
    try:
        yield counts
    finally:
        driver.make_child = real


def real_search(args: argparse.Namespace) -> None:
    """Run the search into a store (temporary unless ``--db``), then report on it."""
    from evoprog.search.driver import Search, SearchConfig

    torch.set_num_threads(1)
    # Multi-task drivers take a list of tasks, older ones a single task.
    task = ({"tasks": [args.task]} if "tasks" in SearchConfig.__dataclass_fields__
            else {"task": args.task})
    config = SearchConfig(family="optimizer", budget=args.children + 1,
                          population=args.population, tournament=args.tournament,
                          seed=args.seed, parallel=args.parallel, **task)

    def progress(p) -> None:
        if p.done % 250 == 0 or p.done == p.budget:
            print(f"  ... {p.done}/{p.budget} recorded, {p.evaluated} evaluated, "
                  f"{p.cache_hits} cache hits, {p.rate:.1f}/s", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp, \
            Store.open(args.db or Path(tmp) / "runs.db") as store:
        started = time.perf_counter()
        with _mutation_counts() as made:
            run_id = Search.start(store, config, None, on_progress=progress).run()
        wall = time.perf_counter() - started
        recorded = {row["birth"]: (row["discarded_invalid"], row["discarded_same"])
                    for row in store.individuals(run_id) if row["birth"] > 0}
        note = "counted by the driver into the store"
        if all(v == (0, 0) for v in recorded.values()) and any(made.values()):
            # The driver does not pass Mutation's counts to the store yet: write the
            # counts of the very mutations it made into this store.
            with store.transaction():
                for birth, (invalid, same) in made.items():
                    store.db.execute(
                        "UPDATE individuals SET discarded_invalid = ?, discarded_same = ? "
                        "WHERE run_id = ? AND birth = ?", [invalid, same, run_id, birth])
            note = "filled in from Mutation by this benchmark (the driver does not pass them)"
        elif recorded != {b: made[b] for b in recorded}:
            raise SystemExit("the store's discarded counts differ from the mutations made")
        report(store, run_id, wall, note)


def report(store: Store, run_id: int, wall: float | None = None,
           note: str = "as recorded in the store") -> None:
    """The table, counted from the store's records of one run."""
    torch.set_num_threads(1)
    space = OptimizerSpace
    stats = store.run(run_id)
    rows = store.individuals(run_id)
    by_birth = {row["birth"]: row for row in rows}
    config = stats["config"]
    task = (config.get("tasks") or [config.get("task")])[0]
    # Analysis cost per recorded child, timed here with the search's workers gone.
    programs = [parse_program(row["text"]) for row in rows if row["birth"] > 0]
    for program in programs[:20]:  # warm up
        analysis_seconds(space, program)
    times = [analysis_seconds(space, p) for p in programs]

    children = len(rows) - 1
    generated = stats["generated"] - 1  # the seed is not a generated child
    seen: set[str] = set()
    structural = functional = 0
    outcomes: Counter[str] = Counter()
    for row in rows:
        if row["birth"] > 0 and row["cache_hit"]:
            if row["program_hash"] in seen:
                structural += 1
            else:
                functional += 1
        elif row["birth"] > 0:
            outcomes[_outcome(row, task)] += 1
        seen.add(row["program_hash"])
    seed_trained = not by_birth[0]["cache_hit"]
    trained = stats["trained"] - seed_trained
    served = generated - trained
    invalid, same = stats["discarded_invalid"], stats["discarded_same"]
    cache = same + structural + functional
    median_ms = statistics.median(times) * 1e3
    p90_ms = sorted(times)[int(0.9 * len(times))] * 1e3
    eval_seconds = sum(row["eval_seconds"] or 0.0 for row in rows if not row["cache_hit"])
    # What training every generated program to the end would have cost, at the mean
    # time of the runs that did finish: early-stopping filters save time too, but
    # those programs still count as trained above.
    full = [row["eval_seconds"] for row in rows if not row["cache_hit"]
            and row["status"] == "ok" and row["eval_seconds"]]
    all_trained = generated * statistics.mean(full) if full else float("nan")

    print(f"real search from the AdamW seed: {children} children on {task} (tier A), "
          f"population {config['population']}, tournament {config['tournament']}, "
          f"seed {config['seed']}, {config['parallel']} evaluations in flight")
    print(f"discarded attempts {note}\n")
    print(f"programs generated (kept children + discarded attempts): {generated}")
    print(_row("discarded: statically invalid", invalid, generated))
    print(_row("discarded: same pruned program as parent", same, generated))
    print(_row("kept, cache hit: same pruned program as earlier", structural, generated))
    print(_row("kept, cache hit: same fingerprint only", functional, generated))
    print(_row("kept, rejected statically by the evaluator",
               stats["static_rejected"], generated))
    for outcome, n in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        if not outcome.startswith(("rejected: static", "failed: static")):
            print(_row(f"kept, trained -> {outcome}", n, generated))
    print(_row("served without training", served, generated))
    print(_row("served by the cache alone (paper-style)", cache, generated))
    print(f"  {'  the same, of the valid generated programs':<50} {cache:>7}  "
          f"{cache / (generated - invalid):6.1%}  of {generated - invalid}")
    print(f"  {'kept children served from the cache':<50} {structural + functional:>7}  "
          f"{(structural + functional) / children:6.1%}  of {children}")
    print(f"  {'redundant statements (removed by pruning)':<50} "
          f"{stats['redundant_fraction']:14.1%}")
    print(f"  {'analysis ms per child: median / p90':<50} {median_ms:7.2f} / {p90_ms:.2f}")
    wall_text = "-" if wall is None else f"{wall:.0f}"
    print(f"  {'search wall seconds / summed evaluation seconds':<50} {wall_text:>7} / "
          f"{eval_seconds:.0f}")
    print(f"  {'evaluation s / if every program trained to the end':<50} "
          f"{eval_seconds:7.0f} / {all_trained:.0f}")
    best = stats["best_fitness"]
    print(f"  {'best fitness (1.0 = the AdamW seed)':<50} "
          f"{'-' if best is None else f'{best:.4f}':>7}")
    _print_probe_replay(space, rows)
    print("\nby stretch of the run (the cache pays more as the population concentrates):")
    print(f"  {'children':<14} {'generated':>9} {'trained':>8} {'served':>7}")
    for first, last, generated_part, trained_part in _stretches(rows, WINDOWS):
        print(f"  {f'{first}-{last}':<14} {generated_part:>9} {trained_part:>8} "
              f"{1 - trained_part / generated_part:7.1%}")
    print(f"\ntraining_time_saved: {1 - eval_seconds / all_trained:.3f}")
    print(f"cache_only_fraction: {cache / generated:.3f}")
    print(f"redundant_fraction: {stats['redundant_fraction']:.3f}")
    print(f"served_without_training: {served / generated:.3f}")
    print(f"analysis_ms_median: {median_ms:.2f}")


def _print_probe_replay(space: Space, rows: list[dict]) -> None:
    """What the evaluator's probe checks (``Space.futile_reason``) refuse today among the
    children this store's run trained: for a run made before them, how many trainings
    they would have saved, and that they refuse none of the children training kept."""
    refused: Counter[str] = Counter()
    trained = Counter(ok=0, rejected=0)
    for row in rows:
        if row["birth"] == 0 or row["cache_hit"] or (row["reason"] or "").startswith(
                "static"):
            continue
        kind = "ok" if row["status"] == "ok" else "rejected"
        trained[kind] += 1
        reason = space.futile_reason(parse_program(row["text"]))
        if reason is not None:
            refused[kind] += 1
            refused[reason] += 1
    print(f"  {'trained children the probe checks now refuse':<50} "
          f"{refused['rejected'] + refused['ok']:>7}  of {trained['rejected']} rejected "
          f"by training, {refused['ok']} of {trained['ok']} kept")
    for reason, n in refused.most_common():
        if reason not in ("ok", "rejected"):
            print(f"    {reason:<76} {n:>5}")


def surrogate_fitness(fingerprint: str) -> float:
    """A stand-in for training: deterministic in the function the program computes."""
    return int(fingerprint[:8], 16) / 0xFFFFFFFF


def surrogate_search(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    space = OptimizerSpace
    population = AgingPopulation(args.population, args.tournament)
    seed = space.seed()
    seed_fp, _ = space.probe(seed)
    population.add(Member(0, 0, seed, surrogate_fitness(seed_fp)))
    by_hash: dict[str, float] = {space.hash(seed): surrogate_fitness(seed_fp)}
    by_fingerprint: dict[str, float] = {seed_fp: surrogate_fitness(seed_fp)}
    counts = {"static_rejected": 0, "hash_hits": 0, "fingerprint_hits": 0, "trained": 0}
    invalid = same = 0
    times: list[float] = []
    total_lines = removed_lines = 0

    started = time.perf_counter()
    for birth in range(1, args.children + 1):
        _, child, mutation = make_child(population, space, args.seed, birth)
        invalid += mutation.invalid
        same += mutation.same
        t0 = time.perf_counter()
        assert space.invalid_reason(child) is None
        pruned = space.prune(child)
        structural = space.hash(child)
        fitness = by_hash.get(structural)
        if fitness is not None:
            kind = "hash_hits"
        else:
            fingerprint, finite = space.probe(child)
            if not finite:
                kind, fitness = "static_rejected", None
            elif fingerprint in by_fingerprint:
                kind, fitness = "fingerprint_hits", by_fingerprint[fingerprint]
            else:
                kind, fitness = "trained", surrogate_fitness(fingerprint)
                by_fingerprint[fingerprint] = fitness
            if fitness is not None:
                by_hash[structural] = fitness
        times.append(time.perf_counter() - t0)
        counts[kind] += 1
        total_lines += len(child)
        removed_lines += len(child) - len(pruned)
        if fitness is not None:
            population.add(Member(birth, birth, child, fitness))
    elapsed = time.perf_counter() - started

    generated = args.children + invalid + same
    served = generated - counts["trained"]
    median_ms = statistics.median(times) * 1e3
    p90_ms = sorted(times)[int(0.9 * len(times))] * 1e3
    print(f"aging evolution from the AdamW seed: {args.children} children, population "
          f"{args.population}, tournament {args.tournament}, seed {args.seed}")
    print("fitness is a SURROGATE (a hash of the fingerprint), no training was run\n")
    print(f"programs generated (kept children + discarded attempts): {generated}")
    print(_row("discarded: statically invalid", invalid, generated))
    print(_row("discarded: same pruned program as parent", same, generated))
    print(_row("kept, cache hit by structural hash", counts["hash_hits"], generated))
    print(_row("kept, cache hit by fingerprint only", counts["fingerprint_hits"], generated))
    print(_row("kept, static rejection (non-finite on probe)", counts["static_rejected"],
               generated))
    print(_row("kept, would be trained", counts["trained"], generated))
    print(_row("served without training", served, generated))
    cache = same + counts["hash_hits"] + counts["fingerprint_hits"]
    print(_row("served by the cache alone (paper-style)", cache, generated))
    print(f"  {'redundant statements (removed by pruning)':<50} "
          f"{removed_lines / max(total_lines, 1):14.1%}")
    print(f"  {'analysis ms per child: median / p90':<50} {median_ms:7.2f} / {p90_ms:.2f}")
    print(f"  {'wall seconds (mutation + analysis)':<50} {elapsed:7.1f}")
    print(f"\ncache_only_fraction: {cache / generated:.3f}")
    print(f"redundant_fraction: {removed_lines / max(total_lines, 1):.3f}")
    print(f"served_without_training: {served / generated:.3f}")
    print(f"analysis_ms_median: {median_ms:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=2000)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--tournament", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="digits_mlp")
    parser.add_argument("--parallel", type=int, default=0,
                        help="evaluations in flight (0: twice the CPUs)")
    parser.add_argument("--db", type=Path, default=None,
                        help="keep the search's store here (default: a temporary file)")
    parser.add_argument("--report", type=Path, default=None, metavar="DB",
                        help="no search: report on the latest run in an existing store")
    parser.add_argument("--surrogate", action="store_true",
                        help="no training: a random stand-in fitness, no Ray")
    args = parser.parse_args()
    if args.surrogate:
        surrogate_search(args)
    elif args.report:
        with Store.open(args.report, create=False) as store:
            report(store, store.latest_run_id())
    else:
        real_search(args)


if __name__ == "__main__":
    main()

"""How much of a search the analysis serves without training, and what it costs.

Runs aging evolution from the AdamW seed with the real mutation operator and the real
per-child analysis (validate, prune, structural hash, functional fingerprint with a
finiteness check), but WITHOUT training: each child that would be trained gets a
surrogate fitness, a deterministic function of its fingerprint. A child is served
without a training run when it is rejected statically (non-finite update on the probe)
or its structural hash or fingerprint was seen before (a cache hit).

    python benchmarks/analysis.py [--children 2000] [--population 100] [--tournament 10]

Analysis time is measured per child on one torch thread (mutation excluded, it has its
own validity retries).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from evoprog.programs.space import OptimizerSpace
from evoprog.search.evolution import AgingPopulation, Member, make_child


class CountingSpace:
    """The space, counting what mutation's retry loop rejects before a child is kept:
    invalid attempts (static rejection) and attempts whose pruned program equals the
    parent's (a structural cache hit: the change was dead code or a no-op)."""

    def __init__(self, space):
        self._space = space
        self.attempts = self.invalid = self.same_as_parent = 0
        self.parent_hash: str | None = None

    def __getattr__(self, name):
        return getattr(self._space, name)

    def invalid_reason(self, program):
        self.attempts += 1
        reason = self._space.invalid_reason(program)
        self.invalid += reason is not None
        return reason

    def hash(self, program):
        value = self._space.hash(program)
        if self.parent_hash is None:
            self.parent_hash = value  # mutate() hashes the parent first
        else:
            self.same_as_parent += value == self.parent_hash
        return value


def surrogate_fitness(fingerprint: str) -> float:
    """A stand-in for training: deterministic in the function the program computes."""
    return int(fingerprint[:8], 16) / 0xFFFFFFFF


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=2000)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--tournament", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = OptimizerSpace
    counting = CountingSpace(space)

    population = AgingPopulation(args.population, args.tournament)
    seed = space.seed()
    seed_fp, _ = space.probe(seed)
    population.add(Member(0, 0, seed, surrogate_fitness(seed_fp)))
    by_hash: dict[str, float] = {space.hash(seed): surrogate_fitness(seed_fp)}
    by_fingerprint: dict[str, float] = {seed_fp: surrogate_fitness(seed_fp)}
    counts = {"static_rejected": 0, "hash_hits": 0, "fingerprint_hits": 0, "trained": 0}
    times: list[float] = []
    total_lines = removed_lines = 0

    started = time.perf_counter()
    for birth in range(1, args.children + 1):
        counting.parent_hash = None
        _, child, _ = make_child(population, counting, args.seed, birth)
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

    n = args.children
    served_children = (n - counts["trained"]) / n
    # Every program mutation generated: kept children plus attempts the retry loop threw
    # away (each valid attempt is validated once more by our loop; not counted twice).
    discarded = counting.invalid + counting.same_as_parent
    generated = n + discarded
    served = (generated - counts["trained"]) / generated
    median_ms = statistics.median(times) * 1e3
    p90_ms = sorted(times)[int(0.9 * len(times))] * 1e3
    print(f"aging evolution from the AdamW seed: {n} children, population "
          f"{args.population}, tournament {args.tournament}, seed {args.seed}")
    print("fitness is a SURROGATE (a hash of the fingerprint), no training was run\n")
    rows = [
        ("static rejections (non-finite on probe)", counts["static_rejected"]),
        ("cache hits by structural hash", counts["hash_hits"]),
        ("cache hits by fingerprint only", counts["fingerprint_hits"]),
        ("would be trained", counts["trained"]),
    ]
    for label, value in rows:
        print(f"  {label:<42} {value:>6}  {value / n:6.1%}")
    print(f"  {'children served without training':<42} {n - counts['trained']:>6}  "
          f"{served_children:6.1%}")
    print(f"\nprograms generated by mutation (kept children + discarded attempts): "
          f"{generated}")
    print(f"  {'discarded: invalid (static rejection)':<42} {counting.invalid:>6}  "
          f"{counting.invalid / generated:6.1%}")
    print(f"  {'discarded: same pruned program as parent':<42} {counting.same_as_parent:>6}  "
          f"{counting.same_as_parent / generated:6.1%}")
    print(f"  {'generated programs served without training':<42} "
          f"{generated - counts['trained']:>6}  {served:6.1%}")
    print(f"  {'redundant statements (removed by pruning)':<42} "
          f"{removed_lines:>6}  {removed_lines / max(total_lines, 1):6.1%}")
    print(f"  {'analysis ms per child: median / p90':<42} {median_ms:6.2f} / {p90_ms:.2f}")
    print(f"  {'wall seconds (mutation + analysis)':<42} {elapsed:6.1f}")
    print(f"\nredundant_fraction: {removed_lines / max(total_lines, 1):.3f}")
    print(f"served_without_training_children: {served_children:.3f}")
    print(f"served_without_training: {served:.3f}")
    print(f"analysis_ms_median: {median_ms:.2f}")


if __name__ == "__main__":
    main()

"""Rediscovery: can search alone find Lion from AdamW, or an EvoNorm from BN-ReLU?

For each seed, one evolution run from the warm start and (as the baseline) one random
search run with the same budget. Each run is then replayed from the store: the aging
population is rebuilt in birth order and, after every birth, its 10 best distinct
programs are checked with the analysis's recognizer. The first time a program of the
target family is among them is the rediscovery, reported with how many children were
generated and evaluated by then and the wall time. The found program is compared with
the warm start on a costlier tier, and the best one is tried on held-out tasks.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ..evaluators.suite import evaluate_suite
from ..programs.known import get_known
from ..programs.program import Program, parse_program
from ..programs.recognize import AVERAGING_CONSTANTS, Recognition
from ..programs.space import Space, get_space
from ..store import Store
from .driver import Progress, Search, SearchConfig
from .evolution import Restarts
from .ranking import distinct_functions

TOP = 10


@dataclass(frozen=True)
class Target:
    """What to rediscover: the family searched, the known programs that count as found,
    the tasks searched on, held-out tasks for transfer, and the references there."""

    family: str
    names: frozenset[str]
    tasks: tuple[str, ...]
    transfer_tasks: tuple[str, ...]
    references: tuple[str, ...]


TARGETS = {
    "lion": Target("optimizer", frozenset({"lion"}), ("digits_cnn", "char_lm"),
                   ("digits_mlp",), ("adamw_paper", "adamw", "lion")),
    "evonorm": Target("layer", frozenset({"evonorm_s0", "evonorm_b0"}), ("digits_layers",),
                      ("digits_layers_small_batch",), ("bn_relu", "evonorm_s0",
                                                       "evonorm_b0")),
}


@dataclass
class RunReport:
    """One run's answer: did the target family reach the population's top 10, when."""

    run_id: int
    seed: int
    strategy: str
    individuals: int
    generated: int
    evaluated: int
    seconds: float
    best_fitness: float | None
    found: bool = False
    found_as: str | None = None
    individual_id: int | None = None
    birth: int | None = None
    generated_by_then: int | None = None
    evaluated_by_then: int | None = None
    seconds_by_then: float | None = None
    fitness: float | None = None
    compare_tier: str | None = None
    ratio_to_start: float | None = None  # fitness at compare_tier over the warm start's
    lineage: list[str] = field(default_factory=list)
    pruned: str | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (evaluated, best)
    status: str = "finished"  # the run's; any other has not recorded its whole budget
    budget: int | None = None

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@dataclass
class Report:
    target: str
    config: dict[str, Any]
    runs: list[RunReport]
    transfer: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "config": self.config,
                "runs": [asdict(r) for r in self.runs], "transfer": self.transfer}

    def summary(self) -> dict[str, str]:
        """Per strategy: 'k of n seeds' (or runs) that found the target, and how many
        of their runs are unfinished (their budget not all searched)."""
        out = {}
        for strategy in ("evolution", "random"):
            runs = [r for r in self.runs if r.strategy == strategy]
            if runs:
                unfinished = sum(not r.finished for r in runs)
                # Runs of one seed again (a re-run) are counted as runs, not seeds.
                unit = "seeds" if len({r.seed for r in runs}) == len(runs) else "runs"
                out[strategy] = f"{sum(r.found for r in runs)} of {len(runs)} {unit}" + (
                    f" ({unfinished} of the runs unfinished)" if unfinished else "")
        return out


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def analyze_run(store: Store, run_id: int, target: Target, top: int = TOP) -> RunReport:
    """Replay a recorded run and find when the target family first reached the top."""
    run = store.run(run_id)
    config = SearchConfig.from_dict(run["config"])
    space = get_space(run["family"])
    individuals = store.individuals(run_id)
    started = _time(run["created"])
    recognized: dict[str, str | None] = {}  # program hash -> known name or None
    fingerprints: dict[str, str] = {}  # program hash -> functional fingerprint
    generated = evaluated = 0
    best = -math.inf
    curve: list[tuple[int, float]] = []
    report = RunReport(run_id, config.seed, config.strategy, len(individuals), 0, 0,
                       0.0, None, status=run["status"], budget=config.budget)
    searched = 0.0  # seconds, by the time each birth joined (see ``_searched``)
    for ind, population in population_replay(individuals, config):
        searched = max(searched, _searched(ind, started))
        generated += 1 + int(ind.get("discarded_invalid") or 0) + \
            int(ind.get("discarded_same") or 0)
        evaluated += not ind["cache_hit"]
        if ind["status"] != "ok" or ind["fitness"] is None:
            continue
        if ind["fitness"] > best:
            best = ind["fitness"]
            curve.append((evaluated, best))
        member = None if report.found else _target_in_top(
            population, top, space, target, recognized, fingerprints)
        if member is not None:
            report.found, report.found_as = True, recognized[member["program_hash"]]
            report.individual_id, report.birth = member["id"], ind["birth"]
            report.generated_by_then, report.evaluated_by_then = generated, evaluated
            report.seconds_by_then = searched
            report.fitness = member["fitness"]
            report.pruned = member["pruned_text"]
            report.lineage = [r["mutation"] or "(seed)" for r in store.lineage(member["id"])]
    report.generated, report.evaluated = generated, evaluated
    report.best_fitness = None if best == -math.inf else best
    report.seconds = searched  # the replay passes every individual
    report.curve = curve
    return report


def _searched(ind: dict, started: datetime) -> float:
    """Seconds the run had searched when ``ind`` was recorded: its ``elapsed``, which
    leaves out a pause between a stop and a resume; for files from before it was kept,
    the wall time since the run was created (pause included, whole seconds)."""
    if ind.get("elapsed") is not None:
        return ind["elapsed"]
    return (_time(ind["created"]) - started).total_seconds()


def is_target(match: Recognition | None, target: Target) -> bool:
    """Whether a recognized program counts as the target: one of its known programs,
    with every average proper (each beta strictly between 0 and 1). At the ends Lion is
    something else: signSGD or signum (beta1 0 or 1), or a memory of one gradient
    (beta2 0)."""
    return match is not None and match.name in target.names and all(
        0.0 < value < 1.0 for name, value in match.constants.items()
        if name in AVERAGING_CONSTANTS)


def population_replay(individuals: Sequence[dict], config: SearchConfig
                      ) -> Iterator[tuple[dict, deque[dict]]]:
    """Each recorded individual (in birth order) with the aging population as the search
    held it once that birth had joined: the ok ones join, the oldest die past the
    population size, and restarts keep the seed's or the best row, as in the search."""
    population: deque[dict] = deque()
    restarts: Restarts[dict] = config.restarts(lambda row: row["fitness"])
    for ind in individuals:
        if ind["status"] == "ok" and ind["fitness"] is not None:
            population.append(ind)
            while len(population) > config.population:
                population.popleft()
            restarts.joined(ind["birth"], ind)
        yield ind, population
        kept = restarts.after(ind["birth"])
        if kept is not None:
            population.clear()
            population.append(kept)


def _target_in_top(population: deque[dict], top: int, space: Space, target: Target,
                   recognized: dict[str, str | None],
                   fingerprints: dict[str, str]) -> dict | None:
    """The best of the population's ``top`` best distinct programs that the analysis
    recognizes as the target family, if any; ``recognized`` caches the analysis by
    program hash (the known name, or None)."""
    ranked = sorted(population, key=lambda m: (-m["fitness"], m["birth"]))
    for member in distinct_functions(ranked, top, space, fingerprints):
        key = member["program_hash"]
        if key not in recognized:
            match = space.recognize(parse_program(member["text"]))
            recognized[key] = str(match) if is_target(match, target) else None
        if recognized[key]:
            return member
    return None


def _fitness(program: Program, tasks: Sequence[str], tier: str) -> float | None:
    return _scored(program, tasks, tier)[0]


def _scored(program: Program, tasks: Sequence[str], tier: str) -> tuple[float | None, str]:
    """(fitness, "") when the program trains to the end, else (None, why not). Without
    the tier's time limit: it keeps a search's slow programs out, but a comparison
    needs every score, and on a busy machine a reference could trip it."""
    result, _ = evaluate_suite(program, tasks, tier, time_limit=None)
    return (result.fitness, "") if result.ok else (None, f"{result.status}: {result.reason}")


def planned_runs(seeds: Iterable[int], random_baseline: bool = True,
                 ) -> list[tuple[int, str]]:
    """The searches of a study, in the order it runs them: (seed, strategy)."""
    strategies = ("evolution", "random") if random_baseline else ("evolution",)
    return [(seed, strategy) for seed in seeds for strategy in strategies]


def rediscover(store: Store, name: str, seeds: Sequence[int], budget: int,
               max_seconds: float | None = None, population: int = 100,
               tournament: int = 10, parallel: int = 0, tasks: Sequence[str] = (),
               random_baseline: bool = True, compare_tier: str | None = "B",
               transfer_tiers: Sequence[str] = ("A", "B"), address: str | None = None,
               on_progress: Callable[[str, Progress], None] | None = None,
               on_run: Callable[[RunReport], None] | None = None,
               ops: Sequence[str] = (), tier: str = "A", neutral: bool = False,
               restart_every: int = 0, restart_from: str = "seed",
               on_start: Callable[[int], None] | None = None,
               on_step: Callable[[str], None] | None = None) -> Report:
    """Run the searches, analyse them, compare and transfer; everything is recorded in
    ``store`` (one run per seed and strategy), so ``report_runs`` can rebuild the report
    later from the run ids alone. ``ops`` limits the space (empty: all its ops);
    ``tier`` is the tier the searches score candidates at; ``neutral``,
    ``restart_every`` and ``restart_from`` are the evolution runs' options of those
    names. ``on_start`` gets
    each run's id as it is created, so an interrupted study can say what it recorded;
    ``on_step`` is as in ``report_runs``."""
    target = TARGETS[name]
    tasks = list(tasks) or list(target.tasks)
    run_ids: list[int] = []
    for seed, strategy in planned_runs(seeds, random_baseline):
        config = SearchConfig(family=target.family, budget=budget, population=population,
                              tournament=tournament, seed=seed, tasks=tasks,
                              tier=tier, parallel=parallel, strategy=strategy,
                              max_seconds=max_seconds, ops=list(ops),
                              neutral=neutral and strategy == "evolution",
                              restart_every=restart_every if strategy == "evolution"
                              else 0, restart_from=restart_from)
        label = f"{strategy} seed {seed}"
        search = Search.start(store, config, address, on_progress=(
            (lambda p, label=label: on_progress(label, p)) if on_progress else None))
        if on_start:
            on_start(search.run_id)
        search.run()
        run_ids.append(search.run_id)
        if on_run:
            on_run(analyze_run(store, search.run_id, target))
    return report_runs(store, name, run_ids, compare_tier, transfer_tiers, on_step)


def report_runs(store: Store, name: str, run_ids: Sequence[int],
                compare_tier: str | None = "B",
                transfer_tiers: Sequence[str] = ("A", "B"),
                on_step: Callable[[str], None] | None = None) -> Report:
    """The report for recorded runs of one target: each run replayed and analysed, the
    found programs compared with the warm start at ``compare_tier``, the best one tried
    on the held-out tasks. Raises ValueError for a run of another family, or runs that
    searched with other settings (one report compares like with like). ``on_step`` is
    told what is being done before each step (training at tier B or C takes minutes on
    a CPU), for a progress display."""
    step = on_step or (lambda text: None)
    target = TARGETS[name]
    reports: list[RunReport] = []
    start_fitness: dict[tuple[str, ...], float | None] = {}
    space = get_space(target.family)
    configs = _comparable_configs(store, run_ids, target)
    for run_id, config in zip(run_ids, configs, strict=True):
        step(f"analysing run {run_id}")
        report = analyze_run(store, run_id, target)
        if report.found and compare_tier:
            step(f"run {run_id}: training its find and the warm start at tier "
                 f"{compare_tier}")
            tasks = tuple(config.tasks)
            if tasks not in start_fitness:
                start_fitness[tasks] = _fitness(space.seed(), tasks, compare_tier)
            found = store.individual(report.individual_id)
            value = _fitness(parse_program(found["text"]), tasks, compare_tier)
            report.compare_tier = compare_tier
            if value is not None and start_fitness[tasks]:
                report.ratio_to_start = value / start_fitness[tasks]
        reports.append(report)
    rows = _transfer(store, target, reports, transfer_tiers, step) if transfer_tiers else []
    first = configs[0] if configs else SearchConfig(family=target.family)
    config = {"runs": list(run_ids), "seeds": sorted({c.seed for c in configs}),
              "budget": first.budget, "max_seconds": first.max_seconds,
              "population": first.population, "tournament": first.tournament,
              "tasks": list(first.tasks), "tier": first.tier,
              "ops": list(first.ops) or "all", "neutral": first.neutral,
              "restart_every": first.restart_every, "restart_from": first.restart_from,
              "compare_tier": compare_tier,
              "transfer_tiers": list(transfer_tiers),
              # held-out tasks that the runs searched on after all: not held out for them
              "transfer_tasks_searched": [task for task in target.transfer_tasks
                                          if task in first.tasks]}
    return Report(name, config, reports, rows)


# What makes two runs the same study: their problem, and (between evolution runs) how
# they search it. The budget and time may differ (a stopped run, a baseline's budget).
SAME_PROBLEM = ("tasks", "tier", "ops")
SAME_EVOLUTION = ("population", "tournament", "selection", "start", "neutral",
                  "restart_every", "restart_from")


def _comparable_configs(store: Store, run_ids: Sequence[int],
                        target: Target) -> list[SearchConfig]:
    """The runs' configs, once every run is of the target's family and searched with
    the same settings as the others (evolution runs: as the other evolution runs)."""
    configs = []
    for run_id in run_ids:
        run = store.run(run_id)
        if run["family"] != target.family:
            raise ValueError(f"run {run_id} searched {run['family']} programs, not "
                             f"{target.family} programs")
        configs.append(SearchConfig.from_dict(run["config"]))
    pairs = list(zip(run_ids, configs, strict=True))
    evolution = [(i, c) for i, c in pairs if c.strategy == "evolution"]
    for fields, group in ((SAME_PROBLEM, pairs), (SAME_EVOLUTION, evolution)):
        if not group:
            continue
        (first, a), *others = group
        for other, b in others:
            for name in fields:
                if getattr(a, name) != getattr(b, name):
                    raise ValueError(f"runs {first} and {other} searched with different "
                                     f"{name} ({getattr(a, name)!r} and "
                                     f"{getattr(b, name)!r}): report them apart")
    return configs


def _transfer(store: Store, target: Target, reports: list[RunReport],
              tiers: Sequence[str], step: Callable[[str], None]) -> list[dict]:
    """The best program evolution found (preferring the target family) and the
    references, each on the held-out tasks at each of ``tiers``."""
    evolved = [r for r in reports if r.strategy == "evolution"]
    found = [r for r in evolved if r.found]
    if found:
        best = max(found, key=lambda r: -math.inf if r.fitness is None else r.fitness)
        candidate_id = best.individual_id
    else:
        runs = [r for r in evolved if r.best_fitness is not None]
        if not runs:
            return []
        best_run = max(runs, key=lambda r: r.best_fitness)
        candidate_id = store.top(best_run.run_id, 1)[0]["id"]
    candidate = store.individual(candidate_id)
    # With no child better than the start, the best "evolved" program is the start itself.
    kind = "evolved" if candidate["parent_id"] is not None else "start, unbeaten"
    programs = {f"{kind} (individual {candidate_id})": parse_program(candidate["text"])}
    for name in target.references:
        programs[name] = get_known(name).program()
    rows = []
    total, done = len(programs) * len(target.transfer_tasks) * len(tiers), 0
    for label, program in programs.items():
        row: dict[str, Any] = {"program": label}
        for task in target.transfer_tasks:
            for tier in tiers:
                key = f"{task}@{tier}"
                done += 1
                step(f"held-out training {done} of {total}, {key}: {label}")
                row[key], why = _scored(program, [task], tier)
                if why:  # e.g. the time limit, when the machine is busy
                    row.setdefault("not_scored", {})[key] = why
        rows.append(row)
    return rows

"""Regularized (aging) evolution: tournament selection, the oldest member dies.

Everything random about making child ``b`` comes from one generator seeded by
(run seed, b), so a search replays exactly from its seed and its recorded results.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..programs.mutation import Mutation, MutationFailed, mutate
from ..programs.program import Program
from ..programs.sampling import random_program
from ..programs.space import Space
from .pareto import pareto_tournament

SELECTIONS = ("fitness", "pareto")
RESTART_FROM = ("seed", "best")
RANDOM_LENGTHS = (3, 12)
"""Length range of random programs (the Lion and EvoNorm programs have 4-10 lines)."""
T = TypeVar("T")


@dataclass(frozen=True)
class Member:
    """An evaluated individual that takes part in tournaments."""

    birth: int
    individual_id: int
    program: Program
    fitness: float
    scores: dict[str, float] = field(default_factory=dict, compare=False)


class AgingPopulation:
    """The population of regularized evolution (Real et al. 2019).

    Members join in birth order; once there are more than ``size``, the oldest leaves,
    whatever its fitness. A tournament samples ``tournament`` members and keeps the best;
    with ``selection="pareto"`` it keeps a random member of the sample's Pareto front
    over the members' per-task (or per-architecture) ``scores``, as the EvoNorms search
    did, so that no single score is averaged away.
    """

    def __init__(self, size: int, tournament: int, selection: str = "fitness"):
        if size < 1 or tournament < 1:
            raise ValueError("population and tournament sizes must be at least 1")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, not {selection!r}")
        self.size = size
        self.tournament = tournament
        self.selection = selection
        self.members: deque[Member] = deque()

    def __len__(self) -> int:
        return len(self.members)

    def add(self, member: Member) -> None:
        self.members.append(member)
        while len(self.members) > self.size:
            self.members.popleft()

    def select(self, rng: random.Random) -> Member:
        if not self.members:
            raise RuntimeError("the population is empty")
        if self.selection == "pareto":
            scores = [m.scores or {"fitness": m.fitness} for m in self.members]
            return self.members[pareto_tournament(scores, self.tournament, rng)]
        k = min(self.tournament, len(self.members))
        sample = rng.sample(range(len(self.members)), k)
        # Highest fitness wins; among equals the youngest (highest birth), which keeps
        # the search moving across neutral plateaus.
        best = max(sample, key=lambda i: (_score(self.members[i].fitness),
                                          self.members[i].birth))
        return self.members[best]

    def restart(self, member: Member) -> None:
        """Empty the population but for ``member``: the search goes on from it alone."""
        self.members.clear()
        self.members.append(member)


class Restarts(Generic[T]):
    """When a run's population restarts and what it keeps: every ``every`` births (0:
    never), the seed (``keep="seed"``, for a run that ``starts_from_seed``) or the best
    so far (``keep="best"``). The Lion search restarted so that a search leaves a region
    its population has settled in. One rule for the search and for the replay of its
    records (members or rows, read through ``fitness``), so the two agree."""

    def __init__(self, every: int, keep: str, starts_from_seed: bool,
                 fitness: Callable[[T], float | None]):
        self.every, self.keep, self.starts_from_seed = every, keep, starts_from_seed
        self.fitness = fitness
        self.kept: dict[str, T] = {}  # "seed", "best" -> what a restart would keep

    def joined(self, birth: int, item: T) -> None:
        """Note an evaluated individual that joined the population."""
        if birth == 0 and self.starts_from_seed:
            self.kept["seed"] = item
        best = self.kept.get("best")  # the earlier one keeps a tie
        if best is None or _score(self.fitness(item)) > _score(self.fitness(best)):
            self.kept["best"] = item

    def after(self, birth: int) -> T | None:
        """What the population restarts from once ``birth`` has joined it, if it does."""
        if self.every > 0 and birth > 0 and birth % self.every == 0:
            return self.kept.get(self.keep)
        return None


def _score(fitness: float | None) -> float:
    return -math.inf if fitness is None or math.isnan(fitness) else fitness


def child_rng(run_seed: int, birth: int, attempt: int = 0) -> random.Random:
    suffix = f":{attempt}" if attempt else ""
    return random.Random(f"evoprog:{run_seed}:{birth}{suffix}")


# Tournaments a birth may hold before giving up: a parent that no mutation can change
# (within ``mutate``'s tries) makes the birth pick another parent, deterministically.
PARENT_ATTEMPTS = 10


def make_child(population: AgingPopulation, space: Space, run_seed: int,
               birth: int, neutral: bool = False) -> tuple[Member, Program, Mutation]:
    """Select a parent by tournament and mutate it, deterministically for (seed, birth);
    ``neutral`` keeps children that differ from the parent only in dead code. Raises
    MutationFailed only when ``PARENT_ATTEMPTS`` tournaments in a row drew parents
    that no mutation could change."""
    for attempt in range(PARENT_ATTEMPTS - 1):
        rng = child_rng(run_seed, birth, attempt)
        parent = population.select(rng)
        try:
            child, mutation = mutate(parent.program, space, rng, neutral=neutral)
        except MutationFailed:
            continue
        return parent, child, mutation
    rng = child_rng(run_seed, birth, PARENT_ATTEMPTS - 1)  # the last try may raise
    parent = population.select(rng)
    child, mutation = mutate(parent.program, space, rng, neutral=neutral)
    return parent, child, mutation


def make_random(space: Space, run_seed: int, birth: int) -> Program:
    """A random program of the space, deterministic for (seed, birth): random search's
    children and a random start's first population."""
    rng = child_rng(run_seed, birth)
    return random_program(space, rng, rng.randint(*RANDOM_LENGTHS))

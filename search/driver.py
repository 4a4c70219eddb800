"""The asynchronous steady-state search loop on Ray.

The driver keeps at most ``parallel`` evaluations in flight and takes results in the
order they finish (``ray.wait``), records each at once, and applies them to the
population strictly in birth order. Child ``b`` is made right after the result of birth
``b - parallel`` is applied, from a generator seeded by (seed, b). So the same seed and
options give the same individuals whatever order workers finish in, and a run can be
replayed from its records: that is how ``resume`` works.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import ray
import torch

from ..programs.program import Program, format_program
from ..programs.space import Space, get_space
from ..store import Store
from .evolution import (
    RESTART_FROM,
    AgingPopulation,
    Member,
    Restarts,
    T,
    make_child,
    make_random,
)
from .ranking import distinct_functions, functionally_distinct
from .workers import RETRYABLE, evaluate_remote, lost_worker, start_ray

# Re-submissions of one candidate after its worker died, on top of Ray's own retries.
MAX_LOST = 3
# ``parallel=0``: evaluations in flight per evaluation slot of the cluster. Births are
# applied in order, so one slow evaluation holds back the next children; a deep queue
# keeps every worker busy meanwhile (tier-A times range from 0.05 s to over 1 s).
AUTO_PARALLEL_PER_SLOT = 4
# Results recorded while evaluations return quickly share a commit for at most this long
# (the driver also commits before it waits for a worker). A killed driver loses at most
# these: to ``resume`` they are evaluations that were still in flight.
COMMIT_SECONDS = 0.05
# The longest the driver waits on Ray before it looks at Ctrl-C (or SIGTERM) again.
WAIT_SECONDS = 0.25
# Signals that stop a search as Ctrl-C does: marked interrupted, resumable.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


STRATEGIES = ("evolution", "random")
STARTS = ("seed", "random")


@dataclass
class SearchConfig:
    """Everything that defines a run; stored with it, so ``resume`` needs nothing else.

    ``tasks`` are scored at ``tier`` for every candidate (empty: the family's default);
    ``funnel`` lists costlier tiers (e.g. ``["B", "C"]``) to which the ``promote`` best
    programs go after the search, a quarter as many at each further tier.
    ``strategy="random"`` replaces mutation by random programs (the baseline);
    ``start="random"`` fills the first population with random programs instead of
    the seed. ``selection`` is ``fitness`` or ``pareto`` (default: pareto for layers).
    ``max_seconds`` stops the search early; it can be resumed. ``ops`` limits mutation
    and random programs to these ops of the family's space (empty: all of them).
    ``neutral`` keeps children that differ from their parent only in dead code (served
    by the cache at the parent's score) instead of mutating again, so dead code can
    accumulate and a later mutation can bring it to life. ``restart_every`` births
    (0: never), evolution empties its population but for the seed or, with
    ``restart_from="best"``, the best program so far.
    """

    family: str = "optimizer"
    budget: int = 200
    population: int = 100
    tournament: int = 10
    seed: int = 0
    tasks: list[str] = field(default_factory=list)
    tier: str = "A"
    parallel: int = 0  # evaluations in flight; 0 = AUTO_PARALLEL_PER_SLOT per slot
    cpus_per_eval: float = 1.0
    gpus_per_eval: float | None = None  # None: settled when the search starts
    strategy: str = "evolution"
    start: str = "seed"
    selection: str = ""
    funnel: list[str] = field(default_factory=list)
    promote: int = 8
    max_seconds: float | None = None
    ops: list[str] = field(default_factory=list)
    neutral: bool = False
    restart_every: int = 0
    restart_from: str = "seed"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        data = dict(data)
        if "task" in data:  # runs recorded before multi-task search
            data.setdefault("tasks", [data.pop("task")])
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self) -> None:
        from ..evaluators import DEFAULT_TASKS, TIERS, task_family

        for name in ("budget", "population", "tournament", "promote"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.parallel < 0:
            raise ValueError(f"--parallel must be 0 (auto) or more, got {self.parallel}")
        if self.cpus_per_eval <= 0 or (self.gpus_per_eval or 0) < 0:
            raise ValueError("--cpus-per-eval must be positive and --gpus-per-eval >= 0")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}")
        if self.start not in STARTS:
            raise ValueError(f"--start must be one of {', '.join(STARTS)}")
        if self.restart_every < 0:
            raise ValueError(f"--restart-every must be 0 (never) or more, got "
                             f"{self.restart_every}")
        if self.restart_from not in RESTART_FROM:
            raise ValueError(f"--restart-from must be one of {', '.join(RESTART_FROM)}")
        if self.restart_every and self.restart_from == "seed" and self.start != "seed":
            raise ValueError("--restart-from seed needs a run that starts from the seed "
                             "(--start seed); use --restart-from best")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"--time must be positive, got {self.max_seconds}")
        get_space(self.family).restricted(self.ops)  # ProgramError is a ValueError
        self.tasks = list(self.tasks) or list(DEFAULT_TASKS[self.family])
        for task in self.tasks:
            family = task_family(task)  # ValueError naming the known tasks
            if family != self.family:
                raise ValueError(f"task {task!r} scores {family} programs, not "
                                 f"{self.family} programs")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("a task is listed twice")
        if self.tier not in TIERS:
            raise ValueError(f"--tier must be one of {', '.join(TIERS)}, got {self.tier!r}")
        later = TIERS[TIERS.index(self.tier) + 1:]
        for tier in self.funnel:
            if tier not in later:
                raise ValueError(f"funnel tiers must come after the search's tier "
                                 f"{self.tier} ({', '.join(later) or 'none is'}), "
                                 f"got {tier!r}")
        if self.funnel != sorted(self.funnel, key=TIERS.index):
            raise ValueError(f"funnel tiers go from cheaper to costlier ("
                             f"{','.join(sorted(self.funnel, key=TIERS.index))}), got "
                             f"{','.join(self.funnel)}")
        self.selection = self.selection or ("pareto" if self.family == "layer"
                                            else "fitness")

    def restarts(self, fitness: Callable[[T], float | None]) -> Restarts[T]:
        """This run's restarts (none for random search), over members or rows."""
        every = self.restart_every if self.strategy == "evolution" else 0
        return Restarts(every, self.restart_from, self.start == "seed", fitness)


@dataclass
class Outcome:
    """What became of one individual: evaluated, served from the cache, or recorded."""

    status: str
    reason: str | None
    fitness: float | None
    metrics: dict[str, Any]
    seconds: float = 0.0
    worker: str | None = None
    cache_hit: bool = False
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    individual_id: int | None = None


@dataclass
class Pending:
    birth: int
    program: Program
    program_hash: str
    parent_id: int | None
    mutation: str | None
    discarded_invalid: int = 0
    discarded_same: int = 0

    @cached_property
    def text(self) -> str:
        """The program's text, made once: it is both recorded and sent to a worker."""
        return format_program(self.program)


@dataclass
class Progress:
    budget: int
    done: int = 0
    evaluated: int = 0
    cache_hits: int = 0
    rejected: int = 0
    best: float | None = None
    phase: str = "search"  # or the funnel tier being evaluated: "tier B"
    phase_done: int = 0  # programs of the funnel tier scored so far, of phase_total
    phase_total: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.started, 1e-9)


class SearchError(RuntimeError):
    pass


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the command. ``signum`` says which, so the command can
    exit with the code a shell gives that signal (128 + signum: 130, 143)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


# How long joining a cluster waits for its head to answer before giving up (Ray itself
# retries for many minutes).
CONNECT_SECONDS = 5.0


def _join(address: str | None) -> dict:
    """``start_ray``, with a cluster that cannot be reached, or an address that cannot be
    one, as one clear SearchError."""
    shown = address or os.environ.get("RAY_ADDRESS")
    if shown and shown != "auto" and not ray.is_initialized():
        _check_reachable(shown)
    try:
        cluster = start_ray(address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).split(". ")[0].rstrip(".")
        raise SearchError(f"cannot join the Ray cluster at {shown}: {first}") from None
    return cluster


def sigterm_as_ctrl_c() -> None:
    """Make SIGTERM (``kill``, a cluster scheduler) stop the process as Ctrl-C does, for
    the rest of the process: for a command, at its start (``start_ray`` keeps it in
    place when Ray starts).

    Ray's driver answers SIGTERM with ``sys.exit`` after its C++ handler prints a stack
    dump, and a search stopped that way was marked failed. Raising ``Interrupted``
    instead ends the run 'interrupted' and lets the command print how to resume it.
    (While ``Search.run`` searches, SIGTERM is handled as Ctrl-C anyway.) Only the main
    thread can install handlers.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupted)


def _check_reachable(address: str) -> None:
    """Fail within seconds, not Ray's minutes of retries, when nothing answers at a
    ``host:port`` address (``ray://`` and other schemes are left to Ray)."""
    host, colon, port = address.rpartition(":")
    if "://" in address:
        return
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SearchError(f"cannot join the Ray cluster at {address}: an address is "
                          "HOST:PORT (the head's GCS port, 6379 unless set), or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)),
                                      timeout=CONNECT_SECONDS) as connection:
            # A cluster with TLS on opens with a TLS handshake: leave it to Ray.
            tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
            speaks = tls or _speaks_grpc(connection)
    except OSError as exc:
        raise SearchError(f"cannot join the Ray cluster at {address}: nothing answers "
                          f"there ({exc.strerror or exc})") from None
    if not speaks:
        raise SearchError(f"cannot join the Ray cluster at {address}: something answers "
                          "there, but not a Ray head (its GCS port is 6379 unless set; "
                          "the dashboard's 8265 and the client's 10001 are other ports)")


# An HTTP/2 client's opening (RFC 9113): the connection preface and an empty SETTINGS
# frame. A Ray head's GCS, a gRPC server, answers with a SETTINGS frame of its own.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_grpc(connection: socket.socket) -> bool:
    """Whether the server behind ``connection`` answers as an HTTP/2 (gRPC) server does,
    within CONNECT_SECONDS. Otherwise Ray would retry it for minutes, printing warnings."""
    connection.settimeout(CONNECT_SECONDS)
    connection.sendall(_HTTP2_PREFACE)
    try:
        frame = connection.recv(9)
    except TimeoutError:
        return False
    return len(frame) == 9 and frame[3] == 4  # a frame header of type SETTINGS


class Search:
    """One run: create with ``start`` or continue one with ``resume``, then ``run()``."""

    def __init__(self, store: Store, run_id: int, config: SearchConfig,
                 on_progress: Callable[[Progress], None] | None = None):
        self.store = store
        self.run_id = run_id
        self.config = config
        self.space: Space = get_space(config.family).restricted(config.ops)
        self.on_progress = on_progress or (lambda progress: None)
        self.population = AgingPopulation(config.population, config.tournament,
                                           config.selection or "fitness")
        self.progress = Progress(budget=config.budget)
        self.restarts: Restarts[Member] = config.restarts(lambda m: m.fitness)
        self.recorded = {row["birth"]: row for row in store.individuals(run_id)}
        # The run's searching so far, for each individual's ``elapsed``: a resumed run
        # goes on from its last record, not counting the pause.
        self.searched_before = max((row["elapsed"] or 0.0 for row in self.recorded.values()),
                                   default=0.0)
        self.pending: dict[int, Pending] = {}
        self.results: dict[int, Outcome] = {}
        # Functional-equivalence cache within the run: fingerprint -> first birth.
        self.first_birth_of: dict[str, int] = {}
        self.fingerprint_of: dict[str, str] = {}  # structural hash -> fingerprint
        self.waiting_on: dict[int, list[int]] = {}
        self.in_flight: dict[ray.ObjectRef, int] = {}
        self.lost: dict[int, int] = {}  # birth -> evaluations lost with their worker
        self._interrupted = _StopRequest()  # set by Ctrl-C or SIGTERM while run() searches
        # Ray rebuilds a task's options on every ``options()`` call: build them once.
        self.evaluate = evaluate_remote.options(num_cpus=config.cpus_per_eval,
                                                num_gpus=config.gpus_per_eval or 0)

    @classmethod
    def start(cls, store: Store, config: SearchConfig, address: str | None = None,
              **kwargs) -> Search:
        config.validate()
        cluster = _join(address)
        settle_resources(config, cluster)
        run_id = store.create_run(config.family, config.seed, config.budget, asdict(config),
                                  cluster["address"])
        return cls(store, run_id, config, **kwargs)

    @classmethod
    def resume(cls, store: Store, run_id: int, address: str | None = None,
               max_seconds: float | None = None, **kwargs) -> Search:
        """Continue a run; ``max_seconds`` limits this continuation (default: none)."""
        run = store.run(run_id)
        config = SearchConfig.from_dict(run["config"])
        config.max_seconds = max_seconds
        config.validate()
        cluster = _join(address)
        if cluster["address"] == "local":
            _fit_machine(config, cluster)
        store.set_run_status(run_id, "running")
        return cls(store, run_id, config, **kwargs)

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Search until the budget of individuals is recorded (or the time is up), then
        promote the best through the funnel tiers; returns the run id."""
        try:
            with _torch_threads(1), _stop_signals_deferred() as self._interrupted, \
                    self.store.grouped_commits(COMMIT_SECONDS):
                finished = self._search()
                for depth, tier in enumerate(self.config.funnel if finished else ()):
                    finished = self._promote(
                        tier, max(1, self.config.promote // 4 ** depth),
                        self.config.funnel[depth - 1] if depth else self.config.tier)
                    if not finished:
                        break
            if not finished:
                self._stop("stopped")
                return self.run_id
        except KeyboardInterrupt:
            self._stop("interrupted")
            raise
        except BaseException:
            self._stop("failed")
            raise
        self.store.set_run_status(self.run_id, "finished", finished=True)
        return self.run_id

    def _search(self) -> bool:
        """Make, evaluate and apply births until the budget is applied; False if the time
        ran out first."""
        self._offer(self._make(0))
        applied = -1
        while applied < self.config.budget - 1:
            while applied + 1 in self.results:
                applied += 1
                self._apply(applied)
            if applied >= self.config.budget - 1:
                break
            if self._out_of_time():
                return False
            self._collect()
        return True

    def _out_of_time(self) -> bool:
        limit = self.config.max_seconds
        return limit is not None and time.perf_counter() - self.progress.started > limit

    def _make(self, birth: int) -> Pending:
        """Individual ``birth``: the seed, a random program, or a mutated tournament
        winner, each drawn deterministically from (run seed, birth)."""
        config = self.config
        if birth == 0 and config.start == "seed":
            seed = self.space.seed()
            return Pending(0, seed, self.space.hash(seed), None, None)
        try:
            if config.strategy == "random" or (config.start == "random" and (
                    birth < config.population or not len(self.population))):
                program = make_random(self.space, config.seed, birth)
                return Pending(birth, program, self.space.hash(program), None, "random")
            parent, program, mutation = make_child(self.population, self.space,
                                                   config.seed, birth, config.neutral)
        except RuntimeError as exc:  # no valid program found: mutation or sampling
            raise SearchError(f"birth {birth}: {exc}") from exc
        return Pending(birth, program, self.space.hash(program), parent.individual_id,
                       str(mutation), mutation.invalid, mutation.same)

    def _apply(self, birth: int) -> None:
        """Add a finished birth to the population and make the child it unlocks."""
        outcome = self.results[birth]
        config = self.config
        if outcome.status == "ok":
            member = Member(birth, outcome.individual_id, self.pending[birth].program,
                            outcome.fitness, dict(outcome.metrics.get("scores") or {}))
            self.population.add(member)
            self.restarts.joined(birth, member)
        elif birth == 0 and config.start == "seed":
            raise SearchError(f"the seed program was {outcome.status}: {outcome.reason}")
        kept = self.restarts.after(birth)
        if kept is not None:
            self.population.restart(kept)
        del self.pending[birth]
        parallel = config.parallel
        unlocked = range(1, parallel + 1) if birth == 0 else [birth + parallel]
        for child_birth in unlocked:
            if child_birth < config.budget:
                self._offer(self._make(child_birth))

    def _offer(self, item: Pending) -> None:
        """Take a new individual: replay it, serve it from the cache, or evaluate it."""
        self.pending[item.birth] = item
        row = self.recorded.get(item.birth)
        if row is not None:
            if row["program_hash"] != item.program_hash:
                raise SearchError(
                    f"birth {item.birth} of run {self.run_id} was recorded with another "
                    "program than the replay makes; the run cannot be resumed with this "
                    "version of evoprog")
            self.first_birth_of.setdefault(self._fingerprint(item), item.birth)
            self._finish(item.birth, Outcome(
                row["status"], row["reason"], row["fitness"], row["metrics"],
                cache_hit=bool(row["cache_hit"]), individual_id=row["id"]), record=False)
            return
        if item.program_hash not in self.fingerprint_of:
            self.store.add_program(item.program_hash, self.config.family, item.text,
                                   format_program(self.space.prune(item.program)))
        first = self.first_birth_of.setdefault(self._fingerprint(item), item.birth)
        if first != item.birth:
            if first in self.results:
                self._finish(item.birth, _cache_copy(self.results[first]))
            else:
                self.waiting_on.setdefault(first, []).append(item.birth)
            return
        cached = self.store.cached_result(self.config.family, item.program_hash,
                                          self.config.tasks, self.config.tier)
        if cached is not None:
            self._finish(item.birth, Outcome(cached["status"], cached["reason"],
                                             cached["fitness"], {**cached["metrics"],
                                                                 "cached_from": cached["id"]},
                                             cache_hit=True))
            return
        self._submit(item)

    def _fingerprint(self, item: Pending) -> str:
        """The functional fingerprint, computed once per structural hash."""
        key = self.fingerprint_of.get(item.program_hash)
        if key is None:
            key = self.fingerprint_of[item.program_hash] = self.space.fingerprint(item.program)
        return key

    def _submit(self, item: Pending) -> None:
        ref = self.evaluate.remote(item.text, self.config.tasks, self.config.tier)
        self.in_flight[ref] = item.birth

    def _collect(self) -> None:
        """Wait until an evaluation finishes, then record every one that has finished.

        Taking all finished ones at once saves a wait per result when evaluations are
        quick; the order they are recorded in changes nothing but their row ids."""
        if not self.in_flight:
            raise SearchError("nothing in flight and nothing to apply")
        for ref in self._wait(list(self.in_flight)):
            self._receive(ref)

    def _wait(self, refs: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
        """The finished ones among ``refs``, once at least one has finished, or none once
        the time limit has passed (an evaluation at a costly tier can take minutes);
        Ctrl-C is answered between waits, and what is recorded is committed before
        waiting."""
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        if not ready:
            self.store.flush()  # what is recorded becomes durable while we wait
        while not ready and not self._interrupted.is_set() and not self._out_of_time():
            ready, _ = ray.wait(refs, num_returns=1, timeout=WAIT_SECONDS)
        if self._interrupted.is_set():
            raise Interrupted(self._interrupted.signum)
        return ready

    def _receive(self, ref: ray.ObjectRef) -> None:
        """Record the finished evaluation ``ref``, or submit it again if its worker died."""
        birth = self.in_flight.pop(ref)
        try:
            reply = ray.get(ref)
        except (*RETRYABLE, ray.exceptions.RayTaskError) as exc:
            lost = self.lost.get(birth, 0)
            reason = _failed_because(exc, lost)
            if reason is None:
                self.lost[birth] = lost + 1
                self._submit(self.pending[birth])
            else:
                self._finish(birth, _failure(reason))
            return
        result = reply["result"]
        self._finish(birth, Outcome(
            result["status"], result["reason"], result["fitness"], result["metrics"],
            seconds=result["seconds"], worker=reply["worker"],
            evaluations=reply.get("evaluations") or []))

    def _finish(self, birth: int, outcome: Outcome, record: bool = True) -> None:
        item = self.pending[birth]
        if record:
            outcome.individual_id = self.store.add_individual(
                self.run_id, birth, item.program_hash, item.parent_id, item.mutation,
                outcome.status, outcome.reason, outcome.fitness, outcome.metrics,
                outcome.seconds, cache_hit=outcome.cache_hit, worker=outcome.worker,
                discarded_invalid=item.discarded_invalid,
                discarded_same=item.discarded_same, text=item.text,
                evaluations=_evaluation_rows(outcome.evaluations),
                elapsed=self.searched_before + time.perf_counter() - self.progress.started)
        self.results[birth] = outcome
        self._count(outcome)
        for dependent in self.waiting_on.pop(birth, []):
            self._finish(dependent, _cache_copy(outcome))

    # -- funnel ------------------------------------------------------------------------

    def _promote(self, tier: str, count: int, previous: str) -> bool:
        """Evaluate the ``count`` best functionally distinct programs of the previous
        tier at ``tier`` and record the results beside the search's own. Programs
        already scored at this tier (a resumed run) are not evaluated again. As in the
        search, a lost worker's evaluation is submitted again (at most ``MAX_LOST``
        times) and Ctrl-C is answered between waits. The progress shows this tier and
        counts its programs from the start, as the first of them can take minutes.
        False when the time limit passed first: ``resume`` scores the rest."""
        if self._out_of_time():
            return False
        key = suite_key(self.config.tasks)
        waiting: dict[ray.ObjectRef, tuple[dict, int]] = {}
        ranked = self._ranked(previous, count)
        for ind in ranked:
            if not self.store.has_evaluation(ind["id"], key, tier):
                waiting[self.evaluate.remote(ind["text"], self.config.tasks, tier)] = (ind, 0)
        progress = self.progress
        progress.phase, progress.phase_total = f"tier {tier}", len(ranked)
        progress.phase_done = len(ranked) - len(waiting)
        self.on_progress(progress)
        while waiting:
            finished = self._wait(list(waiting))
            if not finished:  # out of time
                return False
            for done in finished:
                ind, lost = waiting.pop(done)
                try:
                    reply = ray.get(done)
                except (*RETRYABLE, ray.exceptions.RayTaskError) as exc:
                    reason = _failed_because(exc, lost)
                    if reason is None:
                        ref = self.evaluate.remote(ind["text"], self.config.tasks, tier)
                        waiting[ref] = (ind, lost + 1)
                        continue
                    rows = [_failed_row(key, tier, reason)]
                else:
                    result = reply["result"]
                    rows = _evaluation_rows(reply["evaluations"])
                    if len(self.config.tasks) > 1:
                        rows += _evaluation_rows([{**result, "task": key, "tier": tier}])
                self.store.add_evaluations(ind["id"], rows)
                progress.phase_done += 1
                self.on_progress(progress)
        return True

    def _ranked(self, tier: str, n: int) -> list[dict]:
        """The run's ``n`` best ok programs by their fitness at ``tier``, one per
        function, so promotion's costly slots do not go to copies of one program."""
        if tier == self.config.tier:
            return functionally_distinct(self.store, self.run_id, self.space, n)
        return distinct_functions(
            self.store.top_at_tier(self.run_id, suite_key(self.config.tasks), tier), n,
            self.space, {})

    def _count(self, outcome: Outcome) -> None:
        p = self.progress
        p.done += 1
        p.cache_hits += outcome.cache_hit
        p.evaluated += not outcome.cache_hit
        p.rejected += outcome.status != "ok"
        if outcome.status == "ok" and (p.best is None or outcome.fitness > p.best):
            p.best = outcome.fitness
        self.on_progress(p)

    def _stop(self, status: str) -> None:
        """Mark the run stopped; what is recorded stays, so ``resume`` can continue.

        Evaluations still in flight are left to finish and their results dropped, not
        cancelled: Ray's cancellation races with a task's reply arriving at that moment
        and can abort the driver process ("Tried to complete task that was not
        pending"). Each ends on its own (a fixed number of steps, and for optimizer
        tasks a time limit), and a driver that exits (Ctrl-C, or the search command
        ending) takes its tasks down with it.
        """
        self.in_flight = {}
        self.store.set_run_status(self.run_id, status)


def settle_resources(config: SearchConfig, cluster: dict[str, Any]) -> None:
    """Fill in what a new search leaves to the cluster it runs on: the GPU share of an
    evaluation and the number of evaluations in flight (both are then stored with the
    run; a resumed run keeps them, except a share its local machine cannot give).

    Unset, ``gpus_per_eval`` gives every evaluation slot of this machine an equal share
    of its GPUs (none on a machine without). On a cluster it stays 0 unless set: there,
    evaluations that need a GPU could not run on CPU-only worker nodes.
    """
    local = cluster["address"] == "local"
    if local and config.cpus_per_eval > cluster["cpus"]:
        raise SearchError(f"--cpus-per-eval {config.cpus_per_eval:g} but this machine has "
                          f"{cluster['cpus']} CPUs for Ray")
    slots = cluster["cpus"] / config.cpus_per_eval
    if config.gpus_per_eval is None:
        share = cluster["gpus"] / slots if local and cluster["gpus"] and slots else 0.0
        config.gpus_per_eval = math.floor(share * 1e4) / 1e4  # Ray's resource precision
    if local and config.gpus_per_eval > cluster["gpus"]:
        # Ray on this machine cannot grow; a cluster's autoscaler may add GPU nodes.
        raise SearchError(f"--gpus-per-eval {config.gpus_per_eval:g} but this machine "
                          f"has {cluster['gpus']:g} GPUs for Ray")
    if config.parallel == 0:
        if config.gpus_per_eval and cluster["gpus"]:
            slots = min(slots, cluster["gpus"] / config.gpus_per_eval)
        config.parallel = max(2, int(AUTO_PARALLEL_PER_SLOT * slots))


def _fit_machine(config: SearchConfig, cluster: dict[str, Any]) -> None:
    """Shrink a resumed run's per-evaluation request to what this machine has.

    A run started where there were more CPUs or GPUs asks for more than local Ray can
    ever give, and Ray then waits forever for a slot. The individuals do not depend on
    the request, and ``parallel`` stays, so the resumed run stays the same run.
    """
    if config.cpus_per_eval > cluster["cpus"]:
        config.cpus_per_eval = float(max(cluster["cpus"], 1))
    if (config.gpus_per_eval or 0) > cluster["gpus"]:
        config.gpus_per_eval = None  # this machine's share, as a new search takes it
        settle_resources(config, cluster)


class _StopRequest(threading.Event):
    """Set by Ctrl-C or SIGTERM; ``signum`` is the signal that came."""

    signum: int = signal.SIGINT


@contextmanager
def _stop_signals_deferred() -> Iterator[_StopRequest]:
    """Turn Ctrl-C and SIGTERM into a request the search loop checks between waits.

    Python raises KeyboardInterrupt only where the main thread runs Python code, and
    Ray's blocking waits run the signal handler from inside their C++ loop, where the
    exception can be lost: the search then ran on to its end. A handler that only sets
    an event cannot be lost that way. A second signal interrupts at once. Elsewhere
    than the main thread (where handlers cannot be installed) both keep their usual
    behaviour.
    """
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request.is_set():
            raise Interrupted(signum)
        request.signum = signum
        request.set()

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, before in previous.items():  # None: a handler set outside Python
            signal.signal(signum, signal.SIG_DFL if before is None else before)
    if request.is_set():
        raise Interrupted(request.signum)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run the driver's own torch work (functional fingerprints of tiny tensors) on
    ``threads`` threads: more only contend with the workers for the same cores, and
    torch's thread pool turns microseconds into milliseconds when they are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def suite_key(tasks: list[str]) -> str:
    """The task name under which a run's combined score is recorded at later tiers."""
    return "+".join(tasks)


def _failure(reason: str) -> Outcome:
    return Outcome("failed", reason, None, {})


def _evaluation_rows(evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the store keeps of each evaluation a worker reports."""
    return [{k: e[k] for k in ("task", "tier", "fitness", "status", "metrics", "seconds")}
            for e in evaluations]


def _failed_row(task: str, tier: str, reason: str) -> dict[str, Any]:
    """An evaluation record for a promotion that could not be scored."""
    return {"task": task, "tier": tier, "fitness": None, "status": "failed",
            "metrics": {"reason": reason}, "seconds": 0.0}


def _cause(exc: BaseException) -> BaseException:
    """What went wrong: the error an evaluation raised, or Ray's own."""
    cause = getattr(exc, "cause", None)
    return exc if cause is None else cause


def _failed_because(exc: BaseException, lost: int) -> str | None:
    """Why an evaluation that raised ``exc`` is recorded as failed, or None to run it
    again. An error the evaluation itself raised is the candidate's fault. A worker,
    node or device memory that failed is not (Ray has already retried a dead worker's
    task on its own): the candidate runs again, until it has been lost MAX_LOST times
    before (``lost``), when it keeps failing so and is recorded."""
    if not lost_worker(exc):
        return _raised(exc)
    if lost < MAX_LOST:
        return None
    return f"worker lost {lost + 1} times: {type(_cause(exc)).__name__}"


def _raised(exc: ray.exceptions.RayTaskError) -> str:
    """What an evaluation that raised is recorded with: the error and its message."""
    cause = _cause(exc)
    message = str(cause).strip().splitlines()
    detail = f": {message[0][:200]}" if message else ""
    return f"evaluation raised {type(cause).__name__}{detail}"


def _cache_copy(outcome: Outcome) -> Outcome:
    """The outcome again for a program equal to an earlier one, naming the individual
    that was evaluated (``metrics["cached_from"]``)."""
    source = outcome.metrics.get("cached_from", outcome.individual_id) \
        if outcome.cache_hit else outcome.individual_id
    return Outcome(outcome.status, outcome.reason, outcome.fitness,
                   {**outcome.metrics, "cached_from": source}, cache_hit=True)

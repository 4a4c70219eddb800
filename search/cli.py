"""The ``evoprog`` command line: search, inspect, export.

Every command that reads or writes results takes ``--db`` (default ``evoprog.db`` in
the working directory, or ``$EVOPROG_DB``). Mistakes a user can make end in one
``Error:`` line and a non-zero exit; nothing already recorded is touched.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ..evaluators import DEFAULT_TASKS, TIERS, machine
from ..evaluators.progress import reference_in_training, watching
from ..programs.export import (
    check_class_name,
    export_known,
    export_program,
    reads_learning_rate,
)
from ..programs.known import KNOWN, KNOWN_LAYERS, KnownProgram, get_known
from ..programs.layer_export import export_known_layer, export_layer
from ..programs.program import Program, ProgramError, parse_program
from ..programs.report import Description, describe
from ..programs.space import get_space, with_article
from ..store import Store, StoreError, database_error
from .driver import (
    Progress,
    Search,
    SearchConfig,
    SearchError,
    sigterm_as_ctrl_c,
    suite_key,
)
from .evolution import RESTART_FROM
from .output_files import (
    SQLITE_SIDE_FILES,
    OutputError,
    check_output,
    is_sqlite,
    write_text,
)
from .pareto import pareto_front
from .plots import plot_rediscovery, plot_run
from .ranking import functionally_distinct

DEFAULT_DB = "evoprog.db"
# Tables are wide; when output goes to a file or pipe, don't squeeze them to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


NUMBER = re.compile(r"[-+]?[\d.,]+(e[-+]?\d+)?%?\*?")


def show_table(table: Table) -> None:
    """Print a table so that nothing in it is cut short on a narrow terminal (a fitness
    must never show as "0.9…"): a table that does not fit loses its borders and padding,
    columns of numbers keep each number on one line, and text and the headers there is
    no room for fold onto more lines."""
    for column in table.columns:
        column.overflow = "fold"
    unbounded = console.options.update_width(100_000)
    if Measurement.get(console, unbounded, table).maximum > console.width:
        table.box, table.padding, table.pad_edge = box.SIMPLE, (0, 0, 0, 0), False
        table.show_edge = False
        numbers = []  # (column, its widest number, its header's longest word)
        for column in table.columns:
            cells = [str(cell) for cell in column.cells]
            if cells and all(NUMBER.fullmatch(c) or c == "-" for c in cells):
                column.width = max(map(len, cells))
                numbers.append((column, column.width,
                                max(map(len, str(column.header).split()))))
        # Widen them, cheapest first, while the table still fits (with a column to
        # spare): each to half its header ("gener" over "ated"), then each to its whole
        # header, so that a header folds only where the terminal leaves no room, and
        # then into pieces a reader can join.
        for whole in (False, True):
            for column, _, header in sorted(numbers, key=lambda n: n[2] - n[1]):
                width = header if whole or header <= 6 else -(-header // 2)
                if width <= column.width:
                    continue
                narrower, column.width = column.width, width
                if _narrowest(table) >= console.width:
                    column.width = narrower
    console.print(table)


TEXT_FOLD = 9  # a longer word in a column of text folds before a header of numbers does


def _narrowest(table: Table) -> int:
    """How narrow a borderless ``show_table`` table can fold: each column as wide as its
    set width or its longest word (in text, up to TEXT_FOLD), and a space between
    columns."""
    def longest_word(text: object) -> int:
        return max((len(word) for word in str(text).split()), default=1)

    return sum(column.width or min(TEXT_FOLD, max(longest_word(column.header),
                                                  *map(longest_word, column.cells)))
               for column in table.columns) + len(table.columns) - 1


class UserError(click.ClickException):
    """A mistake the user can fix; shown as one line, exit code 1."""


class EvoprogGroup(click.Group):
    """Turns the errors users can cause into one-line messages instead of tracebacks,
    and Ctrl-C (or SIGTERM) in a command without its own handling into one line and the
    signal's exit code instead of click's bare "Aborted!"."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (StoreError, ProgramError, SearchError, OutputError) as exc:
            family = getattr(exc, "looks_like", None)  # a program of the other family
            raise UserError(f"{exc}; pass --family {family}" if family else str(exc)) from None
        except sqlite3.DatabaseError as exc:  # a damaged file, a full disk, ...
            db = ctx.meta.get(DB_META, "the database")
            raise UserError(database_error(db, exc)) from None
        except KeyboardInterrupt as exc:
            word, code = _stopped_by(exc)
            err_console.print(f"\n{word}.")
            sys.exit(code)


def _stopped_by(exc: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped the command, in a word, and the exit code a shell gives that signal:
    130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    signum = getattr(exc, "signum", signal.SIGINT)
    return ("Interrupted" if signum == signal.SIGINT else "Terminated"), 128 + signum


def _db_arg(path: Path) -> str:
    """``--db PATH`` as a user can paste it into a shell."""
    return f"--db {shlex.quote(str(path))}"


DB_META = "evoprog.db"  # where a command's --db is kept for error messages (ctx.meta)


def _remember_db(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    ctx.meta[DB_META] = value
    return value


def db_option(func):
    return click.option(
        "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
        default=lambda: os.environ.get("EVOPROG_DB", DEFAULT_DB), show_default=DEFAULT_DB,
        callback=_remember_db,
        help="SQLite database file (default: $EVOPROG_DB, else evoprog.db).")(func)


def restart_options(func):
    func = click.option(
        "--restart-from", type=click.Choice(RESTART_FROM), default="seed",
        show_default=True, help="What a restart keeps: the seed program, or the best "
                                "program so far.")(func)
    return click.option(
        "--restart-every", type=click.IntRange(min=0), default=0, show_default=True,
        metavar="N", help="Every N children, empty the population but for the seed (or "
                          "the best program so far) and go on from it, as the Lion search "
                          "did to leave a region it had settled in (0: never).")(func)


ops_option = click.option(
    "--ops", "op_spec", default="all", show_default=True,
    help="Ops mutation and random programs may use: 'all', a named set ('lion': the "
         "released Lion search space's 45 functions, without the Lion-K maps), or "
         "comma-separated op names.")


def neutral_option(func):
    return click.option(
        "--neutral", is_flag=True,
        help="Keep children that differ from their parent only in dead code (a statement "
             "nothing reads): they join the population at the parent's score without "
             "training, so dead code can build up and a later mutation can bring it to "
             "life in one step.")(func)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def open_existing(db_path: Path) -> Store:
    return Store.open(db_path, create=False)


@contextmanager
def open_for_runs(db_path: Path) -> Iterator[Store]:
    """``Store.open`` for a command that adds runs. A database file that the command
    created is removed again when no run was recorded in it (the search failed to start,
    or was stopped before), so a mistake leaves no empty file behind; a file that was
    there before, that holds a run, or that another process has open (a search started
    beside this one, about to record its run) is never removed."""
    existed = db_path.exists()
    folder = db_path.resolve().parent
    if not existed and not folder.is_dir():  # a typo makes no folders
        why = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"cannot create {db_path}: {db_path.parent} {why}")
    store = Store.open(db_path)
    if existed:  # refused before any search starts, not at its first record
        try:
            store.check_can_record()
        except BaseException:
            store.close()
            raise
    try:
        yield store
    finally:
        try:
            unused = not existed and store.latest_run_id() is None
        except sqlite3.Error:
            unused = False
        store.close()
        if unused and not _open_elsewhere(db_path):
            for path in (db_path, *(Path(f"{db_path}{side}") for side in SQLITE_SIDE_FILES)):
                path.unlink(missing_ok=True)


def _open_elsewhere(db_path: Path) -> bool:
    """Whether another connection still has the (WAL mode) database open, checked after
    closing ours: SQLite deletes the write-ahead log when its last connection closes,
    and only then. Removing the file under another process would lose all it writes."""
    return Path(f"{db_path}-wal").exists()


class StepLine:
    """A progress line that a command's steps set ("held-out training 2 of 8, ...") and
    the training loop extends (", step 300 of 1500"), redrawn at most four times a
    second: an evaluation at tier C trains for minutes."""

    def __init__(self, update: Callable[[str], None]):
        self.update, self.text, self.shown = update, "", 0.0

    def step(self, text: str) -> None:
        self.text = text
        self.update(text)

    def training(self, step: int, steps: int) -> None:
        now = time.monotonic()
        if self.text and (now - self.shown >= 0.25 or step == steps):
            self.shown = now
            reference = reference_in_training()  # the seed a score is relative to
            self.update(f"{self.text}{f', {reference}' if reference else ''}, step {step} "
                        f"of {steps}")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@click.group(cls=EvoprogGroup)
@click.version_option(package_name="evoprog")
def cli() -> None:
    """Discover optimizers and normalization-activation layers by evolving symbolic
    programs."""
    sigterm_as_ctrl_c()  # SIGTERM (kill, a scheduler) stops every command as Ctrl-C does


# -- search ------------------------------------------------------------------------------

def _items(value: str | None, option: str) -> list[str]:
    """A comma-separated option's items ([] when it was not given). No items, an empty
    item or one listed twice is a usage error: it is a typo, and guessing what was meant
    (such as the default, for ``--tasks ''``) could cost a long run."""
    if value is None:
        return []
    if not value.strip():
        raise click.BadParameter("no items given", param_hint=option)
    items = [part.strip() for part in value.split(",")]
    if "" in items:
        raise click.BadParameter(f"empty item in {value!r}", param_hint=option)
    twice = sorted({item for item in items if items.count(item) > 1})
    if twice:
        raise click.BadParameter(f"{', '.join(twice)} listed twice in {value!r}",
                                 param_hint=option)
    return items


class RecordId(click.ParamType):
    """A run's or individual's id: what SQLite's row ids can be, from 1."""

    name = "id"
    min, max = 1, 2 ** 63 - 1

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an id (a whole number such as 42)", param, ctx)
        if not self.min <= number <= self.max:
            self.fail(self.out_of_range(value), param, ctx)
        return number

    def out_of_range(self, value: Any) -> str:
        return f"{value} is no id of a run or individual (ids run from 1 to {self.max})"


RECORD_ID = RecordId()


class PositiveNumber(click.ParamType):
    """A positive, finite number (of seconds, of CPUs)."""

    def __init__(self, unit: str):
        self.unit = self.name = unit

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of {self.unit}", param, ctx)
        if not (math.isfinite(number) and number > 0):
            self.fail(f"{value!r} is not a positive, finite number of {self.unit}", param,
                      ctx)
        return number

LATER_TIERS = "later"  # what --funnel alone stands for


def _funnel(spec: str | None, tier: str) -> list[str]:
    """``--funnel``'s tiers; given alone, every tier costlier than the search's (a usage
    error after the costliest, where it would silently promote nothing)."""
    if spec != LATER_TIERS:
        return _items(spec, "--funnel")
    if tier == TIERS[-1]:
        raise click.BadParameter(f"no tier comes after --tier {tier}, the costliest, so "
                                 "there is none to promote to", param_hint="--funnel")
    return list(TIERS[TIERS.index(tier) + 1:])


def _op_list(family: str, spec: str) -> list[str]:
    """The ops ``--ops`` names, checked against the family's space ([] for all), so
    that a bad name or a set that leaves out an op of the seed fails before Ray starts."""
    space = get_space(family)
    _items(spec, "--ops")  # no ops, an empty item or one listed twice: usage errors
    try:
        ops = space.resolve_ops(spec)
        space.restricted(ops)
    except ProgramError as exc:
        raise click.BadParameter(str(exc), param_hint="--ops") from None
    return [] if ops == space.ops else list(ops)


@cli.command()
@click.argument("family", type=click.Choice(["optimizer", "layer"]))
@click.option("--budget", type=click.IntRange(min=1), default=200, show_default=True,
              help="Individuals to record, the seed included.")
@click.option("--population", type=click.IntRange(min=1), default=100, show_default=True,
              help="Population size of aging evolution (the paper used 1000).")
@click.option("--tournament", type=click.IntRange(min=1), default=10, show_default=True,
              help="Tournament size (the paper used 2 with population 1000).")
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed.")
@click.option("--tasks", "--task", "tasks", default=None,
              help="Comma-separated proxy tasks scored at --tier, cheapest first "
                   "(default: digits_mlp for optimizers, digits_layers for layers).")
@click.option("--tier", type=click.Choice(TIERS), default="A", show_default=True,
              help="Tier every candidate is scored at: B and C train longer and larger "
                   "(about 10x and 100x the cost of A), for GPU machines and clusters.")
@click.option("--funnel", is_flag=False, flag_value=LATER_TIERS, default=None,
              help="After the search, promote the best programs to these costlier tiers "
                   "(--funnel alone: every tier after --tier).")
@click.option("--promote", type=click.IntRange(min=1), default=8, show_default=True,
              help="Programs promoted to the first funnel tier (a quarter as many to "
                   "each next one).")
@click.option("--strategy", type=click.Choice(["evolution", "random"]), default="evolution",
              show_default=True, help="'random' samples random programs (a baseline).")
@click.option("--start", type=click.Choice(["seed", "random"]), default="seed",
              show_default=True,
              help="Start from the family's seed program or a random population.")
@click.option("--selection", type=click.Choice(["fitness", "pareto"]), default=None,
              help="Tournament: best fitness, or a Pareto-front member over per-task "
                   "(per-architecture) scores. Default: pareto for layers.")
@click.option("--time", "max_seconds", type=PositiveNumber("seconds"),
              default=None, help="Stop after this many seconds (resume continues).")
@ops_option
@neutral_option
@restart_options
@click.option("--parallel", type=click.IntRange(min=0), default=0,
              help="Evaluations in flight (0: four per evaluation slot of the cluster). "
                   "Part of what makes a run reproducible.")
@click.option("--cpus-per-eval", type=PositiveNumber("CPUs"), default=1.0,
              show_default=True, help="CPUs Ray reserves per evaluation.")
@click.option("--gpus-per-eval", type=click.FloatRange(min=0), default=None,
              help="GPUs (fractions allowed) Ray reserves per evaluation. Default: on this "
                   "machine, its GPUs shared among all evaluation slots (none without "
                   "GPUs); on a cluster 0, so set it when the cluster has GPUs.")
@click.option("--address", default=None,
              help="Ray cluster to join ('auto', or host:port). Default: $RAY_ADDRESS, "
                   "else start Ray on this machine.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@db_option
def search(family: str, budget: int, population: int, tournament: int, seed: int,
           tasks: str | None, tier: str, funnel: str | None, promote: int, strategy: str,
           start: str, selection: str | None,
           max_seconds: float | None, op_spec: str, neutral: bool, restart_every: int,
           restart_from: str, parallel: int, cpus_per_eval: float,
           gpus_per_eval: float | None, address: str | None, quiet: bool,
           db_path: Path) -> None:
    """Run a search for FAMILY (optimizer or layer) from its seed program."""
    config = SearchConfig(family=family, budget=budget, population=population,
                          tournament=tournament, seed=seed, tasks=_items(tasks, "--tasks"),
                          tier=tier, parallel=parallel, cpus_per_eval=cpus_per_eval,
                          gpus_per_eval=gpus_per_eval, strategy=strategy, start=start,
                          selection=selection or "", funnel=_funnel(funnel, tier),
                          promote=promote,
                          max_seconds=max_seconds, ops=_op_list(family, op_spec),
                          neutral=neutral, restart_every=restart_every,
                          restart_from=restart_from)
    try:
        config.validate()
    except ValueError as exc:
        hint = next((f"--{word}" for word in ("funnel", "restart-from") if word in str(exc)),
                    "--tasks")
        raise click.BadParameter(str(exc), param_hint=hint) from None
    if tournament > population and strategy == "evolution":
        click.echo(f"note: --tournament {tournament} is larger than --population "
                   f"{population}: every tournament takes the whole population", err=True)
    with open_for_runs(db_path) as store:
        def start(hook: Callable[[Progress], None]) -> Search:
            searcher = Search.start(store, config, address, on_progress=hook)
            if not parallel and store.run(searcher.run_id)["address"] != "local":
                click.echo(f"note: --parallel is {searcher.config.parallel}, from the CPUs "
                           "the cluster has now; an autoscaling cluster adds nodes only "
                           "for evaluations waiting to run, so set --parallel to about 4 "
                           "per CPU of the size it should grow to", err=True)
            return searcher

        _run_search(store, quiet, start)


@cli.command()
@click.argument("run_id", type=RECORD_ID)
@click.option("--address", default=None, help="Ray cluster to join.")
@click.option("--time", "max_seconds", type=PositiveNumber("seconds"),
              default=None, help="Stop again after this many seconds.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@db_option
def resume(run_id: int, address: str | None, max_seconds: float | None, quiet: bool,
           db_path: Path) -> None:
    """Continue a stopped run from what its database holds.

    Works for a run stopped with Ctrl-C or SIGTERM (status 'interrupted') or by its
    time limit ('stopped'), one whose driver was
    killed or lost its machine (it still shows 'running'), and one that failed. The
    population is rebuilt by replaying the recorded individuals, and candidates that
    were being evaluated are evaluated again, so the run ends with the same individuals
    as an uninterrupted one. Make sure no other driver is still running RUN_ID.
    """
    with open_existing(db_path) as store:
        run = store.run(run_id)
        if run["status"] == "finished":
            raise UserError(f"run {run_id} is already finished")
        store.check_can_record()
        _run_search(store, quiet, lambda hook: Search.resume(
            store, run_id, address, max_seconds, on_progress=hook))


def _run_search(store: Store, quiet: bool, make) -> None:
    """Start (or resume) a search with ``make``, show its progress, print its best
    programs; Ctrl-C or SIGTERM ends it with the command that continues it."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar
    from rich.table import Column

    # On a narrow terminal the figures stay whole and the statistics give way.
    def whole(width: int) -> Column:
        return Column(no_wrap=True, min_width=width)

    done = whole(7)  # "999/999"; the budget's width once it is known
    bar = Bar(TextColumn("{task.description}", table_column=whole(13)),
              BarColumn(bar_width=20), MofNCompleteColumn(table_column=done),
              TimeElapsedColumn(table_column=whole(7)),
              TextColumn("{task.fields[stats]}",
                         table_column=Column(no_wrap=True, overflow="ellipsis")),
              console=err_console, disable=quiet)
    task = bar.add_task("search", total=None, stats="")
    searcher_id = [0]

    def hook(p: Progress) -> None:
        if p.phase != "search":  # the funnel: this tier's programs, not the individuals
            verb = "promoted" if p.phase_done >= p.phase_total else "promoting"
            bar.update(task, description=f"run {searcher_id[0]}: {p.phase}",
                       completed=p.phase_done, total=p.phase_total,
                       stats=f"{verb} the best {p.phase_total} to {p.phase}")
            return
        stats = (f"{p.rate:.1f}/s  evaluated {p.evaluated}  cache hits {p.cache_hits}  "
                 f"rejected {p.rejected}  best {fmt(p.best)}")
        bar.update(task, completed=p.done, total=p.budget, stats=stats)

    try:
        searcher = make(hook)
    except KeyboardInterrupt as exc:
        word, code = _stopped_by(exc)
        err_console.print(f"\n{word} while starting; nothing was searched.")
        sys.exit(code)
    searcher_id[0] = searcher.run_id
    bar.update(task, total=searcher.config.budget)  # known now, before the first result
    done.min_width = 2 * len(str(searcher.config.budget)) + 1
    try:
        config = searcher.config
        gpus = f", {config.gpus_per_eval:g} GPU each" if config.gpus_per_eval else ""
        click.echo(f"run {searcher.run_id} ({config.family}, budget {config.budget}, "
                   f"{config.parallel} in flight{gpus}) -> {store.path}")
        bar.update(task, description=f"run {searcher.run_id}: tier {config.tier}")
        with bar:
            searcher.run()
        if store.run(searcher.run_id)["status"] == "stopped":
            err_console.print(f"Time is up. Continue with: evoprog resume {searcher.run_id} "
                              f"{_db_arg(store.path)}")
        _print_top(store, searcher.run_id, 5)
    except KeyboardInterrupt as exc:
        # Ctrl-C may also come just after the last individual, while results print.
        word, code = _stopped_by(exc)
        status = store.run(searcher.run_id)["status"]
        if status == "running":  # stopped before its loop began, which marks it itself
            store.set_run_status(searcher.run_id, "interrupted")
        if status == "finished":
            err_console.print(f"\n{word}; run {searcher.run_id} had finished.")
        else:
            err_console.print(f"\n{word}. Continue with: evoprog resume "
                              f"{searcher.run_id} {_db_arg(store.path)}")
        sys.exit(code)


# -- inspect -----------------------------------------------------------------------------

def _search_kind(run: dict) -> str:
    """The family, and what set the run's search apart: random search, an op subset, a
    costlier tier than A, neutral children kept, restarts."""
    config = run.get("config") or {}
    lines = [run["family"]]
    if config.get("tier", "A") != "A":
        lines.append(f"tier {config['tier']}")
    if config.get("strategy") == "random":
        lines.append("random search")
    if config.get("ops"):
        named = {ops: name for name, ops in get_space(run["family"]).op_sets}
        ops = tuple(config["ops"])
        lines.append(f"ops: {named[ops]}" if ops in named else f"{len(ops)} ops")
    if config.get("neutral"):
        lines.append("neutral children")
    if config.get("restart_every") and config.get("strategy") != "random":
        lines.append(f"restarts every {config['restart_every']} from the "
                     f"{config.get('restart_from', 'seed')}")
    return "\n".join(lines)


@cli.command()
@json_option
@db_option
def runs(as_json: bool, db_path: Path) -> None:
    """List the runs in the database."""
    with open_existing(db_path) as store:
        rows = store.runs()
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"no runs in {db_path} yet")
        return
    table = Table("id", "family", "status", "budget", "generated", "evaluated",
                  "cache hits", "rejected", "redundant", "best", "created")
    for r in rows:
        reasons = "\n".join(f"{n} {reason}" for reason, n in r["rejected_by_reason"].items())
        redundant = r["redundant_fraction"]
        table.add_row(str(r["id"]), _search_kind(r), r["status"], str(r["budget"]),
                      str(r["generated"]), str(r["evaluated"]), str(r["cache_hits"]),
                      str(r["rejected"]) + (f"\n{reasons}" if reasons else ""),
                      "-" if redundant is None else f"{redundant:.0%}",
                      fmt(r["best_fitness"]), r["created"][:19].replace("T", " "))
    show_table(table)


@cli.command()
@click.argument("run_id", type=RECORD_ID, required=False)
@click.option("--n", "n", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many distinct programs to list.")
@json_option
@db_option
def top(run_id: int | None, n: int, as_json: bool, db_path: Path) -> None:
    """The best distinct programs of a run (default: the latest run)."""
    with open_existing(db_path) as store:
        run_id = _run_or_latest(store, run_id)
        if as_json:
            print_json(_top_rows(store, run_id, n))
            return
        _print_top(store, run_id, n)


def _run_or_latest(store: Store, run_id: int | None) -> int:
    if run_id is None:
        run_id = store.latest_run_id()
        if run_id is None:
            raise UserError(f"no runs in {store.path}")
    store.run(run_id)  # raises a clear error for an unknown id
    return run_id


def _top_rows(store: Store, run_id: int, n: int) -> list[dict]:
    """The best functionally distinct programs with what a reader compares them by:
    fitness at every tier reached, per-task (per-architecture) scores, Pareto-front
    membership, and the known program each computes."""
    run = store.run(run_id)
    config = SearchConfig.from_dict(run["config"])
    tasks = config.tasks or list(DEFAULT_TASKS[run["family"]])
    tiers = store.tier_results(run_id, suite_key(tasks))
    space = get_space(run["family"])
    rows = functionally_distinct(store, run_id, space, n)
    scores = [r["metrics"].get("scores") or {} for r in rows]
    front = set(pareto_front(scores)) if any(scores) else set()
    out = []
    for i, r in enumerate(rows):
        recognized = space.recognize(parse_program(r["text"]))
        out.append({
            "id": r["id"], "run_id": run_id, "birth": r["birth"], "fitness": r["fitness"],
            "tiers": {config.tier: r["fitness"],
                      **{t: f for t, f in tiers.get(r["id"], {}).items() if t != config.tier}},
            "scores": scores[i], "pareto_front": i in front,
            "recognized": recognized.to_json() if recognized else None,
            "recognized_as": str(recognized) if recognized else None,
            # the names ``show`` and ``lineage`` give these fields
            "text": r["text"], "pruned_text": r["pruned_text"]})
    return out


def _print_top(store: Store, run_id: int, n: int) -> None:
    rows = _top_rows(store, run_id, n)
    config = SearchConfig.from_dict(store.run(run_id)["config"])
    tier = config.tier
    later = sorted({t for r in rows for t in r["tiers"] if t != tier})
    # Tasks in the order the search was given them; architectures (layers) by name.
    order = {task: i for i, task in enumerate(config.tasks)}
    score_keys = sorted({k for r in rows for k in r["scores"]},
                        key=lambda k: (order.get(k, len(order)), k))
    columns = ["id", "birth", "fitness", *[f"tier {t}" for t in later], *score_keys]
    if any(r["pareto_front"] for r in rows):
        columns.append("front")
    table = Table(*columns, "recognized", "program", title=f"best of run {run_id}",
                  show_lines=True)
    for r in rows:
        cells = [str(r["id"]), str(r["birth"]), fmt(r["fitness"])]
        cells += [fmt(r["tiers"].get(t)) for t in later]
        cells += [fmt(r["scores"].get(k)) for k in score_keys]
        if "front" in columns:
            cells.append("*" if r["pareto_front"] else "")
        table.add_row(*cells, r["recognized_as"] or "-", r["pruned_text"])
    show_table(table)


@cli.command()
@click.argument("individual_id", type=RECORD_ID)
@click.option("--latex", "with_latex", is_flag=True, help="Also print the LaTeX form.")
@json_option
@db_option
def show(individual_id: int, with_latex: bool, as_json: bool, db_path: Path) -> None:
    """One individual: its program, fitness, parent and the mutation that made it, the
    simplified form and the known program it computes."""
    with open_existing(db_path) as store:
        ind = store.individual(individual_id)
    space = get_space(ind["family"])
    description = describe(space, parse_program(ind["text"]))
    if as_json:
        analysis = description.to_json(latex=with_latex)
        print_json({**ind, "simplified": analysis["simplified"],
                    "recognized": analysis["recognized"],
                    "cannot_train": analysis["cannot_train"],
                    **({"latex": analysis["latex"]} if with_latex else {})})
        return
    console.print(f"[bold]individual {ind['id']}[/] of run {ind['run_id']}, birth "
                  f"{ind['birth']}")
    console.print(f"status   {ind['status']}" + (f" ({ind['reason']})" if ind["reason"] else "")
                  + (f"; cache hit: the score of {_source(ind)} with the same pruned "
                     "program or fingerprint, not trained again"
                     if ind["cache_hit"] else ""), markup=False, highlight=False)
    console.print(f"fitness  {fmt(ind['fitness'])}")
    console.print(f"parent   {ind['parent_id'] if ind['parent_id'] is not None else '-'}")
    console.print(f"mutation {ind['mutation'] or '- (seed)'}")
    console.print("\n[bold]program[/]", highlight=False)
    console.print(space.listing(parse_program(ind["text"])), highlight=False)
    console.print("\n[bold]pruned[/]", highlight=False)
    console.print(ind["pruned_text"], highlight=False)
    _print_description(description, with_latex, pruned=False)
    _print_results(ind)


def _source(ind: dict) -> str:
    source = (ind["metrics"] or {}).get("cached_from")
    return "an earlier individual" if source is None else f"individual {source}"


def _value(value: Any) -> str:
    """A metric as a reader wants it: numbers to 4 significant digits, lists and
    per-task dicts on one line."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    return str(value)


def _print_results(ind: dict) -> None:
    """Every evaluation of the individual (each task, each tier it reached), what each
    learning-rate scale gave in each of them, then the remaining metrics."""
    evaluations = ind.get("evaluations") or []
    if evaluations:
        table = Table("task", "tier", "status", "fitness", "metric", "lr scale", "seconds",
                      box=None)
        for e in evaluations:
            m = e["metrics"] or {}
            scale = m.get("lr_scale")
            table.add_row(e["task"], e["tier"] or "-", e["status"], fmt(e["fitness"]),
                          fmt(m.get("metric")),
                          "-" if scale is None else f"x{scale:g}",
                          "-" if e["seconds"] is None else f"{e['seconds']:.2f}")
        console.print("\n[bold]evaluations[/]")
        show_table(table)
    for e in evaluations:
        per_scale = (e["metrics"] or {}).get("per_scale")
        if per_scale:
            _print_scales(per_scale, f"{e['task']} at tier {e['tier']}, per learning-rate "
                                     "scale")
    metrics = {k: v for k, v in (ind["metrics"] or {}).items() if k != "per_scale"}
    if metrics:
        console.print("\n[bold]metrics[/]")
        for key, value in metrics.items():
            console.print(f"  {key}: {_value(value)}", highlight=False)


def _print_scales(per_scale: list[dict], title: str) -> None:
    names = [k for k in ("val_accuracy", "val_loss", "train_loss_final")
             if any(k in entry for entry in per_scale)]
    table = Table("lr scale", "status", *names, box=None)
    for entry in per_scale:
        status = entry["status"] + (f": {entry['reason']}" if entry.get("reason") else "")
        if entry.get("stopped_at_step") is not None:
            status += f" (step {entry['stopped_at_step']})"
        table.add_row(f"x{entry['lr_scale']:g}", status,
                      *[fmt(entry.get(name)) for name in names])
    console.print(f"\n[italic]{title}[/]", highlight=False)
    show_table(table)


def _print_description(description: Description, with_latex: bool, pruned: bool) -> None:
    if pruned:
        console.print("[bold]pruned[/]", highlight=False)
        console.print(description.pruned, highlight=False)
    console.print("\n[bold]simplified[/]", highlight=False)
    # soft_wrap: long expressions stay on their lines (copyable), whatever the width
    console.print(description.simplified or "(no symbolic form)", highlight=False,
                  markup=False, soft_wrap=True)
    if with_latex:
        console.print("\n[bold]latex[/]", highlight=False)
        console.print(description.latex or "(no symbolic form)", highlight=False,
                      markup=False, soft_wrap=True)
    recognized = description.recognized
    console.print(f"\n[bold]recognized[/] {recognized if recognized else '-'}",
                  highlight=False)
    if description.cannot_train:
        console.print(f"[bold]cannot train[/] {description.cannot_train} (refused before "
                      "training)", highlight=False)


@cli.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--family", type=click.Choice(["optimizer", "layer"]), default="optimizer",
              show_default=True)
@click.option("--latex", "with_latex", is_flag=True, help="Also print the LaTeX form.")
@json_option
def analyze(file: Path, family: str, with_latex: bool, as_json: bool) -> None:
    """Prune, simplify and recognize a program read from FILE (`-` for standard input)."""
    text = _read_program_file(file)
    description = describe(get_space(family), get_space(family).parse(text))
    if as_json:
        print_json(description.to_json(latex=with_latex))
        return
    _print_description(description, with_latex, pruned=True)


@cli.command()
@click.argument("run_id", type=RECORD_ID, required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Image file to write (.png, .svg, .pdf).")
@db_option
def plot(run_id: int | None, output: Path, db_path: Path) -> None:
    """Fitness against birth order: best so far, population median, rejections, and the
    known programs found along the way (default: the latest run)."""
    check_output(output, db_path, image=True)
    with open_existing(db_path) as store:
        run_id = _run_or_latest(store, run_id)
        run = store.run(run_id)
        individuals = store.individuals(run_id)
    if not individuals:
        raise UserError(f"run {run_id} has no individuals yet")
    plot_run(run, individuals, output)
    click.echo(f"wrote {output}")


@cli.command()
@click.argument("individual_id", type=RECORD_ID)
@json_option
@db_option
def lineage(individual_id: int, as_json: bool, db_path: Path) -> None:
    """Ancestors of an individual back to the seed, with the mutation that made each."""
    with open_existing(db_path) as store:
        chain = store.lineage(individual_id)
    if as_json:
        print_json(chain)
        return
    table = Table("id", "birth", "fitness", "mutation", "program", show_lines=True)
    for r in chain:
        table.add_row(str(r["id"]), str(r["birth"]), fmt(r["fitness"]),
                      r["mutation"] or "(seed)", r["pruned_text"])
    show_table(table)


@cli.command()
@click.argument("names", nargs=-1)
@json_option
def known(names: tuple[str, ...], as_json: bool) -> None:
    """The library of known programs (usable with `evoprog export NAME`); with NAMES,
    those programs' text as a search writes them."""
    library = {**KNOWN, **KNOWN_LAYERS}
    unknown = [name for name in names if name not in library]
    if unknown:
        raise UserError(f"no known program {', '.join(unknown)} (known: "
                        f"{', '.join(library)})")
    chosen = [library[name] for name in names] or list(library.values())
    if as_json:
        print_json([{"name": k.name, "class": k.class_name, "family": k.family,
                     "hyperparameters": k.defaults, "description": k.description,
                     "program": str(k.program()),
                     "template": str(k.template_program())} for k in chosen])
        return
    if names:  # program text the other commands read: what describes it is comments
        for k in chosen:
            values = _hyperparameters(k)
            click.echo(f"# {k.name} ({k.family}, {k.class_name}): {k.description}"
                       + (f"\n# {values}" if values else "") + f"\n{k.program()}\n")
        return
    table = Table("name", "family", "class", "hyperparameters", "description")
    for k in chosen:
        table.add_row(k.name, k.family, k.class_name, _hyperparameters(k), k.description)
    show_table(table)


# The first line `known NAME` writes of each program: "# lion (optimizer, Lion): ..."
_KNOWN_HEADER_RE = re.compile(r"^# (\w+) \((?:optimizer|layer), \w+\): ", re.MULTILINE)


def _one_program(text: str, label: str) -> str:
    """``text``, unless it holds several programs printed by `known NAME NAME`: read as
    one, they would make a program of both."""
    names = _KNOWN_HEADER_RE.findall(text)
    if len(names) > 1:
        raise UserError(f"{label} holds {len(names)} programs ({', '.join(names)}, as "
                        "`evoprog known` prints several); give one at a time")
    return text


def _hyperparameters(known_program: KnownProgram) -> str:
    return ", ".join(f"{n}={v:g}" for n, v in known_program.defaults.items())


# -- export ------------------------------------------------------------------------------

@cli.command()
@click.argument("target")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Python file to write ('-': standard output).")
@click.option("--name", "class_name", default=None, help="Class name in the file.")
@click.option("--family", type=click.Choice(["optimizer", "layer"]), default="optimizer",
              show_default=True, help="Family of a program read from a file.")
@db_option
def export(target: str, output: Path, class_name: str | None, family: str,
           db_path: Path) -> None:
    """Write a standalone PyTorch file that imports only torch: a `torch.optim.Optimizer`
    for an optimizer program, an `nn.Module` for a layer program.

    TARGET is an individual's id, a known program's name (see `evoprog known`), or a
    file holding program text (`-` for standard input; `--family layer` for a layer).
    """
    to_stdout = str(output) == "-"
    if not to_stdout:
        check_output(output, db_path)
    if class_name is not None:
        check_class_name(class_name)
    family, label, program, known_program, ind = _target(target, family, db_path)
    if known_program is not None and known_program.family == "layer":
        source = export_known_layer(known_program.name, class_name)
    elif known_program is not None:
        source = export_known(known_program, class_name=class_name)
    else:
        default = "EvolvedLayer" if family == "layer" else "EvolvedOptimizer"
        multiple = _best_lr_multiple(ind) if ind is not None else 1.0
        source = _export(family, program, class_name or (
            f"Evolved{ind['id']}" if ind is not None else default), multiple)
        if family == "optimizer" and not reads_learning_rate(program):
            click.echo("note: this program never reads the learning rate, so the exported "
                       "optimizer's lr (and any lr schedule) changes nothing; its step "
                       "size is set by its constants", err=True)
    if ind is not None and ind["status"] != "ok":
        click.echo(f"note: individual {ind['id']} was {ind['status']} in its search "
                   f"({ind['reason']}): the exported code runs its program, which may not "
                   "train", err=True)
    if to_stdout:
        click.echo(source, nl=False)
        return
    write_text(output, source)
    click.echo(f"wrote {output}")


def _searched_tasks(ind: dict | None) -> list[str]:
    """The tasks an individual's search scored it on (none for other programs)."""
    return list((ind or {}).get("metrics", {}).get("tasks") or [])


def _target(target: str, family: str, db_path: Path,
            ) -> tuple[str, str, Program, KnownProgram | None, dict | None]:
    """(family, label, program, known program or None, individual or None) for a
    command's TARGET: an individual's id, a file of program text (``-``: standard input)
    of ``family``, or a known program's name."""
    if re.fullmatch(r"[-+]?\d+", target):  # an id; out of range (-1) is an error too
        with open_existing(db_path) as store:
            ind = _with_evaluations(store, store.individual(_record_id(target)))
        return ind["family"], f"individual {ind['id']}", parse_program(ind["text"]), None, ind
    if target == "-" or Path(target).is_file():
        if target in KNOWN or target in KNOWN_LAYERS:
            click.echo(f"note: {target} is a file here and the name of a known program: "
                       f"reading the file (as ./{target} would)", err=True)
        text = _read_program_file(Path(target))
        try:
            program = get_space(family).parse(text)
        except ProgramError as exc:  # several targets: say which one
            hint = f"; pass --family {exc.looks_like}" if exc.looks_like else ""
            raise UserError(f"{_source_label(target)}: {exc}{hint}") from None
        return family, target, program, None, None
    if target not in KNOWN and target not in KNOWN_LAYERS and (
            "/" in target or "." in target):
        raise UserError(f"no file {target} (and no known program of that name; see "
                        "`evoprog known`)")
    known_program = get_known(target)
    return (known_program.family, known_program.name, known_program.program(),
            known_program, None)


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--tasks", "--task", "tasks", default=None,
              help="Comma-separated tasks (default: the tasks an individual's search "
                   "scored it on; for other programs, the family's search default).")
@click.option("--tier", type=click.Choice(TIERS), default="A", show_default=True,
              help="How long and wide to train (B about 10x A's cost, C about 100x).")
@click.option("--family", type=click.Choice(["optimizer", "layer"]), default="optimizer",
              show_default=True, help="Family of programs read from files.")
@click.option("--lr-scales", default=None,
              help="Learning-rate multiples trained side by side, the best one scored "
                   "(default: the tier's: 1,3,10 at A, 1 at B and C).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch threads; 1 scores exactly as the search's workers do.")
@click.option("--no-probe-checks", "train_anyway", is_flag=True,
              help="Train optimizers that the probe shows cannot train, instead of "
                   "refusing them (as the search does).")
@json_option
@db_option
def evaluate(targets: tuple[str, ...], tasks: str | None, tier: str, family: str,
             lr_scales: str | None,
             threads: int, train_anyway: bool, as_json: bool, db_path: Path) -> None:
    """Score programs on proxy tasks at one tier, as a search scores its candidates:
    fitness relative to the AdamW seed (optimizers) or mean accuracy (layers).

    Each TARGET is an individual's id, a known program's name (see `evoprog known`), or
    a file holding program text (`-` for standard input). Tiers B and C train longer
    and wider than the search's tier A (minutes per program at C on a CPU).
    """
    import torch

    from ..evaluators import task_family

    overrides = {}
    if lr_scales is not None:
        overrides["lr_scales"] = _lr_scales(lr_scales)
    task_names = _items(tasks, "--tasks")
    if train_anyway:
        overrides["probe_checks"] = False
    if targets.count("-") > 1:
        raise UserError("- (standard input) can be given only once")
    plans = []  # (family, label, program, task names), all checked before any training
    for target in targets:
        program_family, label, program, _, ind = _target(target, family, db_path)
        if ind is not None:
            _note_other_machine(label, ind)
        if overrides and program_family != "optimizer":
            options = " and ".join(name for name, used in (("--lr-scales", lr_scales),
                                                             ("--no-probe-checks",
                                                              train_anyway)) if used)
            raise UserError(f"{label} is {with_article(program_family)} program; {options}: for "
                            "optimizers only")
        names = task_names or _searched_tasks(ind) or list(DEFAULT_TASKS[program_family])
        plans.append((program_family, label, program, names))
        for name in names:
            try:
                scores = task_family(name)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--tasks") from None
            if scores != program_family:
                raise UserError(f"{label} is {with_article(program_family)} program; task {name!r} "
                                f"scores {scores} programs")
    torch.set_num_threads(threads)
    rows: list[dict] = []
    try:
        for plan in plans:
            rows.append(_evaluated(*plan, tier, overrides))
    except KeyboardInterrupt as exc:
        word, code = _stopped_by(exc)
        if rows:
            _print_evaluations(rows, tier, as_json)
        done = f" ({len(rows)} of {len(plans)} scored, above)" if rows else ""
        err_console.print(f"\n{word} while training {plans[len(rows)][1]}{done}. evaluate "
                          "writes nothing to the database, so nothing recorded was lost.",
                          highlight=False)
        sys.exit(code)
    _print_evaluations(rows, tier, as_json)


def _note_other_machine(label: str, ind: dict) -> None:
    """Say so when an individual was scored on another kind of machine, where the same
    training rounds differently and its recorded score cannot be matched bit for bit."""
    here = machine()
    recorded = sorted({m for m in [(e.get("metrics") or {}).get("machine")
                                   for e in ind.get("evaluations") or []] if m and m != here})
    if recorded:
        err_console.print(f"note: {label} was scored on {' and '.join(recorded)}; this is "
                          f"{here}, whose kernels round differently, so scores can differ "
                          "in their last digits (a layer's accuracies by up to about a "
                          "point)", highlight=False)


def _lr_scales(value: str) -> tuple[float, ...]:
    """``--lr-scales``: distinct positive numbers, without empty items."""
    items = _items(value, "--lr-scales")
    try:
        scales = tuple(float(item) for item in items)
    except ValueError:
        scales = ()
    if not scales or not all(math.isfinite(x) and x > 0 for x in scales):
        raise click.BadParameter(f"expected finite positive numbers such as 1,3,10, got "
                                 f"{value!r}", param_hint="--lr-scales")
    twice = sorted({x for x in scales if scales.count(x) > 1})
    if twice:  # written differently, the same number: 3 and 3.0
        raise click.BadParameter(f"{', '.join(f'{x:g}' for x in twice)} listed twice in "
                                 f"{value!r}", param_hint="--lr-scales")
    return scales


def _evaluated(program_family: str, label: str, program: Program, names: list[str],
               tier: str, overrides: dict) -> dict:
    """One row of ``evaluate``'s output: the program trained on ``names`` at ``tier``."""
    from ..evaluators.suite import evaluate_suite

    with err_console.status("") as status:
        line = StepLine(status.update)
        line.step(f"{label}: training on {', '.join(names)} (tier {tier})")
        with watching(line.training):
            result, records = evaluate_suite(program, names, tier, **overrides)
    per_task = {r["task"]: {"status": r["status"], "reason": r["reason"],
                            "fitness": r["fitness"],
                            "metric": r["metrics"].get("metric"),
                            "lr_scale": r["metrics"].get("lr_scale"),
                            "lr_scales": [e["lr_scale"] for e in
                                          r["metrics"].get("per_scale", [])],
                            "scores": r["metrics"].get("scores"),
                            "seconds": r["seconds"]} for r in records}
    trained = next((t["lr_scales"] for t in per_task.values() if t["lr_scales"]), [])
    return {"target": label, "family": program_family, "tier": tier, "tasks": names,
            "lr_scales": trained, "status": result.status, "reason": result.reason,
            "fitness": result.fitness, "seconds": result.seconds, "per_task": per_task,
            "machine": result.metrics.get("machine")}


def _print_evaluations(rows: list[dict], tier: str, as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    table = Table("program", "status", "fitness",
                  "per task: fitness (metric, best lr scale; or per-architecture scores)",
                  "seconds", title=f"tier {tier}")
    seed_timed = _seed_timed(rows)
    for i, row in enumerate(rows):
        detail = "\n".join(_task_detail(task, r) for task, r in row["per_task"].items())
        table.add_row(row["target"], row["status"], fmt(row["fitness"]), detail,
                      f"{row['seconds']:.1f}" + ("*" if i in seed_timed else ""))
    show_table(table)
    if seed_timed:
        click.echo("*: also trains the AdamW seed once, on "
                   f"{', '.join(sorted(set().union(*seed_timed.values())))}: the reference "
                   "that fitness is divided by", err=True)


def _seed_timed(rows: list[dict]) -> dict[int, set[str]]:
    """Row index -> tasks whose seed reference that row's seconds include.

    An optimizer's fitness on a task is divided by the seed's metric there, computed once
    per task by the first optimizer trained on it without being rejected (a rule refused
    by the probe, or rejected while training, computes none), so that row, not
    necessarily the first, carries the seed's training time."""
    seen: set[str] = set()
    marked: dict[int, set[str]] = {}
    for i, row in enumerate(rows):
        if row["family"] != "optimizer":
            continue
        for task, r in row["per_task"].items():
            if r["status"] == "ok" and task not in seen:
                seen.add(task)
                marked.setdefault(i, set()).add(task)
    return marked


def _task_detail(task: str, r: dict) -> str:
    if r["status"] != "ok":
        return f"{task}: {r['status']}: {r['reason']}"
    if r["metric"] is None and r["scores"]:
        scores = ", ".join(f"{name} {fmt(value)}" for name, value in r["scores"].items())
        return f"{task}: {fmt(r['fitness'])} ({scores})"
    scale = f", x{r['lr_scale']:g}" if r["lr_scale"] else ""
    return f"{task}: {fmt(r['fitness'])} ({fmt(r['metric'])}{scale})"


# -- rediscovery ------------------------------------------------------------------------

@cli.command()
@click.argument("target", type=click.Choice(["lion", "evonorm"]))
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Independent searches (run seeds 0..K-1, or from --first-seed).")
@click.option("--first-seed", type=int, default=0, show_default=True,
              help="Run seed of the first search; the others follow it.")
@click.option("--budget", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Individuals per run.")
@click.option("--time", "max_seconds", type=PositiveNumber("seconds"),
              default=None, help="Also stop each run after this many seconds.")
@click.option("--population", type=click.IntRange(min=1), default=100, show_default=True,
              help="Population size of each evolution run.")
@click.option("--tournament", type=click.IntRange(min=1), default=10, show_default=True,
              help="Tournament size of each evolution run.")
@click.option("--parallel", type=click.IntRange(min=0), default=0,
              help="Evaluations in flight (0: four per evaluation slot of the cluster).")
@click.option("--tier", type=click.Choice(TIERS), default="A", show_default=True,
              help="Tier the searches score every candidate at.")
@click.option("--tasks", default=None, help="Comma-separated search tasks "
              "(default: digits_cnn,char_lm for lion; digits_layers for evonorm).")
@ops_option
@neutral_option
@restart_options
@click.option("--random/--no-random", "random_baseline", default=True, show_default=True,
              help="Also run random search with the same budget, per seed.")
@click.option("--compare-tier", type=click.Choice(["A", "B", "C", "none"]), default="B",
              show_default=True, help="Tier on which a found program is compared with "
                                      "the warm start.")
@click.option("--transfer-tiers", default="A,B", show_default=True,
              help="Tiers for the held-out transfer tasks ('none' to skip).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the report as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Plot best fitness against children evaluated.")
@click.option("--runs", "run_ids", default=None,
              help="Comma-separated ids of recorded runs: rebuild their report instead of "
                   "searching (the search options are then unused).")
@click.option("--address", default=None, help="Ray cluster to join.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@db_option
def rediscover(target: str, seeds: int, first_seed: int, budget: int,
               max_seconds: float | None, population: int, tournament: int, parallel: int,
               tier: str, tasks: str | None, op_spec: str, neutral: bool, restart_every: int,
               restart_from: str, random_baseline: bool,
               compare_tier: str, transfer_tiers: str,
               report_path: Path | None, plot_path: Path | None, run_ids: str | None,
               address: str | None, quiet: bool, db_path: Path) -> None:
    """Search for Lion from AdamW (or an EvoNorm from BN-ReLU) with several seeds and
    report, per seed, whether and when the target family reached the top 10, against
    random search with the same budget."""
    from rich.progress import Progress as Bar

    from .rediscover import TARGETS, planned_runs, report_runs
    from .rediscover import rediscover as run_rediscovery

    tiers = [] if transfer_tiers.strip().lower() == "none" else _items(transfer_tiers,
                                                                      "--transfer-tiers")
    search_tasks = _items(tasks, "--tasks")
    for t in tiers:  # checked now, not after the searches
        if t not in TIERS:
            raise click.BadParameter(f"unknown tier {t!r} (tiers: {', '.join(TIERS)}, or "
                                     "none)", param_hint="--transfer-tiers")
    if report_path is not None:
        if report_path.suffix.lower() != ".json":
            raise click.BadParameter(f"{report_path}: the report is JSON, so its file "
                                     "needs the suffix .json", param_hint="--report")
        check_output(report_path, db_path)
    if plot_path is not None:
        check_output(plot_path, db_path, image=True)
    compare = None if compare_tier == "none" else compare_tier
    ops = _op_list(TARGETS[target].family, op_spec)
    # what `--runs` needs besides the ids to write this report again
    report_options = "".join(f" {flag} {shlex.quote(str(value))}" for flag, value, default in (
        ("--compare-tier", compare_tier, "B"), ("--transfer-tiers", transfer_tiers, "A,B"),
        ("--report", report_path, None), ("--plot", plot_path, None)) if value != default)
    if run_ids is not None:
        try:
            ids = [_record_id(part) for part in _items(run_ids, "--runs")]
        except ValueError:
            raise UserError(f"--runs takes run ids such as 1,2,3, got {run_ids!r}") from None
        if not ids or len(set(ids)) != len(ids):
            raise UserError(f"--runs takes distinct run ids such as 1,2,3, got {run_ids!r}")
        with open_existing(db_path) as store, \
                err_console.status("reporting", spinner="dots") as status:
            line = StepLine(status.update)
            try:
                with watching(line.training):
                    report = report_runs(store, target, ids, compare, tiers,
                                         on_step=line.step)
            except ValueError as exc:
                raise UserError(str(exc)) from None
            except KeyboardInterrupt as exc:
                word, code = _stopped_by(exc)
                err_console.print(f"\n{word} while scoring the report; the runs are as they "
                                  "were, and the same command reports them again.")
                sys.exit(code)
        _write_rediscovery(report, report_path, plot_path, db_path)
        return
    bar = Bar(console=err_console, disable=quiet)
    task = bar.add_task("rediscover", total=None)

    def progress(label: str, p: Progress) -> None:
        bar.update(task, completed=p.done, total=p.budget,
                   description=f"{label}: best {fmt(p.best)}, {p.rate:.1f}/s")

    def finished(r) -> None:
        bar.console.print(f"{r.strategy} seed {r.seed} (run {r.run_id}): "
                          + (f"{r.found_as} in the top {10} at birth {r.birth}"
                             if r.found else "target not found"), highlight=False)

    started: list[int] = []  # the runs this study recorded, in order
    with open_for_runs(db_path) as store:
        try:
            line = StepLine(lambda text: bar.update(task, description=text))
            with bar, watching(line.training):
                report = run_rediscovery(
                    store, target, range(first_seed, first_seed + seeds), budget,
                    max_seconds, population, tournament, parallel, search_tasks,
                    random_baseline, compare, tiers, address, on_progress=progress,
                    on_run=finished, ops=ops, tier=tier, neutral=neutral,
                    restart_every=restart_every, restart_from=restart_from,
                    on_start=started.append, on_step=line.step)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        except KeyboardInterrupt as exc:
            planned = planned_runs(range(first_seed, first_seed + seeds), random_baseline)
            _rediscovery_stopped(exc, store, target, started, report_options,
                                 planned[len(started):])
    _write_rediscovery(report, report_path, plot_path, db_path)


def _rediscovery_stopped(exc: KeyboardInterrupt, store: Store, target: str,
                         run_ids: list[int], report_options: str,
                         not_started: list[tuple[int, str]]) -> NoReturn:
    """Exit with one line on what a stopped study recorded, which of its searches never
    started, and the command that reports it (the searches' records are kept, so no
    search needs to run again)."""
    word, code = _stopped_by(exc)
    if not run_ids:
        err_console.print(f"\n{word} before a search started; nothing was recorded.")
        sys.exit(code)
    never = ", ".join(f"{strategy} seed {seed}" for seed, strategy in not_started)
    never = f" Not started: {never}." if never else ""
    ids = ",".join(str(run_id) for run_id in run_ids)
    db = _db_arg(store.path)
    unfinished = "".join(f"; run {run_id} is unfinished (evoprog resume {run_id} {db} "
                         "finishes it)" for run_id in run_ids
                         if store.run(run_id)["status"] != "finished")
    recorded = f"Runs {ids} are" if len(run_ids) > 1 else f"Run {ids} is"
    err_console.print(f"\n{word}. {recorded} recorded{unfinished}.{never} Report them "
                      f"with: evoprog rediscover {target} --runs {ids} {db}{report_options}",
                      soft_wrap=True, markup=False, highlight=False)
    sys.exit(code)


def _write_rediscovery(report, report_path: Path | None, plot_path: Path | None,
                       db_path: Path) -> None:
    _print_rediscovery(report, db_path)
    try:
        if report_path:
            write_text(report_path, json.dumps(report.to_json(), indent=2))
            click.echo(f"wrote {report_path}")
        if plot_path:
            plot_rediscovery(report, plot_path)
            click.echo(f"wrote {plot_path}")
    except OutputError as exc:
        ids = ",".join(str(r.run_id) for r in report.runs)
        raise UserError(f"{exc}; the runs are recorded, so --runs {ids} writes the report "
                        "again") from None


def _print_rediscovery(report, db_path: Path) -> None:
    """The report's tables; a run that has not searched its whole budget is marked, with
    the command that finishes it."""
    table = Table("strategy", "seed", "run", "found", "as", "birth", "generated",
                  "evaluated", "wall s", "fitness", "vs start", "lineage",
                  title=f"rediscovering {report.target}")
    for r in report.runs:
        table.add_row(
            r.strategy, str(r.seed),
            str(r.run_id) if r.finished else f"{r.run_id} ({r.status})",
            "yes" if r.found else "no",
            r.found_as or "-", str(r.birth) if r.found else "-",
            str(r.generated_by_then if r.found else r.generated),
            str(r.evaluated_by_then if r.found else r.evaluated),
            f"{(r.seconds_by_then if r.found else r.seconds):.0f}",
            fmt(r.fitness if r.found else r.best_fitness),
            "-" if r.ratio_to_start is None else f"{r.ratio_to_start:.3f} ({r.compare_tier})",
            str(len(r.lineage) - 1) + " mutations" if r.lineage else "-")
    show_table(table)
    for r in report.runs:
        if not r.finished:
            state = "still running, or its driver died" if r.status == "running" \
                else r.status
            console.print(f"run {r.run_id} is unfinished ({state}, {r.individuals} of "
                          f"{r.budget} individuals): its row covers what it recorded. "
                          f"evoprog resume {r.run_id} {_db_arg(db_path)} finishes it.",
                          soft_wrap=True, markup=False, highlight=False)
    for strategy, text in report.summary().items():
        console.print(f"{strategy}: target family in the top 10 in {text}")
    if report.transfer:
        keys = [k for k in report.transfer[0] if k not in ("program", "not_scored")]
        table = Table("program", *keys, title="held-out tasks (fitness)")
        for row in report.transfer:
            why = row.get("not_scored", {})
            table.add_row(row["program"], *[why[k] if k in why else fmt(row[k])
                                             for k in keys])
        show_table(table)
        for task in report.config.get("transfer_tasks_searched", []):
            console.print(f"note: these runs searched on {task} too, so its columns are "
                          "not held out for them", highlight=False)


MAX_PROGRAM_BYTES = 1 << 20  # program text is a few hundred bytes; this is no program


def _read_program_file(path: Path) -> str:
    """A program file's text (``-``: standard input), read no further than any program
    could be, so that a wrong file (or /dev/zero) is one error, not all the memory."""
    stdin = str(path) == "-"
    label = _source_label(str(path))
    if not stdin and is_sqlite(path):
        raise UserError(f"cannot read {path} as program text: it is an SQLite database "
                        "(pass it as --db, with an individual's id)")
    try:
        if stdin:
            data = click.get_binary_stream("stdin").read(MAX_PROGRAM_BYTES + 1)
        else:
            with path.open("rb") as file:
                data = file.read(MAX_PROGRAM_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read {label}: {exc.strerror}") from None
    if len(data) > MAX_PROGRAM_BYTES:
        raise UserError(f"cannot read {label} as program text: it is over "
                        f"{MAX_PROGRAM_BYTES >> 20} MiB, and a program is a few lines")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"cannot read {label}: not a UTF-8 text file") from None
    return _one_program(text, label)


def _source_label(target: str) -> str:
    """How errors name where program text came from."""
    return "standard input" if target == "-" else target


def _export(family: str, program, class_name: str, lr_multiple: float = 1.0) -> str:
    if family == "layer":
        return export_layer(program, class_name)
    return export_program(program, class_name, lr_multiple)


def _record_id(text: str) -> int:
    """An individual's or run's id as given on the command line (ValueError if it is no
    number)."""
    value = int(text)
    if not RECORD_ID.min <= value <= RECORD_ID.max:
        raise UserError(RECORD_ID.out_of_range(text))
    return value


def _with_evaluations(store: Store, ind: dict) -> dict:
    """The individual with its evaluations; a cache hit, which was not evaluated
    itself, takes those of the individual it was served from."""
    source = (ind.get("metrics") or {}).get("cached_from")
    if ind.get("evaluations") or source is None:
        return ind
    try:
        return {**ind, "evaluations": store.individual(int(source))["evaluations"]}
    except StoreError:
        return ind


def _best_lr_multiple(ind: dict) -> float:
    """The learning-rate multiple an individual scored best at on every task of its
    search tier (1 when the tasks disagree or trained one multiple)."""
    tier = (ind.get("metrics") or {}).get("tier", "A")
    best = {(e.get("metrics") or {}).get("lr_scale") for e in ind.get("evaluations") or []
            if (e.get("tier") or "A") == tier}
    return best.pop() if len(best) == 1 and None not in best else 1.0


def main() -> None:
    try:
        cli(prog_name="evoprog")
    except KeyboardInterrupt as exc:  # before a command's own handling starts (imports)
        word, code = _stopped_by(exc)
        click.echo(f"{word}.", err=True)
        sys.exit(code)
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:
            raise
        # Ray's own SIGTERM handler, in place while Ray starts (before the command's
        # is installed again): nothing was searched yet.
        click.echo("Terminated while Ray started; nothing was searched.", err=True)
        sys.exit(128 + signal.SIGTERM)

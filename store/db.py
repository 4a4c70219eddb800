"""The SQLite record of every run, program, individual and evaluation.

One file holds many runs. It is opened in WAL mode with a long busy timeout, so a report
can read while a search writes and two searches can write different runs into one file.
Every write goes through one ``BEGIN IMMEDIATE`` transaction: it takes the write lock up
front (waiting up to the busy timeout) instead of failing halfway with SQLITE_BUSY. A
search driver lets the writes of a few milliseconds share one (``grouped_commits``).
JSON columns are stored as text; nothing is pickled or evaluated.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlite_utils import Database

SCHEMA = "evoprog-1"
TABLES = ("meta", "runs", "programs", "individuals", "evaluations")
RUN_STATUSES = ("running", "finished", "interrupted", "stopped", "failed")
INDIVIDUAL_STATUSES = ("ok", "rejected", "failed")
STATIC_REASON = "static"  # reason prefix of an evaluator's refusal before training
BUSY_TIMEOUT_MS = 30_000
# Per individual: attempts its mutation discarded before keeping it (statically invalid;
# same pruned program as the parent). Added to older files on their first write.
DISCARD_COLUMNS = ("discarded_invalid", "discarded_same")
# Per individual: its own program text where that differs from the text its program
# (one row per pruned program) was first recorded with, i.e. where its dead code differs;
# NULL where it is the same. Added to older files on their first write.
OWN_TEXT = "own_text"
# Per individual: seconds its run had searched when it was recorded, its drivers' wall
# time with any pause between a stop and a resume left out; NULL in older files.
ELAPSED = "elapsed"
_LATER_COLUMNS = (*DISCARD_COLUMNS, ELAPSED, OWN_TEXT)


_INDIVIDUAL_COLUMNS = ("run_id", "birth", "program_hash", "parent_id", "mutation", "status",
                       "reason", "fitness", "cache_hit", "metrics", "eval_seconds", "created",
                       "worker", *DISCARD_COLUMNS, ELAPSED)
# The own text goes last, as (text, program hash): stored only where it differs.
_INSERT_INDIVIDUAL = (f"INSERT INTO individuals ({', '.join(_INDIVIDUAL_COLUMNS)}, {OWN_TEXT}) "
                      f"VALUES ({', '.join('?' * len(_INDIVIDUAL_COLUMNS))}, "
                      "NULLIF(?, (SELECT text FROM programs WHERE hash = ?)))")
_INSERT_EVALUATION = ("INSERT INTO evaluations (individual_id, task, tier, fitness, status, "
                      "metrics, seconds) VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_PROGRAM = ("INSERT OR IGNORE INTO programs (hash, family, text, pruned_text, "
                   "simplified) VALUES (?, ?, ?, ?, NULL)")


def reason_kind(reason: str) -> str:
    """The kind of a rejection (``no progress``, ``unstable``, ...) without its details;
    a leading task name (``char_lm: diverged: ...``) stays, so tasks can be told apart."""
    parts = [part.strip() for part in reason.split(":")]
    if len(parts) > 1 and parts[0].isidentifier() and parts[0].islower() \
            and "_" in parts[0]:
        return f"{parts[0]}: {parts[1]}"
    return parts[0]


def damaged(path: str | os.PathLike, detail: object) -> str:
    """The message for a file SQLite finds damaged, with what can still be done."""
    return (f"{path} is damaged ({detail}); the sqlite3 shell's .recover command copies "
            "what it still holds into a new file")


def database_error(path: str | os.PathLike, exc: sqlite3.DatabaseError) -> str:
    """One line for an SQLite error about the file at ``path``: damaged, not a database
    at all, or else what SQLite said (a full disk, ...)."""
    if "malformed" in str(exc):
        return damaged(path, exc)
    if "not a database" in str(exc):
        return f"{path} is not an SQLite database ({exc})"
    return f"cannot use {path}: {exc}"


class StoreError(Exception):
    """A problem the user can fix (wrong path, unknown id); the message is one line."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays, which evaluators tend to return."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_plain)


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else {}


def _decode(row: dict, *json_columns: str) -> dict:
    for column in json_columns:
        if column in row:
            row[column] = _loads(row[column])
    if "cache_hit" in row:  # an individual's row
        row["cache_hit"] = bool(row["cache_hit"])
        for column in DISCARD_COLUMNS:  # absent from files not yet written to since
            row.setdefault(column, 0)
        row.setdefault(ELAPSED, None)
    own_text = row.pop(OWN_TEXT, None)
    if own_text is not None and "text" in row:
        row["text"] = own_text
    return row


def _lines(column: str) -> str:
    """SQL for the number of lines of a text column (0 for NULL or empty)."""
    return (f"CASE WHEN COALESCE({column}, '') = '' THEN 0 ELSE LENGTH({column}) - "
            f"LENGTH(REPLACE({column}, char(10), '')) + 1 END")


def _create_schema(db: Database) -> None:
    """Create missing tables and indexes; safe to run on an existing evoprog DB."""
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("runs").create(
        {"id": int, "family": str, "status": str, "seed": int, "budget": int,
         "config": str, "address": str, "created": str, "finished": str},
        pk="id", not_null=["family", "status", "config", "created"], if_not_exists=True,
    )
    db.table("programs").create(
        {"hash": str, "family": str, "text": str, "pruned_text": str, "simplified": str},
        pk="hash", not_null=["family", "text"], if_not_exists=True,
    )
    db.table("individuals").create(
        {"id": int, "run_id": int, "birth": int, "program_hash": str, "parent_id": int,
         "mutation": str, "status": str, "reason": str, "fitness": float, "cache_hit": int,
         "metrics": str, "eval_seconds": float, "created": str, "worker": str,
         **{column: int for column in DISCARD_COLUMNS}, ELAPSED: float, OWN_TEXT: str},
        pk="id",
        not_null=["run_id", "birth", "program_hash", "status", "cache_hit", "created",
                  *DISCARD_COLUMNS],
        defaults={"cache_hit": 0, **{column: 0 for column in DISCARD_COLUMNS}},
        foreign_keys=[("run_id", "runs", "id"), ("program_hash", "programs", "hash"),
                      ("parent_id", "individuals", "id")],
        if_not_exists=True,
    )
    db.table("evaluations").create(
        {"id": int, "individual_id": int, "task": str, "tier": str, "fitness": float,
         "status": str, "metrics": str, "seconds": float},
        pk="id", not_null=["individual_id", "task", "status"],
        foreign_keys=[("individual_id", "individuals", "id")], if_not_exists=True,
    )
    individuals = db.table("individuals")
    individuals.create_index(["run_id", "birth"], unique=True, if_not_exists=True)
    individuals.create_index(["program_hash"], if_not_exists=True)
    db.table("evaluations").create_index(["individual_id"], if_not_exists=True)
    db.table("meta").insert({"key": "schema", "value": SCHEMA}, ignore=True)


def _add_later_columns(db: Database) -> None:
    """Give an individuals table made before them the discard counts (0 for the rows
    already there: nothing was counted then), the elapsed time (NULL: not measured) and
    the own text (NULL: recorded texts)."""
    individuals = db.table("individuals")
    present = individuals.columns_dict
    for column in DISCARD_COLUMNS:
        if column not in present:
            individuals.add_column(column, int, not_null_default=0)
    if ELAPSED not in present:
        individuals.add_column(ELAPSED, float)
    if OWN_TEXT not in present:
        individuals.add_column(OWN_TEXT, str)


def _enable_wal(db: Database) -> None:
    """Switch to WAL, retrying: SQLite fails at once, without the busy wait, when another
    connection is switching the same new file at the same moment."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Store:
    """An open evoprog database. Use one Store per thread or process (one connection)."""

    def __init__(self, db: Database, path: Path):
        self.db = db
        self.path = path
        self._group_seconds: float | None = None  # inside grouped_commits: its bound
        self._group_opened = 0.0  # when the group's open transaction began
        self._depth = 0  # transaction() blocks open inside a group's transaction

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True) -> Store:
        """Open (or, with ``create``, start) an evoprog DB; never touches a foreign file."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise StoreError(f"no evoprog database at {path}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {path}: folder {path.parent} cannot be "
                                 f"made ({exc.strerror or exc})") from None
        try:
            db = Database(path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from None
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            fresh = cls._check(db, path, create)
            _enable_wal(db)
            db.execute("PRAGMA foreign_keys=ON")
            # In WAL mode NORMAL never corrupts the file and loses nothing when a process
            # is killed; only a power cut can drop the last commits. It saves an fsync
            # per recorded individual, which bounds how fast a driver can record.
            db.execute("PRAGMA synchronous=NORMAL")
            store = cls(db, path)
            if fresh:  # an existing evoprog DB is left alone, so readers never write
                with store.transaction():
                    _create_schema(db)
        except sqlite3.OperationalError as exc:  # locked, unreadable, disk full
            db.close()
            if not os.access(path.resolve().parent, os.W_OK):
                if not create:
                    return cls._open_in_read_only_folder(path)
                raise StoreError(f"cannot write {path}: its folder is read-only (SQLite "
                                 "keeps its lock files beside the database)") from None
            raise StoreError(f"cannot open {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", or damaged
            db.close()
            raise StoreError(database_error(path, exc)) from None
        except BaseException:
            db.close()
            raise
        return store

    @classmethod
    def _open_in_read_only_folder(cls, path: Path) -> Store:
        """Open a database to read where SQLite cannot make the lock file it needs beside
        it (an archive on a read-only mount): as immutable, which is right as long as
        nothing else writes it, and nothing can without that folder; refused if an
        unmerged write-ahead log is there, whose writes that would leave out."""
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size:
            raise StoreError(f"cannot open {path}: its folder is read-only and {wal.name} "
                             "holds writes not yet merged into it; copy both files to a "
                             "folder you can write")
        uri = f"file:{quote(str(path.resolve()))}?immutable=1"
        try:
            db = Database(sqlite3.connect(uri, uri=True))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from None
        try:
            cls._check(db, path, create=False)
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot open {path}: {exc}") from None
        except BaseException:
            db.close()
            raise
        return cls(db, path)

    @staticmethod
    def _check(db: Database, path: Path, create: bool) -> bool:
        """Refuse anything but an empty file or an evoprog DB, before writing a byte.

        Returns whether the file is empty and needs the schema.
        """
        tables = db.table_names()
        if not tables:
            if not create:
                raise StoreError(f"{path} is an empty database, not an evoprog database")
            return True
        if "meta" not in tables:
            raise StoreError(f"{path} is an SQLite database but not an evoprog database")
        marker = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if marker is None or marker[0] != SCHEMA:
            found = marker[0] if marker else "none"
            raise StoreError(f"{path} is not an {SCHEMA} database (schema marker: {found})")
        missing = [table for table in TABLES if table not in tables]
        if missing:  # a table dropped by hand: writing would make a wrong one
            raise StoreError(f"{path} is an incomplete evoprog database: table "
                             f"{', '.join(missing)} is missing")
        return False

    def check_can_record(self) -> None:
        """Raise StoreError unless a search may add runs here: the file is writable and
        intact (checked before a search starts, not at its first record)."""
        self.check_writable()
        self.check_intact()

    def check_writable(self) -> None:
        """Raise StoreError unless this process may write the database: a search checks
        before it starts, not at its first record. Writes nothing."""
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:  # SQLite refuses a read-only file only at the first write
                conn.execute("UPDATE meta SET value = value WHERE key = 'schema'")
            finally:
                conn.rollback()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from None

    def check_intact(self) -> None:
        """Raise StoreError if SQLite finds the file damaged (``PRAGMA quick_check``,
        under a second for a few hundred MB): a search would add its runs to it."""
        try:
            problems = [row[0] for row in self.db.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            detail = " ".join(problems[0].replace("*** in database main ***", "").split())
            raise StoreError(damaged(self.path, detail) + "; a search does not add to it")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, all or nothing, holding the write lock from the start.

        Store writes nest inside it (as savepoints), so callers can group several.
        Inside ``grouped_commits`` it is a savepoint of the group's transaction.
        """
        conn = self.db.conn
        if self._group_seconds is not None and not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            self._group_opened = time.monotonic()
        if conn.in_transaction:
            self._depth += 1
            try:
                with self.db.atomic():
                    yield
            finally:
                self._depth -= 1
            if self._group_seconds is not None \
                    and time.monotonic() - self._group_opened >= self._group_seconds:
                self.flush()
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    @contextmanager
    def grouped_commits(self, max_seconds: float) -> Iterator[None]:
        """Let the writes made inside share commits.

        A commit is what makes writes durable against a killed process and visible to
        other connections, and it costs more than a small write, so a search driver
        that records hundreds of results a second lets them share one. Each write stays
        all or nothing (a savepoint); the transaction holding them commits at the end of
        the first write that finds it ``max_seconds`` old, at ``flush()``, and on
        leaving, error or not. A killed process loses at most the writes of the last
        ``max_seconds``. The write lock is held meanwhile: ``flush()`` before waiting
        on anything, so other writers are never kept waiting longer than that.
        """
        if self._group_seconds is not None or self.db.conn.in_transaction:
            raise RuntimeError("grouped_commits cannot start inside a transaction")
        self._group_seconds = max_seconds
        try:
            yield
        finally:
            try:
                self.flush()
            finally:
                self._group_seconds = None

    def flush(self) -> None:
        """Commit the writes a group holds (nothing to do outside ``grouped_commits``,
        or while a write is still in progress)."""
        if self._group_seconds is not None and self._depth == 0 \
                and self.db.conn.in_transaction:
            self.db.conn.commit()

    def _one(self, sql: str, params: Iterable[Any] = ()) -> dict | None:
        return next(self.db.query(sql, list(params)), None)

    def _individual_columns(self) -> set[str]:
        """The individuals table's columns (a file made by an older evoprog lacks the
        later ones until its first write after an upgrade). Asked each time, not cached:
        another connection may add them, or a rollback take them away."""
        return set(self.db.table("individuals").columns_dict)

    def _require_run(self, run_id: int) -> None:
        if self._one("SELECT id FROM runs WHERE id = ?", [run_id]) is None:
            raise StoreError(f"no run {run_id} in {self.path}")

    # -- runs --------------------------------------------------------------------------

    def create_run(self, family: str, seed: int, budget: int, config: dict,
                   address: str) -> int:
        """Record a new run as 'running' and return its id."""
        with self.transaction():
            runs = self.db.table("runs")
            runs.insert({"family": family, "status": "running", "seed": seed,
                         "budget": budget, "config": _dumps(config), "address": address,
                         "created": _now(), "finished": None})
            return runs.last_pk

    def _run_rows(self, where: str = "", params: Iterable[Any] = ()) -> list[dict]:
        """Runs with their counts, computed in SQL so listing many runs stays cheap."""
        # Older files without the later columns read as if nothing was discarded and
        # every individual had its program's recorded text.
        present = self._individual_columns()
        discarded = [f"i.{c}" if c in present else "0" for c in DISCARD_COLUMNS]
        text = f"COALESCE(i.{OWN_TEXT}, p.text)" if OWN_TEXT in present else "p.text"
        rows = list(self.db.query(f"""
            SELECT r.*,
                   COUNT(i.id) AS individuals,
                   COALESCE(SUM(i.cache_hit = 0), 0) AS evaluated,
                   COALESCE(SUM(i.cache_hit = 1), 0) AS cache_hits,
                   COALESCE(SUM(i.status IN ('rejected', 'failed')), 0) AS rejected,
                   COALESCE(SUM(i.cache_hit = 0 AND i.status IN ('rejected', 'failed')
                                AND (i.reason LIKE '{STATIC_REASON}:%'
                                     OR i.reason LIKE '%: {STATIC_REASON}:%')), 0)
                       AS static_rejected,
                   COALESCE(SUM({discarded[0]}), 0) AS discarded_invalid,
                   COALESCE(SUM({discarded[1]}), 0) AS discarded_same,
                   MAX(CASE WHEN i.status = 'ok' THEN i.fitness END) AS best_fitness,
                   COALESCE(SUM({_lines(text)}), 0) AS lines,
                   COALESCE(SUM({_lines('p.pruned_text')}), 0) AS pruned_lines
            FROM runs r LEFT JOIN individuals i ON i.run_id = r.id
            LEFT JOIN programs p ON p.hash = i.program_hash
            {where}
            GROUP BY r.id ORDER BY r.id
        """, list(params)))
        reasons: dict[int, dict[str, int]] = {row["id"]: {} for row in rows}
        only = f"AND run_id IN ({', '.join('?' * len(rows))})" if where else ""
        for row in self.db.query(f"""
            SELECT run_id, COALESCE(reason, 'unknown') AS reason, COUNT(*) AS n
            FROM individuals WHERE status IN ('rejected', 'failed') {only}
            GROUP BY run_id, reason ORDER BY n DESC, reason
        """, list(reasons) if where else []):
            if row["run_id"] in reasons:
                counts = reasons[row["run_id"]]
                kind = reason_kind(row["reason"])
                counts[kind] = counts.get(kind, 0) + row["n"]
        for row in rows:
            _decode(row, "config")
            row["rejected_by_reason"] = dict(sorted(reasons[row["id"]].items(),
                                                    key=lambda kv: (-kv[1], kv[0])))
            row["generated"] = (row["individuals"] + row["discarded_invalid"]
                                + row["discarded_same"])
            row["trained"] = row["evaluated"] - row["static_rejected"]
            row["served_without_training"] = (
                1 - row["trained"] / row["generated"] if row["generated"] else None)
            lines, pruned = row.pop("lines"), row.pop("pruned_lines")
            row["redundant_fraction"] = (lines - pruned) / lines if lines else None
        return rows

    def run(self, run_id: int) -> dict:
        """One run with the same counts as ``runs()``."""
        rows = self._run_rows("WHERE r.id = ?", [run_id])
        if not rows:
            raise StoreError(f"no run {run_id} in {self.path}")
        return rows[0]

    def runs(self) -> list[dict]:
        """Every run, oldest first, with the run's columns and these counts:

        - ``individuals``: recorded individuals (the seed and every kept child).
        - ``discarded_invalid``, ``discarded_same``: programs mutation made and threw away
          before keeping a child: statically invalid, or with the same pruned program as
          the parent (the structural cache answers them). Never recorded as individuals.
        - ``generated``: every program the search made, ``individuals`` plus both
          discarded counts; the base of the cache figures, as in the Lion paper.
        - ``evaluated``: individuals sent to an evaluator (not served from the cache);
          ``cache_hits``: individuals that reused an earlier result, by structural hash
          or functional fingerprint. ``evaluated + cache_hits == individuals``.
        - ``static_rejected``: evaluated individuals the evaluator refused before any
          training (reason ``static: ...``); ``trained``: ``evaluated`` minus those.
        - ``served_without_training``: the share of ``generated`` that never trained,
          ``1 - trained / generated`` (discarded attempts, cache hits and static
          rejections); None for a run with nothing generated.
        - ``rejected``: individuals with status rejected or failed, cache hits included;
          ``rejected_by_reason``: the same split by reason, most frequent first.
        - ``redundant_fraction``: share of the recorded individuals' statements that
          pruning removes (dead code); None without individuals.
        - ``best_fitness``: the best fitness of an ``ok`` individual.
        """
        return self._run_rows()

    def latest_run_id(self) -> int | None:
        row = self._one("SELECT MAX(id) AS id FROM runs")
        return row["id"] if row else None

    def set_run_status(self, run_id: int, status: str, finished: bool = False) -> None:
        """Set the status; ``finished`` also stamps the finish time."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, not {status!r}")
        updates: dict[str, Any] = {"status": status}
        if finished:
            updates["finished"] = _now()
        self._update_run(run_id, updates)

    def _update_run(self, run_id: int, updates: dict[str, Any]) -> None:
        with self.transaction():
            self._require_run(run_id)
            self.db.table("runs").update(run_id, updates)

    # -- programs and individuals ------------------------------------------------------

    def add_program(self, hash: str, family: str, text: str, pruned_text: str) -> None:
        """Record a program once; later calls with the same hash do nothing."""
        with self.transaction():
            self.db.conn.execute(_INSERT_PROGRAM, (hash, family, text, pruned_text))

    def add_individual(
        self, run_id: int, birth: int, program_hash: str, parent_id: int | None,
        mutation: str | None, status: str, reason: str | None, fitness: float | None,
        metrics: dict, eval_seconds: float, cache_hit: bool = False,
        worker: str | None = None, evaluations: Iterable[dict] = (),
        discarded_invalid: int = 0, discarded_same: int = 0, text: str | None = None,
        elapsed: float | None = None,
    ) -> int:
        """Record an individual and its evaluations together, so a crash never leaves half.

        ``discarded_invalid`` and ``discarded_same`` are the attempts its mutation threw
        away before keeping it (``Mutation.invalid`` and ``Mutation.same``), so the run's
        ``generated`` and ``served_without_training`` count them. The program must have
        been added first. ``text`` is the individual's own program text: kept only where
        it differs from the text the program was recorded with (other dead code), and
        then read back as its ``text``. A second individual with the same (run_id,
        birth) raises StoreError and changes nothing. ``elapsed``: the seconds the run
        had searched by then (see ``ELAPSED``).
        """
        if status not in INDIVIDUAL_STATUSES:
            raise ValueError(f"status must be one of {INDIVIDUAL_STATUSES}, not {status!r}")
        if discarded_invalid < 0 or discarded_same < 0:
            raise ValueError("discarded counts cannot be negative")
        row = (run_id, birth, program_hash, parent_id, mutation, status, reason, fitness,
               int(bool(cache_hit)), _dumps(metrics), eval_seconds, _now(), worker,
               int(discarded_invalid), int(discarded_same), elapsed, text, program_hash)
        try:
            with self.transaction():
                individual_id = self._insert_individual(row)
                rows = [(individual_id, ev["task"], ev.get("tier"), ev.get("fitness"),
                         ev["status"], _dumps(ev.get("metrics") or {}), ev.get("seconds"))
                        for ev in evaluations]
                if rows:
                    self.db.conn.executemany(_INSERT_EVALUATION, rows)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise StoreError(f"run {run_id} already has an individual with birth {birth}"
                                 f" in {self.path}") from None
            raise StoreError(self._missing_reference(run_id, program_hash, parent_id)
                             or f"cannot record birth {birth} of run {run_id}: {exc}") from None
        return individual_id

    def _insert_individual(self, row: tuple) -> int:
        """INSERT one individual's row (in ``_INDIVIDUAL_COLUMNS`` order) and return its id.

        Plain SQL: this runs once per recorded individual, the driver's hot path. A file
        made before the later columns gets them here, under the write lock, on its
        first write (the INSERT names them, so it fails until they exist)."""
        try:
            return self.db.conn.execute(_INSERT_INDIVIDUAL, row).lastrowid
        except sqlite3.OperationalError as exc:
            if ("no column named" not in str(exc)
                    or set(_LATER_COLUMNS) <= self._individual_columns()):
                raise
        _add_later_columns(self.db)
        return self.db.conn.execute(_INSERT_INDIVIDUAL, row).lastrowid

    def _missing_reference(self, run_id: int, program_hash: str,
                           parent_id: int | None) -> str | None:
        """Name the foreign key that failed, since SQLite does not say which."""
        if self._one("SELECT id FROM runs WHERE id = ?", [run_id]) is None:
            return f"no run {run_id} in {self.path}"
        if self._one("SELECT hash FROM programs WHERE hash = ?", [program_hash]) is None:
            return f"no program {program_hash} in {self.path} (add_program first)"
        if parent_id is not None and self._one(
                "SELECT id FROM individuals WHERE id = ?", [parent_id]) is None:
            return f"no parent individual {parent_id} in {self.path}"
        return None

    def individual(self, individual_id: int) -> dict:
        """One individual with its program text, decoded metrics and its evaluations."""
        row = self._one("""
            SELECT i.*, p.text, p.pruned_text, p.simplified, p.family
            FROM individuals i LEFT JOIN programs p ON p.hash = i.program_hash
            WHERE i.id = ?
        """, [individual_id])
        if row is None:
            raise StoreError(f"no individual {individual_id} in {self.path}")
        row["evaluations"] = [
            _decode(ev, "metrics") for ev in self.db.query(
                "SELECT * FROM evaluations WHERE individual_id = ? ORDER BY id",
                [individual_id])
        ]
        return _decode(row, "metrics")

    def individuals(self, run_id: int) -> list[dict]:
        """All individuals of a run in birth order, with program text."""
        self._require_run(run_id)
        return [_decode(row, "metrics") for row in self.db.query("""
            SELECT i.*, p.text, p.pruned_text
            FROM individuals i LEFT JOIN programs p ON p.hash = i.program_hash
            WHERE i.run_id = ? ORDER BY i.birth
        """, [run_id])]

    def births(self, run_id: int) -> set[int]:
        """Birth indices already recorded, so a resumed search can skip them."""
        self._require_run(run_id)
        rows = self.db.execute("SELECT birth FROM individuals WHERE run_id = ?", [run_id])
        return {birth for (birth,) in rows}

    def top(self, run_id: int, n: int = 10) -> list[dict]:
        """The run's best distinct programs: one row per hash, best fitness first.

        Each row is the program's best individual (earliest on ties) plus ``copies``,
        how many of the run's scored (ok) individuals had that program.
        """
        self._require_run(run_id)
        rows = self.db.query("""
            WITH ranked AS (
                SELECT i.*,
                       ROW_NUMBER() OVER (PARTITION BY i.program_hash
                                          ORDER BY i.fitness DESC, i.birth) AS place,
                       COUNT(*) OVER (PARTITION BY i.program_hash) AS copies
                FROM individuals i
                WHERE i.run_id = ? AND i.status = 'ok' AND i.fitness IS NOT NULL
            )
            SELECT r.*, p.text, p.pruned_text
            FROM ranked r LEFT JOIN programs p ON p.hash = r.program_hash
            WHERE r.place = 1
            ORDER BY r.fitness DESC, r.birth
            LIMIT ?
        """, [run_id, n])
        return [_decode({k: v for k, v in row.items() if k != "place"}, "metrics")
                for row in rows]

    def lineage(self, individual_id: int) -> list[dict]:
        """The individual and its ancestors, from the seed down to it.

        A parent must exist before its child (foreign key), so parent ids strictly
        decrease along the chain and the recursion always ends.
        """
        rows = list(self.db.query("""
            WITH RECURSIVE chain(id, depth) AS (
                SELECT id, 0 FROM individuals WHERE id = ?
                UNION ALL
                SELECT i.parent_id, c.depth + 1
                FROM individuals i JOIN chain c ON i.id = c.id
                WHERE i.parent_id IS NOT NULL
            )
            SELECT i.*, p.text, p.pruned_text
            FROM chain c
            JOIN individuals i ON i.id = c.id
            LEFT JOIN programs p ON p.hash = i.program_hash
            ORDER BY c.depth DESC
        """, [individual_id]))
        if not rows:
            raise StoreError(f"no individual {individual_id} in {self.path}")
        return [_decode(row, "metrics") for row in rows]

    def cached_result(self, family: str, program_hash: str,
                      tasks: Sequence[str] | None = None,
                      tier: str | None = None) -> dict | None:
        """The first real evaluation of this program in any run (by a search on exactly
        ``tasks``, in that order, at ``tier``, when given), for the equivalence cache: a
        fitness measured on other tasks or at another tier is no answer. Runs recorded
        before searches had a tier searched at tier A. Outcomes that depend on the
        machine rather than the program (the wall-clock time limit, a worker lost) are
        no answer either."""
        # The evaluation rows mark a real evaluation (a benchmark's stand-in fitness has
        # none); the recorded task list must match as a whole.
        first = None if tasks is None else tasks[0]
        listed = None if tasks is None else json.dumps(list(tasks), separators=(",", ":"))
        row = self._one("""
            SELECT i.id, i.run_id, i.status, i.reason, i.fitness, i.metrics, i.eval_seconds
            FROM individuals i JOIN programs p ON p.hash = i.program_hash
            WHERE i.program_hash = ? AND p.family = ? AND i.cache_hit = 0
              AND COALESCE(i.reason, '') NOT LIKE '%time limit%'
              AND COALESCE(i.reason, '') NOT LIKE 'worker lost%'
              AND (? IS NULL OR EXISTS (SELECT 1 FROM evaluations e
                                        WHERE e.individual_id = i.id AND e.task = ?))
              AND (? IS NULL OR json_extract(i.metrics, '$.tasks') = ?)
              AND (? IS NULL OR COALESCE(json_extract(i.metrics, '$.tier'), 'A') = ?)
            ORDER BY i.id LIMIT 1
        """, [program_hash, family, first, first, listed, listed, tier, tier])
        return _decode(row, "metrics") if row else None

    # -- later tiers ---------------------------------------------------------------------

    def add_evaluations(self, individual_id: int, evaluations: Iterable[dict]) -> None:
        """Record more evaluations of an individual (a funnel's later tiers) at once."""
        rows = [{"individual_id": individual_id, "task": ev["task"], "tier": ev.get("tier"),
                 "fitness": ev.get("fitness"), "status": ev["status"],
                 "metrics": _dumps(ev.get("metrics") or {}), "seconds": ev.get("seconds")}
                for ev in evaluations]
        with self.transaction():
            self.individual(individual_id)  # StoreError for an unknown id
            if rows:
                self.db.table("evaluations").insert_all(rows)

    def has_evaluation(self, individual_id: int, task: str, tier: str) -> bool:
        return self._one("SELECT id FROM evaluations WHERE individual_id = ? AND task = ? "
                         "AND tier = ?", [individual_id, task, tier]) is not None

    def tier_results(self, run_id: int, task: str) -> dict[int, dict[str, float | None]]:
        """Individual id -> {tier: fitness} for the run's evaluations under ``task``."""
        self._require_run(run_id)
        out: dict[int, dict[str, float | None]] = {}
        for row in self.db.query("""
            SELECT e.individual_id, e.tier, e.fitness FROM evaluations e
            JOIN individuals i ON i.id = e.individual_id
            WHERE i.run_id = ? AND e.task = ? ORDER BY e.id
        """, [run_id, task]):
            out.setdefault(row["individual_id"], {})[row["tier"]] = row["fitness"]
        return out

    def top_at_tier(self, run_id: int, task: str, tier: str) -> list[dict]:
        """Individuals of the run scored ``ok`` at ``tier`` under ``task``, best first,
        each with its program text and ``tier_fitness``."""
        self._require_run(run_id)
        return [_decode(row, "metrics") for row in self.db.query("""
            SELECT i.*, p.text, p.pruned_text, e.fitness AS tier_fitness
            FROM evaluations e
            JOIN individuals i ON i.id = e.individual_id
            LEFT JOIN programs p ON p.hash = i.program_hash
            WHERE i.run_id = ? AND e.task = ? AND e.tier = ? AND e.status = 'ok'
            ORDER BY e.fitness DESC, i.birth
        """, [run_id, task, tier])]

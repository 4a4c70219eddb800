"""The SQLite store, on real files: schema, round trips, queries, errors, two writers."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from evoprog.store import SCHEMA, Store, StoreError, database_error


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "runs.db") as s:
        yield s


def tables(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
    finally:
        conn.close()


def new_run(store: Store, family: str = "lion") -> int:
    return store.create_run(family, seed=7, budget=100, config={"tiers": ["a", "b"]},
                            address="local")


def add(store: Store, run_id: int, birth: int, program: str, parent: int | None = None,
        fitness: float | None = 1.0, status: str = "ok", **kwargs) -> int:
    """Record an individual whose program hash and text are both ``program``."""
    store.add_program(program, "lion", f"text {program}", f"pruned {program}")
    return store.add_individual(
        run_id, birth, program, parent, None if parent is None else f"insert: line {birth}",
        status, kwargs.pop("reason", None), fitness, kwargs.pop("metrics", {}), 0.5, **kwargs)


def test_schema_wal_and_marker(tmp_path: Path):
    path = tmp_path / "sub" / "runs.db"
    Store.open(path).close()
    assert {"meta", "runs", "programs", "individuals", "evaluations"} <= set(tables(path))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == SCHEMA
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"idx_individuals_run_id_birth", "idx_individuals_program_hash",
            "idx_evaluations_individual_id"} <= indexes
    conn.close()
    with Store.open(path, create=False) as again:  # reopening an existing DB is fine
        assert again.runs() == []
        assert again.latest_run_id() is None


def test_runs_with_counts(store: Store):
    first = new_run(store)
    second = new_run(store, "nas")
    assert store.latest_run_id() == second
    seed = add(store, first, 0, "h0", fitness=0.5)
    add(store, first, 1, "h1", seed, fitness=0.9)
    add(store, first, 2, "h1", seed, fitness=0.9, cache_hit=True)
    add(store, first, 3, "h2", seed, fitness=None, status="rejected", reason="too long")
    add(store, first, 4, "h3", seed, fitness=None, status="rejected", reason="too long")
    add(store, first, 5, "h4", seed, fitness=None, status="failed", reason="nan loss")
    store.set_run_status(first, "finished", finished=True)

    by_id = {run["id"]: run for run in store.runs()}
    run = by_id[first]
    assert run == store.run(first)
    assert run["family"] == "lion" and run["status"] == "finished" and run["finished"]
    assert run["config"] == {"tiers": ["a", "b"]}
    assert (run["individuals"], run["evaluated"], run["cache_hits"]) == (6, 5, 1)
    assert run["rejected"] == 3
    assert run["rejected_by_reason"] == {"too long": 2, "nan loss": 1}
    assert run["best_fitness"] == 0.9
    empty = by_id[second]
    assert (empty["individuals"], empty["rejected"], empty["best_fitness"]) == (0, 0, None)
    assert empty["rejected_by_reason"] == {} and empty["finished"] is None
    assert store.births(first) == {0, 1, 2, 3, 4, 5}
    assert [i["birth"] for i in store.individuals(first)] == [0, 1, 2, 3, 4, 5]
    assert store.individuals(first)[1]["text"] == "text h1"


def test_individual_round_trip(store: Store):
    run_id = new_run(store)
    store.add_program("abc", "lion", "m = interp(g, m, 0.9)", "m = interp(g, m, 0.9)")
    store.add_program("abc", "lion", "ignored", "ignored")  # idempotent
    evaluations = [
        {"task": "mlp", "tier": "a", "fitness": 0.7, "status": "ok",
         "metrics": {"loss": [1.0, 0.5], "nan": False}, "seconds": 1.5},
        {"task": "cnn", "tier": "b", "fitness": None, "status": "failed",
         "metrics": {}, "seconds": 0.2},
    ]
    ind = store.add_individual(run_id, 0, "abc", None, None, "ok", None, 0.7,
                               {"mean": 0.7, "per_task": {"mlp": 0.7}}, 1.7,
                               worker="node-1", evaluations=evaluations)
    got = store.individual(ind)
    assert got["text"] == got["pruned_text"] == "m = interp(g, m, 0.9)"
    assert got["metrics"] == {"mean": 0.7, "per_task": {"mlp": 0.7}}
    assert got["cache_hit"] is False and got["worker"] == "node-1"
    assert got["parent_id"] is None and got["mutation"] is None
    assert [(e["task"], e["tier"], e["fitness"], e["status"], e["metrics"], e["seconds"])
            for e in got["evaluations"]] == [
        (e["task"], e["tier"], e["fitness"], e["status"], e["metrics"], e["seconds"])
        for e in evaluations]


def test_duplicate_birth_changes_nothing(store: Store, tmp_path: Path):
    run_id = new_run(store)
    add(store, run_id, 0, "h0")
    before = store.individuals(run_id)
    with pytest.raises(StoreError, match="already has an individual with birth 0"):
        add(store, run_id, 0, "h1", evaluations=[
            {"task": "t", "tier": "a", "fitness": 1.0, "status": "ok", "metrics": {},
             "seconds": 0.1}])
    assert store.individuals(run_id) == before
    assert store.db.table("evaluations").count == 0


def test_bad_evaluation_rolls_back_the_individual(store: Store):
    run_id = new_run(store)
    with pytest.raises(KeyError):
        add(store, run_id, 0, "h0", evaluations=[{"tier": "a", "status": "ok"}])
    assert store.births(run_id) == set()
    add(store, run_id, 0, "h0")  # the birth is still free
    assert store.births(run_id) == {0}


def test_each_individual_keeps_its_own_text_where_its_dead_code_differs(store: Store):
    run_id = new_run(store)
    seed = add(store, run_id, 0, "h0", text="text h0")
    # The same pruned program with a dead statement more: recorded under the same hash.
    child = add(store, run_id, 1, "h0", seed, cache_hit=True, text="text h0\nt0 = g")
    again = add(store, run_id, 2, "h0", child, cache_hit=True, text="text h0")
    texts = ["text h0", "text h0\nt0 = g", "text h0"]
    assert [i["text"] for i in store.individuals(run_id)] == texts
    assert [store.individual(i)["text"] for i in (seed, child, again)] == texts
    assert [row["text"] for row in store.lineage(again)] == texts
    assert all("own_text" not in row for row in store.lineage(again))
    # Only a text that differs from the program's recorded one takes room.
    own = [t for (t,) in sqlite3.connect(store.path).execute(
        "SELECT own_text FROM individuals ORDER BY id")]
    assert own == [None, "text h0\nt0 = g", None]
    # Redundant lines count each individual's own text: 1 of the 4 lines is dead.
    assert store.run(run_id)["redundant_fraction"] == pytest.approx(1 - 3 / 4)


def test_lineage_from_seed_to_individual(store: Store):
    run_id = new_run(store)
    ids = [add(store, run_id, 0, "g0", fitness=0.1)]
    for gen in range(1, 4):
        add(store, run_id, 10 + gen, f"side{gen}", ids[0])  # unrelated siblings
        ids.append(add(store, run_id, gen, f"g{gen}", ids[-1], fitness=0.1 * (gen + 1)))
    chain = store.lineage(ids[-1])
    assert [row["id"] for row in chain] == ids
    assert [row["birth"] for row in chain] == [0, 1, 2, 3]
    assert [row["text"] for row in chain] == ["text g0", "text g1", "text g2", "text g3"]
    assert chain[0]["mutation"] is None and chain[3]["mutation"] == "insert: line 3"
    assert chain[2]["fitness"] == pytest.approx(0.3) and chain[2]["status"] == "ok"
    assert store.lineage(ids[0]) == chain[:1]


def test_top_dedups_by_program_and_orders_by_fitness(store: Store):
    run_id = new_run(store)
    other = new_run(store)
    seed = add(store, run_id, 0, "seed", fitness=0.2)
    add(store, run_id, 1, "a", seed, fitness=0.5)
    add(store, run_id, 2, "b", seed, fitness=0.8)
    add(store, run_id, 3, "a", seed, fitness=0.9)  # same program, better noise
    add(store, run_id, 4, "c", seed, fitness=0.8)  # ties with b: b was born first
    add(store, run_id, 5, "d", seed, fitness=None, status="failed")
    add(store, other, 0, "best", fitness=5.0)  # another run does not leak in
    top = store.top(run_id, 10)
    assert [(row["program_hash"], row["birth"]) for row in top] == [
        ("a", 3), ("b", 2), ("c", 4), ("seed", 0)]
    assert top[0]["copies"] == 2 and top[0]["text"] == "text a"
    assert [row["program_hash"] for row in store.top(run_id, 2)] == ["a", "b"]


def test_cached_result(store: Store):
    first = new_run(store)
    second = new_run(store)
    assert store.cached_result("lion", "h") is None
    original = add(store, first, 0, "h", fitness=0.4, metrics={"loss": 2.0})
    add(store, second, 0, "h", fitness=0.4, cache_hit=True)
    add(store, second, 1, "bad", fitness=None, status="rejected", reason="invalid")
    hit = store.cached_result("lion", "h")
    assert hit["id"] == original and hit["run_id"] == first
    assert (hit["status"], hit["fitness"], hit["metrics"]) == ("ok", 0.4, {"loss": 2.0})
    assert store.cached_result("lion", "bad")["reason"] == "invalid"
    assert store.cached_result("nas", "h") is None


def test_cached_result_only_from_a_search_at_the_same_tier(store: Store):
    at_b = new_run(store)
    add(store, at_b, 0, "h", fitness=0.7, metrics={"tier": "B"})
    before_tiers = new_run(store)  # runs recorded before searches had a tier: tier A
    add(store, before_tiers, 0, "h", fitness=0.4, metrics={"loss": 2.0})
    assert store.cached_result("lion", "h", tier="B")["fitness"] == 0.7
    assert store.cached_result("lion", "h", tier="A")["fitness"] == 0.4
    assert store.cached_result("lion", "h", tier="C") is None
    assert store.cached_result("lion", "h")["fitness"] == 0.7  # any tier: the first


def test_cached_result_matches_the_whole_task_list(store: Store):
    """A program first scored on another task list with the same first task is no
    answer, and a later evaluation on exactly these tasks is found behind it."""
    def scored(tasks: list[str], fitness: float) -> None:
        add(store, new_run(store), 0, "h", fitness=fitness, metrics={"tasks": tasks},
            evaluations=[{"task": task, "tier": "A", "status": "ok"} for task in tasks])

    scored(["digits_mlp", "char_lm"], 0.9)
    scored(["digits_mlp"], 0.5)
    assert store.cached_result("lion", "h", ["digits_mlp"])["fitness"] == 0.5
    assert store.cached_result("lion", "h", ["digits_mlp", "char_lm"])["fitness"] == 0.9
    assert store.cached_result("lion", "h", ["char_lm", "digits_mlp"]) is None  # order
    stand_in = new_run(store)  # a benchmark's stand-in fitness: no evaluation rows
    add(store, stand_in, 0, "h2", fitness=0.7, metrics={"tasks": ["digits_mlp"]})
    assert store.cached_result("lion", "h2", ["digits_mlp"]) is None


def test_cached_result_skips_outcomes_of_the_machine(store: Store):
    """A time limit or a lost worker says how busy the machine was, not how good the
    program is: a later run evaluates such a program again."""
    run_id = new_run(store)
    add(store, run_id, 0, "slow", fitness=None, status="rejected", reason="time limit")
    add(store, run_id, 1, "slow2", fitness=None, status="rejected",
        reason="char_lm: time limit")
    add(store, run_id, 2, "lost", fitness=None, status="failed",
        reason="worker lost 4 times: NodeDiedError")
    assert [store.cached_result("lion", h) for h in ("slow", "slow2", "lost")] == [None] * 3
    later = add(store, new_run(store), 0, "slow", fitness=0.3)
    assert store.cached_result("lion", "slow")["id"] == later


def test_missing_file_without_create(tmp_path: Path):
    with pytest.raises(StoreError, match="no evoprog database"):
        Store.open(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()


def test_text_file_is_refused_untouched(tmp_path: Path):
    path = tmp_path / "notes.db"
    path.write_text("these are notes, not a database\n" * 20)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store.open(path)
    assert path.read_bytes() == before


def test_foreign_sqlite_file_is_refused_untouched(tmp_path: Path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.execute("INSERT INTO songs VALUES ('x')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(StoreError, match="not an evoprog database"):
            Store.open(path, create=create)
    assert path.read_bytes() == before
    assert tables(path) == ["songs"]


def test_wrong_schema_marker(tmp_path: Path):
    path = tmp_path / "future.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 'evoprog-99'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="evoprog-99"):
        Store.open(path)


def filled(path: Path, individuals: int = 60) -> Path:
    """A store with one run and enough individuals to span several pages."""
    with Store.open(path) as s:
        run_id = new_run(s)
        for birth in range(individuals):
            add(s, run_id, birth, f"program {birth} " + "x" * 200)
    return path


def test_a_dropped_table_is_refused_before_anything_is_written(tmp_path: Path):
    """A file with a table dropped by hand: no command may read it as if empty, and
    none may write a made-up table in its place."""
    path = filled(tmp_path / "runs.db")
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE evaluations")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(StoreError, match="incomplete evoprog database: table "
                                             "evaluations is missing"):
            Store.open(path, create=create)
    assert path.read_bytes() == before


def damage(path: Path, pages: range) -> None:
    """Overwrite the b-tree page headers of these pages (page 1 holds the schema)."""
    data = bytearray(path.read_bytes())
    for page in pages:
        data[page * 4096: page * 4096 + 40] = b"\xff" * 40
    path.write_bytes(data)


def test_a_damaged_file_is_named_damaged(tmp_path: Path):
    path = filled(tmp_path / "runs.db")
    size = path.stat().st_size
    assert size >= 8 * 4096, size
    damage(path, range(1, size // 4096))  # every page but the schema's
    with pytest.raises(StoreError, match="runs.db is damaged .*malformed.*recover"):
        Store.open(path)
    one = filled(tmp_path / "one.db")
    damage(one, range(one.stat().st_size // 4096 - 1, one.stat().st_size // 4096))
    with Store.open(one) as store:  # opens: the damage is in a page it has not read
        with pytest.raises(StoreError, match="one.db is damaged .*a search does not add"):
            store.check_intact()
    with Store.open(filled(tmp_path / "fine.db")) as store:
        store.check_intact()


def test_one_message_for_each_kind_of_database_error():
    """Opening a file and a command that meets an SQLite error later name it alike."""
    assert database_error("a.db", sqlite3.DatabaseError(
        "database disk image is malformed")).startswith("a.db is damaged (database disk")
    assert database_error("a.db", sqlite3.DatabaseError("file is not a database")) == \
        "a.db is not an SQLite database (file is not a database)"
    assert database_error("a.db", sqlite3.OperationalError("database or disk is full")) == \
        "cannot use a.db: database or disk is full"


def test_a_read_only_connection_fails_the_write_check_and_writes_nothing(tmp_path: Path):
    path = filled(tmp_path / "runs.db", individuals=2)
    with Store.open(path) as store:
        store.check_writable()  # passes, and leaves nothing behind
        assert not store.db.conn.in_transaction
        store.db.execute("PRAGMA query_only = ON")  # as SQLite treats a read-only file
        with pytest.raises(StoreError, match="cannot write .*runs.db: attempt to write a "
                                             "readonly database"):
            store.check_writable()
        assert not store.db.conn.in_transaction
        assert len(store.individuals(1)) == 2


def test_unknown_ids(store: Store):
    run_id = new_run(store)
    missing = run_id + 1
    for call in (lambda: store.run(missing), lambda: store.individuals(missing),
                 lambda: store.births(missing), lambda: store.top(missing, 3),
                 lambda: store.set_run_status(missing, "failed")):
        with pytest.raises(StoreError, match=f"no run {missing} in .*runs.db"):
            call()
    with pytest.raises(StoreError, match=f"no run {missing}"):
        add(store, missing, 0, "h")
    for call in (store.individual, store.lineage):
        with pytest.raises(StoreError, match="no individual 42 in .*runs.db"):
            call(42)
    with pytest.raises(StoreError, match="no parent individual 42"):
        add(store, run_id, 1, "h", parent=42)
    with pytest.raises(StoreError, match="no program nohash"):
        store.add_individual(run_id, 2, "nohash", None, None, "ok", None, 1.0, {}, 0.0)
    with pytest.raises(ValueError):
        store.set_run_status(run_id, "done")


def test_reader_opens_while_a_writer_holds_the_lock(tmp_path: Path):
    path = tmp_path / "runs.db"
    with Store.open(path) as writer:
        run_id = new_run(writer)
        add(writer, run_id, 0, "h0")
        with writer.transaction():
            add(writer, run_id, 1, "h1")  # not committed yet
            start = time.monotonic()
            with Store.open(path, create=False) as reader:
                assert reader.run(run_id)["individuals"] == 1
            assert time.monotonic() - start < 1
        with Store.open(path, create=False) as reader:
            assert reader.run(run_id)["individuals"] == 2


def _query(path: Path, sql: str) -> list[tuple]:
    """Rows as another connection sees them: only what is committed."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _count(path: Path) -> int:
    return _query(path, "SELECT COUNT(*) FROM individuals")[0][0]


def test_grouped_commits_share_a_commit_and_keep_each_write_whole(tmp_path: Path):
    path = tmp_path / "runs.db"
    with Store.open(path) as store:
        run_id = new_run(store)
        with store.grouped_commits(max_seconds=60):
            add(store, run_id, 0, "h0")
            add(store, run_id, 1, "h1")
            assert _count(path) == 0 and store.births(run_id) == {0, 1}
            with pytest.raises(KeyError):  # a bad write undoes only itself
                add(store, run_id, 2, "h2", evaluations=[{"tier": "a", "status": "ok"}])
            store.flush()
            assert _count(path) == 2
            add(store, run_id, 2, "h2")
            assert _count(path) == 2
        assert _count(path) == 3  # leaving commits
        assert store.births(run_id) == {0, 1, 2}


def test_grouped_commits_commit_when_old_or_on_error(tmp_path: Path):
    path = tmp_path / "runs.db"
    with Store.open(path) as store:
        run_id = new_run(store)
        with store.grouped_commits(max_seconds=0):  # every write finds the group due
            add(store, run_id, 0, "h0")
            assert _count(path) == 1
            with store.transaction():  # a caller's transaction commits only as a whole
                add(store, run_id, 1, "h1")
                assert _count(path) == 1
            assert _count(path) == 2
        with pytest.raises(RuntimeError, match="stop"):
            with store.grouped_commits(max_seconds=60):
                add(store, run_id, 2, "h2")
                raise RuntimeError("stop")
        assert _count(path) == 3  # what was written before the error is kept
        with store.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
            with store.grouped_commits(max_seconds=60):
                pass
        store.flush()  # outside a group: nothing to do


def test_two_writers_on_one_file(tmp_path: Path):
    """Two connections create the DB and write different runs at the same time."""
    path = tmp_path / "shared.db"
    per_writer = 60
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    run_ids: list[int] = []

    def writer(name: str) -> None:
        try:
            start.wait()
            with Store.open(path) as s:
                run_id = s.create_run("lion", 0, per_writer, {"writer": name}, "local")
                run_ids.append(run_id)
                parent = None
                for birth in range(per_writer):
                    program = f"{name}-{birth % 7}"
                    s.add_program(program, "lion", program, program)
                    parent = s.add_individual(
                        run_id, birth, program, parent, "m", "ok", None, float(birth), {},
                        0.0, worker=name, evaluations=[
                            {"task": "t", "tier": "a", "fitness": 1.0, "status": "ok",
                             "metrics": {}, "seconds": 0.0}])
                    s.runs()  # reads interleave with the other writer's writes
                s.set_run_status(run_id, "finished", finished=True)
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store.open(path, create=False) as s:
        runs = s.runs()
        assert sorted(run["id"] for run in runs) == sorted(run_ids)
        for run in runs:
            assert run["individuals"] == per_writer and run["status"] == "finished"
            assert s.births(run["id"]) == set(range(per_writer))
            assert len(s.lineage(s.individuals(run["id"])[-1]["id"])) == per_writer
        assert s.db.table("evaluations").count == 2 * per_writer


def test_discarded_attempts_count_as_generated_and_served(store: Store):
    run_id = new_run(store)
    seed = add(store, run_id, 0, "h0", fitness=0.5)  # trained
    add(store, run_id, 1, "h1", seed, discarded_invalid=2, discarded_same=5)  # trained
    add(store, run_id, 2, "h1", seed, cache_hit=True, discarded_same=3)
    add(store, run_id, 3, "h2", seed, fitness=None, status="failed",
        reason="static: 'x' is never assigned", discarded_invalid=1)
    add(store, run_id, 4, "h3", seed, fitness=None, status="rejected", reason="nan")
    run = store.run(run_id)
    assert (run["discarded_invalid"], run["discarded_same"]) == (3, 8)
    assert run["individuals"] == 5 and run["generated"] == 5 + 3 + 8
    assert (run["evaluated"], run["cache_hits"]) == (4, 1)
    assert run["static_rejected"] == 1
    assert run["trained"] == 3  # h0, h1 and the nan rejection, which did start training
    assert run["served_without_training"] == pytest.approx(1 - 3 / 16)
    assert run["rejected"] == 2
    assert run["rejected_by_reason"] == {"nan": 1, "static": 1}  # kinds, not details
    rows = store.individuals(run_id)
    assert [(r["discarded_invalid"], r["discarded_same"]) for r in rows] == [
        (0, 0), (2, 5), (0, 3), (1, 0), (0, 0)]
    assert store.individual(rows[1]["id"])["discarded_same"] == 5
    empty = store.run(new_run(store))
    assert empty["generated"] == 0 and empty["served_without_training"] is None
    with pytest.raises(ValueError, match="negative"):
        add(store, run_id, 5, "h4", seed, discarded_same=-1)
    assert store.births(run_id) == {0, 1, 2, 3, 4}


def test_static_refusals_count_with_a_task_name_and_per_run(store: Store):
    """A suite of several tasks names the task before the reason; the counts of one run
    stay its own when another run is recorded in the same file."""
    run_id = new_run(store)
    seed = add(store, run_id, 0, "h0", fitness=0.5)
    add(store, run_id, 1, "h1", seed, fitness=None, status="rejected",
        reason="digits_cnn: static: climbs the gradient")
    add(store, run_id, 2, "h2", seed, fitness=None, status="rejected",
        reason="char_lm: diverged: loss 3x its initial value")
    add(store, run_id, 3, "h3", seed, fitness=None, status="rejected",
        reason="no progress: statically 1% after 20 steps")  # not a static refusal
    other = new_run(store)
    add(store, other, 0, "h4", fitness=None, status="rejected", reason="nan")
    run = store.run(run_id)
    assert run["static_rejected"] == 1 and run["trained"] == 3
    assert run["rejected_by_reason"] == {"digits_cnn: static": 1, "char_lm: diverged": 1,
                                         "no progress": 1}
    assert store.run(other)["rejected_by_reason"] == {"nan": 1}
    assert {r["id"]: r["rejected"] for r in store.runs()} == {run_id: 3, other: 1}


def _columns(path: Path, table: str = "individuals") -> list[str]:
    return [row[1] for row in _query(path, f"PRAGMA table_info({table})")]


def test_file_without_discard_columns_opens_and_gains_them_on_write(tmp_path: Path):
    path = tmp_path / "old.db"
    with Store.open(path) as s:
        run_id = new_run(s)
        seed = add(s, run_id, 0, "h0")
        add(s, run_id, 1, "h1", seed, cache_hit=True)
    conn = sqlite3.connect(path)  # make it a file written before the later columns
    for column in ("discarded_invalid", "discarded_same", "elapsed", "own_text"):
        conn.execute(f"ALTER TABLE individuals DROP COLUMN {column}")
    conn.commit()
    conn.close()
    assert "discarded_same" not in _columns(path)

    with Store.open(path, create=False) as reader:
        run = reader.run(run_id)
        assert (run["generated"], run["discarded_invalid"], run["discarded_same"]) == (2, 0, 0)
        assert run["served_without_training"] == pytest.approx(0.5)
        assert reader.individuals(run_id)[1]["discarded_same"] == 0
        assert reader.individuals(run_id)[1]["elapsed"] is None
        assert reader.top(run_id)[0]["discarded_invalid"] == 0
    assert "discarded_same" not in _columns(path)  # reading never writes

    with Store.open(path) as writer:
        add(writer, run_id, 2, "h2", seed, discarded_invalid=4, discarded_same=6)
        run = writer.run(run_id)
        assert run["generated"] == 3 + 10 and run["trained"] == 2
        assert [(r["discarded_invalid"], r["discarded_same"])
                for r in writer.individuals(run_id)] == [(0, 0), (0, 0), (4, 6)]
        add(writer, run_id, 3, "h3", seed, discarded_same=1)  # columns there now
        add(writer, run_id, 4, "h3", seed, text="text h3\nt0 = g", elapsed=2.5)
        assert writer.individuals(run_id)[4]["text"] == "text h3\nt0 = g"
        assert [r["elapsed"] for r in writer.individuals(run_id)] == [None] * 4 + [2.5]
    assert {"discarded_invalid", "discarded_same", "elapsed", "own_text"} <= \
        set(_columns(path))


def test_failed_write_to_an_old_file_leaves_it_unchanged(tmp_path: Path):
    path = tmp_path / "old.db"
    with Store.open(path) as s:
        run_id = new_run(s)
        add(s, run_id, 0, "h0")
    conn = sqlite3.connect(path)
    for column in ("discarded_invalid", "discarded_same"):
        conn.execute(f"ALTER TABLE individuals DROP COLUMN {column}")
    conn.commit()
    conn.close()
    with Store.open(path) as s:
        with pytest.raises(StoreError, match="already has an individual with birth 0"):
            add(s, run_id, 0, "h1", discarded_same=2)
        assert "discarded_same" not in _columns(path)  # rolled back with the insert
        add(s, run_id, 1, "h1", discarded_same=2)  # and added by the next good write
        assert s.run(run_id)["generated"] == 4

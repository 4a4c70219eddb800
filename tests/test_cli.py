"""The evoprog command line, end to end: real local Ray, real SQLite, real training."""

import importlib.util
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
from click.testing import CliRunner

from evoprog.search.cli import cli
from evoprog.store import Store


@pytest.fixture(scope="module")
def searched(tmp_path_factory, ray_local):
    """One small search shared by the inspection tests."""
    db = tmp_path_factory.mktemp("cli") / "search.db"
    result = CliRunner().invoke(cli, ["search", "optimizer", "--budget", "30", "--population",
                                      "10", "--tournament", "3", "--seed", "1", "--db",
                                      str(db)])
    assert result.exit_code == 0, result.output
    return db, result


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def first_column(output: str) -> list[str]:
    """The first cell of each row of a table that starts one: the listed ids."""
    return [line.split("│")[1].strip() for line in output.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()]


def test_search_prints_run_id_and_best_programs(searched):
    db, result = searched
    assert result.output.startswith("run 1 (optimizer, budget 30")
    assert "best of run 1" in result.output
    with sqlite3.connect(db) as conn:
        best = [str(i) for (i,) in conn.execute(
            "select id from individuals where status = 'ok' and fitness = "
            "(select max(fitness) from individuals where status = 'ok')")]
    table = result.output.split("best of run 1", 1)[1]
    assert first_column(table)[0] in best  # the table opens with the best program


def test_runs_json(searched):
    db, _ = searched
    result = invoke("runs", "--json", "--db", db)
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.output)
    assert run["id"] == 1 and run["family"] == "optimizer" and run["status"] == "finished"
    assert run["budget"] == 30 and run["individuals"] == 30
    table = invoke("runs", "--db", db)
    assert table.exit_code == 0, table.output
    (row,) = [line.split("│")[1:-1] for line in table.output.splitlines()
              if line.startswith("│ 1 ")]
    assert [cell.strip() for cell in row[:5]] == ["1", "optimizer", "finished", "30",
                                                  str(run["generated"])]


def test_top_show_lineage(searched):
    db, _ = searched
    result = invoke("top", "--n", "3", "--json", "--db", db)
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)
    with sqlite3.connect(db) as conn:
        (distinct, highest), = conn.execute(
            "select count(distinct program_hash), max(fitness) from individuals "
            "where status = 'ok'").fetchall()
    assert len(best) == min(3, distinct) == 3
    assert best[0]["fitness"] == highest
    assert [b["fitness"] for b in best] == sorted((b["fitness"] for b in best), reverse=True)
    assert all({"id", "run_id", "fitness", "text", "pruned_text"} <= set(b) for b in best)
    shown = json.loads(invoke("show", best[0]["id"], "--json", "--db", db).output)
    assert {k: shown[k] for k in ("id", "run_id", "text", "pruned_text")} == \
        {k: best[0][k] for k in ("id", "run_id", "text", "pruned_text")}
    table = invoke("top", "1", "--db", db)
    assert table.exit_code == 0, table.output
    assert first_column(table.output)[:3] == [str(b["id"]) for b in best]

    last = json.loads(invoke("runs", "--json", "--db", db).output)[0]["individuals"]
    shown = invoke("show", last, "--db", db)
    assert shown.exit_code == 0, shown.output
    assert "fitness" in shown.output and "mutation" in shown.output
    assert "def train(w, g, m, v, lr, step):" in shown.output

    chain = json.loads(invoke("lineage", last, "--json", "--db", db).output)
    assert chain[0]["mutation"] is None and chain[0]["birth"] == 0
    assert chain[-1]["id"] == last
    assert all(link["mutation"] for link in chain[1:])
    ancestors = [last]  # followed through the recorded parents, seed first
    with sqlite3.connect(db) as conn:
        while (parent := conn.execute("select parent_id from individuals where id = ?",
                                      (ancestors[0],)).fetchone()[0]) is not None:
            ancestors.insert(0, parent)
    assert [link["id"] for link in chain] == ancestors
    table = invoke("lineage", last, "--db", db)
    assert table.exit_code == 0, table.output
    assert first_column(table.output) == [str(i) for i in ancestors]


def test_show_says_when_a_score_was_reused(searched, tmp_path):
    db = tmp_path / "again.db"
    db.write_bytes(searched[0].read_bytes())
    # The same search again: its first births are run 1's programs, scored from the cache.
    again = invoke("search", "optimizer", "--budget", "4", "--population", "10",
                   "--tournament", "3", "--seed", "1", "--quiet", "--db", db)
    assert again.exit_code == 0, again.output
    with sqlite3.connect(db) as conn:
        (hit,) = conn.execute("select id from individuals where run_id = 2 and cache_hit = 1 "
                              "order by id limit 1").fetchone()
        (source,) = conn.execute(
            "select json_extract(metrics, '$.cached_from') from individuals where id = ?",
            (hit,)).fetchone()
        same = conn.execute("select a.program_hash = b.program_hash and b.cache_hit = 0 "
                            "from individuals a, individuals b where a.id = ? and b.id = ?",
                            (hit, source)).fetchone()[0]
    assert same  # the evaluated individual whose score was reused
    shown = invoke("show", hit, "--db", db).output
    assert f"cache hit: the score of individual {source} with the same" in shown
    assert "cache hit" not in invoke("show", 1, "--db", db).output


def test_show_lays_out_evaluations_and_learning_rate_scales(searched):
    db, _ = searched
    seed = invoke("show", 1, "--db", db).output
    lines = [line.split() for line in seed.splitlines()]
    assert ["digits_mlp", "A", "ok", "1.0000"] == lines[_after(lines, "evaluations") + 2][:4]
    scales = lines[_after(lines, "digits_mlp", "at", "tier", "A,") + 1:][:4]
    assert [row[:2] for row in scales[1:]] == [["x1", "ok"], ["x3", "ok"], ["x10", "ok"]]
    assert "per_scale" not in seed and "seed_metric: 0." in seed
    with Store.open(db, create=False) as store:
        rejected = next(i for i in store.individuals(1)
                        if i["status"] == "rejected" and not i["cache_hit"])
    shown = invoke("show", rejected["id"], "--db", db).output
    reason = rejected["reason"].split(":")[0]
    assert f"rejected: {reason} (step " in shown  # why and when each scale stopped


def _after(lines: list[list[str]], *words: str) -> int:
    return next(i for i, line in enumerate(lines) if line[:len(words)] == list(words))


def test_known_lists_library():
    result = invoke("known", "--json")
    names = {k["name"] for k in json.loads(result.output)}
    assert {"sgd", "momentum", "rmsprop", "adam", "adamw", "adamw_paper", "lion", "signsgd",
            "signum"} <= names
    assert "Lion" in invoke("known").output
    shown = invoke("known", "lion", "evonorm_s0")
    assert shown.exit_code == 0, shown.output
    assert "beta1=0.9" in shown.output and "sigmoid" in shown.output
    # the text a search writes, which the other commands read back
    assert "lr = lr * 0.0001\nc = interp(g, m, 0.9)\nupdate = sign(c)" in shown.output
    piped = json.loads(invoke("analyze", "-", "--json",
                              input=invoke("known", "lion").output).output)
    assert piped["recognized"]["family"] == "lion"
    (lion,) = json.loads(invoke("known", "lion", "--json").output)
    assert lion["name"] == "lion" and "c = interp(g, m, beta1)" in lion["template"]
    analyzed = json.loads(invoke("analyze", "-", "--json", input=lion["program"]).output)
    assert analyzed["recognized"]["family"] == "lion"
    assert_clean_error(invoke("known", "lino"), "no known program lino")


def load_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_known_and_evolved(searched, tmp_path):
    db, _ = searched
    out = tmp_path / "lion_opt.py"
    result = invoke("export", "lion", "-o", out)
    assert result.exit_code == 0, result.output
    lion = load_module(out).Lion
    assert lion.__init__.__defaults__[:4] == (1e-4, 0.9, 0.99, 0.0)

    best = json.loads(invoke("top", "--n", "1", "--json", "--db", db).output)[0]
    out = tmp_path / "evolved.py"
    result = invoke("export", best["id"], "-o", out, "--name", "Found", "--db", db)
    assert result.exit_code == 0, result.output
    found = load_module(out).Found
    model = torch.nn.Linear(4, 2)
    opt = found(model.parameters())
    before = model.weight.detach().clone()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, model.weight)


def test_export_defaults_to_the_learning_rate_that_scored_best(searched, tmp_path):
    db, _ = searched
    seed = json.loads(invoke("show", 1, "--json", "--db", db).output)
    (scale,) = {e["metrics"]["lr_scale"] for e in seed["evaluations"]}
    assert scale == 3  # the AdamW seed's best multiple on digits_mlp at tier A
    out = tmp_path / "seed.py"
    assert invoke("export", 1, "-o", out, "--db", db).exit_code == 0
    module = load_module(out)
    assert module.Evolved1.__init__.__defaults__[0] == pytest.approx(0.001 * 3)
    assert "scored best: 3 x the program's own" in module.Evolved1.__doc__

    # a copy of the seed served from the cache was not trained itself: its export takes
    # the multiple of the individual it was served from
    copy = tmp_path / "copy.db"
    copy.write_bytes(Path(db).read_bytes())
    with Store.open(copy) as store:
        first = store.individual(1)
        hit = store.add_individual(
            first["run_id"], 10_000, first["program_hash"], 1, None, "ok", None,
            first["fitness"], {**first["metrics"], "cached_from": 1}, 0.0, cache_hit=True)
    assert invoke("export", hit, "-o", out, "--db", copy).exit_code == 0
    assert load_module(out).__dict__[f"Evolved{hit}"].__init__.__defaults__[0] == \
        pytest.approx(0.001 * 3)


def test_export_program_file(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("m = interp(g, m, 0.9)\nupdate = sign(m)\nlr = lr * 0.0003\n"
                    "update = update * lr\n")
    out = tmp_path / "mine.py"
    result = invoke("export", text, "-o", out, "--name", "Mine")
    assert result.exit_code == 0, result.output
    assert load_module(out).Mine.__init__.__defaults__[0] == 0.0003
    assert "never reads the learning rate" not in result.stderr


def test_export_notes_a_program_that_ignores_lr(tmp_path):
    text = tmp_path / "fixed.txt"
    text.write_text("s = sqrt(w)\nlr = s / 0.3169\nupdate = g * lr\n")
    result = invoke("export", text, "-o", tmp_path / "fixed.py")
    assert result.exit_code == 0, result.output
    assert "never reads the learning rate" in result.stderr


def test_evaluate_scores_as_the_search_did(searched, tmp_path):
    db, _ = searched
    with sqlite3.connect(db) as conn:
        ind_id, fitness = conn.execute(
            "select id, fitness from individuals where status = 'ok' and cache_hit = 0 "
            "and birth > 0 order by fitness desc limit 1").fetchone()
    text = tmp_path / "rule.txt"
    text.write_text("update = negative(g)\nupdate = update * lr\n")  # gradient ascent
    result = invoke("evaluate", ind_id, "adamw_paper", text, "--json", "--db", db)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["target"] for r in rows] == [f"individual {ind_id}", "adamw_paper", str(text)]
    assert rows[0]["fitness"] == fitness  # bit for bit, as the search's worker scored it
    assert rows[1]["fitness"] == 1.0 and rows[1]["per_task"]["digits_mlp"]["lr_scale"] == 3
    assert rows[1]["lr_scales"] == [1.0, 3.0, 10.0]  # the tier's scales, as trained
    assert rows[2]["status"] == "rejected" and rows[2]["fitness"] is None
    assert rows[2]["reason"] == "static: the update climbs the gradient at every probe step"
    trained = json.loads(invoke("evaluate", text, "--no-probe-checks", "--json").stdout)[0]
    assert (trained["status"], trained["reason"]) == ("rejected", "diverged")  # by training
    table = invoke("evaluate", "signum", "--tasks", "char_lm").output
    assert "tier A" in table and "char_lm:" in table
    one = json.loads(invoke("evaluate", "adamw_paper", "sgd", "--lr-scales", "1",
                            "--json").stdout)
    assert one[0]["fitness"] == 1.0 and one[0]["lr_scales"] == [1.0]  # its own reference
    assert one[0]["per_task"]["digits_mlp"]["metric"] != rows[1]["per_task"]["digits_mlp"][
        "metric"]  # scale 1 alone, not tier A's best of 1, 3, 10


def test_evaluate_notes_a_score_recorded_on_another_kind_of_machine(searched, tmp_path):
    from evoprog.evaluators import machine

    db = tmp_path / "copy.db"
    shutil.copy(searched[0], db)
    with sqlite3.connect(db) as conn:
        (ind_id,) = conn.execute("select individual_id from evaluations where status = 'ok' "
                                 "limit 1").fetchone()
    same = invoke("evaluate", ind_id, "--json", "--db", db)
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)[0]["machine"] == machine()
    assert "note:" not in same.stderr  # recorded here: its score is exact here
    with sqlite3.connect(db) as conn:
        conn.execute("update evaluations set metrics = json_set(metrics, '$.machine', "
                     "'cpu aarch64 NEON, torch 2.0') where individual_id = ?", (ind_id,))
    other = invoke("evaluate", ind_id, "--json", "--db", db)
    assert other.exit_code == 0, other.output
    assert (f"note: individual {ind_id} was scored on cpu aarch64 NEON, torch 2.0; this is "
            f"{machine()}") in " ".join(other.stderr.split())


def test_evaluate_scores_an_individual_on_the_tasks_of_its_search(searched, tmp_path):
    db = tmp_path / "copy.db"
    shutil.copy(searched[0], db)
    with sqlite3.connect(db) as conn:  # as if its search had scored it on digits_cnn
        (ind_id,) = conn.execute("select id from individuals where status = 'ok' "
                                 "limit 1").fetchone()
        conn.execute("update individuals set metrics = json_set(metrics, '$.tasks', "
                     "json('[\"digits_cnn\"]')) where id = ?", (ind_id,))
    rows = json.loads(invoke("evaluate", ind_id, "--json", "--db", db).stdout)
    assert list(rows[0]["per_task"]) == ["digits_cnn"]
    rows = json.loads(invoke("evaluate", ind_id, "--tasks", "digits_mlp", "--json", "--db",
                             db).stdout)
    assert list(rows[0]["per_task"]) == ["digits_mlp"]


def test_evaluate_marks_the_row_that_trained_the_seed(tmp_path, monkeypatch):
    """The seed's training time lands on the first optimizer scored on a task, which is
    not the first listed when that one is refused."""
    monkeypatch.chdir(tmp_path)
    text = Path("ascent.txt")
    text.write_text("update = negative(g)\nupdate = update * lr\n")  # refused by the probe
    result = invoke("evaluate", text, "sgd", "signum")
    assert result.exit_code == 0, result.output
    seconds = {line.split("│")[1].strip(): line.split("│")[-2].strip()
               for line in result.stdout.splitlines() if line.startswith("│")}
    assert not seconds["ascent.txt"].endswith("*")
    assert seconds["sgd"].endswith("*") and not seconds["signum"].endswith("*")
    assert "*: also trains the AdamW seed once, on digits_mlp" in result.stderr
    assert "*" not in invoke("evaluate", text).output  # nothing trained, no seed


def test_evaluate_refuses_what_it_cannot_score(searched):
    db, _ = searched
    assert_clean_error(invoke("evaluate", "lion", "--tasks", "digits_layers"),
                       "lion is an optimizer program")
    assert_clean_error(invoke("evaluate", "lion", "--tasks", "imagenet"), "unknown task")
    assert_clean_error(invoke("evaluate", "nosuch"), "no known program named")
    assert_clean_error(invoke("evaluate", "99999", "--db", db), "99999")
    assert_clean_error(invoke("evaluate", "lion", "--tier", "D"), "Invalid value")
    assert_clean_error(invoke("evaluate", "lion", "--lr-scales", "1,-3"), "positive numbers")
    assert_clean_error(invoke("evaluate", "lion", "--lr-scales", "1e400"),
                       "finite positive numbers")
    assert_clean_error(invoke("evaluate", "-", "-"), "only once")
    assert_clean_error(invoke("evaluate", "bn_relu", "--lr-scales", "1"), "for optimizers")
    assert_clean_error(invoke("evaluate", "bn_relu", "--no-probe-checks"),
                       "--no-probe-checks: for optimizers only")


# -- bad input: one clear line, non-zero exit, nothing changed -----------------------------

def assert_clean_error(result, *words):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for word in words:
        assert word in result.output


def table_counts(db):
    with sqlite3.connect(db) as conn:
        return [conn.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("runs", "programs", "individuals", "evaluations")]


def test_unknown_ids(searched):
    db, _ = searched
    before = table_counts(db)
    assert_clean_error(invoke("show", 99999, "--db", db), "no individual 99999")
    assert_clean_error(invoke("lineage", 99999, "--db", db), "no individual 99999")
    assert_clean_error(invoke("top", 42, "--db", db), "no run 42")
    assert_clean_error(invoke("export", 99999, "-o", "x.py", "--db", db), "no individual")
    assert_clean_error(invoke("resume", 1, "--db", db), "already finished")
    assert table_counts(db) == before


def test_missing_and_foreign_databases(tmp_path):
    missing = tmp_path / "nope.db"
    for command in (["runs"], ["top"], ["show", "1"], ["lineage", "1"]):
        assert_clean_error(invoke(*command, "--db", missing), str(missing))
    assert not missing.exists()

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("create table notes (x text)")
    size = foreign.stat().st_size
    assert_clean_error(invoke("runs", "--db", foreign), "not an evoprog database")
    assert_clean_error(invoke("search", "optimizer", "--budget", "3", "--db", foreign),
                       "not an evoprog database")
    assert foreign.stat().st_size == size

    garbage = tmp_path / "garbage.db"
    garbage.write_text("this is not sqlite at all" * 100)
    assert_clean_error(invoke("runs", "--db", garbage), "not")

    empty = tmp_path / "empty.db"
    Store.open(empty).close()
    listed = invoke("runs", "--db", empty)
    assert (listed.exit_code, listed.output) == (0, f"no runs in {empty} yet\n")
    assert json.loads(invoke("runs", "--json", "--db", empty).output) == []
    assert_clean_error(invoke("top", "--db", empty), "no runs in")


def test_damaged_and_incomplete_databases(searched, tmp_path):
    """A file SQLite finds damaged, or one with a table dropped, is one error for a
    reader and is left unchanged by a search."""
    dropped = tmp_path / "dropped.db"
    shutil.copy(searched[0], dropped)
    with sqlite3.connect(dropped) as conn:
        conn.execute("drop table runs")
    before = dropped.read_bytes()
    for command in (["runs"], ["show", "1"], ["search", "optimizer", "--budget", "3"]):
        assert_clean_error(invoke(*command, "--db", dropped), "table runs is missing")
    assert dropped.read_bytes() == before

    damaged = tmp_path / "damaged.db"
    shutil.copy(searched[0], damaged)
    data = bytearray(damaged.read_bytes())
    last = len(data) // 4096 - 1  # a page of records: the file still opens
    data[last * 4096: last * 4096 + 40] = b"\xff" * 40
    damaged.write_bytes(data)
    assert_clean_error(invoke("search", "optimizer", "--budget", "3", "--db", damaged),
                       "damaged.db is damaged", "a search does not add to it")
    assert damaged.read_bytes() == data
    read = [invoke(*command, "--db", damaged)
            for command in (["runs"], ["top"], ["lineage", "30"], ["show", "30"])]
    failed = [result for result in read if result.exit_code]
    assert failed, "no reader came upon the damaged page"
    for result in failed:
        assert_clean_error(result, "damaged.db is damaged (database disk image is "
                                   "malformed)", ".recover")


UNPRIVILEGED = ["setpriv", "--bounding-set=-all", "--inh-caps=-all",
                "--securebits=+noroot,+noroot_locked", "--"]


def as_owner_only() -> list[str]:
    """A command prefix under which file modes bind: none for a user, and for root
    (whom they do not bind) setpriv without root's capabilities."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None or subprocess.run([*UNPRIVILEGED, "true"]).returncode:
        pytest.skip("as root, read-only files need setpriv to bind the command")
    return UNPRIVILEGED


def test_a_read_only_database_is_read_and_not_searched(searched, tmp_path):
    """A read-only file: a search or resume says so before it starts. A database in a
    read-only folder (an archive), where SQLite cannot make its lock files: readers
    read it, a search says why it cannot write it. Neither file changes."""
    prefix = as_owner_only()

    def run(*args):
        done = subprocess.run([*prefix, sys.executable, "-m", "evoprog", *map(str, args)],
                              capture_output=True, text=True, timeout=120)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    read_only = tmp_path / "read_only.db"
    shutil.copy(searched[0], read_only)
    with sqlite3.connect(read_only) as conn:  # a run to resume
        conn.execute("update runs set status = 'interrupted'")
    conn.close()
    read_only.chmod(0o444)
    before = read_only.read_bytes()
    for command in (["search", "optimizer", "--budget", "3"], ["resume", "1"]):
        done = run(*command, "--db", read_only)
        assert done.returncode == 1 and done.stderr.startswith(
            f"Error: cannot write {read_only}: attempt to write a readonly database"), \
            done.stderr
    assert read_only.read_bytes() == before

    archive = tmp_path / "archive"
    archive.mkdir()
    db = archive / "search.db"
    shutil.copy(searched[0], db)
    before = db.read_bytes()
    archive.chmod(0o555)
    try:
        listed = run("runs", "--json", "--db", db)
        assert listed.returncode == 0, listed.stderr
        assert [r["generated"] for r in json.loads(listed.stdout)] == \
            [r["generated"] for r in json.loads(invoke("runs", "--json", "--db",
                                                       searched[0]).output)]
        shown = run("show", "1", "--db", db)
        assert shown.returncode == 0 and "individual 1 of run 1" in shown.stdout
        done = run("search", "optimizer", "--budget", "3", "--db", db)
        assert done.returncode == 1 and "its folder is read-only" in done.stderr
    finally:
        archive.chmod(0o755)
    assert db.read_bytes() == before and sorted(archive.iterdir()) == [db]


def test_a_file_far_larger_than_a_program_is_refused_unread(tmp_path):
    huge = tmp_path / "huge.txt"
    huge.write_text("update = sign(g)\n" * 70_000)  # 1.2 MB
    for command in (["analyze", huge], ["export", huge, "-o", tmp_path / "x.py"],
                    ["evaluate", huge]):
        assert_clean_error(invoke(*command), f"cannot read {huge} as program text: it is "
                                             "over 1 MiB")
    assert_clean_error(invoke("analyze", "-", input="update = sign(g)\n" * 70_000),
                       "cannot read standard input as program text")
    assert not (tmp_path / "x.py").exists()


def test_an_option_given_empty_is_an_error_not_its_default(tmp_path):
    db = tmp_path / "never.db"
    for command, option in ((["search", "optimizer", "--ops", ""], "--ops"),
                            (["search", "optimizer", "--tasks", " "], "--tasks"),
                            (["search", "optimizer", "--funnel", ""], "--funnel"),
                            (["evaluate", "lion", "--lr-scales", ""], "--lr-scales"),
                            (["evaluate", "lion", "--tasks", ""], "--tasks"),
                            (["rediscover", "lion", "--tasks", ""], "--tasks")):
        assert_clean_error(invoke(*command, "--db", db), f"Invalid value for {option}: "
                                                         "no items given")
    assert not db.exists()


def test_a_negative_id_is_an_id_everywhere(searched, tmp_path):
    db, _ = searched
    for command in (["show"], ["lineage"], ["evaluate"], ["export", "-o", "-"]):
        assert_clean_error(invoke(*command, "--db", db, "--", "-1"),
                           "-1 is no id of a run or individual")


def test_malformed_program_and_unknown_name(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("m = interp(g, m, 0.9)\nupdate = frobnicate(m)\n")
    assert_clean_error(invoke("export", bad, "-o", tmp_path / "x.py"),
                       "line 2", "unknown op 'frobnicate'")
    # among several programs, the one at fault is named
    assert_clean_error(invoke("evaluate", "lion", bad), f"{bad}: line 2")
    assert_clean_error(invoke("export", "nosuchthing", "-o", tmp_path / "x.py"),
                       "nosuchthing")
    assert not (tmp_path / "x.py").exists()


def test_output_files_are_checked_first_and_a_database_is_never_overwritten(searched,
                                                                            tmp_path):
    db, _ = searched
    before, size = table_counts(db), db.stat().st_size
    assert_clean_error(invoke("export", 1, "-o", db, "--db", db), "it is the database")
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    assert_clean_error(invoke("export", "lion", "-o", copy), "it is an SQLite database")
    # nor the files SQLite keeps beside a database while it writes (or would)
    for side in ("-wal", "-shm", "-journal"):
        assert_clean_error(invoke("export", "lion", "-o", f"{db}{side}", "--db", db),
                           "part of the SQLite database")
        assert_clean_error(invoke("export", "lion", "-o", f"{copy}{side}"),
                           "part of the SQLite database")
    # a folder that takes no files (not even root's) is found before any work
    assert_clean_error(invoke("rediscover", "lion", "--report", "/proc/lion.json", "--db",
                              db), "cannot write /proc/lion.json")
    assert_clean_error(invoke("export", "lion", "-o", tmp_path / "no" / "x.py"),
                       "does not exist")
    assert_clean_error(invoke("plot", 1, "-o", tmp_path / "plot", "--db", db), ".png")
    assert_clean_error(invoke("plot", 1, "-o", tmp_path / "plot.bogus", "--db", db), ".svg")
    assert_clean_error(invoke("plot", 1, "-o", tmp_path, "--db", db), "is a directory")
    assert_clean_error(invoke("rediscover", "lion", "--plot", tmp_path / "p.txt", "--db",
                              db), "image file")
    assert_clean_error(invoke("rediscover", "lion", "--transfer-tiers", "A,Z", "--db", db),
                       "unknown tier 'Z'")
    for runs, message in ((",", "empty item"), ("1,1", "listed twice"),
                          ("1,01", "distinct run ids")):
        assert_clean_error(invoke("rediscover", "lion", "--runs", runs, "--db", db),
                           message)
    for name in ("1bad", "class", "torch", "_hidden", "abs"):
        assert_clean_error(invoke("export", "lion", "-o", tmp_path / "x.py", "--name", name),
                           "cannot name a class")
    assert not (tmp_path / "x.py").exists()
    assert table_counts(db) == before and db.stat().st_size == size
    assert copy.read_bytes() == db.read_bytes()


def test_unreadable_and_missing_program_files(tmp_path):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe garbage\n")
    for command in (["analyze", binary], ["export", binary, "-o", tmp_path / "x.py"],
                    ["evaluate", binary]):
        assert_clean_error(invoke(*command), "not a UTF-8 text file")
    database = tmp_path / "runs.db"
    Store.open(database).close()
    for command in (["analyze", database], ["export", database, "-o", tmp_path / "x.py"]):
        assert_clean_error(invoke(*command), "it is an SQLite database")
    assert_clean_error(invoke("export", tmp_path / "nope.txt", "-o", tmp_path / "x.py"),
                       "no file", "nope.txt")


def test_unreachable_cluster_is_one_error(tmp_path):
    # In a process of its own, with this one's local Ray stopped: "auto" joins any Ray
    # running on the machine.
    ray.shutdown()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-m", "evoprog", "search", "optimizer", "--budget", "3",
         "--address", "auto", "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, env={**env, "RAY_USAGE_STATS_ENABLED": "0"},
        timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Error: cannot join the Ray cluster at auto" in result.stderr


def test_addresses_that_cannot_be_a_cluster_fail_at_once():
    from evoprog.search.driver import SearchError, _check_reachable

    for address in ("foo", "127.0.0.1:abc", "127.0.0.1:", ":6379", "127.0.0.1:99999"):
        with pytest.raises(SearchError, match="an address is HOST:PORT"):
            _check_reachable(address)
    with socket.socket() as closed:  # a port nothing listens on: refused, not minutes
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(SearchError, match="nothing answers there"):
        _check_reachable(f"127.0.0.1:{port}")
    result = subprocess.run(
        [sys.executable, "-m", "evoprog", "search", "optimizer", "--budget", "3",
         "--address", "foo", "--db", os.devnull + "x"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Error: cannot join the Ray cluster at foo: an address is HOST:PORT" in \
        result.stderr


def test_a_port_where_something_else_answers_fails_in_seconds(monkeypatch):
    """A wrong port (a service that never answers as Ray does, or one that speaks
    HTTP/1) is one error within CONNECT_SECONDS, where Ray itself would retry for
    minutes; a real Ray head passes the check."""
    import threading

    import evoprog.search.driver as driver
    from evoprog.search.workers import start_ray

    monkeypatch.setattr(driver, "CONNECT_SECONDS", 0.5)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    replies = [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"]  # silent, then HTTP/1

    def serve():
        for reply in replies:
            connection, _ = listener.accept()
            with connection:
                connection.recv(64)
                if reply:
                    connection.sendall(reply)
                else:
                    connection.recv(64)  # until the client gives up

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        for _ in replies:
            with pytest.raises(driver.SearchError, match="something answers there, but "
                                                         "not a Ray head"):
                driver._check_reachable(f"127.0.0.1:{port}")
    finally:
        server.join(timeout=5)
        listener.close()
    start_ray(num_cpus=2)
    driver._check_reachable(ray.get_runtime_context().gcs_address)  # no error
    monkeypatch.setenv("RAY_USE_TLS", "1")  # a TLS handshake comes first: Ray's to judge
    with socket.create_server(("127.0.0.1", 0)) as silent:
        driver._check_reachable(f"127.0.0.1:{silent.getsockname()[1]}")


def test_options_and_paths_a_search_cannot_use_are_one_error(tmp_path):
    for value in ("nan", "inf", "-1", "0", "soon"):
        assert_clean_error(invoke("search", "optimizer", "--time", value, "--db",
                                  tmp_path / "t.db"), "--time")
    assert_clean_error(invoke("search", "optimizer", "--cpus-per-eval", "nan", "--db",
                              tmp_path / "t.db"), "number of CPUs")
    blocker = tmp_path / "a_file.txt"
    blocker.write_text("not a folder")
    assert_clean_error(invoke("search", "optimizer", "--budget", "3", "--db",
                              blocker / "x.db"), "a_file.txt is not a folder")
    Store.open(tmp_path / "t.db").close()
    assert_clean_error(invoke("show", "99999999999999999999", "--db", tmp_path / "t.db"),
                       "INDIVIDUAL_ID", "is no id of a run or individual")
    assert_clean_error(invoke("show", "0", "--db", tmp_path / "t.db"), "ids run from 1")
    assert_clean_error(invoke("lineage", "x", "--db", tmp_path / "t.db"), "'x' is not an id")
    assert_clean_error(invoke("export", "99999999999999999999", "-o", tmp_path / "x.py",
                              "--db", tmp_path / "t.db"), "is no id of a run or individual")


def test_search_neutral_and_restarts_are_recorded_with_the_run(searched, tmp_path):
    db = tmp_path / "neutral.db"
    result = invoke("search", "optimizer", "--budget", "3", "--neutral", "--restart-every",
                    "2", "--restart-from", "best", "--quiet", "--db", db)
    assert result.exit_code == 0, result.output
    (run,) = json.loads(invoke("runs", "--json", "--db", db).output)
    assert run["config"]["neutral"] is True
    assert (run["config"]["restart_every"], run["config"]["restart_from"]) == (2, "best")
    listed = invoke("runs", "--db", db).output
    assert "neutral children" in listed and "restarts every 2 from the best" in listed
    refused = invoke("search", "optimizer", "--start", "random", "--restart-every", "2",
                     "--db", db)
    assert_clean_error(refused, "--restart-from seed needs a run that starts from the seed")


def test_a_tournament_larger_than_the_population_is_noted(searched, tmp_path):
    result = invoke("search", "optimizer", "--budget", "3", "--population", "2",
                    "--tournament", "5", "--quiet", "--db", tmp_path / "small.db")
    assert result.exit_code == 0, result.output
    assert "every tournament takes the whole population" in result.stderr


def test_invalid_option_values(tmp_path):
    db = tmp_path / "fresh.db"
    for args in (["--budget", "0"], ["--population", "-3"], ["--tournament", "x"],
                 ["--task", "imagenet"], ["--ops", "lion,foo"], ["--ops", "sign,mul"],
                 ["--restart-every", "-1"], ["--restart-from", "worst"]):
        result = invoke("search", "optimizer", *args, "--db", db)
        assert_clean_error(result)
        assert "Invalid value" in result.output
    assert not db.exists()


def test_console_script_end_to_end(tmp_path):
    """The installed `evoprog` command, in its own process with its own local Ray."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    db = tmp_path / "proc.db"
    search = subprocess.run(
        [sys.executable, "-m", "evoprog", "search", "optimizer", "--budget", "12",
         "--population", "5", "--parallel", "2", "--db", str(db)],
        capture_output=True, text=True, env=env, timeout=300)
    assert search.returncode == 0, search.stderr
    runs = subprocess.run([sys.executable, "-m", "evoprog", "runs", "--json", "--db",
                           str(db)], capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(runs.stdout)[0]["individuals"] == 12


def test_search_tier_and_funnel_options(tmp_path):
    from evoprog.search.cli import _funnel

    assert _funnel("later", "A") == ["B", "C"] and _funnel("later", "B") == ["C"]
    assert _funnel("C", "B") == ["C"] and _funnel(None, "A") == []
    # A funnel tier no costlier than the search's own is refused before Ray starts.
    result = invoke("search", "optimizer", "--tier", "B", "--funnel", "B,C",
                    "--db", tmp_path / "t.db")
    assert result.exit_code == 2
    assert "funnel tiers must come after the search's tier B" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "t.db").exists()
    assert invoke("search", "optimizer", "--tier", "D").exit_code == 2
    # --funnel alone after the costliest tier would promote nothing
    for args, words in ((["--tier", "C", "--funnel"], ["--funnel", "no tier comes after"]),
                        (["--funnel", "B,B"], ["--funnel", "B listed twice"]),
                        (["--funnel", "B,"], ["--funnel", "empty item"])):
        result = invoke("search", "optimizer", *args, "--db", tmp_path / "t.db")
        assert result.exit_code == 2, result.output
        assert_clean_error(result, "Invalid value", *words)
    assert not (tmp_path / "t.db").exists()


def test_repeated_or_empty_list_items_are_usage_errors(tmp_path):
    """A task or learning-rate scale listed twice, or an empty item between commas, is
    a typo: one usage error before any work."""
    for command, option, value, words in (
            ("search", "--tasks", "digits_mlp,digits_mlp", ["digits_mlp listed twice"]),
            ("search", "--tasks", "digits_mlp,,char_lm", ["empty item"]),
            ("evaluate", "--tasks", "digits_mlp,digits_mlp", ["digits_mlp listed twice"]),
            ("evaluate", "--tasks", "digits_mlp,", ["empty item"]),
            ("evaluate", "--lr-scales", "3,3", ["3 listed twice"]),
            ("evaluate", "--lr-scales", "3,3.0", ["3 listed twice"]),
            ("evaluate", "--lr-scales", "1,,3", ["empty item"]),
            ("evaluate", "--lr-scales", "0", ["positive numbers"]),
            ("evaluate", "--lr-scales", "1,-3", ["positive numbers"]),
            ("evaluate", "--lr-scales", "one", ["positive numbers"]),
            ("evaluate", "--lr-scales", "nan", ["positive numbers"]),
            ("rediscover", "--tasks", "digits_cnn,digits_cnn", ["digits_cnn listed twice"]),
            ("rediscover", "--transfer-tiers", "A,A", ["A listed twice"])):
        target = "optimizer" if command == "search" else "lion"
        result = invoke(command, target, option, value, "--db", tmp_path / "t.db")
        assert result.exit_code == 2, (command, option, value, result.output)
        assert_clean_error(result, f"Invalid value for {option}", *words)
    assert not (tmp_path / "t.db").exists()


def test_a_search_that_cannot_start_leaves_no_database(searched, tmp_path, ray_local):
    """A database the command created is removed again when no run was recorded in it;
    one that was there before is left exactly as it was."""
    new = tmp_path / "new.db"
    result = invoke("search", "optimizer", "--cpus-per-eval", "64", "--budget", "2",
                    "--db", new)
    assert_clean_error(result, "--cpus-per-eval 64 but this machine has 2 CPUs")
    assert result.exit_code == 1 and list(tmp_path.iterdir()) == []
    result = invoke("rediscover", "lion", "--tasks", "digits_mlp,imagenet", "--db", new)
    assert_clean_error(result, "unknown task 'imagenet'")
    assert list(tmp_path.iterdir()) == []

    db, _ = searched
    kept = tmp_path / "kept.db"
    kept.write_bytes(db.read_bytes())
    before = table_counts(kept)
    result = invoke("search", "optimizer", "--cpus-per-eval", "64", "--db", kept)
    assert_clean_error(result, "--cpus-per-eval 64")
    assert table_counts(kept) == before
    empty = tmp_path / "empty.db"
    empty.touch()  # the user's own (empty) file: not ours to remove
    assert_clean_error(invoke("search", "optimizer", "--cpus-per-eval", "64", "--db", empty),
                       "--cpus-per-eval 64")
    assert empty.exists()


def test_a_search_that_cannot_start_keeps_a_new_database_another_search_opened(tmp_path):
    """Two searches started at once on a new file: the one that creates it and then fails
    to start must not remove it under the other, whose run would go to a deleted file."""
    from evoprog.search.cli import open_for_runs

    db = tmp_path / "shared.db"
    script = ("import sys\nfrom evoprog.store import Store\nstore = Store.open(sys.argv[1])\n"
              "print('open', flush=True)\nsys.stdin.readline()\n"
              "print(store.create_run('optimizer', 0, 2, {}, 'local'), flush=True)\n"
              "store.close()")
    with open_for_runs(db):  # created here; this command records no run
        other = subprocess.Popen([sys.executable, "-c", script, str(db)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline() == "open\n"
    try:
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline() == "1\n"
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    with Store.open(db, create=False) as store:
        assert [run["id"] for run in store.runs()] == [1]


def test_the_progress_names_the_tier_the_funnel_evaluates(tmp_path, ray_local, monkeypatch):
    """From the start of the promotion to tier B, the progress shows that tier and counts
    its programs, not the search's individuals (whose bar is full by then)."""
    import io
    import re

    from rich.console import Console

    import evoprog.search.cli as cli_module

    screen = io.StringIO()
    monkeypatch.setattr(cli_module, "err_console", Console(file=screen, force_terminal=True,
                                                           width=200))
    result = invoke("search", "optimizer", "--budget", "4", "--population", "3",
                    "--tournament", "2", "--parallel", "2", "--funnel", "B", "--promote",
                    "1", "--db", tmp_path / "f.db")
    assert result.exit_code == 0, result.output
    frames = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue()).replace("\r", "\n")
    lines = [line for line in frames.splitlines() if "run 1: " in line]
    assert any("run 1: tier A" in line for line in lines)
    # while the promoted program trains: tier B, none of 1 done
    assert any("run 1: tier B" in line and " 0/1 " in line and "promoting the best 1"
               in line for line in lines)
    assert not any("tier A" in line and "promot" in line for line in lines)
    # and once it is scored, the bar says it is done
    assert "promoted the best 1 to tier B" in lines[-1] and " 1/1 " in lines[-1]


def test_gpus_asked_of_a_machine_without_them_is_one_clear_error(tmp_path, ray_local):
    result = invoke("search", "optimizer", "--gpus-per-eval", "0.5", "--budget", "2",
                    "--db", tmp_path / "g.db")
    assert result.exit_code == 1, result.output
    assert "--gpus-per-eval 0.5 but this machine has 0 GPUs" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("signum, word, code", [(2, "Interrupted", 130),
                                                (15, "Terminated", 143)])
def test_ctrl_c_or_sigterm_during_evaluate_shows_what_was_scored(monkeypatch, signum, word,
                                                                 code):
    """Ctrl-C (or SIGTERM, as a scheduler sends) while the second of three programs
    trains: the first one's result is printed, then one line, the shell's exit code for
    the signal, no traceback."""
    import signal

    import evoprog.evaluators.suite as suite

    real, calls = suite.evaluate_suite, []

    def signal_during_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)  # as a user's Ctrl-C or a kill, while it trains
        return real(*args, **kwargs)

    monkeypatch.setattr(suite, "evaluate_suite", signal_during_the_second)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        result = invoke("evaluate", "adamw_paper", "lion", "sgd", "--json")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output
    assert [row["target"] for row in json.loads(result.stdout)] == ["adamw_paper"]
    assert (f"{word} while training lion (1 of 3 scored, above). evaluate writes "
            "nothing to the database, so nothing recorded was lost.") in result.stderr


def test_top_lists_per_task_scores_in_the_order_the_tasks_were_given(tmp_path):
    from evoprog.programs.program import format_program, parse_program
    from evoprog.programs.space import OptimizerSpace

    path = tmp_path / "tasks.db"
    tasks = ["digits_mlp", "digits_cnn", "char_lm"]  # not alphabetical
    with Store.open(path) as store:
        run = store.create_run("optimizer", 0, 2, {"tasks": tasks}, "local")
        for birth, text in enumerate(["update = g * lr", "s = sign(g)\nupdate = s * lr"]):
            program = parse_program(text)
            key = OptimizerSpace.hash(program)
            store.add_program(key, "optimizer", format_program(program),
                              format_program(OptimizerSpace.prune(program)))
            scores = dict(zip(tasks, (0.9 - birth, 0.8, 0.7 + birth), strict=True))
            store.add_individual(run, birth, key, None, None, "ok", None, 0.8,
                                 {"scores": scores, "tasks": tasks}, 0.1)
    result = invoke("top", "--db", path)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "fitness" in line)
    assert [header.index(task) for task in tasks] == sorted(header.index(t) for t in tasks)


def test_export_notes_an_individual_its_search_rejected(tmp_path):
    from evoprog.programs.program import format_program, parse_program
    from evoprog.programs.space import OptimizerSpace

    path = tmp_path / "rejected.db"
    with Store.open(path) as store:
        run = store.create_run("optimizer", 0, 2, {}, "local")
        for birth, (text, status, reason) in enumerate([
                ("update = g * lr", "ok", None),
                ("t = g * 0.0\nupdate = t * lr", "rejected", "static: update is always 0")]):
            program = parse_program(text)
            key = OptimizerSpace.hash(program)
            store.add_program(key, "optimizer", format_program(program),
                              format_program(OptimizerSpace.prune(program)))
            store.add_individual(run, birth, key, None, None, status, reason,
                                 1.0 if status == "ok" else None, {}, 0.1)
    rejected = invoke("export", 2, "-o", tmp_path / "rejected.py", "--db", path)
    assert rejected.exit_code == 0, rejected.output
    assert ("note: individual 2 was rejected in its search (static: update is always 0)"
            in rejected.output)
    assert (tmp_path / "rejected.py").exists()
    fine = invoke("export", 1, "-o", tmp_path / "fine.py", "--db", path)
    assert fine.exit_code == 0 and "was rejected" not in fine.output


def test_ctrl_c_before_the_search_loop_marks_the_run_interrupted(tmp_path, ray_local,
                                                                 monkeypatch):
    from evoprog.search.driver import Search

    def stopped_at_once(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Search, "run", stopped_at_once)
    db = tmp_path / "early.db"
    result = invoke("search", "optimizer", "--budget", "4", "--population", "2",
                    "--tournament", "2", "--quiet", "--db", db)
    assert result.exit_code == 130, result.output
    assert "Interrupted. Continue with: evoprog resume 1" in result.output
    with Store.open(db, create=False) as store:
        assert store.run(1)["status"] == "interrupted"


def test_export_to_standard_output_and_output_names_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("export", "lion", "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('"""Lion') and "class Lion" in result.stdout
    assert "wrote" not in result.stdout and not (tmp_path / "-").exists()
    namespace: dict = {}
    exec(compile(result.stdout, "lion.py", "exec"), namespace)  # the file runs as it is
    assert issubclass(namespace["Lion"], torch.optim.Optimizer)
    assert_clean_error(invoke("rediscover", "lion", "--report", "r.png", "--db", "r.db"),
                       "needs the suffix .json")
    assert_clean_error(invoke("search", "optimizer", "--budget", "2", "--db",
                              tmp_path / "typo" / "r.db"), "typo does not exist")
    assert not (tmp_path / "typo").exists() and not (tmp_path / "r.db").exists()
    (tmp_path / "lion").write_text("update = sign(g)\nupdate = update * lr\n")
    mine = invoke("export", "lion", "-o", "-")  # a file named as a known program
    assert "class EvolvedOptimizer" in mine.stdout
    assert "lion is a file here and the name of a known program" in mine.stderr


def test_ctrl_c_while_the_command_loads_is_one_line():
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "evoprog", "--help"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)  # torch and Ray take longer than this to import
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err, out) == (130, "Interrupted.\n", "")


def test_the_step_line_adds_the_training_step_at_most_four_times_a_second(monkeypatch):
    from evoprog.search import cli as cli_module

    shown: list[str] = []
    from evoprog.evaluators.progress import training_reference

    clock = iter([10.0, 10.1, 10.2, 10.36, 10.4, 10.45, 10.9])
    monkeypatch.setattr(cli_module.time, "monotonic", lambda: next(clock))
    line = cli_module.StepLine(shown.append)
    line.training(1, 5)  # no text yet: nothing to extend
    line.step("lion: training on digits_mlp (tier C)")
    for step in range(1, 6):
        line.training(step, 5)
    assert shown == ["lion: training on digits_mlp (tier C)",
                     "lion: training on digits_mlp (tier C), step 1 of 5",  # 10.1
                     "lion: training on digits_mlp (tier C), step 3 of 5",  # 0.26 s later
                     "lion: training on digits_mlp (tier C), step 5 of 5"]  # the last
    with training_reference("the reference"):  # what the loop trains is not the program
        line.training(2, 5)
    assert shown[-1] == "lion: training on digits_mlp (tier C), the reference, step 2 of 5"


def test_tables_on_a_narrow_terminal_keep_every_number_whole(searched, monkeypatch):
    """At 80 columns the runs table (11 columns) and top cannot fit with borders: they
    drop them and fold text, but never cut a number or a word short with an ellipsis,
    and a header of numbers folds at most in two."""
    from evoprog.search import cli as cli_module

    db, _ = searched
    (run,) = json.loads(invoke("runs", "--json", "--db", db).output)
    best = json.loads(invoke("top", "--n", "3", "--json", "--db", db).output)
    monkeypatch.setattr(cli_module.console, "width", 80)
    for args, numbers in ((("runs",), [f"{run['best_fitness']:.4f}", str(run["generated"])]),
                          (("top",), [f"{b['fitness']:.4f}" for b in best])):
        result = invoke(*args, "--db", db)
        assert result.exit_code == 0, result.output
        assert "…" not in result.output
        lines = result.output.splitlines()
        assert max(map(len, lines)) <= 80
        words = {word for line in lines for word in line.split()}
        assert set(numbers) <= words
        if args == ("runs",):  # room left: not folded, or folded once, in halves
            assert {"budget", "family", "cache", "hits"} <= words
            for header, halves in (("generated", {"gener", "ated"}),
                                   ("evaluated", {"evalu", "ated"}),
                                   ("redundant", {"redun", "dant"})):
                assert header in words or halves <= words, result.output


def test_a_program_of_the_other_family_says_which_family(tmp_path):
    layer = tmp_path / "s0.txt"
    layer.write_text(invoke("known", "evonorm_s0").output)
    for command in (["analyze", layer], ["export", layer, "-o", "-"], ["evaluate", layer]):
        assert_clean_error(invoke(*command), "like a layer program", "pass --family layer")


def test_programs_printed_together_by_known_are_not_read_as_one(tmp_path):
    two = invoke("known", "lion", "adam").output
    assert_clean_error(invoke("analyze", "-", input=two),
                       "standard input holds 2 programs (lion, adam")
    both = tmp_path / "two.txt"
    both.write_text(two)
    for command in (["evaluate", both], ["export", both, "-o", "-"]):
        assert_clean_error(invoke(*command), f"{both} holds 2 programs")
    one = invoke("analyze", "-", input=invoke("known", "lion").output)
    assert one.exit_code == 0 and "recognized Lion" in one.output

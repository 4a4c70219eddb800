"""Faults on a real two-node Ray cluster on loopback: a killed driver, Ctrl-C, SIGTERM,
and a worker node killed mid-evaluation. Each run must end with exactly its budget of
individuals, each birth once, and the same individuals as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from ray_nodes import Cluster, ray_env, wait_for

from evoprog.programs.program import parse_program
from evoprog.programs.space import OptimizerSpace

BUDGET = 30
OPTIONS = ["--budget", str(BUDGET), "--population", "6", "--tournament", "3", "--parallel",
           "2", "--seed", "3", "--quiet"]
TIMEOUT = 120
NODE_ATTEMPTS = 5  # searches run until one gives the victim node work to lose


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head with 1 CPU plus a 'victim' node with 1 CPU, stopped whatever happens."""
    cluster = Cluster(tmp_path_factory.mktemp("faults"), head_cpus=1)
    try:
        cluster.victim = cluster.add(["--num-cpus", "1", "--resources", '{"victim": 1}'])
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def stopped_runs(cluster, tmp_path_factory):
    """An uninterrupted reference run, a run whose driver is killed with SIGKILL, one
    stopped with SIGINT (Ctrl-C) and one with SIGTERM (``kill``, a cluster scheduler),
    all at once to save time; then the three are resumed."""
    root = tmp_path_factory.mktemp("runs")
    dbs = {name: root / f"{name}.db" for name in ("reference", "kill", "sigint", "sigterm")}
    procs = {name: start_search(cluster, db) for name, db in dbs.items()}
    result: dict = {"db": dbs}
    try:
        # Both are watched at once: Ray may run one search's tasks well ahead of the
        # others' (a driver keeps the workers it holds while it has tasks queued).
        signals = {"kill": signal.SIGKILL, "sigint": signal.SIGINT,
                   "sigterm": signal.SIGTERM}
        wait_for(lambda: _signal_after_3(procs, dbs, signals), TIMEOUT,
                 f"the {' and '.join(signals)} searches to record 3 individuals")
        for name, proc in procs.items():
            result[name] = (proc.wait(TIMEOUT), proc.stdout.read())
            result[f"{name}_count"] = recorded(dbs[name])
            result[f"{name}_status"] = run_status(dbs[name])
        procs.update({f"resume_{name}": subprocess.Popen(
            evoprog("resume", "1", "--quiet", "--address", cluster.address, "--db",
                    str(dbs[name])),
            env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True) for name in ("kill", "sigint", "sigterm")})
        for name in ("resume_kill", "resume_sigint", "resume_sigterm"):
            out = finish(procs[name])
            result[name] = (procs[name].returncode, out)
    finally:
        for proc in procs.values():
            stop(proc)
    return result


@pytest.fixture(scope="module")
def reference(stopped_runs) -> list[tuple]:
    code, out = stopped_runs["reference"]
    assert code == 0, out
    return individuals(stopped_runs["db"]["reference"], 1)


def _signal_after_3(procs: dict, dbs: dict, signals: dict) -> bool:
    """Signal each search in ``signals`` once it has recorded 3 individuals (and remove
    it); True when all are signalled. A search that ended before its signal fails."""
    for name in list(signals):
        proc = procs[name]
        count = recorded(dbs[name])
        assert proc.poll() is None, f"the {name} search ended before its signal"
        if count >= 3:
            proc.send_signal(signals.pop(name))
    return not signals


def evoprog(*args: str) -> list[str]:
    return [sys.executable, "-m", "evoprog", *args]


def start_search(cluster: Cluster, db) -> subprocess.Popen:
    return subprocess.Popen(
        evoprog("search", "optimizer", *OPTIONS, "--address", cluster.address, "--db",
                str(db)),
        env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=TIMEOUT)
    return out


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def resume(cluster: Cluster, db, run_id: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run(
        evoprog("resume", str(run_id), "--quiet", "--address", cluster.address, "--db",
                str(db)),
        env=ray_env(), capture_output=True, text=True, timeout=TIMEOUT)


def query(db, sql: str, *params):
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        conn.close()


def recorded(db, run_id: int = 1) -> int:
    rows = query(db, "SELECT COUNT(*) FROM individuals WHERE run_id = ?", run_id)
    return rows[0][0] if rows else 0


def individuals(db, run_id: int) -> list[tuple]:
    return query(db, "SELECT birth, program_hash, status, fitness FROM individuals "
                     "WHERE run_id = ? ORDER BY birth", run_id)


def run_status(db, run_id: int = 1) -> str:
    return query(db, "SELECT status FROM runs WHERE id = ?", run_id)[0][0]


def assert_complete(db, reference_rows: list[tuple], run_id: int = 1) -> None:
    rows = individuals(db, run_id)
    assert [row[0] for row in rows] == list(range(BUDGET))
    assert rows == reference_rows
    duplicates = query(db, "SELECT individual_id, COUNT(*) FROM evaluations "
                           "GROUP BY individual_id HAVING COUNT(*) > 1")
    assert duplicates == []
    assert run_status(db, run_id) == "finished"
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_driver_kill_9_then_resume(stopped_runs, reference):
    assert stopped_runs["kill"][0] == -signal.SIGKILL
    assert 3 <= stopped_runs["kill_count"] < BUDGET, "killed too late to test anything"
    assert stopped_runs["kill_status"] == "running"  # nobody was left to say otherwise
    code, out = stopped_runs["resume_kill"]
    assert code == 0, out
    assert_complete(stopped_runs["db"]["kill"], reference)


def assert_stopped_then_resumed(stopped_runs, reference, name: str, code: int,
                                hint: str) -> Path:
    """The run stopped by signal ``name`` exited with ``code``, printed ``hint`` and the
    resume command with no traceback, was marked interrupted, and its resume completed
    it as the reference run; returns its database."""
    exit_code, out = stopped_runs[name]
    db = stopped_runs["db"][name]
    assert exit_code == code, out
    assert "Traceback" not in out
    assert f"{hint} evoprog resume 1 --db {db}" in out.replace("\n", "")
    assert stopped_runs[f"{name}_status"] == "interrupted"
    assert 3 <= stopped_runs[f"{name}_count"] < BUDGET, "stopped too late to test anything"
    exit_code, out = stopped_runs[f"resume_{name}"]
    assert exit_code == 0, out
    assert_complete(db, reference)
    return db


def test_ctrl_c_prints_resume_and_resume_finishes(stopped_runs, reference, cluster):
    db = assert_stopped_then_resumed(stopped_runs, reference, "sigint", 130,  # the shell's
                                     "Interrupted. Continue with:")
    again = resume(cluster, db)
    assert again.returncode != 0 and "already finished" in again.stderr


def test_sigterm_stops_like_ctrl_c_and_resume_finishes(stopped_runs, reference):
    """SIGTERM ends the run as interrupted, not failed: the resume command is printed,
    the exit code is the shell's for SIGTERM, and there is no stack dump."""
    assert_stopped_then_resumed(stopped_runs, reference, "sigterm", 128 + signal.SIGTERM,
                                "Terminated. Continue with:")
    assert "SIGTERM received" not in stopped_runs["sigterm"][1]


def test_ctrl_c_during_rediscover_says_how_to_report_the_runs(cluster, tmp_path):
    """Ctrl-C during a rediscovery study: one line naming the recorded runs, the
    searches that never started and the ``--runs`` command that reports the runs, and
    that report marks the unfinished run."""
    from click.testing import CliRunner

    from evoprog.search.cli import cli

    db = tmp_path / "study.db"
    proc = subprocess.Popen(
        evoprog("rediscover", "lion", "--seeds", "2", "--no-random", *OPTIONS[:8],
                "--tasks", "digits_mlp", "--compare-tier", "none", "--transfer-tiers",
                "none", "--quiet", "--address", cluster.address, "--db", str(db)),
        env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        wait_for(lambda: recorded(db) >= 3 or proc.poll() is not None, TIMEOUT,
                 "the study's search to record 3 individuals")
        assert proc.poll() is None, "the study ended before its Ctrl-C"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        out = proc.stdout.read()
    finally:
        stop(proc)
    assert code == 130 and "Traceback" not in out and "Aborted" not in out, out
    assert (f"Interrupted. Run 1 is recorded; run 1 is unfinished (evoprog resume 1 --db "
            f"{db} finishes it). Not started: evolution seed 1. Report them with: evoprog "
            f"rediscover lion --runs 1 --db "
            f"{db} --compare-tier none --transfer-tiers none") in out
    assert run_status(db) == "interrupted" and 3 <= recorded(db) < BUDGET
    report = CliRunner().invoke(cli, ["rediscover", "lion", "--runs", "1", "--compare-tier",
                                      "none", "--transfer-tiers", "none", "--db", str(db)])
    assert report.exit_code == 0, report.output
    assert "1 (interrupted)" in report.output
    assert f"evoprog resume 1 --db {db} finishes it" in report.output


def workers(pids: list[int]) -> list[int]:
    """The Ray worker processes among ``pids`` (not the raylet or its helpers)."""
    found = []
    for pid in pids:
        try:
            command = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if command.startswith(b"ray::") or b"default_worker.py" in command:
            found.append(pid)
    return found


def cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_worker_node_killed_mid_search(cluster, reference, tmp_path):
    """Kill the victim node (raylet and its workers) while it evaluates; runs last.

    Ray places each evaluation where a worker frees up first, so on a slow host the head
    can take (nearly) a whole short search while the victim's worker starts; a search the
    victim did not work for before its last two births is run again, up to
    ``NODE_ATTEMPTS`` times, and the kill is tested on the first one it did."""
    for attempt in range(NODE_ATTEMPTS):
        db = tmp_path / f"node{attempt}.db"
        # CPU time of the victim's workers so far: its raylet may hand this search a
        # worker it started earlier (an idle, prestarted one), so it need not be new.
        cpu_before = {pid: cpu_seconds(pid) for pid in workers(cluster.victim.pids())}
        proc = start_search(cluster, db)
        try:
            def victim_busy_or_done(db=db, proc=proc, cpu_before=cpu_before):
                # a worker on the victim at work for this search (a warm worker gains
                # 0.3 s in an evaluation or a few quick rejections), or no search
                if recorded(db) >= 2 and any(
                        cpu_seconds(pid) - cpu_before.get(pid, 0.0) > 0.3
                        for pid in workers(cluster.victim.pids())):
                    return "busy"
                return "done" if proc.poll() is not None else None
            state = wait_for(victim_busy_or_done, TIMEOUT, "an evaluation on the victim node")
            if state == "done" or recorded(db) >= BUDGET - 2:  # no work, or too late to lose
                out = finish(proc)
                assert proc.returncode == 0, out
                continue
            killed = cluster.victim.kill()
            assert killed
            out = finish(proc)
            assert proc.returncode == 0, out
        finally:
            stop(proc)
        break
    else:
        pytest.fail(f"the victim node evaluated nothing in {NODE_ATTEMPTS} searches")
    assert cluster.victim.pids() == []
    assert_complete(db, reference)



def tier_b(db) -> list[tuple]:
    return query(db, "SELECT e.individual_id FROM evaluations e JOIN individuals i "
                     "ON i.id = e.individual_id WHERE i.run_id = 1 AND e.tier = 'B'")


def test_ctrl_c_during_the_funnel_then_resume_promotes(cluster, tmp_path):
    """Ctrl-C is answered while the best programs train at a later tier too, and
    ``resume`` then finishes that tier."""
    db = tmp_path / "funnel.db"
    options = ["--budget", "6", "--population", "4", "--tournament", "2", "--parallel",
               "2", "--seed", "3", "--quiet", "--funnel", "B", "--promote", "2"]
    proc = subprocess.Popen(
        evoprog("search", "optimizer", *options, "--address", cluster.address, "--db",
                str(db)),
        env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        wait_for(lambda: recorded(db) == 6 or proc.poll() is not None, TIMEOUT,
                 "the search to record its 6 individuals")
        assert proc.poll() is None and tier_b(db) == [], "the funnel ended too soon"
        proc.send_signal(signal.SIGINT)  # a tier-B evaluation takes seconds
        code = proc.wait(30)
        out = proc.stdout.read()
    finally:
        stop(proc)
    assert code == 130 and "Traceback" not in out, out
    assert run_status(db) == "interrupted" and tier_b(db) == []
    again = resume(cluster, db)
    assert again.returncode == 0, again.stdout + again.stderr
    promoted = [row[0] for row in tier_b(db)]
    assert run_status(db) == "finished" and recorded(db) == 6
    # --promote 2: the two best distinct functions, or all there are, each trained once
    ok = dict(query(db, "SELECT i.id, i.fitness FROM individuals i WHERE i.run_id = 1 "
                        "AND i.status = 'ok'"))
    functions = {OptimizerSpace.fingerprint(parse_program(text)) for (text,) in query(
        db, "SELECT p.text FROM individuals i JOIN programs p ON p.hash = i.program_hash "
            "WHERE i.run_id = 1 AND i.status = 'ok'")}
    assert len(promoted) == min(2, len(functions)) and len(set(promoted)) == len(promoted)
    assert max(ok[i] for i in promoted) == max(ok.values())  # the best at tier A went on

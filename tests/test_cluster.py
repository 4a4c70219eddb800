"""Running on a cluster: the launcher config, and one database shared by two searches
and by the inspection commands while they write."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from click.testing import CliRunner

from evoprog.search.cli import cli

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 12


def test_cluster_config_has_what_the_launcher_needs():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "auth", "available_node_types",
                "head_node_type", "file_mounts", "setup_commands", "max_workers"):
        assert key in config, key
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    assert {"cpu_worker", "gpu_worker"} <= set(nodes)
    for name, node in nodes.items():
        assert "node_config" in node and "resources" in node, name
        if name != config["head_node_type"]:
            assert 0 <= node["min_workers"] <= node["max_workers"], name
    assert config["file_mounts"]["~/evoprog"] == "."
    setup = " ".join(config["setup_commands"])
    assert setup.index("install torch") < setup.index("install -e ~/evoprog")


def invoke(*args) -> dict | list:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_two_searches_and_readers_share_one_db(tmp_path, ray_local):
    import ray

    db = tmp_path / "shared.db"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    address = ray.get_runtime_context().gcs_address
    # The second leaves --parallel to the cluster's size, and is told so.
    procs = [subprocess.Popen(
        [sys.executable, "-m", "evoprog", "search", "optimizer", "--budget", str(BUDGET),
         "--population", "6", *parallel, "--seed", str(seed), "--quiet",
         "--address", address, "--db", str(db)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True) for seed, parallel in ((1, ["--parallel", "2"]), (2, []))]
    reads = 0
    try:
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "searches did not finish in time"
            time.sleep(0.2)
            if not db.exists():
                continue
            try:
                runs = invoke("runs", "--json", "--db", db)
            except AssertionError:  # the schema may not be written yet
                continue
            for run in runs:
                if run["individuals"] == 0:
                    continue
                best = invoke("top", run["id"], "--n", "3", "--json", "--db", db)
                if best:
                    assert invoke("show", best[0]["id"], "--json", "--db", db)["run_id"] \
                        == run["id"]
                    chain = invoke("lineage", best[0]["id"], "--json", "--db", db)
                    assert chain[0]["birth"] == 0 and chain[-1]["id"] == best[0]["id"]
                    reads += 1
        outs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "note: --parallel is 8, from the CPUs the cluster has now" in outs[1], outs[1]
    assert "note: --parallel" not in outs[0], outs[0]
    assert reads > 0, "the searches ended before anything could be read"
    runs = invoke("runs", "--json", "--db", db)
    assert [(r["status"], r["individuals"]) for r in runs] == [("finished", BUDGET)] * 2
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT run_id, birth, COUNT(*) FROM individuals "
                            "GROUP BY run_id, birth HAVING COUNT(*) > 1").fetchall() == []
    finally:
        conn.close()

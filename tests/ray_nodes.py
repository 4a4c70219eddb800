"""Real Ray nodes on loopback for tests, each in its own process session.

``ray stop`` stops every Ray process on the machine, so it is never used: each node is
started with ``start_new_session`` and stopped by killing exactly the processes of that
session (the raylet, its workers and agents keep the session of ``ray start``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def ray_env() -> dict[str, str]:
    """Environment for every process of a test cluster (nodes and drivers alike)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
               # notice a killed node within seconds rather than the default ~30 s
               RAY_health_check_period_ms="500", RAY_health_check_timeout_ms="500",
               RAY_health_check_failure_threshold="3", PYTHONUNBUFFERED="1")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Live processes whose session id is ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process of a session; returns the pids it killed."""
    pids = session_pids(sid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


class Node:
    """One ``ray start`` node; ``kill()`` removes all of its processes."""

    def __init__(self, sid: int):
        self.sid = sid

    def pids(self) -> list[int]:
        return session_pids(self.sid)

    def kill(self) -> list[int]:
        return kill_session(self.sid)


class Cluster:
    """A head node and optional extra nodes on 127.0.0.1, for one test module."""

    def __init__(self, root: Path, head_cpus: int):
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[Node] = []
        self.add(["--head", "--port", str(self.port), "--num-cpus", str(head_cpus),
                  "--include-dashboard", "false", "--temp-dir", str(root / "ray")])

    def add(self, args: list[str]) -> Node:
        if self.nodes:
            args = ["--address", self.address, *args]
        node = _start_node(args, self.root)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()


def _start_node(args: list[str], root: Path) -> Node:
    # A wrapper shell leads the new session and stays alive until ``ray start`` returns,
    # so the session id is known before any Ray process exists.
    proc = subprocess.Popen([RAY, "start", "--node-ip-address", "127.0.0.1",
                             "--disable-usage-stats", *args], env=ray_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    node = Node(proc.pid)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        node.kill()
        proc.kill()
        raise
    if proc.returncode != 0:
        node.kill()
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{out[-3000:]}")
    return node


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

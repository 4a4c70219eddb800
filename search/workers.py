"""Ray plumbing: start or join a cluster, and the remote evaluation task.

Programs travel to workers as text and results come back as plain dicts, so nothing of
ours is unpickled from a worker beyond JSON-like values.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Any

import ray

from ..programs.program import parse_program

# Failures that end a worker rather than an error the evaluation raised. Ray itself runs
# a task whose worker died up to 3 more times (``max_retries`` below); after that the
# driver re-queues the candidate, at most MAX_LOST times, then records it as failed.
RETRYABLE = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.OwnerDiedError,
    ray.exceptions.RaySystemError,
    ray.exceptions.TaskUnschedulableError,
    ray.exceptions.ActorDiedError,
    # Ray's memory monitor killed the worker, or the object store ran out of disk: the
    # candidate may be at fault, hence the bound.
    ray.exceptions.OutOfMemoryError,
    ray.exceptions.OutOfDiskError,
)


def lost_worker(exc: BaseException) -> bool:
    """Whether an evaluation's failure says nothing of its program, so that it is run
    again (a bounded number of times) rather than recorded: its worker or node died, or
    the device ran out of memory, which evaluations sharing a GPU cause one another."""
    import torch

    return isinstance(exc, RETRYABLE) or isinstance(getattr(exc, "cause", None),
                                                    torch.OutOfMemoryError)


def start_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start Ray locally.

    Returns a summary with the address used and the cluster's CPU and GPU counts. A
    SIGTERM handler the program installed stays in place.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        # ray.init installs a SIGTERM handler of its own: a program's own one is kept.
        own = signal.getsignal(signal.SIGTERM)
        kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
        if callable(own) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, own)
    resources = ray.cluster_resources()
    return {
        "address": address or "local",
        "cpus": int(resources.get("CPU", 0)),
        "gpus": float(resources.get("GPU", 0)),
    }


@ray.remote(max_retries=3)
def evaluate_remote(program_text: str, tasks: list[str], tier: str = "A") -> dict[str, Any]:
    """Evaluate one program on the run's tasks at ``tier`` in a worker process."""
    import torch

    from ..evaluators.suite import evaluate_suite

    torch.set_num_threads(1)
    result, evaluations = evaluate_suite(parse_program(program_text), tasks, tier)
    return {"result": result.to_dict(), "evaluations": evaluations,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}

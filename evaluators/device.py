"""The device every evaluation in this process runs on, chosen once.

Choosing once keeps a worker's results comparable with each other; ``EVOPROG_DEVICE``
(``cpu``, ``cuda``, ``cuda:1``) overrides the choice, e.g. to keep a GPU machine's
evaluations comparable with CPU ones.
"""

from __future__ import annotations

import os
import platform
from functools import cache

import torch


@cache
def device() -> torch.device:
    """CUDA when available, CPU otherwise (or whatever ``EVOPROG_DEVICE`` names)."""
    chosen = os.environ.get("EVOPROG_DEVICE")
    if chosen:
        return torch.device(chosen)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@cache
def machine() -> str:
    """The kind of machine an evaluation's last digits depend on, recorded with every
    evaluation: the device (for a CPU, the vector instruction set torch's kernels use
    there) and the torch build.

    Two processes that give the same string score a program the same, bit for bit (one
    thread). On another kind the kernels round differently: losses differ in their last
    digits, and a layer's accuracy, after 100 steps that amplify every difference, by
    up to about a point.
    """
    chosen = device()
    if chosen.type == "cuda":
        kind = f"cuda {torch.cuda.get_device_name(chosen)}"
    else:
        kind = f"{chosen.type} {platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    return f"{kind}, torch {torch.__version__}"

"""The device every evaluation in this process runs on, chosen once.

Choosing once keeps a worker's results comparable with each other; ``EVOPROG_DEVICE``
(``cpu``, ``cuda``, ``cuda:1``) overrides the choice, e.g. to keep a GPU machine's
evaluations bit-for-bit comparable with CPU ones.
"""

from __future__ import annotations

import os
from functools import cache

import torch


@cache
def device() -> torch.device:
    """CUDA when available, CPU otherwise (or whatever ``EVOPROG_DEVICE`` names)."""
    chosen = os.environ.get("EVOPROG_DEVICE")
    if chosen:
        return torch.device(chosen)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

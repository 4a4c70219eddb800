"""Data sets for proxy tasks.

scikit-learn's bundled digits (1797 8x8 images, 10 classes) ship with the package, and
the character corpus is Python's own standard library source, so evaluation needs no
network and no download cache on the workers.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch


@dataclass(frozen=True)
class Split:
    """Train and validation tensors. Shared by every caller in the process: never modify."""

    x_train: torch.Tensor  # (n_train, features) float32
    y_train: torch.Tensor  # (n_train,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor

    @property
    def features(self) -> int:
        return self.x_train.shape[1]

    @property
    def classes(self) -> int:
        return int(self.y_train.max()) + 1

    def to(self, device: torch.device) -> Split:
        """The same split on ``device`` (self when it is already there)."""
        if self.x_train.device == device:
            return self
        return Split(*(t.to(device) for t in (self.x_train, self.y_train, self.x_val,
                                                self.y_val)))


@cache
def digits(val_size: int = 360, seed: int = 0) -> Split:
    """Digits scaled to [0, 1], with a fixed stratified split (1437/360 by default).

    Cached per process because loading and splitting costs more than a short evaluation.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_size, stratify=y, random_state=seed)
    return Split(
        x_train=torch.tensor(x_train / 16.0, dtype=torch.float32),
        y_train=torch.tensor(y_train, dtype=torch.int64),
        x_val=torch.tensor(x_val / 16.0, dtype=torch.float32),
        y_val=torch.tensor(y_val, dtype=torch.int64),
    )


VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
"""The character vocabulary: newline and printable ASCII; every other byte (tabs,
UTF-8 parts) maps to one extra "unknown" index, ``len(VOCAB)``."""
VOCAB_SIZE = len(VOCAB) + 1


@cache
def stdlib_text(max_chars: int = 1_000_000) -> torch.Tensor:
    """Character indices (int64) of the standard library's top-level ``.py`` files.

    Files are read in sorted name order and concatenated until ``max_chars``, so the
    corpus is fixed for a given Python version (it differs between Python releases).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    table = torch.full((256,), len(VOCAB), dtype=torch.int64)
    for i, char in enumerate(VOCAB):
        table[ord(char)] = i
    chunks, total = [], 0
    for path in sorted(root.glob("*.py")):
        raw = path.read_bytes()[: max_chars - total]
        chunks.append(raw)
        total += len(raw)
        if total >= max_chars:
            break
    data = torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)
    return table[data.long()]


@cache
def char_windows(context: int, train_windows: int, val_windows: int,
                 max_chars: int = 1_000_000) -> Split:
    """Next-character windows from ``stdlib_text``: x and y are (n, context) int64.

    The corpus splits 90/10 into train and validation text; each is cut into
    non-overlapping windows of ``context + 1`` characters (y is x shifted by one),
    taken evenly spaced so that a small split still spans many files.
    """
    text = stdlib_text(max_chars)
    cut = len(text) * 9 // 10

    def windows(part: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        whole = part[: len(part) // (context + 1) * (context + 1)].view(-1, context + 1)
        if count > len(whole):
            raise ValueError(f"asked for {count} windows, the text has {len(whole)}")
        picked = whole[torch.linspace(0, len(whole) - 1, count).long()]
        return picked[:, :-1].contiguous(), picked[:, 1:].contiguous()

    x_train, y_train = windows(text[:cut], train_windows)
    x_val, y_val = windows(text[cut:], val_windows)
    return Split(x_train, y_train, x_val, y_val)

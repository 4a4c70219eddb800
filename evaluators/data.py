"""Data sets for proxy tasks.

scikit-learn's bundled digits (1797 8x8 images, 10 classes) ship with the package, so
evaluation needs no network and no download cache on the workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

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

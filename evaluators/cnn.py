"""A small CNN whose parameters for S seeds are one flat (S, N) tensor.

Each convolution is an im2col (``unfold``) followed by one batched matmul over the seed
dimension, so every step is a handful of batched kernels however many seeds train, and
the update program still sees one flat (S, N) tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from ..programs.ops import Layout


@dataclass(frozen=True)
class FlatCNN:
    """``conv3x3(channels[0]) -> ReLU -> ... -> 2x2 max-pool -> linear`` on square images.

    Convolutions keep the spatial size (padding 1); one max-pool halves it before the
    linear classifier. Parameters are laid out like the equivalent ``nn.Sequential``:
    per layer its weight and then its bias.
    """

    side: int  # images are (1, side, side)
    channels: tuple[int, ...]
    classes: int

    @cached_property
    def _fans(self) -> list[tuple[tuple[int, ...], int]]:
        """(weight shape, fan_in) per layer."""
        out, c_in = [], 1
        for c in self.channels:
            out.append(((c, c_in, 3, 3), c_in * 9))
            c_in = c
        flat = c_in * (self.side // 2) ** 2
        out.append(((self.classes, flat), flat))
        return out

    @cached_property
    def layout(self) -> Layout:
        shapes: list[tuple[int, ...]] = []
        for shape, _ in self._fans:
            shapes += [shape, (shape[0],)]
        return Layout(tuple(shapes))

    def init(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """(S, N) parameters with PyTorch's default init bound 1/sqrt(fan_in), one row per
        generator, so a seed's init does not depend on the batch it trains in."""
        rows = []
        for gen in generators:
            parts = []
            for shape, fan_in in self._fans:
                bound = 1.0 / math.sqrt(fan_in)
                for numel in (math.prod(shape), shape[0]):
                    parts.append((torch.rand(numel, generator=gen) * 2 - 1) * bound)
            rows.append(torch.cat(parts))
        return torch.stack(rows)

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x: (S, B, side*side) -> (S, B, classes), each seed with its own parameters."""
        s, b = x.shape[:2]
        side, half = self.side, self.side // 2
        views = self.layout.segments(theta)
        h = x.reshape(s * b, 1, side, side)
        for i in range(len(self.channels)):
            weight, bias = views[2 * i], views[2 * i + 1]
            # im2col + one batched matmul over seeds: far cheaper on CPU than a grouped
            # convolution at these sizes, and the same arithmetic as conv2d.
            cols = F.unfold(h, 3, padding=1)  # (S*B, C*9, H*W)
            cols = cols.view(s, b, -1, side * side).transpose(2, 3).reshape(s, b * side * side, -1)
            out = torch.baddbmm(bias.unsqueeze(1), cols, weight.flatten(2).transpose(1, 2))
            h = torch.relu(out).view(s * b, side, side, -1).permute(0, 3, 1, 2)
        h = h.reshape(s * b, -1, half, 2, half, 2).amax(dim=(3, 5))  # 2x2 max-pool
        h = h.reshape(s, b, -1)  # (S, B, C*H*W), flattened like nn.Flatten
        weight, bias = views[-2], views[-1]
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    def losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per seed, shape (S,). x: (S, B, side*side), y: (S, B)."""
        logits = self.logits(theta, x)
        s, b, c = logits.shape
        return F.cross_entropy(logits.reshape(s * b, c), y.reshape(s * b),
                               reduction="none").view(s, b).mean(dim=1)

    def evaluate(self, theta: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy) per seed on one shared data set x: (B, side*side), y: (B,)."""
        s = theta.shape[0]
        xs = x.unsqueeze(0).expand(s, *x.shape)
        ys = y.unsqueeze(0).expand(s, *y.shape)
        logits = self.logits(theta, xs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys.reshape(-1),
                               reduction="none").view(s, -1).mean(dim=1)
        return loss, (logits.argmax(dim=-1) == ys).float().mean(dim=1)

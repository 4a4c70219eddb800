"""A small CNN whose parameters for S seeds are one flat (S, N) tensor.

Each convolution is one grouped convolution with a group per seed (the seeds' channels
side by side, in channels-last memory), so every step is a handful of kernels however
many seeds train, and the update program still sees one flat (S, N) tensor. At these
sizes (8x8 images, 6-64 channels) oneDNN's channels-last grouped convolution makes an
evaluation about 2.5x faster than an im2col (``unfold``) and batched matmul, whose
per-image unfold and fold loops dominate the step.
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
        side = self.side
        views = self.layout.segments(theta)
        # (B, S * channels, side, side): seed-major channels, one convolution group each.
        h = x.reshape(s, b, side, side).transpose(0, 1).contiguous(
            memory_format=torch.channels_last)
        for i in range(len(self.channels)):
            weight, bias = views[2 * i], views[2 * i + 1]  # (S, out, in, 3, 3), (S, out)
            h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1),
                         padding=1, groups=s)
            h = torch.relu(h)
        h = F.max_pool2d(h, 2)  # (B, S * C, side/2, side/2)
        h = h.reshape(b, s, -1).transpose(0, 1)  # (S, B, C*H*W), flattened like nn.Flatten
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

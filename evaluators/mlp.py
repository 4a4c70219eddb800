"""A multilayer perceptron whose parameters for S seeds are one flat (S, N) tensor.

Candidate programs run on flat tensors (see ``programs.ops``), so keeping the model's
parameters flat avoids a gather and scatter every step, and a leading seed dimension
lets batched matmuls train all seeds in one vectorized run instead of S Python loops.
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
class FlatMLP:
    """ReLU MLP with layer widths ``sizes`` (input first, classes last).

    Parameters are laid out like ``nn.Sequential(nn.Linear, ...).parameters()``: for
    each layer its weight (out, in) and then its bias (out,).
    """

    sizes: tuple[int, ...]

    @cached_property
    def layout(self) -> Layout:
        shapes: list[tuple[int, ...]] = []
        for fan_in, fan_out in zip(self.sizes, self.sizes[1:], strict=False):
            shapes += [(fan_out, fan_in), (fan_out,)]
        return Layout(tuple(shapes))

    def init(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """(S, N) parameters, one row per generator, like PyTorch's default init.

        ``nn.Linear`` draws weights from Kaiming-uniform with a=sqrt(5) and biases from
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)); both bounds come to 1/sqrt(fan_in). Each
        row depends only on its own generator, so a seed's init is the same whether it
        trains alone or in a batch.
        """
        rows = []
        for gen in generators:
            parts = []
            for fan_in, fan_out in zip(self.sizes, self.sizes[1:], strict=False):
                bound = 1.0 / math.sqrt(fan_in)
                for numel in (fan_out * fan_in, fan_out):  # weight, then bias
                    parts.append((torch.rand(numel, generator=gen) * 2 - 1) * bound)
            rows.append(torch.cat(parts))
        return torch.stack(rows)

    @cached_property
    def _offsets(self) -> list[tuple[int, int, int, int]]:
        """(weight start, bias start, bias end, fan_in) per layer in the flat layout."""
        offsets, start = [], 0
        for fan_in, fan_out in zip(self.sizes, self.sizes[1:], strict=False):
            offsets.append((start, start + fan_out * fan_in, start + fan_out * (fan_in + 1),
                            fan_in))
            start = offsets[-1][2]
        return offsets

    def layers(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight (S, out, in), bias (S, out)) views into theta, per layer."""
        s = theta.shape[0]
        return [(theta[:, w:b].view(s, -1, fan_in), theta[:, b:end])
                for w, b, end, fan_in in self._offsets]

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x: (S, B, in) -> (S, B, classes), each seed with its own parameters."""
        layers = self.layers(theta)
        h = x
        for i, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if i < len(layers) - 1:
                h = torch.relu(h)
        return h

    def loss_and_grad(self, theta: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``losses`` and their gradient with respect to theta, by a hand-written backward.

        The same products autograd would run, without building a graph each step, and
        every weight and bias gradient is written straight into its segment of the flat
        (S, N) gradient instead of being gathered there afterwards.
        """
        layers = self.layers(theta)
        inputs = [x]  # each layer's input (post-ReLU activations)
        h = x
        for i, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if i < len(layers) - 1:
                h = h.relu_()
                inputs.append(h)
        log_p, delta = log_softmax_and_softmax(h)
        target = y.unsqueeze(-1)
        losses = log_p.gather(-1, target).mean(dim=(1, 2)).neg_()
        # d(mean cross-entropy)/d(logits) = (softmax - one_hot) / B
        delta.scatter_add_(-1, target, delta.new_full((1, 1, 1), -1.0).expand(target.shape))
        delta.mul_(1.0 / x.shape[1])
        grad = torch.empty_like(theta)
        grads = self.layers(grad)
        for i in range(len(layers) - 1, -1, -1):
            weight_grad, bias_grad = grads[i]
            torch.bmm(delta.transpose(1, 2), inputs[i], out=weight_grad)
            torch.sum(delta, dim=1, out=bias_grad)
            if i > 0:
                back = torch.bmm(delta, layers[i][0])
                delta = torch.ops.aten.threshold_backward.grad_input(back, inputs[i], 0,
                                                                     grad_input=back)
        return losses, grad

    def losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per seed, shape (S,). x: (S, B, in), y: (S, B)."""
        logits = self.logits(theta, x)
        s, b, c = logits.shape
        per_example = F.cross_entropy(logits.reshape(s * b, c), y.reshape(s * b),
                                      reduction="none")
        return per_example.view(s, b).mean(dim=1)

    def evaluate(self, theta: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy) per seed on one shared data set x: (B, in), y: (B,)."""
        s = theta.shape[0]
        xs = x.unsqueeze(0).expand(s, *x.shape)
        logits = self.logits(theta, xs)
        ys = y.unsqueeze(0).expand(s, *y.shape)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys.reshape(-1),
                               reduction="none").view(s, -1).mean(dim=1)
        accuracy = (logits.argmax(dim=-1) == ys).float().mean(dim=1)
        return loss, accuracy


def log_softmax_and_softmax(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax and softmax over the last dimension, from one exponential.

    On the CPU, ``torch.log_softmax`` over a last dimension as short as the number of
    classes runs several times slower than these few whole-tensor ops (100 us against
    25 us for (6, 128, 10) on one thread), which is a few percent of a training step.
    """
    shifted = h - h.amax(dim=-1, keepdim=True)
    exp = shifted.exp()
    total = exp.sum(dim=-1, keepdim=True)
    return shifted - total.log(), exp.div_(total)

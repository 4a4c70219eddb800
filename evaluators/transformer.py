"""A tiny causal transformer language model whose parameters for S seeds are one flat
(S, N) tensor.

Every matrix product is a batched product over the seed dimension and attention folds
the seeds into its batch, so one step trains all seeds together and the update
program runs once on the flat parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from ..programs.ops import Layout

EVAL_CHUNK = 256  # windows per forward pass when evaluating, to bound memory


@dataclass(frozen=True)
class FlatTransformer:
    """Pre-LayerNorm GPT-style decoder: token and learned position embeddings, ``layers``
    blocks of causal self-attention and a 4x GELU MLP, a final LayerNorm and an untied
    output layer over ``vocab`` characters."""

    vocab: int
    context: int
    width: int
    layers: int
    heads: int

    @cached_property
    def _specs(self) -> list[tuple[tuple[int, ...], str]]:
        """(shape, init) per tensor, in layout order; init is normal, zeros or ones."""
        d = self.width
        specs = [((self.vocab, d), "normal"), ((self.context, d), "normal")]
        for _ in range(self.layers):
            specs += [((d,), "ones"), ((d,), "zeros"),
                      ((3 * d, d), "normal"), ((3 * d,), "zeros"),
                      ((d, d), "proj"), ((d,), "zeros"),
                      ((d,), "ones"), ((d,), "zeros"),
                      ((4 * d, d), "normal"), ((4 * d,), "zeros"),
                      ((d, 4 * d), "proj"), ((d,), "zeros")]
        specs += [((d,), "ones"), ((d,), "zeros"), ((self.vocab, d), "normal"),
                  ((self.vocab,), "zeros")]
        return specs

    @cached_property
    def layout(self) -> Layout:
        return Layout(tuple(shape for shape, _ in self._specs))

    def init(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """GPT-2 style init: N(0, 0.02), residual projections scaled by 1/sqrt(2 layers)."""
        proj_std = 0.02 / math.sqrt(2 * self.layers)
        rows = []
        for gen in generators:
            parts = []
            for shape, kind in self._specs:
                n = math.prod(shape)
                if kind == "ones":
                    parts.append(torch.ones(n))
                elif kind == "zeros":
                    parts.append(torch.zeros(n))
                else:
                    std = proj_std if kind == "proj" else 0.02
                    parts.append(torch.randn(n, generator=gen) * std)
            rows.append(torch.cat(parts))
        return torch.stack(rows)

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x: (S, B, T) character indices -> (S, B, T, vocab)."""
        s, b, t = x.shape
        d, heads = self.width, self.heads
        views = iter(self.layout.segments(theta))
        tok, pos = next(views), next(views)
        # A one-hot product rather than a gather: its backward is a plain matmul.
        one_hot = theta.new_zeros(s, b * t, self.vocab).scatter_(2, x.reshape(s, b * t, 1), 1.0)
        h = torch.bmm(one_hot, tok).view(s, b, t, d) + pos[:, None, :t, :]

        def norm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return F.layer_norm(h, (d,)) * weight[:, None, None] + bias[:, None, None]

        def linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            flat = h.reshape(s, -1, h.shape[-1])
            out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
            return out.view(*h.shape[:-1], weight.shape[1])

        for _ in range(self.layers):
            ln1w, ln1b, qkvw, qkvb, projw, projb = (next(views) for _ in range(6))
            ln2w, ln2b, fc1w, fc1b, fc2w, fc2b = (next(views) for _ in range(6))
            qkv = linear(norm(h, ln1w, ln1b), qkvw, qkvb)
            qkv = qkv.view(s * b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
            att = att.transpose(1, 2).reshape(s, b, t, d)
            h = h + linear(att, projw, projb)
            h = h + linear(F.gelu(linear(norm(h, ln2w, ln2b), fc1w, fc1b)), fc2w, fc2b)
        lnw, lnb, headw, headb = views
        return linear(norm(h, lnw, lnb), headw, headb)

    def losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean next-character cross-entropy per seed, shape (S,). x, y: (S, B, T)."""
        logits = self.logits(theta, x)
        s = logits.shape[0]
        return F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1),
                               reduction="none").view(s, -1).mean(dim=1)

    def evaluate(self, theta: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, next-character accuracy) per seed on shared windows x, y: (n, T)."""
        s = theta.shape[0]
        loss_sum = theta.new_zeros(s)
        hits = theta.new_zeros(s)
        for start in range(0, len(x), EVAL_CHUNK):
            xc, yc = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
            logits = self.logits(theta, xc.unsqueeze(0).expand(s, *xc.shape))
            ys = yc.unsqueeze(0).expand(s, *yc.shape)
            loss_sum += F.cross_entropy(logits.reshape(-1, self.vocab), ys.reshape(-1),
                                        reduction="none").view(s, -1).sum(dim=1)
            hits += (logits.argmax(dim=-1) == ys).float().flatten(1).sum(dim=1)
        count = y.numel()
        return loss_sum / count, hits / count

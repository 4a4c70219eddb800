"""Run a program on tensors.

A program is compiled once into a list of steps with its constants already on the
target device, then called every training step with a dict of input tensors. Scalar
inputs (``lr``, ``step``) are tensors of shape (..., 1) that broadcast against the flat
(..., N) tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from .ops import OPS, Layout
from .program import Program


class CompiledProgram:
    """A program ready to run on one device, dtype and layout."""

    def __init__(self, program: Program, layout: Layout, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.program = program
        self.layout = layout
        self._steps: list[tuple[str, Callable, tuple]] = []
        for ins in program.instructions:
            op = OPS[ins.op]
            if op.arity == 0:
                value = op.torch_fn().to(device=device, dtype=dtype)
                self._steps.append((ins.out, _constant(value), ()))
                continue
            fn = partial(op.torch_fn, layout=layout) if op.needs_layout else op.torch_fn
            args = tuple(a if isinstance(a, str) else torch.tensor(a, device=device, dtype=dtype)
                         for a in ins.args)
            self._steps.append((ins.out, fn, args))

    def __call__(self, env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the program; returns the environment after the last instruction."""
        env = dict(env)
        for out, fn, args in self._steps:
            env[out] = fn(*[env[a] if isinstance(a, str) else a for a in args])
        return env


def _constant(value: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: value

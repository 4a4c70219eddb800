"""Run a program on tensors: the one interpreter that training, export, the layer module
and the analysis probes share.

A program is compiled once into steps (output name, function, getter of its arguments),
its constants made once on the target device and dtype, then called with a dict of input
tensors. Optimizer programs see scalar inputs (``lr``, ``step``) as tensors of shape
(..., 1) that broadcast against the flat (..., N) tensors, and ops that reduce per tensor
read the ``Layout``. A caller that gives some instructions a meaning of its own (a
layer's aggregates need the layer's input, its eps, groups and running averages) passes
``bind``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from operator import itemgetter

import torch

from .ops import OPS, WITH_CONSTANT, Layout
from .program import Instruction, Program, ProgramError

Binding = tuple[Callable[..., torch.Tensor], tuple[str | float, ...]]
"""A function and its arguments: environment names, or float constants."""
Bind = Callable[[int, Instruction], Binding | None]
"""Instruction index and instruction -> its own binding, or None for the op's meaning."""


class CompiledProgram:
    """A program ready to run on one device and dtype (and layout, for optimizers)."""

    def __init__(self, program: Program, layout: Layout | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 bind: Bind | None = None):
        self.program = program
        self.layout = layout
        # Constants live in the environment under names no variable can have ("#0.9").
        self._constants: dict[str, torch.Tensor] = {}
        self._steps: list[tuple[str, Callable, itemgetter, bool]] = []
        for index, ins in enumerate(program.instructions):
            fn, args = (bind and bind(index, ins)) or self._binding(ins)
            names = [a if isinstance(a, str) else self._constant(a, device, dtype)
                     for a in args]
            # A getter of one name returns its value, of several a tuple of values.
            self._steps.append((ins.out, fn, itemgetter(*names), len(names) == 1))

    def _binding(self, ins: Instruction) -> Binding:
        op = OPS[ins.op]
        names = [a for a in ins.args if isinstance(a, str)]
        constants = [a for a in ins.args if not isinstance(a, str)]
        if len(names) == 1 and len(constants) == 1:  # max(x, 0) runs as relu(x)
            form = WITH_CONSTANT.get((ins.op, float(constants[0])))
            if form is not None:
                return form, (names[0],)
        if op.arity == 0:  # a named constant such as pi()
            return _identity, (float(op.torch_fn()),)
        if not op.needs_layout:
            return op.torch_fn, ins.args
        if self.layout is None:
            raise ProgramError(f"op {ins.op!r} reduces per parameter tensor, which has no "
                               "meaning here")
        return partial(op.torch_fn, layout=self.layout), ins.args

    def _constant(self, value: float, device: torch.device | str, dtype: torch.dtype) -> str:
        value = float(value)
        name = f"#{value!r}"
        self._constants[name] = constant(value, str(device), dtype)
        return name

    def __call__(self, env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the program; returns the environment after the last instruction."""
        env = {**self._constants, **env}
        for out, fn, args, single in self._steps:
            env[out] = fn(args(env)) if single else fn(*args(env))
        return env


@lru_cache(maxsize=4096)
def _cached_constant(text: str, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(float(text), device=device, dtype=dtype)


def constant(value: float, device: str = "cpu", dtype: torch.dtype = torch.float64,
             ) -> torch.Tensor:
    """A shared scalar tensor: programs compiled often (probes, layers moved between
    devices) reuse one tensor per constant. Keyed by ``repr`` so -0.0 stays -0.0.
    Nothing writes into it."""
    return _cached_constant(repr(value), device, dtype)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x

"""A layer program as an ``nn.Module`` at run time.

Element-wise instructions run through the shared interpreter; aggregates run here,
because they need the module's ``eps``, its group count, the training flag and, for
batch aggregates, a running average per instruction (used in eval mode, as in batch
norm). The module runs the pruned program and holds only what it reads (``v0`` and
``v1`` when read, a buffer per live batch aggregate); the exported module
(``layer_export``) does the same and names them the same way, so the two modules'
state dicts are interchangeable.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .interpreter import Binding, CompiledProgram
from .layer_ops import AGGREGATES, DEFAULT_EPS, MAX_GROUPS, aggregate, group_count, moments
from .layer_space import LayerSpace
from .program import Instruction, Program, ProgramError
from .space import Space


def running_buffers(program: Program) -> dict[int, str]:
    """Instruction index -> running-average buffer name, for every batch aggregate.

    ``batch_mean`` keeps a running mean; ``batch_var`` and ``batch_std`` keep a running
    variance. The first of each kind is ``running_mean`` / ``running_var`` (as in batch
    norm), later ones ``running_var_2``, ``running_var_3``, ...
    """
    names: dict[int, str] = {}
    counts = {"mean": 0, "var": 0}
    for i, ins in enumerate(program.instructions):
        if ins.op in AGGREGATES and AGGREGATES[ins.op][0] == "batch":
            kind = "mean" if AGGREGATES[ins.op][1] == "mean" else "var"
            counts[kind] += 1
            suffix = "" if counts[kind] == 1 else f"_{counts[kind]}"
            names[i] = f"running_{kind}{suffix}"
    return names


def channel_view(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (1, C, 1, 1) per-channel tensor shaped to broadcast against ``x`` (NC or NCHW)."""
    return p if x.dim() == p.dim() else p.reshape(1, -1, *[1] * (x.dim() - 2))


class ProgramLayer(nn.Module):
    """``y * gamma + beta`` where ``y`` is the program's output on the input ``x``.

    Parameters ``gamma`` (1), ``beta`` (0), and ``v0`` (0), ``v1`` (1) when the pruned
    program reads them, each (1, C, 1, 1); ``program`` is the pruned program; ``groups``
    is the largest divisor of C at most ``max_groups``. Batch aggregates use the batch
    statistic in training and update their running average as
    ``(1 - momentum) * running + momentum * batch_stat``; in eval they use the average.
    """

    def __init__(self, program: Program, num_features: int, eps: float = DEFAULT_EPS,
                 momentum: float = 0.1, max_groups: int = MAX_GROUPS,
                 space: Space = LayerSpace):
        super().__init__()
        reason = space.invalid_reason(program)
        if reason:
            raise ProgramError(f"not a valid {space.family} program: {reason}")
        self.program = program = space.prune(program)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.groups = group_count(num_features, max_groups)
        shape = (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self._variables = tuple(v for v in ("v0", "v1") if v in program.read())
        for name in self._variables:
            init = torch.zeros if name == "v0" else torch.ones
            setattr(self, name, nn.Parameter(init(shape)))
        self._buffers_of = running_buffers(program)
        self._compiled: dict[tuple[torch.device, torch.dtype], CompiledProgram] = {}
        for name in self._buffers_of.values():
            init = torch.zeros if name.startswith("running_mean") else torch.ones
            self.register_buffer(name, init(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, groups={self.groups}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {"x": x}
        for name in self._variables:  # the per-channel learnables the program reads
            env[name] = channel_view(getattr(self, name), x)
        y = self._compiled_for(x)(env)["y"]
        if y.shape != x.shape:
            y = y.expand_as(x)
        return y * channel_view(self.gamma, x) + channel_view(self.beta, x)

    def _compiled_for(self, x: torch.Tensor) -> CompiledProgram:
        """The program compiled for ``x``'s device and dtype (its constants live there),
        with every aggregate bound to this layer's ``_aggregate``."""
        key = (x.device, x.dtype)
        compiled = self._compiled.get(key)
        if compiled is None:
            def bind(index: int, ins: Instruction) -> Binding | None:
                if ins.op not in AGGREGATES:
                    return None
                return partial(self._aggregate, index, ins.op), (ins.args[0], "x")
            compiled = self._compiled[key] = CompiledProgram(
                self.program, None, x.device, x.dtype, bind=bind)
        return compiled

    def _aggregate(self, index: int, op: str, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        buffer = self._buffers_of.get(index)
        if buffer is None:
            return aggregate(a, x, op, self.eps, self.groups)
        stat = AGGREGATES[op][1]
        running = getattr(self, buffer)
        if self.training:
            mean, var = moments(a, x, "batch", self.groups, need_var=stat != "mean")
            value = mean if stat == "mean" else var
            with torch.no_grad():
                running.mul_(1 - self.momentum).add_(
                    self.momentum * value.detach().expand(1, x.shape[1], *value.shape[2:])
                    .reshape(running.shape))
        else:
            value = channel_view(running, x)
        if stat == "std":
            return torch.sqrt(value + self.eps)
        return value

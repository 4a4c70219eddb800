"""Run an optimizer program on real parameters, as a ``torch.optim.Optimizer``.

Each step, a group's parameters (those with a gradient) are laid end to end in flat
tensors of shape (1, N), exactly as the search's trainer feeds programs, so per-tensor
and global reductions (``norm``, ``global_norm``, ``orthogonalize``) mean the same thing
here as during search. The program's ``update`` is split back and applied as
``p -= update``; its ``m`` and ``v`` are kept per parameter in ``self.state``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .analysis import undefined_read_error
from .interpreter import CompiledProgram
from .ops import Layout, across_parameters, per_group_note
from .program import Program, ProgramError
from .space import OptimizerSpace, Space


class ProgramOptimizer(torch.optim.Optimizer):
    """An optimizer whose update rule is a program.

    ``lr`` is what the program receives as its ``lr`` input (the search feeds the
    schedule's value, 1.0 at the start, and programs scale it themselves), so
    ``ProgramOptimizer(params, known.program())`` trains like the known optimizer.
    Parameters of one group are split by device and dtype before being laid end to end,
    so ``global_norm`` and ``clip_by_global_norm`` take their norm over one group's
    parameters; the search took it over all of them (it warns with several groups).
    """

    def __init__(self, params: Iterable[Any], program: Program | str, lr: float = 1.0,
                 space: Space = OptimizerSpace):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if isinstance(program, str):
            program = space.parse(program)
        error = undefined_read_error(program, space.inputs)
        if error:
            raise ProgramError(error)
        self.program = program
        self.space = space
        # Dead code cannot change the result, so it need not run.
        self._runnable = space.prune(program)
        self._compiled: dict[tuple, CompiledProgram] = {}
        super().__init__(params, {"lr": lr})
        across = across_parameters(ins.op for ins in self._runnable)
        if across and len(self.param_groups) > 1:
            warnings.warn(per_group_note(across), stacklevel=2)

    def _compiled_for(self, layout: Layout, device: torch.device,
                      dtype: torch.dtype) -> CompiledProgram:
        key = (layout, device, dtype)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = CompiledProgram(self._runnable, layout, device, dtype)
            self._compiled[key] = compiled
        return compiled

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_kind: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ProgramOptimizer does not support sparse gradients")
                by_kind.setdefault((p.device, p.dtype), []).append(p)
            for params in by_kind.values():
                self._step_params(params, float(group["lr"]))
        return loss

    def _step_params(self, params: list[torch.Tensor], lr: float) -> None:
        """Run the program once on these parameters laid end to end."""
        p0 = params[0]
        layout = Layout.of(params)
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["m"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                state["v"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            state["step"] += 1

        def flat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
            return torch.cat([t.reshape(-1) for t in tensors]).unsqueeze(0)

        steps = [self.state[p]["step"] for p in params]
        if len(set(steps)) == 1:
            step = torch.full((1, 1), float(steps[0]), device=p0.device, dtype=p0.dtype)
        else:
            # Parameters that went without a gradient on some steps keep their own count.
            counts = torch.tensor(steps, device=p0.device, dtype=p0.dtype)
            sizes = torch.tensor(layout.sizes, device=p0.device)
            step = counts.repeat_interleave(sizes).unsqueeze(0)
        env = {
            "w": flat(params),
            "g": flat(p.grad for p in params),
            "m": flat(self.state[p]["m"] for p in params),
            "v": flat(self.state[p]["v"] for p in params),
            "lr": torch.full((1, 1), lr, device=p0.device, dtype=p0.dtype),
            "step": step,
        }
        out = self._compiled_for(layout, p0.device, p0.dtype)(env)
        updates = layout.segments(out["update"])
        new_m = layout.segments(out["m"])
        new_v = layout.segments(out["v"])
        for i, p in enumerate(params):
            state = self.state[p]
            state["m"].copy_(new_m[i].reshape(p.shape))
            state["v"].copy_(new_v[i].reshape(p.shape))
            p.sub_(updates[i].reshape(p.shape))

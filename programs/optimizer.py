"""Run an optimizer program on real parameters, as a ``torch.optim.Optimizer``.

Each step, the parameters with a gradient, of every group, are laid end to end in flat
tensors of shape (1, N), exactly as the search's trainer feeds programs, so per-tensor
and global reductions (``norm``, ``global_norm``, ``orthogonalize``) mean the same thing
here as during search; a group's ``lr`` reaches its own parameters' segment. The
program's ``update`` is split back and applied as ``p -= update``; its ``m`` and ``v``
are kept per parameter in ``self.state``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .analysis import undefined_read_error
from .interpreter import CompiledProgram
from .ops import Layout, across_parameters, per_kind_note
from .program import Program, ProgramError
from .space import OptimizerSpace, Space


class ProgramOptimizer(torch.optim.Optimizer):
    """An optimizer whose update rule is a program.

    ``lr`` is what the program receives as its ``lr`` input (the search feeds the
    schedule's value, 1.0 at the start, and programs scale it themselves), so
    ``ProgramOptimizer(params, known.program())`` trains like the known optimizer.
    Every group's parameters are laid end to end together, each with its group's
    ``lr``, so ``global_norm`` and ``clip_by_global_norm`` take their norm over all
    parameters, as the search did; parameters on several devices or of several dtypes
    run one device and dtype at a time (it warns when such a program is given them).
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
        kinds = {(p.device, p.dtype) for group in self.param_groups for p in group["params"]}
        if across and len(kinds) > 1:
            warnings.warn(per_kind_note(across), stacklevel=2)

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
        by_kind: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, float]]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ProgramOptimizer does not support sparse gradients")
                by_kind.setdefault((p.device, p.dtype), []).append((p, float(group["lr"])))
        for members in by_kind.values():
            self._step_params([p for p, _ in members], [lr for _, lr in members])
        return loss

    def _step_params(self, params: list[torch.Tensor], lrs: list[float]) -> None:
        """Run the program once on these parameters laid end to end (``lrs``: each one's
        group's learning rate)."""
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

        def per_parameter(values: list[float]) -> torch.Tensor:
            """(1, 1) where the parameters agree, else each value over its segment."""
            if len(set(values)) == 1:
                return torch.full((1, 1), values[0], device=p0.device, dtype=p0.dtype)
            each = torch.tensor(values, device=p0.device, dtype=p0.dtype)
            sizes = torch.tensor(layout.sizes, device=p0.device)
            return each.repeat_interleave(sizes).unsqueeze(0)

        env = {
            "w": flat(params),
            "g": flat(p.grad for p in params),
            "m": flat(self.state[p]["m"] for p in params),
            "v": flat(self.state[p]["v"] for p in params),
            "lr": per_parameter(lrs),
            # Parameters that went without a gradient on some steps keep their own count.
            "step": per_parameter([float(self.state[p]["step"]) for p in params]),
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

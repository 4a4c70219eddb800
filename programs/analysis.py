"""Static analysis: undefined names, dependence, dead code, structural hash.

State variables (an optimizer's ``m`` and ``v``) are carried from one step to the next,
so "is this statement needed" and "does the output depend on the gradient" are answered
as fixpoints over repeated steps, not over a single pass.
"""

from __future__ import annotations

import hashlib

from .ops import OPS
from .program import Instruction, Program, format_arg


def undefined_reads(program: Program, inputs: tuple[str, ...]) -> list[tuple[int, str]]:
    """(index, name) of every read of a name not yet defined at that point."""
    defined = set(inputs)
    missing = []
    for i, ins in enumerate(program.instructions):
        missing += [(i, name) for name in ins.reads() if name not in defined]
        defined.add(ins.out)
    return missing


def dependencies(program: Program, inputs: tuple[str, ...],
                 state: tuple[str, ...]) -> dict[str, set[str]]:
    """For every variable at the end of a step: the inputs it depends on, over all steps.

    A state variable read before it is written carries the dependencies of its value at
    the end of the previous step, so we iterate until nothing changes.
    """
    carried: dict[str, set[str]] = {name: {name} for name in inputs}
    while True:
        env = {name: set(deps) for name, deps in carried.items()}
        for ins in program.instructions:
            env[ins.out] = set().union(*(env[a] for a in ins.reads())) if ins.reads() else set()
        changed = False
        for name in state:
            merged = carried[name] | env.get(name, set())
            if merged != carried[name]:
                carried[name], changed = merged, True
        if not changed:
            return env


def live_instructions(program: Program, outputs: tuple[str, ...],
                      state: tuple[str, ...]) -> list[bool]:
    """Which instructions can affect the outputs, now or through state in later steps."""
    needed = set(outputs) - set(state)
    while True:
        live = set(needed)
        keep = [False] * len(program.instructions)
        for i in range(len(program.instructions) - 1, -1, -1):
            ins = program.instructions[i]
            if ins.out in live:
                keep[i] = True
                live.discard(ins.out)
                live.update(ins.reads())
        # A state variable read at the start of a step needs its value from the end of
        # the previous step.
        grown = needed | {s for s in state if s in live}
        if grown == needed:
            return keep
        needed = grown


def prune(program: Program, outputs: tuple[str, ...], state: tuple[str, ...]) -> Program:
    """The program without statements that cannot reach the outputs."""
    keep = live_instructions(program, outputs, state)
    return Program(tuple(ins for ins, k in zip(program.instructions, keep, strict=True) if k))


def value_hashes(program: Program, inputs: tuple[str, ...]) -> dict[str, str]:
    """Value numbering: each variable's final value named by a hash of the expression
    that computes it from the inputs. Independent of variable names, statement order and
    the order of commutative arguments."""
    values = {name: "in:" + name for name in inputs}
    for ins in program.instructions:
        args = [values[a] if isinstance(a, str) else format_arg(a) for a in ins.args]
        if OPS[ins.op].commutative:
            args.sort()
        text = f"{ins.op}({','.join(args)})"
        values[ins.out] = hashlib.sha256(text.encode()).hexdigest()[:24]
    return values


def structural_hash(program: Program, inputs: tuple[str, ...], outputs: tuple[str, ...],
                    state: tuple[str, ...], family: str) -> str:
    """Hash of what the program computes, structurally: equal for programs that differ
    only in dead code, variable names, the order of independent statements or of
    commutative arguments."""
    values = value_hashes(prune(program, outputs, state), inputs)
    text = family + "|" + ",".join(f"{o}={values.get(o, 'in:' + o)}" for o in outputs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def instruction_reads_input_first(program: Program, name: str) -> Instruction | None:
    """The first instruction reading the input value of ``name``, if any."""
    for ins in program.instructions:
        if name in ins.reads():
            return ins
        if ins.out == name:
            return None
    return None

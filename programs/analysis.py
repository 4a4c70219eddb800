"""Static analysis: undefined names, dependence, dead code, structural hash.

State variables (an optimizer's ``m`` and ``v``) are carried from one step to the next,
so "is this statement needed" and "does the output depend on the gradient" are answered
as fixpoints over repeated steps, not over a single pass.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from .ops import OPS
from .program import Instruction, Program, format_arg

MEMORY = 1024
"""How many recent programs ``prune`` and ``structural_hash`` remember their answer for."""


def undefined_reads(program: Program, inputs: tuple[str, ...]) -> list[tuple[int, str]]:
    """(index, name) of every read of a name not yet defined at that point."""
    defined = set(inputs)
    missing = []
    for i, ins in enumerate(program.instructions):
        missing += [(i, name) for name in ins.reads() if name not in defined]
        defined.add(ins.out)
    return missing


def undefined_read_error(program: Program, inputs: tuple[str, ...]) -> str | None:
    """What is wrong with the first read of a name not yet defined, or None."""
    missing = undefined_reads(program, inputs)
    if not missing:
        return None
    index, name = missing[0]
    return f"instruction {index + 1} reads {name!r} before it is defined"


def dependencies(program: Program, inputs: tuple[str, ...],
                 state: tuple[str, ...]) -> dict[str, set[str]]:
    """For every variable at the end of a step: the inputs it depends on, over all steps.

    A state variable read before it is written carries the dependencies of its value at
    the end of the previous step, so we iterate until nothing changes.
    """
    carried: dict[str, set[str]] = {name: {name} for name in inputs}
    steps = [(ins.out, ins.reads()) for ins in program.instructions]
    empty: set[str] = set()
    while True:
        env = dict(carried)  # no set is changed in place: they can be shared
        for out, reads in steps:
            env[out] = set().union(*[env[a] for a in reads]) if reads else set()
        changed = False
        for name in state:
            merged = carried[name] | env.get(name, empty)
            if merged != carried[name]:
                carried[name], changed = merged, True
        if not changed:
            return env


def live_instructions(program: Program, outputs: tuple[str, ...],
                      state: tuple[str, ...]) -> list[bool]:
    """Which instructions can affect the outputs, now or through state in later steps."""
    needed = set(outputs) - set(state)
    steps = [(ins.out, ins.reads()) for ins in program.instructions]
    while True:
        live = set(needed)
        keep = [False] * len(steps)
        for i in range(len(steps) - 1, -1, -1):
            out, reads = steps[i]
            if out in live:
                keep[i] = True
                live.discard(out)
                live.update(reads)
        # A state variable read at the start of a step needs its value from the end of
        # the previous step.
        grown = needed | {s for s in state if s in live}
        if grown == needed:
            return keep
        needed = grown


class _Same:
    """A program as a cache key that matches only the very same object.

    Equal programs are not enough: ``0.0 == -0.0`` while their texts, and so their
    hashes, differ. The key holds the program, so its id cannot be reused meanwhile."""

    __slots__ = ("program",)

    def __init__(self, program: Program):
        self.program = program

    def __hash__(self) -> int:
        return id(self.program)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.program is self.program


def prune(program: Program, outputs: tuple[str, ...], state: tuple[str, ...]) -> Program:
    """The program without statements that cannot reach the outputs.

    Remembered for the last programs pruned (by identity, see ``_Same``): a search
    prunes each new child to hash it, to record its pruned text and to fingerprint it."""
    return _remembered_prune(_Same(program), tuple(outputs), tuple(state))


def value_hashes(program: Program, inputs: tuple[str, ...]) -> dict[str, str]:
    """Value numbering: each variable's final value named by a hash of the expression
    that computes it from the inputs. Independent of variable names, statement order and
    the order of commutative arguments."""
    values = {name: "in:" + name for name in inputs}
    for ins in program.instructions:
        args = [values[a] if isinstance(a, str) else format_arg(a) for a in ins.args]
        if OPS[ins.op].commutative:
            args.sort()
        values[ins.out] = _expression_hash(f"{ins.op}({','.join(args)})")
    return values


@lru_cache(maxsize=16 * MEMORY)
def _expression_hash(text: str) -> str:
    """The value hash of one expression; remembered, since children share most of their
    expressions with their parents (and all of them with the seed)."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def structural_hash(program: Program, inputs: tuple[str, ...], outputs: tuple[str, ...],
                    state: tuple[str, ...], family: str) -> str:
    """Hash of what the program computes, structurally: equal for programs that differ
    only in dead code, variable names, the order of independent statements or of
    commutative arguments.

    Remembered for the last programs hashed (by identity): a search hashes each child
    when mutation compares it with its parent and again when it records it, and each
    parent once per child it has."""
    return _remembered_hash(_Same(program), tuple(inputs), tuple(outputs), tuple(state),
                            family)


@lru_cache(maxsize=MEMORY)
def _remembered_prune(key: _Same, outputs: tuple[str, ...], state: tuple[str, ...]) -> Program:
    keep = live_instructions(key.program, outputs, state)
    return Program(tuple(ins for ins, k in zip(key.program.instructions, keep, strict=True)
                         if k))


@lru_cache(maxsize=MEMORY)
def _remembered_hash(key: _Same, inputs: tuple[str, ...], outputs: tuple[str, ...],
                     state: tuple[str, ...], family: str) -> str:
    values = value_hashes(prune(key.program, outputs, state), inputs)
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

"""Mutations: insert, delete, modify an argument, change an op, perturb a constant.

A child is drawn from a ``random.Random`` the caller seeds, so a search that seeds it from
(run seed, birth index) makes the same children whatever order evaluations finish in.
Mutation retries until the child is valid in its space and structurally different from
the parent (different hash of the pruned program). The attempts it throws away are
counted on the returned ``Mutation``: they are programs the search generated and served
without training (static rejection, or the structural cache: the same pruned program as
the parent), so a search's cache statistics can include them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .ops import OPS
from .program import Arg, Instruction, Program
from .space import Space

MUTATIONS = ("insert", "delete", "modify_arg", "change_op", "perturb_const")
CONSTANT_PROBABILITY = 0.2
NEW_VARIABLE_PROBABILITY = 0.3


@dataclass(frozen=True)
class Mutation:
    """The change that made a child, and what ``mutate`` discarded before keeping it.

    ``invalid``: attempts rejected statically (invalid in the space). ``same``: valid
    attempts whose pruned program hashed equal to the parent's (dead code or a no-op),
    which the structural cache answers; with ``neutral``, only exact copies of the
    parent. Attempts where the drawn kind did not apply made no program and are not
    counted. ``str()`` is only the change, the text recorded.
    """

    kind: str
    detail: str
    invalid: int = 0
    same: int = 0

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class MutationFailed(RuntimeError):
    """No valid, different child within the tries; carries the discarded counts too."""

    def __init__(self, message: str, invalid: int = 0, same: int = 0):
        super().__init__(message)
        self.invalid = invalid
        self.same = same


def _defined_before(program: Program, index: int, space: Space) -> list[str]:
    names = list(space.inputs)
    for ins in program.instructions[:index]:
        if ins.out not in names:
            names.append(ins.out)
    return names


def _random_arg(rng: random.Random, names: list[str]) -> Arg:
    if rng.random() < CONSTANT_PROBABILITY:
        return round(rng.gauss(0.0, 1.0), 4)
    return rng.choice(names)


def _fresh_name(program: Program) -> str:
    used = program.assigned()
    k = 0
    while f"t{k}" in used:
        k += 1
    return f"t{k}"


def _insert(program: Program, space: Space, rng: random.Random) -> tuple[Program, str]:
    index = rng.randint(0, len(program))
    names = _defined_before(program, index, space)
    op = OPS[rng.choice(space.ops)]
    args = tuple(_random_arg(rng, names) for _ in range(op.arity))
    writable = [n for n in names if n not in space.read_only]
    writable += [o for o in space.outputs if o not in writable]
    out = (_fresh_name(program) if rng.random() < NEW_VARIABLE_PROBABILITY
           else rng.choice(writable))
    ins = Instruction(out, op.name, args)
    child = program.instructions[:index] + (ins,) + program.instructions[index:]
    return Program(child), f"line {index + 1}"


def _delete(program: Program, space: Space, rng: random.Random) -> tuple[Program, str]:
    index = rng.randrange(len(program))
    child = program.instructions[:index] + program.instructions[index + 1:]
    return Program(child), f"line {index + 1}"


def _modify_arg(program: Program, space: Space, rng: random.Random) -> tuple[Program, str]:
    candidates = [i for i, ins in enumerate(program.instructions) if ins.args]
    index = rng.choice(candidates)
    ins = program.instructions[index]
    position = rng.randrange(len(ins.args))
    args = list(ins.args)
    args[position] = _random_arg(rng, _defined_before(program, index, space))
    return _replace(program, index, Instruction(ins.out, ins.op, tuple(args))), \
        f"line {index + 1}, argument {position + 1}"


def _change_op(program: Program, space: Space, rng: random.Random) -> tuple[Program, str]:
    index = rng.randrange(len(program))
    ins = program.instructions[index]
    same_arity = [o for o in space.ops if OPS[o].arity == len(ins.args) and o != ins.op]
    if not same_arity:
        raise _NotApplicable
    op = rng.choice(same_arity)
    return _replace(program, index, Instruction(ins.out, op, ins.args)), \
        f"line {index + 1}, {ins.op} -> {op}"


def _perturb_const(program: Program, space: Space, rng: random.Random) -> tuple[Program, str]:
    places = [(i, j) for i, ins in enumerate(program.instructions)
              for j, a in enumerate(ins.args) if not isinstance(a, str)]
    if not places:
        raise _NotApplicable
    i, j = rng.choice(places)
    ins = program.instructions[i]
    old = ins.args[j]
    if rng.random() < 0.5:
        new = rng.gauss(0.0, 1.0)
    else:
        new = old * 2.0 ** rng.gauss(0.0, 1.0)
    new = float(f"{new:.4g}")
    args = ins.args[:j] + (new,) + ins.args[j + 1:]
    return _replace(program, i, Instruction(ins.out, ins.op, args)), \
        f"line {i + 1}, {old!r} -> {new!r}"


class _NotApplicable(Exception):
    pass


def _replace(program: Program, index: int, ins: Instruction) -> Program:
    return Program(program.instructions[:index] + (ins,) + program.instructions[index + 1:])


_APPLY = {
    "insert": _insert,
    "delete": _delete,
    "modify_arg": _modify_arg,
    "change_op": _change_op,
    "perturb_const": _perturb_const,
}


def apply_mutation(kind: str, program: Program, space: Space,
                   rng: random.Random) -> tuple[Program, Mutation]:
    """Apply one mutation of the given kind, without checking validity."""
    if kind == "delete" and len(program) <= 1:
        raise _NotApplicable
    if kind == "insert" and len(program) >= space.max_length:
        raise _NotApplicable
    if kind == "modify_arg" and not any(ins.args for ins in program):
        raise _NotApplicable
    child, detail = _APPLY[kind](program, space, rng)
    return child, Mutation(kind, detail)


def mutate(program: Program, space: Space, rng: random.Random,
           max_tries: int = 1000, neutral: bool = False) -> tuple[Program, Mutation]:
    """A valid child that differs structurally from ``program`` (textually, with
    ``neutral``).

    Returns the child and the mutation that made it, with the counts of attempts
    discarded on the way (``Mutation.invalid``, ``Mutation.same``); raises
    MutationFailed if no valid, different child was found within ``max_tries`` attempts.
    With ``neutral`` a child may also equal its parent once pruned (a new dead
    statement, or a change inside dead code): such neutral children let dead code
    accumulate that a later mutation can bring to life in one step.
    """
    parent_hash = space.hash(program)
    invalid = same = 0
    for _ in range(max_tries):
        kind = rng.choice(MUTATIONS)
        try:
            child, mutation = apply_mutation(kind, program, space, rng)
        except _NotApplicable:
            continue
        if space.invalid_reason(child) is not None:
            invalid += 1
        elif child == program or (not neutral and space.hash(child) == parent_hash):
            same += 1
        else:
            return child, replace(mutation, invalid=invalid, same=same)
    raise MutationFailed(f"no valid child after {max_tries} tries", invalid, same)

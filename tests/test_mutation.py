"""Mutations: each kind does what its name says; mutate gives valid, different children."""

from __future__ import annotations

import collections
import dataclasses
import random

import pytest

from evoprog.programs import mutation as mutation_module
from evoprog.programs.known import KNOWN
from evoprog.programs.mutation import (
    MUTATIONS,
    Mutation,
    MutationFailed,
    apply_mutation,
    mutate,
)
from evoprog.programs.ops import OPS
from evoprog.programs.program import Program, parse_program
from evoprog.programs.space import OptimizerSpace

SPACE = OptimizerSpace
NotApplicable = mutation_module._NotApplicable

PARENTS = [
    SPACE.seed(),
    KNOWN["lion"].program(),
    KNOWN["adam"].program(),
    parse_program("update = sign(g)"),
]


def _draws(kind: str, count: int = 60):
    """(parent, child, mutation) for ``count`` seeded applications per parent."""
    for p_index, parent in enumerate(PARENTS):
        for seed in range(count):
            rng = random.Random(1000 * p_index + seed)
            try:
                child, mutation = apply_mutation(kind, parent, SPACE, rng)
            except NotApplicable:
                continue
            yield parent, child, mutation


def _changed_positions(parent: Program, child: Program) -> list[int]:
    assert len(parent) == len(child)
    return [i for i, (a, b) in enumerate(zip(parent, child, strict=True)) if a != b]


def _defined_before(program: Program, index: int) -> set[str]:
    return set(SPACE.inputs) | {ins.out for ins in program.instructions[:index]}


def _one_changed_argument(parent: Program, child: Program):
    """(position, old instruction, new instruction, argument index) when ``child``
    differs from ``parent`` in one argument of one instruction, else None (no change)."""
    positions = _changed_positions(parent, child)
    assert len(positions) <= 1
    if not positions:
        return None
    old, new = parent.instructions[positions[0]], child.instructions[positions[0]]
    assert (new.out, new.op) == (old.out, old.op)
    diffs = [j for j, (a, b) in enumerate(zip(old.args, new.args, strict=True)) if a != b]
    assert len(diffs) == 1
    return positions[0], old, new, diffs[0]


def test_mutation_kinds():
    assert set(MUTATIONS) == {"insert", "delete", "modify_arg", "change_op", "perturb_const"}


def test_insert_adds_exactly_one_instruction():
    seen = 0
    for parent, child, mutation in _draws("insert"):
        seen += 1
        assert mutation.kind == "insert"
        assert str(mutation).startswith("insert: line ")
        assert len(child) == len(parent) + 1
        positions = [i for i in range(len(child))
                     if child.instructions[:i] + child.instructions[i + 1:]
                     == parent.instructions]
        assert positions, (parent, child)
        index = positions[0]
        new = child.instructions[index]
        assert new.op in SPACE.ops
        assert len(new.args) == OPS[new.op].arity
        assert new.out not in SPACE.read_only
        # The new instruction reads only names defined before it.
        assert set(new.reads()) <= _defined_before(child, index)
    assert seen > 100


def test_delete_removes_exactly_one_instruction():
    seen = 0
    for parent, child, mutation in _draws("delete"):
        seen += 1
        assert mutation.kind == "delete"
        assert len(child) == len(parent) - 1
        assert any(parent.instructions[:i] + parent.instructions[i + 1:] == child.instructions
                   for i in range(len(parent)))
    assert seen > 100


def test_modify_arg_changes_exactly_one_argument():
    seen = changed = 0
    for parent, child, mutation in _draws("modify_arg"):
        seen += 1
        assert mutation.kind == "modify_arg"
        change = _one_changed_argument(parent, child)
        if change is None:
            # The redrawn argument happened to equal the old one.
            continue
        changed += 1
        position, _, new, arg = change
        assert set(new.reads()) <= _defined_before(child, position)
        assert f"argument {arg + 1}" in mutation.detail
    assert seen > 100
    assert changed > 0.7 * seen


def test_change_op_changes_exactly_one_op_keeping_arity():
    seen = 0
    for parent, child, mutation in _draws("change_op"):
        seen += 1
        assert mutation.kind == "change_op"
        positions = _changed_positions(parent, child)
        assert len(positions) == 1
        old, new = parent.instructions[positions[0]], child.instructions[positions[0]]
        assert (new.out, new.args) == (old.out, old.args)
        assert new.op != old.op
        assert new.op in SPACE.ops
        assert OPS[new.op].arity == OPS[old.op].arity
        assert f"{old.op} -> {new.op}" in mutation.detail
    assert seen > 100


def test_change_op_not_applicable_without_same_arity_alternative():
    space = dataclasses.replace(SPACE, ops=("sign", "mul"))
    with pytest.raises(NotApplicable):
        apply_mutation("change_op", parse_program("update = sign(g)"), space, random.Random(0))


def test_perturb_const_changes_exactly_one_constant():
    seen = changed = 0
    for parent, child, mutation in _draws("perturb_const"):
        seen += 1
        assert mutation.kind == "perturb_const"
        change = _one_changed_argument(parent, child)
        if change is None:
            continue
        changed += 1
        _, old, new, arg = change
        before, after = old.args[arg], new.args[arg]
        assert isinstance(before, float) and isinstance(after, float)
        assert len(child.constants()) == len(parent.constants())
    assert seen > 100
    assert changed > 0.9 * seen


def test_perturb_const_not_applicable_without_constants():
    with pytest.raises(NotApplicable):
        apply_mutation("perturb_const", parse_program("update = sign(g)"), SPACE,
                       random.Random(0))


def test_delete_and_insert_respect_length_limits():
    single = parse_program("update = sign(g)")
    with pytest.raises(NotApplicable):
        apply_mutation("delete", single, SPACE, random.Random(0))
    full = parse_program("update = g * 1.0\n" * SPACE.max_length)
    assert len(full) == SPACE.max_length
    with pytest.raises(NotApplicable):
        apply_mutation("insert", full, SPACE, random.Random(0))


def test_modify_arg_not_applicable_without_arguments():
    only_constants = parse_program("a = pi()\nb = e()")
    with pytest.raises(NotApplicable):
        apply_mutation("modify_arg", only_constants, SPACE, random.Random(0))


def test_mutate_gives_valid_different_children():
    kinds = collections.Counter()
    parent_hash = SPACE.hash(SPACE.seed())
    for seed in range(300):
        child, mutation = mutate(SPACE.seed(), SPACE, random.Random(seed))
        assert isinstance(mutation, Mutation)
        assert SPACE.invalid_reason(child) is None, (seed, mutation)
        assert SPACE.hash(child) != parent_hash, (seed, mutation)
        kinds[mutation.kind] += 1
    assert set(kinds) == set(MUTATIONS)


def test_mutate_along_lineages_stays_valid():
    kinds = collections.Counter()
    for seed in range(15):
        rng = random.Random(seed)
        program = SPACE.seed()
        for _ in range(20):
            child, mutation = mutate(program, SPACE, rng)
            assert SPACE.invalid_reason(child) is None
            assert SPACE.hash(child) != SPACE.hash(program)
            assert len(child) <= SPACE.max_length
            kinds[mutation.kind] += 1
            program = child
    assert set(kinds) == set(MUTATIONS)


def test_mutate_is_deterministic():
    for seed in range(20):
        a = mutate(SPACE.seed(), SPACE, random.Random(seed))
        b = mutate(SPACE.seed(), SPACE, random.Random(seed))
        assert a == b
    children = {mutate(SPACE.seed(), SPACE, random.Random(seed))[0] for seed in range(20)}
    assert len(children) > 10


def test_mutate_does_not_change_the_parent():
    parent = SPACE.seed()
    snapshot = Program(tuple(parent.instructions))
    for seed in range(20):
        mutate(parent, SPACE, random.Random(seed))
    assert parent == snapshot


def test_mutation_failed_with_no_tries():
    with pytest.raises(MutationFailed):
        mutate(SPACE.seed(), SPACE, random.Random(0), max_tries=0)


def test_mutation_failed_when_nothing_valid_exists():
    # One instruction allowed, one unary op: no insert, delete or change_op applies,
    # there is no constant to perturb, and any other argument breaks dependence on g.
    tiny = dataclasses.replace(SPACE, ops=("sign",), max_length=1,
                               seed_text="update = sign(g)")
    seed = tiny.seed()
    assert tiny.invalid_reason(seed) is None
    with pytest.raises(MutationFailed):
        mutate(seed, tiny, random.Random(0), max_tries=200)


def test_mutation_succeeds_in_a_small_space_that_allows_something():
    small = dataclasses.replace(SPACE, ops=("sign", "tanh"), max_length=1,
                                seed_text="update = sign(g)")
    child, mutation = mutate(small.seed(), small, random.Random(0))
    assert mutation.kind == "change_op"
    assert child == parse_program("update = tanh(g)")


class _Spy:
    """The space, remembering every child mutate() checked, in order."""

    def __init__(self, space):
        self._space = space
        self.checked: list[Program] = []

    def __getattr__(self, name):
        return getattr(self._space, name)

    def invalid_reason(self, program):
        self.checked.append(program)
        return self._space.invalid_reason(program)


def _expected_counts(space, parent: Program, discarded: list[Program]) -> tuple[int, int]:
    """(invalid, same) judged afresh for each discarded attempt."""
    parent_hash = space.hash(parent)
    invalid = sum(space.invalid_reason(p) is not None for p in discarded)
    same = sum(space.invalid_reason(p) is None and space.hash(p) == parent_hash
               for p in discarded)
    return invalid, same


# One live line and many dead ones: most mutations change only dead code.
MOSTLY_DEAD = parse_program(
    "update = sign(g)\n" + "".join(f"t{k} = w * {k + 1}.5\n" for k in range(12)))


def test_mutate_counts_the_attempts_it_discards():
    totals = collections.Counter()
    for parent in (MOSTLY_DEAD, SPACE.seed(), parse_program("update = sign(g)")):
        for seed in range(40):
            spy = _Spy(SPACE)
            child, mutation = mutate(parent, spy, random.Random(seed))
            assert spy.checked[-1] == child
            expected = _expected_counts(SPACE, parent, spy.checked[:-1])
            assert (mutation.invalid, mutation.same) == expected
            assert mutation.invalid + mutation.same == len(spy.checked) - 1
            totals[parent, "kept"] += 1
            totals[parent, "invalid"] += mutation.invalid
            totals[parent, "same"] += mutation.same
    # Mutating dead code leaves the pruned program as it was: most attempts are "same".
    assert totals[MOSTLY_DEAD, "same"] > 2 * totals[MOSTLY_DEAD, "kept"]
    # Re-pointing the only argument of a one-line program breaks it (no dependence on g).
    assert totals[parse_program("update = sign(g)"), "invalid"] > 0


def test_mutate_counts_in_a_space_with_known_outcomes():
    # Only modify_arg and change_op apply. modify_arg gives the same program (argument g
    # drawn again) or an invalid one (update no longer depends on g); change_op to tanh
    # is the one valid, different child.
    small = dataclasses.replace(SPACE, ops=("sign", "tanh"), max_length=1,
                                seed_text="update = sign(g)")
    seen = collections.Counter()
    for seed in range(60):
        spy = _Spy(small)
        child, mutation = mutate(small.seed(), spy, random.Random(seed))
        assert child == parse_program("update = tanh(g)")
        assert mutation.invalid + mutation.same == len(spy.checked) - 1
        assert all(p != child for p in spy.checked[:-1])
        same = sum(p == small.seed() for p in spy.checked[:-1])
        assert (mutation.invalid, mutation.same) == (len(spy.checked) - 1 - same, same)
        seen["invalid"] += mutation.invalid
        seen["same"] += mutation.same
    assert seen["invalid"] > 0 and seen["same"] > 0


def test_counts_do_not_change_the_text_or_the_draws():
    rng = random.Random(3)
    child, mutation = mutate(MOSTLY_DEAD, SPACE, rng)
    assert str(mutation) == f"{mutation.kind}: {mutation.detail}"
    assert Mutation("insert", "line 2", invalid=3, same=4).__str__() == "insert: line 2"
    # Same seed, same child, same counts, same generator state afterwards.
    again = random.Random(3)
    assert mutate(MOSTLY_DEAD, SPACE, again) == (child, mutation)
    assert again.getstate() == rng.getstate()


def test_mutation_failed_carries_the_counts():
    tiny = dataclasses.replace(SPACE, ops=("sign",), max_length=1,
                               seed_text="update = sign(g)")
    spy = _Spy(tiny)
    with pytest.raises(MutationFailed) as failed:
        mutate(tiny.seed(), spy, random.Random(0), max_tries=200)
    assert failed.value.invalid + failed.value.same == len(spy.checked) > 0
    assert (failed.value.invalid, failed.value.same) == _expected_counts(
        tiny, tiny.seed(), spy.checked)


def test_neutral_mutation_also_keeps_children_that_differ_only_in_dead_code():
    parent = SPACE.seed()
    parent_hash = SPACE.hash(parent)
    neutral = 0
    for seed in range(300):
        child, mutation = mutate(parent, SPACE, random.Random(seed), neutral=True)
        assert SPACE.invalid_reason(child) is None
        assert child != parent, (seed, mutation)
        if SPACE.hash(child) == parent_hash:
            neutral += 1
            assert SPACE.prune(child) == SPACE.prune(parent)
        plain, _ = mutate(parent, SPACE, random.Random(seed))
        assert SPACE.hash(plain) != parent_hash
    # A new dead statement or a change in dead code: common, but not every child.
    assert 20 < neutral < 280

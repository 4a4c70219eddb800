"""Spaces: everything family-specific about programs lives here.

A space names the program's inputs, outputs and carried state, the ops it may use, its
seed program and its validity rules. Mutation, hashing, printing and analysis are shared
and take the space as an argument. What running a program means differs by family, so
each family is a subclass of ``Space`` overriding hooks: ``probe`` (functional
fingerprint), ``simplify`` (SymPy form), ``recognize`` (known programs) and
``futile_reason`` (a program that cannot train, refused before training).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from . import analysis, fingerprint, futility, symbolic
from . import recognize as recognition
from .ops import LION_K_OPS, LION_SPACE_OPS
from .program import (
    Instruction,
    Program,
    ProgramError,
    format_arg,
    format_listing,
    parse_lines,
    parse_program,
)


@dataclass(frozen=True)
class Space:
    family: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    state: tuple[str, ...]
    required: tuple[str, ...]
    ops: tuple[str, ...]
    seed_text: str
    depends_on: str
    max_length: int = 30
    listing_name: str = "program"
    # Inputs that programs may read but must never write (their meaning is fixed).
    read_only: tuple[str, ...] = field(default=())
    # Named subsets of ``ops`` that a search can be limited to (``--ops NAME``).
    op_sets: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def resolve_ops(self, spec: str) -> tuple[str, ...]:
        """The ops ``spec`` names, separated by commas: op names, named sets of
        ``op_sets``, or ``all``. Raises ProgramError naming what is unknown."""
        sets = {"all": self.ops, **dict(self.op_sets)}
        ops: dict[str, None] = {}
        unknown = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if part in sets:
                ops.update(dict.fromkeys(sets[part]))
            elif part in self.ops:
                ops[part] = None
            else:
                unknown.append(part)
        if unknown:
            raise ProgramError(
                f"{', '.join(map(repr, unknown))} is not an op of the {self.family} space; "
                f"name its ops (README, Programs) or a set: {', '.join(sets)}")
        return tuple(ops) or self.ops

    def restricted(self, ops: Sequence[str]) -> Space:
        """This space with only ``ops`` (all of them when empty): mutation and random
        programs then draw from those alone. Raises ProgramError for an op outside the
        space, or when the seed program needs one that is left out."""
        if not ops or tuple(ops) == self.ops:
            return self
        unknown = [op for op in ops if op not in self.ops]
        if unknown:
            raise ProgramError(f"{', '.join(map(repr, unknown))} is not an op of the "
                               f"{self.family} space")
        missing = sorted({ins.op for ins in self.seed().instructions} - set(ops))
        if missing:
            raise ProgramError(f"the {self.family} seed program uses "
                               f"{', '.join(missing)}, which the op set leaves out")
        return replace(self, ops=tuple(ops))

    def seed(self) -> Program:
        return parse_program(self.seed_text)

    def parse(self, text: str) -> Program:
        """Parse and validate text for this space; raises ProgramError citing the line at
        fault, or saying which family the program looks like when it is another's."""
        program, lines = parse_lines(text, self.ops)
        other = self._looks_like(program)
        if other is not None:
            raise ProgramError(self._other_family_message(program, other),
                               looks_like=other.family)
        problem = self.problem(program)
        if problem is None:
            return program
        index, message = problem
        if index is None:
            raise ProgramError(message)
        raise ProgramError(message, *lines[index])

    def invalid_reason(self, program: Program) -> str | None:
        """Why the program is not valid in this space, or None when it is."""
        problem = self.problem(program)
        if problem is None:
            return None
        index, message = problem
        return message if index is None else f"instruction {index + 1} {message}"

    def problem(self, program: Program) -> tuple[int | None, str] | None:
        """(index of the instruction at fault, or None where no one is; why the program
        is not valid in this space), or None when it is valid."""
        if len(program) > self.max_length:
            return None, f"too long: {len(program)} instructions (at most {self.max_length})"
        for index, ins in enumerate(program.instructions):
            if ins.op not in self.ops:
                return index, self._op_outside(ins)
            if ins.out in self.read_only:
                return index, (f"assigns {ins.out!r}, an input, which cannot be assigned: "
                               f"give the result a new name ({ins.out}2 = ...) and read that")
        missing = analysis.undefined_reads(program, self.inputs)
        if missing:
            index, name = missing[0]
            return index, f"reads {name!r} before it is defined"
        assigned = program.assigned()
        for name in self.required:
            if name not in assigned:
                return None, f"the program never assigns {name!r}"
        deps = analysis.dependencies(program, self.inputs, self.state)
        for name in self.required:
            if self.depends_on not in deps[name]:
                return None, f"{name!r} does not depend on {self.depends_on!r}"
        return None

    def _op_outside(self, ins: Instruction) -> str:
        message = f"uses op {ins.op!r}, which is not in the {self.family} space"
        if ins.op == "sub" and {"negative", "add"} <= set(self.ops):
            a, b = ins.args
            if not isinstance(b, str):
                return f"{message}: write {ins.out} = {format_arg(a)} + {format_arg(-b)}"
            return f"{message}: write n = negative({b}), then {ins.out} = {format_arg(a)} + n"
        close = difflib.get_close_matches(ins.op, self.ops, n=3)
        return f"{message} (did you mean {', '.join(close)}?)" if close else message

    def _looks_like(self, program: Program) -> Space | None:
        """The other family's space a program seems written for: it leaves this space's
        outputs unassigned and assigns that one's, or reads that one's inputs."""
        assigned = program.assigned()
        if set(self.required) <= assigned:
            return None
        unknown = {name for _, name in analysis.undefined_reads(program, self.inputs)}
        for other in registered_spaces().values():
            if other.family != self.family and (
                    set(other.required) <= assigned or unknown & set(other.inputs)):
                return other
        return None

    def _other_family_message(self, program: Program, other: Space) -> str:
        unknown = {name for _, name in analysis.undefined_reads(program, self.inputs)}
        reads = [name for name in other.inputs if name in unknown]
        assigns = [name for name in other.required if name in program.assigned()]
        does = " and ".join(
            f"{verb} {', '.join(names)}" for verb, names in (("reads", reads),
                                                             ("assigns", assigns)) if names)
        return (f"this program {does}, like {with_article(other.family)} program; "
                f"{with_article(self.family)} program reads {', '.join(self.inputs)} and assigns "
                f"{', '.join(self.required)}")

    def prune(self, program: Program) -> Program:
        return analysis.prune(program, self.outputs, self.state)

    def hash(self, program: Program) -> str:
        return analysis.structural_hash(program, self.inputs, self.outputs, self.state,
                                        self.family)

    def fingerprint(self, program: Program) -> str:
        """Functional hash: equal for programs that compute the same outputs on the
        space's fixed random probe. Prunes first."""
        return self.probe(program)[0]

    def probe(self, program: Program) -> tuple[str, bool]:
        """(fingerprint, whether the outputs stayed finite on the probe) in one run.

        Family-specific: a space subclass says what running a program means."""
        raise NotImplementedError(f"the {self.family} space has no functional probe")

    def futile_reason(self, program: Program) -> str | None:
        """Why the program cannot train, judged by running it on the probe, or None
        (also for a program the probe cannot run: training then says what is wrong).
        Evaluators ask before training; a space without such checks says None."""
        return None

    def simplify(self, program: Program) -> symbolic.SymbolicProgram:
        """The pruned program as simplified SymPy expressions (raises SymbolicError)."""
        return symbolic.to_sympy(program, self.inputs, self.outputs, self.state)

    def recognize(self, program: Program) -> recognition.Recognition | None:
        """The known program this one computes, with its constants, or None (a space
        without known programs recognizes nothing)."""
        return None

    def listing(self, program: Program) -> str:
        return format_listing(program, self.listing_name, self.inputs, self.outputs)


@dataclass(frozen=True)
class OptimizerFamily(Space):
    """An update rule: run for a few steps with its state carried (``fingerprint.py``),
    recognized among the optimizers of ``known.KNOWN`` (``recognize.py``)."""

    def probe(self, program: Program) -> tuple[str, bool]:
        return fingerprint.fingerprint_and_finite(self.prune(program), self.outputs,
                                                  self.state, self.family)

    def futile_reason(self, program: Program) -> str | None:
        if self.invalid_reason(program) is not None:
            return None  # nothing to judge: training reports what is wrong with it
        try:
            return futility.futile_reason(self.prune(program), self.state)
        except (RuntimeError, ValueError, TypeError, IndexError):
            return None  # the probe cannot run it: training fails it, with its error

    def recognize(self, program: Program) -> recognition.Recognition | None:
        return recognition.recognize(program, self.inputs, self.outputs, self.state)


ADAMW_SEED = """\
g2 = square(g)
m = interp(g, m, 0.9)
v = interp(g2, v, 0.999)
sqrt_v = sqrt(v)
update = m / sqrt_v
wd = w * 0.01
update = update + wd
lr = lr * 0.001
update = update * lr
"""

OptimizerSpace = OptimizerFamily(
    family="optimizer",
    inputs=("w", "g", "m", "v", "lr", "step"),
    outputs=("update", "m", "v"),
    state=("m", "v"),
    required=("update",),
    ops=LION_SPACE_OPS + LION_K_OPS,
    seed_text=ADAMW_SEED,
    depends_on="g",
    max_length=30,
    listing_name="train",
    read_only=("w", "g", "step"),
    op_sets=(("lion", LION_SPACE_OPS),),
)
"""Optimizer update rules: ``w -= update`` after every step; ``m`` and ``v`` start at zero
and carry over; ``lr`` is the schedule's value (1.0 at the start, cosine-decayed), so the
program's own ``lr = lr * c`` sets the learning rate; ``step`` counts 1, 2, ...
Op set ``lion``: the 45 functions of the released Lion search space, without the Lion-K
maps (``soft_sign``, ``clip``, ``l2_normalize``, ``orthogonalize``)."""

SPACES = {"optimizer": OptimizerSpace}


def with_article(noun: str) -> str:
    """``noun`` with "a" or "an": "an optimizer", "a layer"."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def registered_spaces() -> dict[str, Space]:
    """Every family's space by name; the layer space registers itself on import."""
    from . import layer_space  # noqa: F401  (imports this module, then registers)
    return SPACES


def get_space(family: str) -> Space:
    """The registered space of a family."""
    try:
        return registered_spaces()[family]
    except KeyError:
        raise ProgramError(
            f"unknown family {family!r} (choose from {', '.join(SPACES)})") from None

"""Random programs of a space: the baseline that evolution must beat, and a random start.

Each instruction applies a random op of the space to earlier values (inputs, carried
state, temporaries) or, now and then, a constant; its output is a fresh temporary or
one of the space's outputs and state, so random programs can keep momentum-like state
just as evolved ones can. Draws again until the program is valid in the space.
"""

from __future__ import annotations

import random

from .ops import OPS
from .program import Instruction, Program
from .space import Space

CONSTANT_PROBABILITY = 0.1
STATE_WRITE_PROBABILITY = 0.3


def random_program(space: Space, rng: random.Random, length: int,
                   max_tries: int = 1000) -> Program:
    """A random valid program of ``length`` instructions (the last assigns the space's
    first required output); RuntimeError if none is found within ``max_tries``."""
    target = space.required[0]
    writable = [name for name in (*space.outputs, *space.state)
                if name not in space.read_only and name != target]
    for _ in range(max_tries):
        names = list(space.inputs)
        instructions = []
        for i in range(length):
            op = OPS[rng.choice(space.ops)]
            args = tuple(round(rng.gauss(0.0, 1.0), 4) if rng.random() < CONSTANT_PROBABILITY
                         else rng.choice(names) for _ in range(op.arity))
            if i == length - 1:
                out = target
            elif writable and rng.random() < STATE_WRITE_PROBABILITY:
                out = rng.choice(writable)
            else:
                out = f"t{i}"
            instructions.append(Instruction(out, op.name, args))
            if out not in names:
                names.append(out)
        program = Program(tuple(instructions))
        if space.invalid_reason(program) is None:
            return program
    raise RuntimeError(f"no valid random program of length {length} in {max_tries} tries")

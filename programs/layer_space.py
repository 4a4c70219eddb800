"""The layer family: normalization-activation programs over an NCHW (or NC) tensor.

A layer program reads ``x``, the per-channel learnable ``v0`` (starts at 0) and ``v1``
(starts at 1), and float constants (``0.0`` among them); it must assign ``y``, which
must depend on ``x``. The layer then returns ``y * gamma + beta`` (per-channel affine,
outside the program). Every op keeps the NCHW shape by broadcasting (aggregates return
statistics that broadcast back), so the only static checks are the shared ones.
"""

from __future__ import annotations

import random

from . import layer_ops
from .ops import OPS
from .program import Instruction, Program
from .space import SPACES, Space

LAYER_ELEMENTWISE: tuple[str, ...] = (
    "add", "mul", "div", "max", "negative", "sigmoid", "tanh", "exp", "log", "abs",
    "square", "sqrt")

BN_RELU_SEED = """\
mu = batch_mean(x)
nmu = negative(mu)
d = x + nmu
s = batch_std(x)
n = d / s
y = max(n, 0.0)
"""

LayerSpace = Space(
    family="layer",
    inputs=("x", "v0", "v1"),
    outputs=("y",),
    state=(),
    required=("y",),
    ops=LAYER_ELEMENTWISE + tuple(layer_ops.AGGREGATES),
    seed_text=BN_RELU_SEED,
    depends_on="x",
    max_length=20,
    listing_name="layer",
    read_only=("x", "v0", "v1"),
)
"""Normalization-activation layers (EvoNorms): ``out = y * gamma + beta``."""

SPACES.setdefault("layer", LayerSpace)


def random_program(space: Space, rng: random.Random, length: int,
                   max_tries: int = 1000) -> Program:
    """A random valid program of ``length`` instructions (a random start for search).

    Each instruction reads earlier values or a constant; the last one assigns the
    space's first required output. Draws again until the program is valid.
    """
    target = space.required[0]
    for _ in range(max_tries):
        names = list(space.inputs)
        instructions = []
        for i in range(length):
            op = OPS[rng.choice(space.ops)]
            args = tuple(round(rng.gauss(0.0, 1.0), 4) if rng.random() < 0.1
                         else rng.choice(names) for _ in range(op.arity))
            out = target if i == length - 1 else f"t{i}"
            instructions.append(Instruction(out, op.name, args))
            names.append(out)
        program = Program(tuple(instructions))
        if space.invalid_reason(program) is None:
            return program
    raise RuntimeError(f"no valid random program of length {length} in {max_tries} tries")

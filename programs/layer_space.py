"""The layer family: normalization-activation programs over an NCHW (or NC) tensor.

A layer program reads ``x``, the per-channel learnable ``v0`` (starts at 0) and ``v1``
(starts at 1), and float constants (``0.0`` among them); it must assign ``y``, which
must depend on ``x``. The layer then returns ``y * gamma + beta`` (per-channel affine,
outside the program). Every op keeps the NCHW shape by broadcasting (aggregates return
statistics that broadcast back), so the only static checks are the shared ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import layer_analysis, layer_ops
from .program import Program
from .recognize import Recognition
from .space import SPACES, Space
from .symbolic import SymbolicProgram

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

@dataclass(frozen=True)
class LayerFamily(Space):
    """A layer: run once on fixed NCHW inputs in training mode, written with aggregates
    as SymPy functions, recognized among ``known.KNOWN_LAYERS`` (``layer_analysis.py``)."""

    def probe(self, program: Program) -> tuple[str, bool]:
        return layer_analysis.layer_probe(self.prune(program), self.family)

    def simplify(self, program: Program) -> SymbolicProgram:
        return layer_analysis.layer_sympy(program, self.inputs, self.outputs)

    def recognize(self, program: Program) -> Recognition | None:
        return layer_analysis.layer_recognize(self.prune(program))


LayerSpace = LayerFamily(
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

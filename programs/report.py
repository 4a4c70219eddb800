"""A readable account of one program: pruned, simplified, what it is known as, and
whether the probe shows it cannot train."""

from __future__ import annotations

from dataclasses import dataclass

from .program import Program, format_program
from .recognize import Recognition
from .space import Space
from .symbolic import SymbolicError


@dataclass(frozen=True)
class Description:
    pruned: str
    simplified: str | None  # None when SymPy could not express the program
    latex: str | None
    recognized: Recognition | None
    cannot_train: str | None = None  # why an evaluator refuses it before training

    def to_json(self, latex: bool = False) -> dict:
        out = {"pruned": self.pruned, "simplified": self.simplified,
               "recognized": self.recognized.to_json() if self.recognized else None,
               "cannot_train": self.cannot_train}
        if latex:
            out["latex"] = self.latex
        return out


def describe(space: Space, program: Program) -> Description:
    pruned = space.prune(program)
    try:
        sym = space.simplify(pruned)
        simplified, latex = sym.text(), sym.latex()
    except (SymbolicError, RecursionError, OverflowError):
        simplified = latex = None
    return Description(format_program(pruned), simplified, latex, space.recognize(pruned),
                       space.futile_reason(pruned))

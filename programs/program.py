"""The program representation shared by both families, and its text form.

A program is a straight-line sequence of instructions ``out = op(arg, ...)``. Arguments
are variable names or float constants. The text form follows the listings of the Lion
paper: one instruction per line (or ``;``-separated), ``+ - * /`` written infix, every
other op written as a call, an optional ``def name(inputs):`` header and ``return``
line. Text is parsed by the small parser below; it is never evaluated as Python.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

from .ops import INFIX, OPS, resolve_op_name

Arg = str | float


class ProgramError(ValueError):
    """Malformed program text, or a program that breaks a space's rules."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass(frozen=True)
class Instruction:
    out: str
    op: str
    args: tuple[Arg, ...]

    @cached_property
    def _reads(self) -> tuple[str, ...]:
        return tuple(a for a in self.args if isinstance(a, str))

    def reads(self) -> tuple[str, ...]:
        """Variable names this instruction reads (constants left out); remembered, since
        every analysis of every program sharing the instruction asks again."""
        return self._reads


@dataclass(frozen=True)
class Program:
    instructions: tuple[Instruction, ...]

    def __len__(self) -> int:
        return len(self.instructions)

    def __iter__(self):
        return iter(self.instructions)

    def __str__(self) -> str:
        return format_program(self)

    def constants(self) -> list[float]:
        return [a for ins in self.instructions for a in ins.args if not isinstance(a, str)]

    def assigned(self) -> set[str]:
        return {ins.out for ins in self.instructions}

    def read(self) -> set[str]:
        """Every variable name some instruction reads."""
        return {a for ins in self.instructions for a in ins.reads()}


def format_arg(arg: Arg) -> str:
    return arg if isinstance(arg, str) else repr(float(arg))


def format_instruction(ins: Instruction) -> str:
    args = [format_arg(a) for a in ins.args]
    symbol = INFIX.get(ins.op)
    if symbol is not None:
        return f"{ins.out} = {args[0]} {symbol} {args[1]}"
    return f"{ins.out} = {ins.op}({', '.join(args)})"


def format_program(program: Program) -> str:
    """The canonical text of a program: one instruction per line."""
    return "\n".join(format_instruction(ins) for ins in program.instructions)


def format_listing(program: Program, name: str, inputs: tuple[str, ...],
                   outputs: tuple[str, ...]) -> str:
    """The program as a Lion-paper style listing with header and return line."""
    body = "\n".join("  " + format_instruction(ins) for ins in program.instructions)
    return f"def {name}({', '.join(inputs)}):\n{body}\n  return {', '.join(outputs)}"


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ATOM = rf"(?:{_NAME}|{_NUMBER})"
_NAME_RE = re.compile(rf"^{_NAME}$")
_NUMBER_RE = re.compile(rf"^{_NUMBER}$")
_INFIX_RE = re.compile(rf"^({_ATOM})\s*([-+*/])\s*({_ATOM})$")
_CALL_RE = re.compile(rf"^({_NAME})\s*\((.*)\)$")
_HEADER_RE = re.compile(rf"^def\s+{_NAME}\s*\((.*)\)\s*:$")
_SYMBOL_TO_OP = {symbol: op for op, symbol in INFIX.items()}


def _parse_arg(text: str, line: int) -> Arg:
    text = text.strip()
    if _NUMBER_RE.match(text):
        value = float(text)
        if not math.isfinite(value):
            raise ProgramError(f"number {text} is too large for a float", line)
        return value
    if _NAME_RE.match(text):
        return text
    raise ProgramError(f"expected a variable name or a number, got {text!r}", line)


def _parse_instruction(text: str, line: int) -> Instruction:
    if "=" not in text:
        raise ProgramError(f"expected 'name = op(args)', got {text!r}", line)
    out, expr = (part.strip() for part in text.split("=", 1))
    if not _NAME_RE.match(out):
        raise ProgramError(f"invalid variable name {out!r}", line)
    infix = _INFIX_RE.match(expr)
    if infix:
        left, symbol, right = infix.groups()
        return Instruction(out, _SYMBOL_TO_OP[symbol],
                           (_parse_arg(left, line), _parse_arg(right, line)))
    call = _CALL_RE.match(expr)
    if not call:
        raise ProgramError(f"cannot read expression {expr!r}", line)
    name, inner = call.groups()
    op = resolve_op_name(name)
    if op is None:
        raise ProgramError(f"unknown op {name!r}", line)
    args = tuple(_parse_arg(a, line) for a in inner.split(",")) if inner.strip() else ()
    if len(args) != OPS[op].arity:
        raise ProgramError(
            f"{name} takes {OPS[op].arity} argument(s), got {len(args)}", line)
    return Instruction(out, op, args)


def parse_program(text: str) -> Program:
    """Parse program text. Raises ProgramError naming the line and the problem.

    Accepts the canonical form, ``;``-separated statements, ``#`` comments, and the
    listing form with a ``def`` header and a ``return`` line (both are optional and
    carry no information beyond the space's fixed inputs and outputs).
    """
    instructions = []
    for number, raw in enumerate(text.splitlines(), start=1):
        for statement in raw.split("#", 1)[0].split(";"):
            statement = statement.strip()
            if not statement or _HEADER_RE.match(statement):
                continue
            if statement == "return" or statement.startswith("return "):
                continue
            instructions.append(_parse_instruction(statement, number))
    if not instructions:
        raise ProgramError("the program has no instructions")
    return Program(tuple(instructions))

"""The program representation shared by both families, and its text form.

A program is a straight-line sequence of instructions ``out = op(arg, ...)``. Arguments
are variable names or float constants. The text form follows the listings of the Lion
paper: one instruction per line (or ``;``-separated), ``+ - * /`` written infix, every
other op written as a call, an optional ``def name(inputs):`` header and ``return``
line. Text is parsed by the small parser below; it is never evaluated as Python. Its
errors cite the line and statement at fault and, where they can, say what to write
instead (``negative(g)`` for ``-g``, one op per line for nested expressions).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property

from .ops import ALIASES, INFIX, OPS, resolve_op_name

Arg = str | float


class ProgramError(ValueError):
    """Malformed program text, or a program that breaks a space's rules.

    ``line`` and ``source`` name the statement at fault in the user's text (its line
    number and the statement itself); ``looks_like`` is the family a program seems to
    belong to when it was given as another family's.
    """

    def __init__(self, message: str, line: int | None = None, source: str | None = None,
                 looks_like: str | None = None):
        self.line, self.source, self.looks_like = line, source, looks_like
        where = f'line {line} "{clip(source, 80)}": ' if source else f"line {line}: "
        super().__init__(message if line is None else where + message)


def clip(text: str, limit: int = 60) -> str:
    """A piece of the user's text short enough to quote in an error message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
# What an expression of several ops is split at first: an innermost call, else a product
# or quotient, else a sum or difference of two names or numbers.
_FIRST_OP_RES = [re.compile(rf"{_NAME}\s*\([^()]*\)"),
                 re.compile(rf"{_ATOM}\s*[*/]\s*{_ATOM}"),
                 re.compile(rf"{_ATOM}\s*[-+]\s*{_ATOM}")]
_POWER_RE = re.compile(rf"^({_ATOM})\s*(?:\*\*|\^)\s*({_ATOM})$")
_UNARY_MINUS_RE = re.compile(rf"(?:^|[-+*/(,])\s*-\s*(?:({_NAME})\b(?!\s*\()|[A-Za-z_(])")
_POWER_OPS = {2.0: "square", 3.0: "cube", 0.5: "sqrt"}
# How Python source (such as an exported optimizer's file) starts, and program text never.
_PYTHON_RE = re.compile(r"^(\"\"\"|'''|import\s|from\s+\S+\s+import\s|class\s|@)")


def _parse_arg(text: str, line: int, statement: str) -> Arg:
    text = text.strip()
    if _NUMBER_RE.match(text):
        value = float(text)
        if not math.isfinite(value):
            raise ProgramError(f"number {clip(text)} is too large for a float", line,
                               statement)
        return value
    if _NAME_RE.match(text):
        return text
    raise ProgramError(f"expected a variable name or a number, got {clip(text)!r}", line,
                       statement)


def _unreadable(out: str, expr: str) -> str:
    """What in ``expr`` is not one op applied to names and numbers, and what to write."""
    out = clip(out)
    power = _POWER_RE.match(expr)
    if power:
        base, exponent = power.groups()
        value = float(exponent) if _NUMBER_RE.match(exponent) else None
        fix = (f"{_POWER_OPS[value]}({base})" if value in _POWER_OPS else
               f"power({base}, {exponent}), which is |{base}| ** {exponent}")
        return f"powers are written as calls: {fix}"
    if "**" in expr or "^" in expr:
        return "powers are written as calls: square(x), cube(x), sqrt(x) or power(x, y)"
    minus = _UNARY_MINUS_RE.search(expr)
    if minus:
        operand = minus.group(1) or "x"
        fix = "" if minus.group(0).strip() == expr else ", on a line of its own"
        return f"unary minus is written negative({operand}){fix}"
    if _NAME_RE.match(expr):
        name = clip(expr)
        return (f"{name!r} alone applies no op: read {name} itself where {out} would be "
                f"read, or apply one ({out} = {name} * 1.0)")
    if _NUMBER_RE.match(expr):
        return (f"a number alone applies no op: write it as an argument where it is used "
                f"(e.g. t = g * {clip(expr)})")
    for pattern in _FIRST_OP_RES:
        first = pattern.search(expr)
        if first:
            if first.group(0) != expr:
                return (f"{clip(expr)!r} applies more than one op: write one op per "
                        f"line, naming each result (e.g. t = {clip(first.group(0))}, then "
                        "use t)")
            break
    if expr.count("(") != expr.count(")"):
        return f"unbalanced parentheses in {clip(expr)!r}"
    return (f"cannot read {clip(expr)!r}: write one op applied to names and numbers, such as "
            f"{out} = a * b or {out} = sqrt(a)")


def _unknown_op(name: str, ops: Collection[str]) -> str:
    names = [n for n in (*ops, *ALIASES) if resolve_op_name(n) in ops]
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "README.md, Programs, lists the ops"
    return f"unknown op {clip(name)!r} ({hint})"


def _parse_instruction(text: str, line: int, ops: Collection[str]) -> Instruction:
    if _PYTHON_RE.match(text):
        raise ProgramError("this is Python source (an exported optimizer or layer?), not "
                           "program text; `evoprog show ID` prints an individual's program",
                           line, text)
    if text.startswith("def "):
        raise ProgramError("a header is written 'def name(inputs):'", line, text)
    if "=" not in text:
        raise ProgramError("expected 'name = op(args)'", line, text)
    out, expr = (part.strip() for part in text.split("=", 1))
    if not _NAME_RE.match(out):
        raise ProgramError(f"invalid variable name {clip(out)!r} (names are letters, digits and "
                           "_, not starting with a digit)", line, text)
    infix = _INFIX_RE.match(expr)
    if infix:
        left, symbol, right = infix.groups()
        return Instruction(out, _SYMBOL_TO_OP[symbol],
                           (_parse_arg(left, line, text), _parse_arg(right, line, text)))
    call = _CALL_RE.match(expr)
    if not call or "(" in call.group(2) or ")" in call.group(2):
        raise ProgramError(_unreadable(out, expr), line, text)
    name, inner = call.groups()
    op = resolve_op_name(name)
    if op is None:
        raise ProgramError(_unknown_op(name, ops), line, text)
    args = tuple(_parse_arg(a, line, text) for a in inner.split(",")) if inner.strip() else ()
    arity = OPS[op].arity
    if len(args) != arity:
        usage = f"{name}({', '.join(['x', 'y', 'a'][:arity])})"
        raise ProgramError(f"{name} takes {arity} argument{'s' * (arity != 1)}, got "
                           f"{len(args)}: write {usage}", line, text)
    return Instruction(out, op, args)


def parse_lines(text: str, ops: Collection[str] = OPS,
                ) -> tuple[Program, tuple[tuple[int, str], ...]]:
    """Parse program text, as ``parse_program``; also returns each instruction's line
    number and statement, so that a later check can cite the user's line. An unknown op
    name gets the nearest names among ``ops`` as suggestions."""
    instructions, lines = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        control = next((c for c in raw if c < " " and c != "\t" or c == "\x7f"), None)
        if control is not None:
            raise ProgramError(f"the text holds the control character U+{ord(control):04X}, "
                               "which program text never does (a binary file?)", number)
        for statement in raw.split("#", 1)[0].split(";"):
            statement = statement.strip()
            if not statement or _HEADER_RE.match(statement):
                continue
            if statement == "return" or statement.startswith("return "):
                continue
            instructions.append(_parse_instruction(statement, number, ops))
            lines.append((number, statement))
    if not instructions:
        raise ProgramError("the program has no instructions")
    return Program(tuple(instructions)), tuple(lines)


def parse_program(text: str) -> Program:
    """Parse program text. Raises ProgramError naming the line, the problem and, where
    it can, what to write instead.

    Accepts the canonical form, ``;``-separated statements, ``#`` comments, and the
    listing form with a ``def`` header and a ``return`` line (both are optional and
    carry no information beyond the space's fixed inputs and outputs).
    """
    return parse_lines(text)[0]

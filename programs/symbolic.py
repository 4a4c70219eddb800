"""Programs as SymPy expressions: the update and the state recurrences, simplified.

A pruned program becomes one expression per output in terms of the step's inputs, with
each carried state read as its previous value (``m_{t-1}``), e.g.
``m_t = 0.1*g + 0.9*m_{t-1}``. Expressions are built from the op registry's ``sympy_fn``
(never by parsing strings). Note that SymPy division has no safety epsilon: the
expressions show the intended mathematics, not the guarded arithmetic.

Simplification is bounded: expressions above ``MAX_OPS`` operations skip SymPy's
``simplify``, and in the main thread a timer stops it after ``TIME_LIMIT`` seconds; in
either case the cheaply rewritten expression is kept.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sympy

from .analysis import instruction_reads_input_first, prune
from .ops import OPS
from .program import Program

MAX_OPS = 60
TIME_LIMIT = 2.0
DISPLAY_DIGITS = 4


class SymbolicError(ValueError):
    """The program cannot be written as a SymPy expression."""


@dataclass(frozen=True)
class SymbolicProgram:
    """``outputs``: each non-state output as an expression; ``recurrences``: each state
    that the next step reads, as its new value; ``symbols``: input name -> symbol."""

    outputs: dict[str, sympy.Expr]
    recurrences: dict[str, sympy.Expr]
    symbols: dict[str, sympy.Symbol]

    def lines(self, digits: int = DISPLAY_DIGITS) -> list[tuple[str, sympy.Expr]]:
        """(left-hand side, rounded expression) pairs, outputs first."""
        pairs = [(name, expr) for name, expr in self.outputs.items()]
        pairs += [(f"{name}_t", expr) for name, expr in self.recurrences.items()]
        return [(lhs, round_floats(expr, digits)) for lhs, expr in pairs]

    def text(self, digits: int = DISPLAY_DIGITS) -> str:
        return "\n".join(f"{lhs} = {sympy.sstr(expr, full_prec=False)}"
                         for lhs, expr in self.lines(digits))

    def latex(self, digits: int = DISPLAY_DIGITS) -> str:
        rows = []
        for lhs, expr in self.lines(digits):
            left = lhs.replace("_t", "_{t}") if lhs.endswith("_t") else f"\\mathrm{{{lhs}}}"
            rows.append(f"{left} = {sympy.latex(expr, full_prec=False)}")
        return "\n".join(rows)


def state_symbol(name: str, nonnegative: bool = False) -> sympy.Symbol:
    if nonnegative:
        return sympy.Symbol(f"{name}_{{t-1}}", nonnegative=True)
    return sympy.Symbol(f"{name}_{{t-1}}", real=True)


def input_symbols(inputs: tuple[str, ...], state: tuple[str, ...],
                  nonnegative: frozenset[str] = frozenset()) -> dict[str, sympy.Symbol]:
    symbols = {}
    for name in inputs:
        if name in state:
            symbols[name] = state_symbol(name, name in nonnegative)
        elif name == "step":
            symbols[name] = sympy.Symbol("step", positive=True, integer=True)
        else:
            symbols[name] = sympy.Symbol(name, real=True)
    return symbols


def constant(value: float, exact_integers: bool = False) -> sympy.Expr:
    """A program constant: a SymPy Float, or an Integer for whole numbers when asked."""
    value = float(value)
    if exact_integers and value.is_integer() and abs(value) <= 1e6:
        return sympy.Integer(int(value))
    return sympy.Float(value)


def run_symbolic(program: Program, symbols: dict[str, sympy.Expr],
                 exact_integers: bool = False) -> dict[str, sympy.Expr]:
    """Execute the program on SymPy values; returns the final environment."""
    env: dict[str, sympy.Expr] = dict(symbols)
    for ins in program.instructions:
        args = [env[a] if isinstance(a, str) else constant(a, exact_integers)
                for a in ins.args]
        try:
            env[ins.out] = OPS[ins.op].sympy_fn(*args)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError,
                RecursionError) as exc:
            raise SymbolicError(f"cannot convert {ins.out} = {ins.op}(...): {exc}") from None
    return env


def live_state(program: Program, state: tuple[str, ...]) -> tuple[str, ...]:
    """State variables whose previous value the program reads."""
    return tuple(s for s in state if instruction_reads_input_first(program, s) is not None)


def to_sympy(program: Program, inputs: tuple[str, ...], outputs: tuple[str, ...],
             state: tuple[str, ...], simplify: bool = True,
             exact_integers: bool = False) -> SymbolicProgram:
    """The pruned program's outputs and live state recurrences as SymPy expressions.

    ``exact_integers`` reads whole-number constants as SymPy Integers (``Max(0, x)``
    rather than ``Max(0.0, x)``, and ``x*1.0`` becomes ``x``).

    A state is given a nonnegative symbol when its recurrence keeps it nonnegative (it
    starts at zero), e.g. an average of squared gradients, so ``sqrt(Abs(v))`` reads
    ``sqrt(v)``; otherwise it is only assumed real.
    """
    pruned = prune(program, outputs, state)
    live = live_state(pruned, state)
    nonnegative = frozenset(live)
    while True:
        symbols = input_symbols(inputs, state, nonnegative)
        env = run_symbolic(pruned, symbols, exact_integers)
        keep = frozenset(s for s in nonnegative if env.get(s, symbols[s]).is_nonnegative)
        if keep == nonnegative:
            break
        nonnegative = keep
    result = {o: env.get(o, symbols.get(o, sympy.S.Zero)) for o in outputs if o not in state}
    recurrences = {s: env.get(s, symbols[s]) for s in live}
    tidy = simplify_expr if simplify else rewrite
    return SymbolicProgram({k: tidy(e) for k, e in result.items()},
                           {k: tidy(e) for k, e in recurrences.items()}, symbols)


def rewrite(expr: sympy.Expr) -> sympy.Expr:
    """Cheap rewrites SymPy does not do by itself: ``x/|x|`` and ``|x|/x`` -> sign(x)."""
    def visit(e: sympy.Expr) -> sympy.Expr:
        if not e.args:
            return e
        e = e.func(*[visit(a) for a in e.args])
        if isinstance(e, sympy.Mul):
            return _sign_in_mul(e)
        return e
    try:
        return visit(expr)
    except (TypeError, ValueError, RecursionError):
        return expr


def _sign_in_mul(e: sympy.Mul) -> sympy.Expr:
    factors = list(e.args)
    for i, f in enumerate(factors):
        if isinstance(f, sympy.Pow) and isinstance(f.base, sympy.Abs) and f.exp == -1:
            inner = f.base.args[0]
            for j, other in enumerate(factors):
                if j == i:
                    continue
                ratio = _constant_ratio(other, inner)
                if ratio is not None:
                    rest = [x for k, x in enumerate(factors) if k not in (i, j)]
                    return _sign_in_mul(sympy.Mul(*rest, ratio, sympy.sign(inner)))
    return e


def _constant_ratio(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr | None:
    """c when a == c*b for a number c (SymPy distributes 2*(x + y) into 2*x + 2*y)."""
    if a == b:
        return sympy.S.One
    if not (isinstance(a, sympy.Add) and isinstance(b, sympy.Add)) or len(a.args) != len(
            b.args):
        return None
    ta = dict(t.as_coeff_Mul()[::-1] for t in a.args)
    tb = dict(t.as_coeff_Mul()[::-1] for t in b.args)
    if set(ta) != set(tb) or any(tb[t] == 0 for t in tb):
        return None
    ratios = [float(ta[t] / tb[t]) for t in ta]
    first = ratios[0]
    if first == 0 or any(abs(r - first) > 1e-12 * abs(first) for r in ratios):
        return None
    return sympy.Float(first) if first != int(first) else sympy.Integer(int(first))


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError after ``seconds`` (main thread only; elsewhere no limit). A
    timer the caller already runs is left alone, and then there is no limit either."""
    if (threading.current_thread() is not threading.main_thread() or seconds <= 0
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        yield
        return

    def stop(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def simplify_expr(expr: sympy.Expr, max_ops: int = MAX_OPS,
                  time_limit: float = TIME_LIMIT) -> sympy.Expr:
    """The shorter of the cheaply rewritten expression and SymPy's simplification."""
    expr = rewrite(expr)
    if sympy.count_ops(expr) > max_ops:
        return expr
    try:
        with _time_limit(time_limit):
            candidate = rewrite(sympy.simplify(expr))
    except (TimeoutError, TypeError, ValueError, RecursionError, OverflowError,
            ZeroDivisionError, AttributeError, NotImplementedError):
        return expr
    return candidate if sympy.count_ops(candidate) < sympy.count_ops(expr) else expr


def round_floats(expr: sympy.Expr, digits: int = DISPLAY_DIGITS) -> sympy.Expr:
    """The expression with float constants rounded to ``digits`` significant digits."""
    floats = {f: sympy.Float(float(f"{float(f):.{digits}g}")) for f in expr.atoms(sympy.Float)}
    return expr.xreplace(floats) if floats else expr

"""Recognize known optimizers in evolved programs, up to their constants.

The program is written symbolically (``symbolic.to_sympy``), which composes whatever the
program does to its state within one step into one recurrence per live state. Each state
is classified: a momentum (``s_t = a*s + b*g``) or an average of squares
(``s_t = a*s + b*g**2``). A state may be any positive multiple of the textbook one, and
may live in ``m`` or ``v``. From the recurrences and a few evaluations of the update
expression we read candidate hyperparameters for each family whose state shape fits,
then *verify*: the known template, instantiated with those constants, must produce the
same updates as the program over several steps on random inputs. A reported match is
therefore exact (up to float tolerance), whatever the program's text looks like.

Two things come first. A state that stays exactly zero on the probes (never written,
or written with something that keeps it zero, such as ``v = tanh(v / |g|)``) is replaced
by the constant 0 where it is read. And where the symbolic route cannot read the program
(its update saturates through ``tanh``, ``clip``, ``max`` ... into a sign, or divides by
a state that stays zero), the sign and momentum families' constants are read from runs
of the program itself on single numbers, then verified the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sympy
import torch
from sympy.polys.polyerrors import BasePolynomialError

from .analysis import prune
from .fingerprint import LAYOUT, Probe, make_probe, run_steps, updates
from .known import KNOWN, KNOWN_LAYERS
from .ops import Layout
from .program import Instruction, Program
from .symbolic import SymbolicError, SymbolicProgram, to_sympy

# The ops the known optimizers are written with. A program using others in its pruned
# form is not tried (SymPy on e.g. nested max/min is slow); this rarely misses a match,
# such as one that only uses cosh(0) as a constant 1.
RECOGNIZABLE_OPS = frozenset({
    "add", "sub", "mul", "div", "interp", "sign", "sqrt", "square", "abs", "power",
    "invert", "negative", "reciprocal", "eps", "cube", "cbrt", "exp"})
RTOL = 1e-3
# Entries may differ by this much of the largest update (exact zeros against a guarded
# division's 1e-8 noise), so that the tolerance scales with the learning rate.
ATOL = 1e-8
# Constants that weight an average of the old state against the new gradient.
# (RMSprop's alpha is one too, but AddSign's is not: ``_rmsprop`` checks its own.)
AVERAGING_CONSTANTS = ("beta", "beta1", "beta2", "momentum")
# What SymPy's reading of an odd program (a division by an exact zero gives ``zoo``) may
# raise; any of them means the symbolic route cannot recognize it.
_SYMPY_ERRORS = (TypeError, ValueError, ArithmeticError, BasePolynomialError,
                 SymbolicError)
TEMPLATE_STATE = ("m", "v")  # where the known optimizers keep their state
# On the fingerprint's two matrices and a vector, so per-tensor and matrix ops are
# verified as such. Moderate gradient magnitudes: a program's guarded division
# (``x / (|x| + 1e-8)``) matches the template's ``sign(x)`` to RTOL only where |x| is
# well above 1e-8.
_PROBES = (make_probe(LAYOUT, seed=7, scales=(0.1, 1.0, 10.0)),
           make_probe(LAYOUT, seed=11, scales=(0.3, 3.0, 30.0)))


LAYER_TITLES = {"bn_relu": "BN-ReLU", "gn_relu": "GN-ReLU", "ln_relu": "LN-ReLU",
                "evonorm_b0": "EvoNorm-B0", "evonorm_s0": "EvoNorm-S0",
                "evonorm_s1": "EvoNorm-S1"}
"""Known layers as the EvoNorms paper writes them (their ``class_name`` is a Python name)."""


def title(name: str) -> str:
    """How a known program's name reads in reports: ``Lion``, ``EvoNorm-S0``."""
    if name in KNOWN:
        return KNOWN[name].class_name
    return LAYER_TITLES.get(name) or KNOWN_LAYERS[name].class_name


@dataclass(frozen=True)
class Recognition:
    """A known program (a key of ``KNOWN`` or ``KNOWN_LAYERS``) and the constants that
    reproduce the input."""

    name: str
    constants: dict[str, float]

    def __str__(self) -> str:
        values = ", ".join(f"{k}={_short(v)}" for k, v in self.constants.items())
        return f"{title(self.name)} ({values})"

    def to_json(self) -> dict:
        """The constants to 12 significant digits: fitted in floating point, they carry
        noise far below what tells two optimizers apart (0.010000000000000026)."""
        return {"family": self.name,
                "constants": {k: float(f"{v:.12g}") for k, v in self.constants.items()}}


def _short(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"


@dataclass(frozen=True)
class _State:
    kind: str  # "linear" (a*s + b*g) or "square" (a*s + b*g**2)
    symbol: sympy.Symbol
    a: float
    b: float

    @property
    def scale(self) -> float:
        """k in s = k * m, where m is the textbook average ((1-a)-weighted)."""
        return self.b / (1.0 - self.a)


def recognize(program: Program, inputs: tuple[str, ...], outputs: tuple[str, ...],
              state: tuple[str, ...]) -> Recognition | None:
    """The known optimizer this program computes, with its constants, or None."""
    if "update" not in outputs:
        return None
    program = prune(program, outputs, state)
    zero = _zero_states(program, state)
    if zero:
        program = _read_as_zero(program, zero)
        state = tuple(s for s in state if s not in zero)
        outputs = tuple(o for o in outputs if o not in zero)
        program = prune(program, outputs, state)
    return _symbolic_match(program, inputs, outputs, state) or _numeric_match(program,
                                                                                state)


def _symbolic_match(program: Program, inputs: tuple[str, ...], outputs: tuple[str, ...],
                    state: tuple[str, ...]) -> Recognition | None:
    if any(ins.op not in RECOGNIZABLE_OPS for ins in program.instructions):
        return None
    try:
        sym = to_sympy(program, inputs, outputs, state, simplify=False)
        states = _classify(sym)
    except _SYMPY_ERRORS:
        return None
    if states is None:
        return None
    for candidate in _candidates(sym, states):
        if candidate is not None and _verified(program, candidate, state):
            return candidate
    return None


def _zero_states(program: Program, state: tuple[str, ...]) -> set[str]:
    """The states whose carried value is exactly zero at every step of every probe."""
    zero = set(state)
    for probe in _PROBES:
        for step in run_steps(program, state, state, probe):
            zero = {s for s in zero if not step[s].any()}
        if not zero:
            break
    return zero


def _read_as_zero(program: Program, names: set[str]) -> Program:
    """Reads of these states' carried values (before the step assigns them) become 0."""
    assigned: set[str] = set()
    instructions = []
    for ins in program.instructions:
        args = tuple(0.0 if isinstance(a, str) and a in names and a not in assigned else a
                     for a in ins.args)
        instructions.append(Instruction(ins.out, ins.op, args))
        assigned.add(ins.out)
    return Program(tuple(instructions))


def _classify(sym: SymbolicProgram) -> list[_State] | None:
    g = sym.symbols["g"]
    found = []
    for name, expr in sym.recurrences.items():
        s = sym.symbols[name]
        if not expr.free_symbols <= {s, g}:
            return None
        try:
            poly = sympy.Poly(expr, s, g)
        except sympy.PolynomialError:
            return None
        terms = dict(poly.terms())
        if set(terms) == {(1, 0), (0, 1)}:
            kind, power = "linear", 1
        elif set(terms) == {(1, 0), (0, 2)}:
            kind, power = "square", 2
        else:
            return None
        a, b = _real(terms[(1, 0)]), _real(terms[(0, power)])
        if a is None or b is None or a == 1.0:
            return None
        found.append(_State(kind, s, a, b))
    return found


def _real(value: sympy.Expr) -> float | None:
    """The coefficient as a float, or None where it is not a finite real number (a
    division by an exact zero makes it ``zoo``): no known family has such a state."""
    number = complex(value)
    if number.imag != 0 or not math.isfinite(number.real):
        return None
    return number.real


def _value(expr: sympy.Expr, sym: SymbolicProgram, **values: float) -> float:
    """The expression at the given inputs (others: g=1, w=0, lr=1, step=1, states 0)."""
    base = {"g": 1.0, "w": 0.0, "lr": 1.0, "step": 1.0}
    subs = {sym.symbols[k]: v for k, v in {**base, **values}.items() if k in sym.symbols}
    subs.update({sym.symbols[s]: 0.0 for s in sym.recurrences if s not in values})
    result = complex(expr.subs(subs).evalf())
    if result.imag != 0 or result.real != result.real:
        raise ValueError("not a real number")
    return result.real


Candidate = Callable[[SymbolicProgram, list[_State]], Recognition | None]


def _candidates(sym: SymbolicProgram, states: list[_State]) -> Iterator[Recognition | None]:
    kinds = sorted(s.kind for s in states)
    makers: list[Candidate] = {
        (): [_sgd, _signsgd],
        ("linear",): [_momentum, _signum, _lion, _powersign, _addsign],
        ("square",): [_rmsprop],
        ("linear", "square"): [_adamw_paper, _adamw],
    }.get(tuple(kinds), [])
    for make in makers:
        try:
            yield make(sym, states)
        except _SYMPY_ERRORS:
            yield None


def _of(states: list[_State], kind: str) -> _State:
    return next(s for s in states if s.kind == kind)


def _update(sym: SymbolicProgram) -> sympy.Expr:
    return sym.outputs["update"]


def _sgd(sym, states):
    return Recognition("sgd", {"lr": _value(_update(sym), sym)})


def _signsgd(sym, states):
    return Recognition("signsgd", {"lr": _value(_update(sym), sym)})


def _momentum(sym, states):
    s = _of(states, "linear")
    return Recognition("momentum", {"momentum": s.a, "lr": _value(_update(sym), sym)})


def _signum(sym, states):
    s = _of(states, "linear")
    return Recognition("signum", {"beta": s.a, "lr": _value(_update(sym), sym)})


def _lion(sym, states):
    s = _of(states, "linear")
    update = _update(sym)
    signs = [e for e in update.atoms(sympy.sign)]
    if len(signs) != 1:
        return None
    arg = signs[0].args[0]
    g = sym.symbols["g"]
    if not arg.free_symbols <= {s.symbol, g}:
        return None
    terms = dict(sympy.Poly(arg, s.symbol, g).terms())
    if set(terms) - {(1, 0), (0, 1)} or (0, 1) not in terms:
        return None
    p, q = float(terms.get((1, 0), 0.0)), float(terms[(0, 1)])
    r = p * s.scale / q
    lr = _value(update, sym)
    wd = (_value(update, sym, w=1.0) - lr) / lr
    return Recognition("lion", {"beta1": r / (1.0 + r), "beta2": s.a,
                                "weight_decay": wd, "lr": lr})


def _agreement_updates(sym, states) -> tuple[float, float]:
    """The update for g = 1 when the momentum agrees with g in sign, and when it does
    not (a large negative carried state): PowerSign's and AddSign's two step sizes."""
    s = _of(states, "linear")
    name = next(k for k, symbol in sym.symbols.items() if symbol == s.symbol)
    update = _update(sym)
    return _value(update, sym), _value(update, sym, **{name: -1e6})


def _powersign(sym, states):
    agree, _ = _agreement_updates(sym, states)
    return Recognition("powersign", {"beta": _of(states, "linear").a, "lr": agree / math.e})


def _addsign(sym, states):
    agree, disagree = _agreement_updates(sym, states)
    lr = (agree - disagree) / 2.0
    return Recognition("addsign", {"beta": _of(states, "linear").a, "lr": lr,
                                   "alpha": (agree + disagree) / (2.0 * lr)})


def _rmsprop(sym, states):
    v = _of(states, "square")
    if not 0.0 <= v.a < 1.0:
        return None  # extrapolates rather than averages
    update = _update(sym)
    # After one step from 0 the textbook average of g^2 is (1 - alpha) g^2, so the update
    # is lr g / (c |g| + eps) with c = sqrt(1 - alpha): two values of g give lr and eps.
    c, x = math.sqrt(1.0 - v.a), 1e-6
    u0, ux = _value(update, sym), _value(update, sym, g=x)
    eps = c * (ux - u0) / (u0 - ux / x)
    return Recognition("rmsprop", {"alpha": v.a, "eps": eps, "lr": u0 * (c + eps)})


def _adamw_paper(sym, states):
    m, v = _of(states, "linear"), _of(states, "square")
    u0 = _value(_update(sym), sym)
    lr = u0 * (1.0 - v.a) ** 0.5 / (1.0 - m.a)
    wd = (_value(_update(sym), sym, w=1.0) - u0) / lr
    return Recognition("adamw_paper", {"beta1": m.a, "beta2": v.a,
                                       "weight_decay": wd, "lr": lr})


def _adamw(sym, states):
    m, v = _of(states, "linear"), _of(states, "square")
    update = _update(sym)
    x = 1e-6
    u0 = _value(update, sym)
    ux = _value(update, sym, g=x)
    eps = x * (u0 - ux) / (ux - u0 * x)
    lr = u0 * (1.0 + eps)
    wd = (_value(update, sym, w=1.0) - u0) / lr
    constants = {"beta1": m.a, "beta2": v.a, "eps": eps, "weight_decay": wd, "lr": lr}
    if abs(wd) < 1e-12:
        del constants["weight_decay"]
        return Recognition("adam", constants)
    return Recognition("adamw", constants)


# -- constants read from runs of the program on single numbers ------------------------

_ONE = Layout(((1,),))


def _one_step(program: Program, state: tuple[str, ...], g: list[float],
              w: list[float] | None = None,
              carried: dict[str, list[float]] | None = None) -> dict[str, torch.Tensor]:
    """One step on rows of single float64 numbers (lr = step = 1), a row per entry of
    ``g``: each row's update and new states, as 1-d tensors."""
    rows = len(g)

    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).view(rows, 1)

    ones = column([1.0] * rows)
    probe = Probe(column(w or [0.0] * rows), (column(g),), (ones,), (ones,), _ONE)
    (out,) = run_steps(program, state, ("update", *state), probe,
                       {name: column(values) for name, values in (carried or {}).items()})
    return {name: value.view(-1) for name, value in out.items()}


def _numeric_match(program: Program, state: tuple[str, ...]) -> Recognition | None:
    """The SGD, momentum and sign families, with constants read from runs on single
    numbers: a state must be linear (``s_t = a*s + b*g``), lr is the first update for
    g = 1, Lion's beta1 is where the update's sign flips as the state grows against g."""
    if len(state) > 1:
        return None
    # Rows (g, w, state): (1, 0, 0) lr and b; (1, 1, 0) weight decay; (0, 0, 1) a;
    # (3, 0, 2) whether the state is linear; (3, 0, 0) a linear or a sign-like update.
    carried = {state[0]: [0.0, 0.0, 1.0, 2.0, 0.0]} if state else None
    out = _one_step(program, state, [1.0, 1.0, 0.0, 3.0, 3.0], [0.0, 1.0, 0.0, 0.0, 0.0],
                    carried)
    u0, u_w, _, _, u3 = out["update"].tolist()
    linear = math.isclose(u3, 3 * u0, rel_tol=RTOL)
    saturated = math.isclose(u3, u0, rel_tol=RTOL)  # a sign: as large for 3g as for g
    candidates: list[Callable[[], Recognition | None]] = []
    if not state:
        if linear:
            candidates.append(lambda: Recognition("sgd", {"lr": u0}))
        if saturated:
            candidates.append(lambda: Recognition("signsgd", {"lr": u0}))
    else:
        b, _, a, c, _ = out[state[0]].tolist()
        if b == 0 or a == 1.0 or not abs(c - (2 * a + 3 * b)) <= 1e-9 * (abs(a) + abs(b)):
            return None  # not a linear momentum (the verification checks the rest)
        if linear:
            candidates.append(lambda: Recognition("momentum", {"momentum": a, "lr": u0}))
        if saturated:
            candidates += [lambda: Recognition("signum", {"beta": a, "lr": u0}),
                           lambda: _numeric_lion(program, state[0], a, b, u0, u_w)]
    for make in candidates:
        try:
            candidate = make()
        except (ValueError, ArithmeticError):
            continue
        if candidate is not None and _verified(program, candidate, state):
            return candidate
    return None


def _numeric_lion(program: Program, s: str, a: float, b: float, u0: float,
                  u_w: float) -> Recognition | None:
    """Lion's constants: the update flips sign at state x where (1-beta1)*g + beta1*x/k
    = 0 (k = b / (1 - a): the program's state is k times the textbook momentum), found
    on three ever finer grids of |x| from 1e-9 to 1e6."""
    if u0 == 0:
        return None
    lo, hi = math.log(1e-9), math.log(1e6)
    for _ in range(3):
        grid = [lo + (hi - lo) * i / 1000 for i in range(1001)]
        out = _one_step(program, (s,), [1.0] * len(grid),
                        carried={s: [-math.exp(t) for t in grid]})
        flipped = (torch.sign(out["update"]) != math.copysign(1.0, u0)).tolist()
        if flipped[0] or not flipped[-1]:
            return None
        k = flipped.index(True)
        lo, hi = grid[k - 1], grid[k]
    ratio = -math.exp(hi) / (b / (1.0 - a))
    return Recognition("lion", {"beta1": 1.0 / (1.0 - ratio), "beta2": a,
                                "weight_decay": u_w / u0 - 1.0, "lr": u0})


def _verified(program: Program, candidate: Recognition,
              state: tuple[str, ...]) -> bool:
    """Whether the known template with these constants makes the same updates. An
    averaging constant outside [0, 1] extrapolates rather than averages: whatever the
    program computes then, it is not that optimizer."""
    if not all(v == v and abs(v) != float("inf") for v in candidate.constants.values()):
        return False
    if not all(0.0 <= value <= 1.0 for name, value in candidate.constants.items()
               if name in AVERAGING_CONSTANTS):
        return False
    try:
        template = KNOWN[candidate.name].program(**candidate.constants)
    except (KeyError, TypeError):
        return False
    moved = False
    for probe in _PROBES:
        x, y = updates(program, state, probe), updates(template, TEMPLATE_STATE, probe)
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            return False
        if not torch.allclose(x, y, rtol=RTOL, atol=ATOL * float(y.abs().max())):
            return False
        moved = moved or bool(y.any())
    # A rule that never moves a weight matches every family at lr = 0: it is none of them.
    return moved

"""SymPy forms of programs: recurrences, simplification, LaTeX, time bounds."""

import sympy

from evoprog.programs.known import KNOWN
from evoprog.programs.program import parse_program
from evoprog.programs.space import OptimizerSpace as S
from evoprog.programs.symbolic import MAX_OPS, rewrite, simplify_expr

g, w, lr = (sympy.Symbol(n, real=True) for n in ("g", "w", "lr"))
m = sympy.Symbol("m_{t-1}", real=True)


def close(a, b, tol=1e-9):
    """Equal at a few points (floats like 1 - 0.9 leave 1e-17 residues symbolically)."""
    diff = sympy.sympify(a - b)
    symbols = sorted(diff.free_symbols, key=str)
    for point in ((0.3, 1.7, 0.2, 0.9, 1.1), (2.5, 0.4, 1.3, 0.05, 0.6)):
        values = dict(zip(symbols, point, strict=False))
        if abs(complex(diff.subs(values).evalf())) > tol:
            return False
    return True


def test_adamw_seed_expressions():
    sym = S.simplify(S.seed())
    v = sym.symbols["v"]
    assert v.is_nonnegative  # an average of squares, starting at zero
    assert close(sym.recurrences["m"], 0.9 * sym.symbols["m"] + 0.1 * g)
    assert close(sym.recurrences["v"] - 0.999 * v - 0.001 * g**2, 0)
    expected = 0.001 * lr * ((0.1 * g + 0.9 * sym.symbols["m"])
                             / sympy.sqrt(0.001 * g**2 + 0.999 * v) + 0.01 * w)
    values = {g: 0.3, w: -1.2, lr: 0.7, sym.symbols["m"]: 0.05, v: 0.02}
    assert close(sym.outputs["update"].subs(values), expected.subs(values))
    assert "Abs" not in str(sym.outputs["update"])
    text = sym.text()
    assert "m_t = 0.1*g + 0.9*m_{t-1}" in text
    assert r"\sqrt{0.001 g^{2} + 0.999 v_{t-1}}" in sym.latex()


def test_lion_in_three_forms_simplifies_to_sign_of_interpolation():
    forms = [
        KNOWN["lion"].program(),
        parse_program("lr = lr * 0.0001\nc = m * 0.9\nt = g * 0.1\nc = c + t\n"
                      "update = sign(c)\nupdate = update * lr\nm2 = m * 0.99\n"
                      "t2 = g * 0.01\nm = m2 + t2"),
        parse_program("lr = lr * 0.0001\nc = interp(g, m, 0.9)\nc2 = c * c\n"
                      "a = sqrt(c2)\nupdate = c / a\nupdate = update * lr\n"
                      "m = interp(g, m, 0.99)"),
    ]
    for program in forms:
        sym = S.simplify(program)
        update = sym.outputs["update"]
        signs = list(update.atoms(sympy.sign))
        assert len(signs) == 1, update
        assert close(signs[0].args[0], 0.1 * g + 0.9 * sym.symbols["m"])
        assert close(update / signs[0], 0.0001 * lr)
        assert close(sym.recurrences["m"], 0.99 * sym.symbols["m"] + 0.01 * g)


def test_dead_state_is_left_out_and_constants_fold():
    sym = S.simplify(parse_program("a = 2.0 * 3.0\nupdate = g * a\nv = cosh(w)"))
    assert sym.recurrences == {}
    assert close(sym.outputs["update"], 6 * g)
    assert sym.text() == "update = 6.0*g"


def test_rewrite_turns_x_over_abs_x_into_sign():
    x = 0.3 * g + m
    assert rewrite(2 * x / sympy.Abs(x)) == 2 * sympy.sign(x)


def test_huge_expressions_skip_simplify(monkeypatch):
    real, called = sympy.simplify, []

    def spy(expr, *args, **kwargs):
        called.append(expr)
        return real(expr, *args, **kwargs)

    monkeypatch.setattr(sympy, "simplify", spy)
    big = sum(sympy.cosh(g * k) * sympy.sin(w + k) for k in range(1, 30))
    assert sympy.count_ops(big) > MAX_OPS
    assert simplify_expr(big) == big
    assert called == []  # not even tried
    small = sympy.sin(g) ** 2 + sympy.cos(g) ** 2
    assert simplify_expr(small) == 1 and called == [small]
    # the same expression above a lower bound is left as it is, untried
    assert simplify_expr(small, max_ops=sympy.count_ops(small) - 1) == small
    assert called == [small]


def test_display_rounds_floats():
    sym = S.simplify(parse_program("update = g * 0.123456789"))
    assert sym.text() == "update = 0.1235*g"


def test_simplification_leaves_the_callers_alarm_running():
    import signal

    fired = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        x = sympy.Symbol("x")
        assert simplify_expr(sympy.sin(x) ** 2 + sympy.cos(x) ** 2) == 1
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < remaining <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired == []

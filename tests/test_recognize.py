"""Recognition of known optimizers up to constants, verified numerically."""


import pytest

from evoprog.programs import recognize
from evoprog.programs.known import KNOWN
from evoprog.programs.program import parse_program
from evoprog.programs.space import OptimizerSpace as S
from evoprog.programs.symbolic import to_sympy

PROGRAM_4 = ("m = interp(g, v, 0.899); m2 = m * m; v = interp(g, m, 1.109); "
             "abs_m = sqrt(m2); update = m / abs_m; wd = w * 0.4602; update = update + wd; "
             "lr = lr * 0.0002; m = cosh(update); update = update * lr")
EXPLICIT_LION = ("lr = lr * 0.0003\nc = m * 0.9\nt = g * 0.1\nc = c + t\nupdate = sign(c)\n"
                 "wd = w * 0.5\nupdate = update + wd\nupdate = update * lr\n"
                 "m2 = m * 0.99\nt2 = g * 0.01\nm = m2 + t2")


def test_lion_interp_form():
    r = S.recognize(KNOWN["lion"].program(weight_decay=0.1))
    assert r.name == "lion"
    assert r.constants == pytest.approx(
        {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1, "lr": 1e-4})


def test_lion_explicit_form():
    r = S.recognize(parse_program(EXPLICIT_LION))
    assert r.name == "lion"
    assert r.constants == pytest.approx(
        {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.5, "lr": 3e-4})


def test_paper_program_4_composes_its_recurrences():
    # m = 0.101 g + 0.899 v;  v = -0.109 g + 1.109 m = 0.003009 g + 0.996991 v.
    r = S.recognize(parse_program(PROGRAM_4))
    assert r.name == "lion"
    assert r.constants["beta1"] == pytest.approx(0.899)
    assert r.constants["beta2"] == pytest.approx(1.109 * 0.899)
    assert r.constants["beta2"] == pytest.approx(0.997, abs=1e-3)
    assert r.constants["weight_decay"] == pytest.approx(0.4602)
    assert r.constants["lr"] == pytest.approx(2e-4)
    assert str(r) == "Lion (beta1=0.899, beta2=0.997, weight_decay=0.4602, lr=0.0002)"


def test_scaled_state_and_scaled_sign_argument_are_still_lion():
    # State kept as 5x the textbook momentum; sign argument scaled by 3.
    program = parse_program("c = m * 0.54\nt = g * 0.3\nc = c + t\nupdate = sign(c)\n"
                            "lr = lr * 0.001\nupdate = update * lr\nm2 = m * 0.99\nt2 = g * 0.05\n"
                            "m = m2 + t2")
    r = S.recognize(program)
    assert r.name == "lion"
    assert r.constants["beta1"] == pytest.approx(0.9)
    assert r.constants["beta2"] == pytest.approx(0.99)


@pytest.mark.parametrize("name", list(KNOWN))
def test_known_programs_are_recognized_with_their_defaults(name):
    r = S.recognize(KNOWN[name].program())
    assert r is not None and r.name == name
    defaults = KNOWN[name].defaults
    assert r.constants == pytest.approx({k: defaults[k] for k in r.constants}, rel=1e-6)


@pytest.mark.parametrize("text, name, constants", [
    # RMSprop with its average of g^2 kept in m at 4x the textbook scale.
    ("m2 = m * 0.9\ng2 = square(g)\ng2 = g2 * 0.4\nm = m2 + g2\nr = sqrt(m)\n"
     "r = r + 2e-6\nupdate = g / r\nlr = lr * 0.006\nupdate = update * lr",
     "rmsprop", {"alpha": 0.9, "eps": 1e-6, "lr": 0.003}),
    # PowerSign with the agreement written as one sign of a product.
    ("m = interp(g, m, 0.8)\nt = g * m\nt = sign(t)\nt = exp(t)\nupdate = t * g\n"
     "lr = lr * 0.2\nupdate = update * lr", "powersign", {"beta": 0.8, "lr": 0.2}),
    ("m = interp(g, m, 0.95)\nt = sign(g)\nu = sign(m)\nt = t * u\nt = t + 2.0\n"
     "update = t * g\nlr = lr * 0.05\nupdate = update * lr", "addsign",
     {"beta": 0.95, "alpha": 2.0, "lr": 0.05}),
])
def test_rmsprop_and_the_agreement_optimizers_written_otherwise(text, name, constants):
    r = S.recognize(parse_program(text))
    assert r is not None and r.name == name
    assert r.constants == pytest.approx(constants, rel=1e-4)


@pytest.mark.parametrize("lr", [1e-4, 1e-9, 1e-13])
def test_the_tolerance_scales_with_the_learning_rate(lr):
    """Updates far below the old absolute tolerance are still told apart: Lion with a
    tiny learning rate is Lion, not Signum."""
    r = S.recognize(KNOWN["lion"].program(lr=lr))
    assert r is not None and r.name == "lion"
    assert r.constants["lr"] == pytest.approx(lr)


def test_seed_and_other_programs():
    r = S.recognize(S.seed())
    assert r.name == "adamw_paper" and r.constants["beta2"] == pytest.approx(0.999)
    assert S.recognize(parse_program("update = cosh(g)")) is None
    # Sign of momentum, but the state is not a plain average: not recognized.
    assert S.recognize(parse_program("m = interp(g, m, 0.9)\nm = m * m\n"
                                     "update = sign(m)")) is None
    # Lion-like but with tanh instead of sign: verification rejects it.
    assert S.recognize(parse_program("c = interp(g, m, 0.9)\nupdate = tanh(c)\n"
                                     "m = interp(g, m, 0.99)")) is None


# An evolved best of a real search: v stays zero (v = |tanh(v / |g|)|), so the update is
# clip(tanh(1e8 * m / 1e-8), 0.001173 * lr) = 0.001173 * lr * sign(m): Signum.
EVOLVED_SIGNUM = """\
m = interp(g, m, 0.6009)
update = m / v
sqrt_v = eps()
wd = soft_sign(v, g)
update = soft_sign(update, sqrt_v)
v = abs(wd)
lr = lr * 0.001173
update = clip(update, lr)
"""


def test_a_state_that_stays_zero_and_a_saturated_sign_are_read_through():
    r = S.recognize(parse_program(EVOLVED_SIGNUM))
    assert r.name == "signum"
    assert r.constants == pytest.approx({"beta": 0.6009, "lr": 0.001173})


@pytest.mark.parametrize("sign", [
    "t = c * 1e9\nupdate = tanh(t)",                     # tanh of a huge multiple
    "a = abs(c)\nupdate = c / a",                        # c / (|c| + 1e-8)
    "t = c * 1e9\none = cos(0.0)\nupdate = clip(t, one)",  # clipped huge multiple
])
def test_lion_with_its_sign_written_otherwise(sign):
    program = parse_program(f"c = interp(g, m, 0.9)\n{sign}\nwd = w * 0.1\n"
                            "update = update + wd\nlr = lr * 0.0003\nupdate = update * lr\n"
                            "m = interp(g, m, 0.99)")
    r = S.recognize(program)
    assert r is not None and r.name == "lion"
    assert r.constants == pytest.approx(
        {"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1, "lr": 3e-4}, rel=1e-6)


@pytest.mark.parametrize("update", [
    "u = soft_sign(c, 0.5)",            # a Lion-K soft sign: not a sign
    "t = tanh(c)\na = abs(t)\nq = c / a\nu = tanh(q)",  # about 0.76 sign(c) near 0 only
    "u = clip(c, 0.01)",                 # clipped, not saturated
])
def test_sign_like_updates_that_are_not_lion(update):
    program = parse_program(f"c = interp(g, m, 0.9)\n{update}\nlr = lr * 0.0003\n"
                            "update = u * lr\nm = interp(g, m, 0.99)")
    assert S.recognize(program) is None



@pytest.mark.parametrize("text", [
    "u = g * 0.0\nupdate = u * lr",                            # SGD at lr = 0
    "m = interp(g, m, 0.9)\nu = m * 0.0\nupdate = u * lr",     # momentum at lr = 0
    "t = clip_by_global_norm(g, m)\nupdate = abs(t)",          # m stays 0: t is 0
])
def test_a_rule_that_never_moves_the_weights_is_no_optimizer(text):
    assert S.recognize(parse_program(text)) is None


# m / (g - g): SymPy reads the division by an exact zero as ``zoo``, while the program
# itself divides by 1e-8 and trains.
DIVIDES_BY_ZERO = ("z = g - g\nm2 = m / z\nm = interp(g, m2, 0.9)\nu = sign(m)\n"
                   "lr = lr * 0.001\nupdate = u * lr")


def test_a_state_with_a_non_finite_coefficient_is_no_family():
    program = S.parse(DIVIDES_BY_ZERO)
    sym = to_sympy(S.prune(program), S.inputs, S.outputs, S.state, simplify=False)
    assert recognize._classify(sym) is None
    # its state grows 1e8-fold a step: a sign of an extrapolation, which no averaging
    # constant in [0, 1] reproduces, so it is no Lion either
    assert S.recognize(program) is None


def test_an_error_in_the_symbolic_route_means_not_recognized_there(monkeypatch):
    def fails(sym):
        raise TypeError("Cannot convert complex to float")

    monkeypatch.setattr(recognize, "_classify", fails)
    r = S.recognize(KNOWN["lion"].program())  # the numeric route still reads it
    assert r is not None and r.name == "lion"


def test_json_constants_drop_floating_point_noise():
    recognition = S.recognize(KNOWN["adamw"].program())
    assert recognition.to_json()["constants"] == {
        "beta1": 0.9, "beta2": 0.999, "eps": 1e-08, "weight_decay": 0.01, "lr": 0.001}

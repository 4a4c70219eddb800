"""Program text form, space validity rules and static analysis."""

from __future__ import annotations

import dataclasses
import random

import pytest

from evoprog.programs import analysis
from evoprog.programs.known import KNOWN, get_known
from evoprog.programs.mutation import mutate
from evoprog.programs.program import (
    Instruction,
    Program,
    ProgramError,
    format_program,
    parse_program,
)
from evoprog.programs.space import ADAMW_SEED, OptimizerSpace, get_space

SPACE = OptimizerSpace


def _random_programs(count: int, chain: int = 12) -> list[Program]:
    """Programs made by repeated mutation from the seed, deterministic."""
    programs = []
    for seed in range(count // chain + 1):
        rng = random.Random(seed)
        program = SPACE.seed()
        for _ in range(chain):
            program, _ = mutate(program, SPACE, rng)
            programs.append(program)
    return programs[:count]


RANDOM_PROGRAMS = _random_programs(300)


# ---------------------------------------------------------------- round trip


def test_seed_parses_to_expected_instructions():
    seed = SPACE.seed()
    assert len(seed) == 9
    assert seed.instructions[0] == Instruction("g2", "square", ("g",))
    assert seed.instructions[1] == Instruction("m", "interp", ("g", "m", 0.9))
    assert seed.instructions[4] == Instruction("update", "div", ("m", "sqrt_v"))
    assert seed.instructions[-1] == Instruction("update", "mul", ("update", "lr"))
    assert seed.constants() == [0.9, 0.999, 0.01, 0.001]
    assert "update" in seed.assigned() and "g" not in seed.assigned()


def test_round_trip_seed():
    seed = SPACE.seed()
    assert parse_program(format_program(seed)) == seed
    assert format_program(seed) == ADAMW_SEED.strip()
    assert str(seed) == format_program(seed)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_round_trip_known(name):
    program = KNOWN[name].program()
    assert parse_program(format_program(program)) == program
    assert SPACE.invalid_reason(program) is None
    listing = SPACE.listing(program)
    assert listing.startswith("def train(w, g, m, v, lr, step):\n")
    assert listing.endswith("\n  return update, m, v")
    assert parse_program(listing) == program


def test_round_trip_random_programs():
    assert len(RANDOM_PROGRAMS) == 300
    assert len({format_program(p) for p in RANDOM_PROGRAMS}) > 150
    for program in RANDOM_PROGRAMS:
        text = format_program(program)
        assert parse_program(text) == program, text
        assert parse_program(SPACE.listing(program)) == program


def test_round_trip_awkward_constants():
    for value in (-0.5, 1e-08, -1e-08, 1e16, -2.5e-12, 0.0, 123456.75, 3.0):
        for program in (
            Program((Instruction("update", "mul", ("g", value)),)),
            Program((Instruction("update", "mul", (value, "g")),)),
            Program((Instruction("update", "interp", ("g", value, value)),)),
            Program((Instruction("update", "sub", (value, value)),)),
        ):
            assert parse_program(format_program(program)) == program, format_program(program)


# ---------------------------------------------------------------- parsing forms


def test_parse_listing_form():
    text = """\
def train(w, g, m, v, lr, step):
  m = interp(g, m, 0.9)
  update = sign(m)
  update = update * lr
  return update, m, v
"""
    program = parse_program(text)
    assert program == Program((
        Instruction("m", "interp", ("g", "m", 0.9)),
        Instruction("update", "sign", ("m",)),
        Instruction("update", "mul", ("update", "lr")),
    ))


def test_parse_semicolons_comments_and_blank_lines():
    text = ("# a comment line\n\nm = g * 0.5 ; update = sign(m)  # trailing\n  ;\n"
            "update = update - lr")
    program = parse_program(text)
    assert program == Program((
        Instruction("m", "mul", ("g", 0.5)),
        Instruction("update", "sign", ("m",)),
        Instruction("update", "sub", ("update", "lr")),
    ))


def test_parse_aliases():
    program = parse_program(
        "a = interpolate(g, m, 0.9)\nb = neg(a)\nc = maximum(a, b)\nd = minimum(c, 1.0)")
    assert [ins.op for ins in program] == ["interp", "negative", "max", "min"]


def test_parse_infix_operators():
    program = parse_program("a = g + m\nb = g - m\nc = g * m\nd = g / m\ne2 = g-m")
    assert [ins.op for ins in program] == ["add", "sub", "mul", "div", "sub"]
    assert program.instructions[4].args == ("g", "m")


def test_parse_constants():
    program = parse_program(
        "a = g * -0.5\nb = 1e-08 + g\nc = g - -2\nd = power(g, 2.5E+3)\ne2 = g * .25\n"
        "f = interp(g, m, +0.1)\nh = g - 1e-3")
    assert [ins.args for ins in program] == [
        ("g", -0.5), (1e-08, "g"), ("g", -2.0), ("g", 2500.0), ("g", 0.25),
        ("g", "m", 0.1), ("g", 0.001)]
    assert all(isinstance(c, float) for c in program.constants())


def test_parse_nullary_ops():
    program = parse_program("a = pi()\nb = e( )\nc = eps()")
    assert [(ins.op, ins.args) for ins in program] == [("pi", ()), ("e", ()), ("eps", ())]


@pytest.mark.parametrize("text, line, fragment", [
    ("a = g * 2\nb = frobnicate(a)", 2, "unknown op"),
    ("a = sqrt(g, m)", 1, "argument"),
    ("a = g * 2\n\nb = interp(g, m)", 3, "argument"),
    ("a = pi(g)", 1, "argument"),
    ("a = g * 2\nb = sqrt(g$)", 2, "expected a variable name or a number"),
    ("a = g ^ 2", 1, "powers are written as calls: square(g)"),
    ("a = g + m + v", 1, "more than one op"),
    ("a = g\n", 1, "'g' alone applies no op"),
    ("a = g * 2\nb sqrt(g)", 2, "expected 'name = op(args)'"),
    ("a = g * 2; b = sqrt(a); c sqrt(b)", 1, "expected"),
    ("3a = sqrt(g)", 1, "invalid variable name"),
    ("a = sqrt(g,)", 1, "expected a variable name or a number"),
    ("a = g * 2\nupdate = g * 1e400", 2, "too large for a float"),
])
def test_malformed_text_names_the_line(text, line, fragment):
    with pytest.raises(ProgramError) as info:
        parse_program(text)
    assert info.value.line == line
    statement = text.splitlines()[line - 1].split(";")[-1].strip()
    assert str(info.value).startswith(f'line {line} "{statement}": ')
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", [
    "update = g * " + "1" * 100_000,  # a number too large for a float
    "update = frob" + "x" * 100_000 + "(g)",  # an unknown op
    "t = " + "g + " * 50_000 + "g",  # several ops
    "1" + "x" * 100_000 + " = sign(g)",  # not a name
], ids=["number", "op", "ops", "name"])
def test_an_error_quotes_a_long_statement_only_in_part(text):
    with pytest.raises(ProgramError) as info:
        parse_program(text)
    assert len(str(info.value)) < 400 and "…" in str(info.value)
    assert str(info.value).startswith('line 1 "') and info.value.source == text


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b", "\x7f"])
def test_a_control_character_is_named(character):
    with pytest.raises(ProgramError) as info:
        parse_program(f"m = interp(g, m, 0.9)\nupdate = sign(m){character}\n")
    assert info.value.line == 2
    assert f"control character U+{ord(character):04X}" in str(info.value)
    assert parse_program("m = interp(g, m, 0.9)\t# a tab is white space\r\n"
                         "update = sign(m)\r\n") == parse_program(
        "m = interp(g, m, 0.9)\nupdate = sign(m)")


@pytest.mark.parametrize("text, message", [
    ("update = -g", "unary minus is written negative(g)"),
    ("update = g * -lr", "unary minus is written negative(lr), on a line of its own"),
    ("update = -sign(g)", "unary minus is written negative(x), on a line of its own"),
    ("update = g ** 2", "powers are written as calls: square(g)"),
    ("update = g**0.5", "powers are written as calls: sqrt(g)"),
    ("update = g ** lr", "power(g, lr), which is |g| ** lr"),
    ("x = g", "'g' alone applies no op: read g itself where x would be read"),
    ("lr = 0.001", "a number alone applies no op"),
    ("update = sign(square(g))", "more than one op: write one op per line, naming each "
                                 "result (e.g. t = square(g), then use t)"),
    ("update = g + m * v", "(e.g. t = m * v, then use t)"),
    ("update = sign(g) * lr", "(e.g. t = sign(g), then use t)"),
    ("update = sgn(g)", "unknown op 'sgn' (did you mean sign, sin?)"),
    ("update = frobnicate(g)", "unknown op 'frobnicate' (README.md, Programs, lists the ops)"),
    ("update = clip(g)", "clip takes 2 arguments, got 1: write clip(x, y)"),
    ("update = pi(g)", "pi takes 0 arguments, got 1: write pi()"),
    ("update = sign(g", "unbalanced parentheses"),
    ("def train(w, g)", "a header is written 'def name(inputs):'"),
    ('"""Evolved7: An optimizer discovered by evoprog.', "this is Python source"),
    ("import torch", "this is Python source"),
    ("from torch import nn", "this is Python source"),
])
def test_unreadable_text_says_what_to_write(text, message):
    with pytest.raises(ProgramError) as info:
        parse_program(text)
    assert message in str(info.value)


def test_space_errors_cite_the_line_of_the_text():
    text = "def train(w, g, m, v, lr):\n  # sign descent\n\n  a = sign(g)\n  update = a * b\n"
    with pytest.raises(ProgramError) as info:
        SPACE.parse(text)
    assert str(info.value) == 'line 5 "update = a * b": reads \'b\' before it is defined'
    assert info.value.line == 5 and info.value.source == "update = a * b"
    with pytest.raises(ProgramError, match=r'^line 2 "g = sign\(g\)": assigns \'g\', an '
                                           "input, which cannot be assigned: give the result "
                                           "a new name"):
        SPACE.parse("m = g * 1.0  # comment\ng = sign(g); update = g * lr")
    # Without text, the same problems name the instruction.
    assert SPACE.invalid_reason(parse_program(text)) == (
        "instruction 2 reads 'b' before it is defined")


def test_layer_subtraction_says_how_to_write_it():
    layer = get_space("layer")
    with pytest.raises(ProgramError, match=r"^line 2 \"y = x - mu\": uses op 'sub', which "
                                           r"is not in the layer space: write n = "
                                           r"negative\(mu\), then y = x \+ n$"):
        layer.parse("mu = batch_mean(x)\ny = x - mu")
    with pytest.raises(ProgramError, match=r"write y = x \+ -1\.0$"):
        layer.parse("y = x - 1.0")


def test_unknown_op_suggestions_come_from_the_space():
    with pytest.raises(ProgramError, match=r"did you mean sigmoid\?"):
        get_space("layer").parse("y = sigmoyd(x)")
    with pytest.raises(ProgramError, match="did you mean sign, sin"):
        SPACE.parse("update = sgn(g)")


LAYER_TEXT = "def layer(x, v0, v1):\n  t = v1 * x\n  s = sigmoid(t)\n  y = x * s\n  return y\n"
OPTIMIZER_TEXT = "update = sign(g)\nupdate = update * lr\n"


def test_a_program_of_the_other_family_is_named():
    with pytest.raises(ProgramError) as info:
        SPACE.parse(LAYER_TEXT)
    assert info.value.looks_like == "layer" and info.value.line is None
    assert str(info.value) == (
        "this program reads x, v1 and assigns y, like a layer program; an optimizer "
        "program reads w, g, m, v, lr, step and assigns update")
    with pytest.raises(ProgramError) as info:
        get_space("layer").parse(OPTIMIZER_TEXT)
    assert info.value.looks_like == "optimizer"
    assert str(info.value).startswith(
        "this program reads g, lr and assigns update, like an optimizer program; a layer "
        "program reads x, v0, v1 and assigns y")
    # A program of the right family with a mistake is not taken for the other family.
    with pytest.raises(ProgramError) as info:
        get_space("layer").parse("y = sign(x)")
    assert info.value.looks_like is None


@pytest.mark.parametrize(
    "text", ["", "   \n\n", "# only a comment\n", "def train(w, g):\n  return"])
def test_empty_program_is_an_error(text):
    with pytest.raises(ProgramError, match="no instructions"):
        parse_program(text)


def test_program_error_is_a_value_error():
    assert issubclass(ProgramError, ValueError)


# ---------------------------------------------------------------- validity


def _reason(text: str, space=SPACE) -> str | None:
    return space.invalid_reason(parse_program(text))


def test_seed_is_valid():
    assert SPACE.invalid_reason(SPACE.seed()) is None
    assert SPACE.parse(ADAMW_SEED) == SPACE.seed()


def test_undefined_read():
    reason = _reason("update = g * t0\nt0 = g * 2.0")
    assert reason is not None and "'t0'" in reason and "instruction 1" in reason
    with pytest.raises(ProgramError, match="t0"):
        SPACE.parse("update = g * t0")


def test_op_outside_space():
    small = dataclasses.replace(SPACE, ops=("mul", "sign"))
    assert _reason("update = sign(g)\nupdate = update * lr", small) is None
    reason = _reason("update = sqrt(g)", small)
    assert reason is not None and "'sqrt'" in reason


@pytest.mark.parametrize("name", ["w", "g", "step"])
def test_assigning_read_only_input(name):
    reason = _reason(f"{name} = g * 2.0\nupdate = g * lr")
    assert reason is not None and repr(name) in reason


def test_lr_m_v_may_be_assigned():
    assert _reason("lr = lr * 0.1\nm = g * 1.0\nv = m * m\nupdate = v * lr") is None


def test_missing_update():
    reason = _reason("m = interp(g, m, 0.9)")
    assert reason is not None and "'update'" in reason and "never assigns" in reason


def test_update_must_depend_on_g():
    reason = _reason("update = w * 0.1\nm = g * 1.0")
    assert reason is not None and "'g'" in reason and "depend" in reason
    # m only ever reads itself, so it never carries g.
    assert _reason("m = m * 0.9\nupdate = m * lr\nt0 = g * 2.0") is not None


def test_dependence_through_state_from_an_earlier_step():
    # update reads m before m is written; m carries g into the next step.
    assert _reason("update = m * 0.1\nm = g * 1.0") is None
    # Two hops through state: v gets g via m, update reads v before either is written.
    assert _reason("update = v * 0.1\nv = m * 1.0\nm = g * 1.0") is None
    # But not through a non-state variable: t0 is recomputed every step.
    assert _reason("t0 = w * 1.0\nupdate = t0 * 0.1\nt1 = g * 1.0") is not None


def test_too_long():
    body = "update = g * 1.0\n" + "update = update * 1.0\n" * (SPACE.max_length - 1)
    assert _reason(body) is None
    reason = _reason(body + "update = update * 1.0")
    assert reason is not None and "too long" in reason


def test_space_parse_raises_on_invalid():
    with pytest.raises(ProgramError, match="depend"):
        SPACE.parse("update = w * 0.1")


def test_get_space_and_known():
    assert get_space("optimizer") is SPACE
    with pytest.raises(ProgramError):
        get_space("no_such_family")
    assert get_known("AdamW") is KNOWN["adamw"]
    with pytest.raises(ProgramError):
        get_known("no_such_program")


def test_known_program_substitutes_defaults_and_overrides():
    program = KNOWN["lion"].program()
    assert program.instructions[0] == Instruction("lr", "mul", ("lr", 1e-4))
    assert program.instructions[1] == Instruction("c", "interp", ("g", "m", 0.9))
    overridden = KNOWN["lion"].program(beta1=0.5, lr=0.3)
    assert overridden.instructions[0] == Instruction("lr", "mul", ("lr", 0.3))
    assert overridden.instructions[1] == Instruction("c", "interp", ("g", "m", 0.5))
    assert not any(name in ins.reads() for ins in program
                   for name in ("beta1", "beta2", "weight_decay"))


# ---------------------------------------------------------------- dependencies


def test_dependencies_fixpoint():
    program = parse_program("update = v * 0.1\nv = m * 1.0\nm = g * 1.0")
    deps = analysis.dependencies(program, SPACE.inputs, SPACE.state)
    assert "g" in deps["update"]
    assert deps["m"] == {"g"}
    assert "w" not in deps["update"]
    single = analysis.dependencies(parse_program("update = w * lr"), SPACE.inputs, SPACE.state)
    assert single["update"] == {"w", "lr"}


def test_undefined_reads_lists_all():
    program = parse_program("a = x * g\nb = a * y\nc = b * a")
    assert analysis.undefined_reads(program, SPACE.inputs) == [(0, "x"), (1, "y")]


# ---------------------------------------------------------------- pruning


def test_prune_removes_dead_code():
    program = parse_program(
        "t0 = sqrt(w)\nupdate = g * lr\nt1 = t0 * 2.0\nt0 = update * 3.0")
    assert SPACE.prune(program) == parse_program("update = g * lr")


def test_prune_keeps_state_read_in_the_next_step():
    text = "update = m * lr\nm = interp(g, m, 0.9)"
    program = parse_program(text)
    assert SPACE.prune(program) == program
    # The state chain reaches update only through v then m, across two steps.
    chain = parse_program("update = v * lr\nt0 = g * 2.0\nv = m * 1.0\nm = t0 * 1.0\n"
                          "t1 = w * 5.0")
    assert SPACE.prune(chain) == parse_program(
        "update = v * lr\nt0 = g * 2.0\nv = m * 1.0\nm = t0 * 1.0")


def test_prune_drops_state_update_nothing_reads():
    program = parse_program("update = g * lr\nm = interp(g, m, 0.9)\nv = square(g)")
    assert SPACE.prune(program) == parse_program("update = g * lr")


def test_prune_drops_overwritten_assignment():
    program = parse_program("m = g * 2.0\nm = g * 3.0\nupdate = m * lr")
    assert SPACE.prune(program) == parse_program("m = g * 3.0\nupdate = m * lr")


def test_prune_keeps_the_whole_seed():
    seed = SPACE.seed()
    assert SPACE.prune(seed) == seed
    assert analysis.live_instructions(seed, SPACE.outputs, SPACE.state) == [True] * len(seed)


# ---------------------------------------------------------------- structural hash


def _hash(text: str) -> str:
    return SPACE.hash(parse_program(text))


BASE = "m = interp(g, m, 0.9)\nt0 = sign(m)\nt1 = w * 0.01\nupdate = t0 + t1\nupdate = update * lr"


def test_hash_is_a_stable_string():
    """Stored in the database and compared by later processes (resume, the cache): the
    same in another process, whatever Python's per-process string hashing does."""
    import os
    import subprocess
    import sys

    assert isinstance(_hash(BASE), str) and len(_hash(BASE)) == 16
    script = ("import sys\nfrom evoprog.programs.program import parse_program\n"
              "from evoprog.programs.space import OptimizerSpace\n"
              "print(OptimizerSpace.hash(parse_program(sys.argv[1])))")
    other = subprocess.run([sys.executable, "-c", script, BASE], capture_output=True,
                           text=True, check=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == _hash(BASE)


def test_hash_ignores_dead_code():
    assert _hash(BASE + "\nt9 = sqrt(g)\nv = square(g)") == _hash(BASE)
    assert _hash("t9 = cos(w)\n" + BASE) == _hash(BASE)


def test_hash_ignores_variable_names():
    renamed = BASE.replace("t0", "direction").replace("t1", "decay")
    assert renamed != BASE
    assert _hash(renamed) == _hash(BASE)


def test_hash_ignores_order_of_independent_statements():
    reordered = ("t1 = w * 0.01\nm = interp(g, m, 0.9)\nt0 = sign(m)\n"
                 "update = t0 + t1\nupdate = update * lr")
    assert _hash(reordered) == _hash(BASE)


def test_hash_ignores_commutative_argument_order():
    swapped = ("m = interp(g, m, 0.9)\nt0 = sign(m)\nt1 = 0.01 * w\nupdate = t1 + t0\n"
               "update = lr * update")
    assert _hash(swapped) == _hash(BASE)
    assert _hash("update = max(g, m)") == _hash("update = max(m, g)")
    assert _hash("update = max(g, m)") != _hash("update = min(g, m)")
    assert _hash("update = dot(g, w)") == _hash("update = dot(w, g)")


def test_hash_respects_non_commutative_argument_order():
    assert _hash("update = g - m") != _hash("update = m - g")
    assert _hash("update = g / m") != _hash("update = m / g")
    assert _hash("update = interp(g, m, 0.9)") != _hash("update = interp(m, g, 0.9)")


def test_hash_changes_with_constant_or_op():
    assert _hash(BASE.replace("0.9", "0.95")) != _hash(BASE)
    assert _hash(BASE.replace("0.01", "0.02")) != _hash(BASE)
    assert _hash(BASE.replace("sign(m)", "tanh(m)")) != _hash(BASE)
    assert _hash(BASE.replace("t0 + t1", "t0 - t1")) != _hash(BASE)


def test_hash_distinguishes_reading_state_before_and_after_update():
    before = "update = m * lr\nm = interp(g, m, 0.9)"
    after = "m = interp(g, m, 0.9)\nupdate = m * lr"
    assert _hash(before) != _hash(after)


def test_hash_includes_live_state_updates():
    assert (_hash("update = m * lr\nm = interp(g, m, 0.9)")
            != _hash("update = m * lr\nm = interp(g, m, 0.8)"))


def test_hash_includes_family():
    other = dataclasses.replace(SPACE, family="other")
    program = parse_program(BASE)
    assert other.hash(program) != SPACE.hash(program)


def test_seed_hash_equals_known_adamw_paper():
    assert SPACE.hash(SPACE.seed()) == SPACE.hash(KNOWN["adamw_paper"].program())
    assert SPACE.hash(SPACE.seed()) != SPACE.hash(KNOWN["adamw"].program())


def test_known_programs_have_distinct_hashes():
    hashes = {name: SPACE.hash(k.program()) for name, k in KNOWN.items()}
    assert len(set(hashes.values())) == len(hashes)


def test_hash_and_prune_remember_programs_by_identity_not_equality():
    """Both remember recent answers; equal programs can still differ in text (0.0 and
    -0.0 compare equal), so an equal program must never get another's answer."""
    zero, negative_zero = parse_program("update = g * 0.0"), parse_program("update = g * -0.0")
    assert zero == negative_zero
    assert SPACE.hash(zero) != SPACE.hash(negative_zero)
    assert format_program(SPACE.prune(zero)) == "update = g * 0.0"
    assert format_program(SPACE.prune(negative_zero)) == "update = g * -0.0"
    for program in RANDOM_PROGRAMS[:60]:
        copy = parse_program(format_program(program))  # a new object: computed afresh
        assert copy is not program
        assert SPACE.hash(program) == SPACE.hash(copy)
        assert SPACE.prune(program) == SPACE.prune(copy)


def test_value_hashes_share_equal_subexpressions():
    values = analysis.value_hashes(parse_program("a = g * w\nb = w * g\nc = g - w"),
                                   SPACE.inputs)
    assert values["a"] == values["b"] != values["c"]
    assert values["g"] == "in:g"


def test_instruction_reads_input_first():
    program = parse_program("update = m * lr\nm = interp(g, m, 0.9)")
    assert analysis.instruction_reads_input_first(program, "m") == program.instructions[0]
    written_first = parse_program("m = g * 1.0\nupdate = m * lr")
    assert analysis.instruction_reads_input_first(written_first, "m") is None
    assert analysis.instruction_reads_input_first(written_first, "v") is None

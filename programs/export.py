"""Export an optimizer program as a standalone ``.py`` file: a ``torch.optim.Optimizer``.

The generated file imports only ``torch`` (and ``math`` or ``warnings`` where needed), so it can
be copied into any project. Every instruction becomes one line of torch code with the
interpreter's exact (safe) semantics, from the ``OP_CODE`` table below.

Two shapes of ``step()`` are generated. Programs of elementwise ops run in a loop over
the parameters, each tensor in its own shape, like ``torch.optim`` or lion-pytorch, and
have a foreach path as ``torch.optim`` does (``_step_foreach``: the same program on lists
of tensors with torch's multi-tensor ``torch._foreach_*`` kernels, the default on GPUs).
Programs that use per-tensor or global reductions (``norm``, ``global_norm``,
``orthogonalize``, ...) run once per group on all its parameters laid end to end, as the
search ran them, with small helper functions for the reductions emitted into the file;
those with a global reduction run once on every group's parameters together, each
group's settings (``lr``, hyperparameters) reaching its own parameters' segment.

Scalars (``lr``, hyperparameters, the per-parameter ``step``) stay python numbers where
the ops allow it, so known optimizers read like their papers (``abs(beta1) ** step``);
an op that needs a tensor gets its python arguments as 0-d tensors of the parameters'
dtype.
"""

from __future__ import annotations

import builtins
import inspect
import keyword
import math
import re
import string
import textwrap
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .analysis import instruction_reads_input_first, undefined_read_error
from .known import KnownProgram
from .ops import OPS, across_parameters, newton_schulz, per_kind_note
from .program import Instruction, Program, ProgramError, format_program
from .space import OptimizerSpace

__all__ = ["OP_CODE", "OpCode", "check_class_name", "export_known", "export_program",
           "export_source", "fold_lr_scale", "lift_constants", "reads_learning_rate",
           "rename_variables"]


@dataclass(frozen=True)
class OpCode:
    """How one op is written in generated code.

    Templates are ``str.format`` strings over the op's arguments. ``{i}`` inserts the
    argument as is (names and numbers, used with operators); ``{i:t}`` makes a python
    number a 0-d tensor, for torch functions that accept only tensors; ``{i:abs}`` is
    ``abs(x)`` or ``torch.abs(x)``. ``python`` is used when every argument is a python
    number (it must not need tensors); without it such arguments become 0-d tensors.
    ``helpers`` are the helper functions the tensor template calls, ``python_helpers``
    those the python template calls.
    """

    tensor: str
    python: str | None = None
    helpers: tuple[str, ...] = ()
    python_helpers: tuple[str, ...] = ()


def _torch(fn: str) -> OpCode:
    return OpCode(f"torch.{fn}({{0}})")


OP_CODE: dict[str, OpCode] = {
    "pi": OpCode("math.pi", "math.pi"),
    "e": OpCode("math.e", "math.e"),
    "eps": OpCode("1e-8", "1e-8"),
    "abs": OpCode("torch.abs({0})", "abs({0})"),
    "cos": _torch("cos"),
    "sin": _torch("sin"),
    "tan": _torch("tan"),
    "arcsin": OpCode("torch.asin(torch.clamp({0}, -1.0, 1.0))"),
    "arccos": OpCode("torch.acos(torch.clamp({0}, -1.0, 1.0))"),
    "arctan": _torch("atan"),
    "sinh": _torch("sinh"),
    "cosh": _torch("cosh"),
    "tanh": _torch("tanh"),
    "arcsinh": _torch("asinh"),
    "arccosh": OpCode("torch.acosh(torch.clamp({0}, min=1.0))"),
    "arctanh": OpCode("torch.atanh(torch.clamp({0}, -1 + 1e-6, 1 - 1e-6))"),
    "exp": _torch("exp"),
    "exp2": _torch("exp2"),
    "exp10": OpCode("torch.pow(10.0, {0})"),
    "expm1": _torch("expm1"),
    "log": OpCode("torch.log(torch.abs({0}))"),
    "log10": OpCode("torch.log10(torch.abs({0}))"),
    "log2": OpCode("torch.log2(torch.abs({0}))"),
    "log1p": OpCode("torch.log1p(torch.abs({0}))"),
    "square": OpCode("torch.square({0})", "{0} * {0}"),
    "sqrt": OpCode("torch.sqrt(torch.abs({0}))", "math.sqrt(abs({0}))"),
    "cube": OpCode("{0} * {0} * {0}", "{0} * {0} * {0}"),
    "cbrt": OpCode("torch.sign({0}) * torch.abs({0}) ** (1 / 3)"),
    "sign": _torch("sign"),
    "reciprocal": OpCode("1.0 / ({0} + 1e-8)", "_div(1.0, {0} + 1e-8)",
                         python_helpers=("_div",)),
    "norm": OpCode("_norm({0:t}, shapes)", helpers=("_norm",)),
    "invert": OpCode("1 - {0}", "1 - {0}"),
    "negative": OpCode("-{0}", "-{0}"),
    "global_norm": OpCode("_global_norm({0:t}, shapes)", helpers=("_global_norm",)),
    "interp": OpCode("torch.lerp({0:t}, {1:t}, {2})", "(1 - {2}) * {0} + {2} * {1}"),
    "dot": OpCode("_dot({0:t}, {1:t}, shapes)", helpers=("_dot",)),
    "cosine_sim": OpCode("_cosine_sim({0:t}, {1:t}, shapes)", helpers=("_cosine_sim",)),
    "clip_by_global_norm": OpCode("_clip_by_global_norm({0:t}, {1:t}, shapes)",
                                  helpers=("_clip_by_global_norm",)),
    "power": OpCode("{0:abs} ** {1}", "_power({0}, {1})", python_helpers=("_power",)),
    "add": OpCode("{0} + {1}", "{0} + {1}"),
    "sub": OpCode("{0} - {1}", "{0} - {1}"),
    "mul": OpCode("{0} * {1}", "{0} * {1}"),
    "div": OpCode("{0} / ({1} + 1e-8)", "_div({0}, {1} + 1e-8)", python_helpers=("_div",)),
    "max": OpCode("torch.maximum({0:t}, {1:t})", "_max({0}, {1})", python_helpers=("_max",)),
    "min": OpCode("torch.minimum({0:t}, {1:t})", "_min({0}, {1})", python_helpers=("_min",)),
    "soft_sign": OpCode("torch.tanh({0} / ({1:abs} + 1e-8))"),
    "clip": OpCode("torch.clamp({0:t}, -{1:abs}, {1:abs})"),
    "l2_normalize": OpCode("_l2_normalize({0:t}, shapes)", helpers=("_l2_normalize",)),
    "orthogonalize": OpCode("_orthogonalize({0:t}, shapes)", helpers=("_orthogonalize",)),
}


def _foreach_unary(fn: str, inner: str = "{0}") -> str:
    return f"torch._foreach_{fn}({inner})"


_ABS = "torch._foreach_abs({0})"
# The foreach path's multi-tensor form of an op, keyed by (op, kinds of its arguments):
# L a list of tensors (one per parameter), N a python number. Other ops and kinds run as a
# list comprehension of the op's tensor template.
FOREACH_CODE: dict[tuple[str, str], str] = {
    **{(op, "L"): _foreach_unary(op) for op in (
        "abs", "cos", "sin", "tan", "sinh", "cosh", "tanh", "exp", "expm1", "sign")},
    ("arctan", "L"): _foreach_unary("atan"),
    **{(op, "L"): _foreach_unary(op, _ABS) for op in ("log", "log10", "log2", "log1p",
                                                        "sqrt")},
    ("square", "L"): "torch._foreach_mul({0}, {0})",
    ("cube", "L"): "torch._foreach_mul(torch._foreach_mul({0}, {0}), {0})",
    ("negative", "L"): "torch._foreach_neg({0})",
    ("invert", "L"): "torch._foreach_add(torch._foreach_neg({0}), 1.0)",
    ("reciprocal", "L"): "torch._foreach_reciprocal(torch._foreach_add({0}, 1e-8))",
    **{(op, kinds): f"torch._foreach_{fn}({{0}}, {{1}})" for op, fn in (
        ("add", "add"), ("mul", "mul"), ("max", "maximum"), ("min", "minimum"))
       for kinds in ("LL", "LN")},
    **{(op, "NL"): f"torch._foreach_{fn}({{1}}, {{0}})" for op, fn in (
        ("add", "add"), ("mul", "mul"), ("max", "maximum"), ("min", "minimum"))},
    ("sub", "LL"): "torch._foreach_sub({0}, {1})",
    ("sub", "LN"): "torch._foreach_sub({0}, {1})",
    ("div", "LL"): "torch._foreach_div({0}, torch._foreach_add({1}, 1e-8))",
    ("div", "LN"): "torch._foreach_div({0}, {1} + 1e-8)",
    ("power", "LL"): f"torch._foreach_pow({_ABS}, {{1}})",
    ("power", "LN"): f"torch._foreach_pow({_ABS}, {{1}})",
    ("power", "NL"): "torch._foreach_pow(abs({0}), {1})",
    ("soft_sign", "LN"): "torch._foreach_tanh(torch._foreach_div({0}, abs({1}) + 1e-8))",
    ("soft_sign", "LL"): "torch._foreach_tanh(torch._foreach_div({0}, torch._foreach_add("
                         "torch._foreach_abs({1}), 1e-8)))",
    ("clip", "LN"): "torch._foreach_clamp_max(torch._foreach_clamp_min({0}, -abs({1})), "
                    "abs({1}))",
    ("interp", "LLN"): "torch._foreach_lerp({0}, {1}, {2})",
    ("interp", "LLL"): "torch._foreach_lerp({0}, {1}, {2})",
}
_ELEMENT_NAMES = ("x_", "y_", "z_")  # a comprehension's per-parameter tensors

# Helpers: (source, helpers it calls). Emitted in this order, only when used.
_HELPERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "_power": ('''\
def _power(x: float, y: float) -> float:
    """abs(x) ** y for python numbers, inf where a tensor gives inf instead of raising
    (zero to a negative power, overflow)."""
    try:
        return abs(x) ** y
    except (ZeroDivisionError, OverflowError):
        return math.inf
''', ()),
    "_div": ('''\
def _div(x: float, y: float) -> float:
    """x / y for python numbers, inf or nan where a tensor gives them instead of raising
    (a zero denominator)."""
    try:
        return x / y
    except ZeroDivisionError:
        if x == 0 or x != x:
            return math.nan
        return math.copysign(math.inf, x) * math.copysign(1.0, y)
''', ()),
    "_max": ('''\
def _max(x: float, y: float) -> float:
    """The larger of two python numbers, nan if either is (as torch.maximum)."""
    return math.nan if math.isnan(x) or math.isnan(y) else max(x, y)
''', ()),
    "_min": ('''\
def _min(x: float, y: float) -> float:
    """The smaller of two python numbers, nan if either is (as torch.minimum)."""
    return math.nan if math.isnan(x) or math.isnan(y) else min(x, y)
''', ()),
    "_flatten": ('''\
def _flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors laid end to end in one flat tensor."""
    return torch.cat([t.reshape(-1) for t in tensors])
''', ()),
    "_setting": ('''\
def _setting(members: list[tuple[torch.Tensor, dict]], name: str) -> torch.Tensor:
    """A group setting for parameters of several groups laid end to end: a 0-d tensor
    where their groups agree, else each parameter's value repeated over its segment."""
    values = [group[name] for _, group in members]
    if all(value == values[0] for value in values):
        return members[0][0].new_tensor(values[0])
    return torch.cat([p.new_full((p.numel(),), group[name]) for p, group in members])
''', ()),
    "_unflatten": ('''\
def _unflatten(x: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor]:
    """Each parameter's segment of a flat tensor, in its own shape (0-d x applies to all)."""
    sizes = [s.numel() for s in shapes]
    parts = x.expand(sum(sizes)).split(sizes)
    return [part.reshape(shape) for part, shape in zip(parts, shapes, strict=True)]
''', ()),
    "_segment_sum": ('''\
def _segment_sum(x: torch.Tensor, shapes: list[torch.Size]) -> torch.Tensor:
    """Each parameter's sum, repeated over that parameter's segment."""
    sizes = [s.numel() for s in shapes]
    parts = x.expand(sum(sizes)).split(sizes)
    return torch.cat([part.sum().expand(n) for part, n in zip(parts, sizes, strict=True)])
''', ()),
    "_norm": ('''\
def _norm(x: torch.Tensor, shapes: list[torch.Size]) -> torch.Tensor:
    """L2 norm of each parameter's segment."""
    return torch.sqrt(_segment_sum(x * x, shapes))
''', ("_segment_sum",)),
    "_global_norm": ('''\
def _global_norm(x: torch.Tensor, shapes: list[torch.Size]) -> torch.Tensor:
    """L2 norm over all the given parameters together."""
    return torch.sqrt((x.expand(sum(s.numel() for s in shapes)) ** 2).sum())
''', ()),
    "_dot": ('''\
def _dot(x: torch.Tensor, y: torch.Tensor, shapes: list[torch.Size]) -> torch.Tensor:
    """Inner product of each parameter's segments."""
    return _segment_sum(x * y, shapes)
''', ("_segment_sum",)),
    "_cosine_sim": ('''\
def _cosine_sim(x: torch.Tensor, y: torch.Tensor, shapes: list[torch.Size]) -> torch.Tensor:
    """Cosine similarity of each parameter's segments."""
    return _dot(x, y, shapes) / (_norm(x, shapes) * _norm(y, shapes) + 1e-8)
''', ("_dot", "_norm")),
    "_clip_by_global_norm": ('''\
def _clip_by_global_norm(x: torch.Tensor, c: torch.Tensor,
                         shapes: list[torch.Size]) -> torch.Tensor:
    """x scaled down so that its global norm is at most |c|."""
    return x * torch.clamp(torch.abs(c) / (_global_norm(x, shapes) + 1e-8), max=1.0)
''', ("_global_norm",)),
    "_l2_normalize": ('''\
def _l2_normalize(x: torch.Tensor, shapes: list[torch.Size]) -> torch.Tensor:
    """Each parameter's segment divided by its L2 norm."""
    return x / (_norm(x, shapes) + 1e-8)
''', ("_norm",)),
    # The same iteration the search ran, copied from its source.
    "_newton_schulz": (inspect.getsource(newton_schulz).replace(
        "def newton_schulz(", "def _newton_schulz(", 1), ()),
    "_orthogonalize": ('''\
def _orthogonalize(x: torch.Tensor, shapes: list[torch.Size]) -> torch.Tensor:
    """Orthogonalize each matrix parameter's segment; vector segments are normalized."""
    sizes = [s.numel() for s in shapes]
    parts = []
    for part, shape in zip(x.expand(sum(sizes)).split(sizes), shapes, strict=True):
        if len(shape) >= 2:
            matrix = part.reshape(shape[0], shape[1:].numel())  # (0, n) has 0 rows
            parts.append(_newton_schulz(matrix).reshape(-1))
        else:
            parts.append(part / (part.norm() + 1e-8))
    return torch.cat(parts)
''', ("_newton_schulz",)),
}

_INPUTS = OptimizerSpace.inputs
_TENSOR_INPUTS = ("w", "g", "m", "v")
_STATE = OptimizerSpace.state
# Names the generated step() uses itself; program variables that clash are renamed.
_LOCALS = ("torch", "math", "self", "closure", "loss", "group", "by_kind", "kind", "kinds",
           "members", "params", "p",
           "state", "shapes", "steps", "updates", "new_m", "new_v", "i", "defaults",
           "foreach", "new", "scalar", *_ELEMENT_NAMES)
_PYTHON_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(
    dir(builtins))
_RESERVED = _PYTHON_NAMES | frozenset(_LOCALS) | frozenset(_HELPERS)


def fold_lr_scale(program: Program) -> tuple[Program, float | None]:
    """Drop the program's lr scale ``lr = lr * c`` and return ``c``.

    The search feeds the schedule's value as ``lr``, so an evolved program sets its own
    learning rate by scaling it; exported, that scale is the constructor's ``lr``. Only
    the first instruction reading the input ``lr`` qualifies, with a finite c >= 0.
    """
    for i, ins in enumerate(program.instructions):
        if "lr" in ins.reads():
            if ins.out == "lr" and ins.op == "mul":
                a, b = ins.args
                scale = b if a == "lr" else a if b == "lr" else None
                if isinstance(scale, float) and math.isfinite(scale) and scale >= 0.0:
                    rest = program.instructions[:i] + program.instructions[i + 1:]
                    return Program(rest), scale
            return program, None
        if ins.out == "lr":
            return program, None
    return program, None


# Names an exported file uses itself: a class named so would shadow them.
_FILE_NAMES = frozenset({"torch", "nn", "math"})


def check_class_name(name: str) -> None:
    """Raise ProgramError unless ``name`` can name the class of an exported file: a
    python identifier, not a keyword, not private, not a name the file uses itself."""
    if not name.isidentifier() or name in _PYTHON_NAMES or name in _FILE_NAMES \
            or name.startswith("_"):
        raise ProgramError(
            f"{name!r} cannot name a class in the exported file (a python identifier that "
            f"is not a keyword or a builtin such as abs or max, does not start with '_' "
            f"and is not torch, nn or math)")


def reads_learning_rate(program: Program) -> bool:
    """Whether the exported optimizer's ``lr`` changes its updates: False for a program
    that, once pruned and its lr scale folded, never reads the ``lr`` input (it
    overwrites it, or its update does not depend on it)."""
    body, _ = fold_lr_scale(OptimizerSpace.prune(program))
    return instruction_reads_input_first(body, "lr") is not None


def lift_constants(program: Program, prefix: str = "c") -> tuple[Program, dict[str, float]]:
    """Replace each distinct constant by a name ``c1, c2, ...`` (order of first use), so
    the exported optimizer exposes it as a tunable hyperparameter."""
    names: dict[str, str] = {}
    values: dict[str, float] = {}
    instructions = []
    for ins in program.instructions:
        args = []
        for a in ins.args:
            if not isinstance(a, str):
                key = repr(float(a))
                if key not in names:
                    names[key] = f"{prefix}{len(names) + 1}"
                    values[names[key]] = float(a)
                a = names[key]
            args.append(a)
        instructions.append(Instruction(ins.out, ins.op, tuple(args)))
    return Program(tuple(instructions)), values


@dataclass(frozen=True)
class _Value:
    """A generated expression and whether it is a tensor (else a python number)."""

    expr: str
    tensor: bool


class _CodeFormatter(string.Formatter):
    def __init__(self, like: str):
        super().__init__()
        self.like = like

    def format_field(self, value: _Value, format_spec: str) -> str:
        if format_spec == "":
            return value.expr
        if format_spec == "t":
            return value.expr if value.tensor else f"{self.like}.new_tensor({value.expr})"
        if format_spec == "abs":
            return f"torch.abs({value.expr})" if value.tensor else f"abs({value.expr})"
        raise ValueError(f"unknown format {format_spec!r} in an op template")


def _literal(value: float) -> str:
    """A float as python source; negative numbers parenthesized so they are atoms."""
    value = float(value)
    if not math.isfinite(value):
        return f'float("{value}")'
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


def _float_default(value: float) -> str:
    value = float(value)
    return repr(value) if math.isfinite(value) else f'float("{value}")'


def _render(ins: Instruction, args: list[_Value], like: str) -> _Value:
    """One instruction's right-hand side, and whether its value is a tensor."""
    code = OP_CODE[ins.op]
    if not any(a.tensor for a in args) and code.python is not None:
        return _Value(code.python.format(*[a.expr for a in args]), False)
    if not any(a.tensor for a in args):
        args = [_Value(f"{like}.new_tensor({a.expr})", True) for a in args]
    return _Value(_CodeFormatter(like).format(code.tensor, *args), True)


def _render_foreach(ins: Instruction, args: list[_Value]) -> _Value:
    """One instruction on the foreach path; ``tensor`` means a list of tensors there.
    Python numbers stay python numbers (an op without a python form runs on a float64
    0-d tensor named ``scalar``)."""
    code = OP_CODE[ins.op]
    if not any(a.tensor for a in args):
        if code.python is not None:
            return _Value(code.python.format(*[a.expr for a in args]), False)
        zero_d = [_Value(f"scalar.new_tensor({a.expr})", True) for a in args]
        return _Value(f"float({_CodeFormatter('scalar').format(code.tensor, *zero_d)})",
                      False)
    kinds = "".join("L" if a.tensor else "N" for a in args)
    template = FOREACH_CODE.get((ins.op, kinds))
    if template is not None:
        return _Value(template.format(*[a.expr for a in args]), True)
    lists = [i for i, a in enumerate(args) if a.tensor]
    elements = [_Value(_ELEMENT_NAMES[i], True) if a.tensor else a
                for i, a in enumerate(args)]
    expr = _CodeFormatter(_ELEMENT_NAMES[lists[0]]).format(code.tensor, *elements)
    names = ", ".join(_ELEMENT_NAMES[i] for i in lists)
    sources = ", ".join(args[i].expr for i in lists)
    source = sources if len(lists) == 1 else f"zip({sources})"
    return _Value(f"[{expr} for {names} in {source}]", True)


def _write_body(body: Program, render: Callable[[Instruction, list[_Value]], _Value],
                inputs: dict[str, bool]) -> tuple[list[str], dict[str, bool], set[str]]:
    """The body as python lines, one per instruction written by ``render``; with whether
    each variable is a tensor (``inputs`` says it for the inputs) and the helpers used."""
    tensor = dict(inputs)
    lines: list[str] = []
    helpers: set[str] = set()
    for ins in body.instructions:
        args = [_Value(a, tensor[a]) if isinstance(a, str) else _Value(_literal(a), False)
                for a in ins.args]
        value = render(ins, args)
        tensor[ins.out] = value.tensor
        code = OP_CODE[ins.op]
        helpers.update(code.helpers if value.tensor else code.python_helpers)
        lines.append(f"{ins.out} = {value.expr}")
    return lines, tensor, helpers


def _check_defined(program: Program, inputs: tuple[str, ...]) -> None:
    error = undefined_read_error(program, inputs)
    if error:
        raise ProgramError(error)


def rename_variables(program: Program, fixed: Collection[str],
                     reserved: Collection[str]) -> Program:
    """Rename program variables that would clash with python keywords, builtins or
    ``reserved`` (the names the generated code uses itself), so any valid program exports
    to valid python. Names in ``fixed`` (inputs, outputs, hyperparameters) are kept; a
    new name is never one the program already uses, so two variables stay two."""
    fixed = set(fixed)
    taken = fixed | program.read() | program.assigned()
    clash = _PYTHON_NAMES.union(reserved)
    mapping: dict[str, str] = {}
    for name in sorted(taken - fixed):
        if name in clash:
            new = name + "_"
            while new in clash or new in taken:
                new += "_"
            mapping[name] = new
            taken.add(new)
    if not mapping:
        return program
    return Program(tuple(
        Instruction(mapping.get(ins.out, ins.out), ins.op,
                    tuple(mapping.get(a, a) if isinstance(a, str) else a for a in ins.args))
        for ins in program.instructions))


def _docstring(text: str, indent: str = "") -> list[str]:
    # Escaped so that any doc text (quotes, backslashes) gives a valid string literal.
    text = text.strip().replace("\\", "\\\\").replace('"', '\\"')
    lines = text.splitlines() or [""]
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    out = [f'{indent}"""{lines[0]}']
    out += [f"{indent}{line}" if line.strip() else "" for line in lines[1:]]
    return out + [f'{indent}"""']


def _dict_lines(name: str, items: list[str], indent: str) -> list[str]:
    """``name = {items}`` on one line when it fits in 100 columns, else one item per line."""
    one = f"{indent}{name} = {{{', '.join(items)}}}"
    if len(one) <= 100:
        return [one]
    return [f"{indent}{name} = {{"] + [f"{indent}    {item}," for item in items] + [f"{indent}}}"]


def export_source(program: Program, class_name: str,
                  hyperparameters: dict[str, float] | None = None,
                  lr: float | None = None, doc: str = "", lr_multiple: float = 1.0) -> str:
    """Python source of a standalone ``torch.optim.Optimizer`` running ``program``.

    ``hyperparameters=None`` exports an evolved program: its lr scale is folded into the
    ``lr`` default (see ``fold_lr_scale``) and every other constant becomes a
    hyperparameter ``c1, c2, ...``. A dict exports a template that reads those names:
    they become constructor arguments with those defaults, in that order (``lr``, if
    present, is the learning rate and comes first) and constants stay literal. ``lr``
    overrides the default learning rate; else an evolved program's default is multiplied
    by ``lr_multiple`` (the multiple its search scored best at).
    """
    check_class_name(class_name)
    body, hyper, lr_default = _exported_body(program, hyperparameters, lr, lr_multiple)
    flat = any(OPS[ins.op].needs_layout for ins in body.instructions)
    across = across_parameters(ins.op for ins in body.instructions)
    scalars = ("lr", *hyper)
    reads = {name for name in _INPUTS + tuple(hyper)
             if instruction_reads_input_first(body, name) is not None}
    # Python numbers that must be tensors become 0-d tensors of the parameters' dtype.
    like = "p" if not flat else "g" if "g" in reads and "g" not in body.assigned() else \
        "params[0]"
    # With a global reduction all groups run at once: their settings become tensors.
    inputs = {name: name in _TENSOR_INPUTS or (flat and name == "step")
              or (bool(across) and name in scalars) for name in _INPUTS + tuple(hyper)}
    lines, tensor, helpers = _write_body(body, lambda ins, args: _render(ins, args, like),
                                         inputs)
    if not flat:  # the same inputs, each tensor a list of tensors on the foreach path
        foreach_lines, is_list, foreach_helpers = _write_body(body, _render_foreach, inputs)
        helpers |= foreach_helpers
    used_state = [s for s in _STATE if s in reads or s in body.assigned()]
    written_state = [s for s in _STATE if s in body.assigned()]
    group_reads = [s for s in scalars if s in reads]
    # In the per-parameter loop, a scalar the body reassigns must be re-read per parameter.
    per_param_reads = [s for s in group_reads if not flat and s in body.assigned()]

    if flat:
        helpers |= {"_flatten", "_unflatten"}
        step_lines = _flat_step(reads, lines, used_state, written_state, group_reads,
                                tensor, across=bool(across))
        if across:
            helpers.add("_setting")
        method_lines: list[str] = []
    else:
        step_lines = _loop_step(reads, lines, used_state, written_state, group_reads,
                                per_param_reads, tensor)
        method_lines = _foreach_method(reads, foreach_lines, written_state, group_reads,
                                       is_list)
    helpers = _with_dependencies(helpers)
    helper_sources = [src for name, (src, _) in _HELPERS.items() if name in helpers]

    params = [("lr", lr_default)] + list(hyper.items())
    signature = ["self", "params"] + [f"{n}: float = {_float_default(v)}" for n, v in params]
    signature.append("foreach: bool | None = None")
    defaults = [f'"{n}": {n}' for n, _ in params] + ['"foreach": foreach']
    module_doc, class_doc = _docstrings(
        program, class_name, doc, hyper, flat=flat, evolved=hyperparameters is None,
        lr_multiple=lr_multiple if lr is None else 1.0, reads_lr="lr" in reads,
        state=used_state, across=across)

    out = _docstring(module_doc) + [""]
    # The foreach path may need math where the loop path does not (an op on a python
    # number runs as python there, ``math.sqrt(abs(v))``, and on a 0-d tensor here).
    if any(re.search(r"\bmath\.", line) for line in lines + method_lines + helper_sources):
        out += ["import math", ""]
    out += ["import warnings", ""] if across else []
    out += ["import torch", "", ""]
    for src in helper_sources:
        out += src.rstrip("\n").splitlines() + ["", ""]
    out += [f"class {class_name}(torch.optim.Optimizer):"]
    out += _docstring(class_doc, "    ") + [""]
    out += ["    def __init__(", *[f"        {item}," for item in signature], "    ):"]
    out += ["        if not 0.0 <= lr:",
            '            raise ValueError(f"Invalid learning rate: {lr}")']
    out += _dict_lines("defaults", defaults, "        ")
    out += ["        super().__init__(params, defaults)"]
    if across:
        out += ["        kinds = {(p.device, p.dtype) for group in self.param_groups",
                '                 for p in group["params"]}',
                "        if len(kinds) > 1:",
                "            warnings.warn("]
        out += [f'                "{chunk}"' for chunk in
                textwrap.wrap(per_kind_note(across), 76, drop_whitespace=False)]
        out[-1] += ","
        out += ["                stacklevel=2)"]
    out += [""]
    out += ["    @torch.no_grad()",
            "    def step(self, closure=None):",
            '        """Update every parameter that has a gradient; returns closure\'s loss."""',
            "        loss = None",
            "        if closure is not None:",
            "            with torch.enable_grad():",
            "                loss = closure()",
            "        if any(p.grad is not None and p.grad.is_sparse",
            '               for group in self.param_groups for p in group["params"]):',
            f'            raise RuntimeError("{class_name} does not support sparse gradients")',
            ""]
    out += step_lines
    out += ["", "        return loss", ""]
    if method_lines:
        out += method_lines + [""]
    return "\n".join(out)


def _exported_body(program: Program, hyperparameters: dict[str, float] | None,
                   lr: float | None, lr_multiple: float,
                   ) -> tuple[Program, dict[str, float], float]:
    """(the pruned program with names safe in the generated code, its hyperparameters
    and their defaults, the default learning rate), as ``export_source`` describes."""
    body = OptimizerSpace.prune(program)
    if hyperparameters is None:
        body, scale = fold_lr_scale(body)
        _check_defined(body, _INPUTS)
        count = len({repr(float(c)) for c in body.constants()})
        body = rename_variables(body, _INPUTS,
                                _RESERVED | {f"c{k}" for k in range(1, count + 1)})
        body, hyper = lift_constants(body)
        lr_default = lr if lr is not None else \
            (scale if scale is not None else 1.0) * lr_multiple
    else:
        hyper = {k: float(v) for k, v in hyperparameters.items() if k != "lr"}
        lr_default = lr if lr is not None else float(hyperparameters.get("lr", 1.0))
        for name in hyper:
            if not name.isidentifier() or name in _RESERVED or name in _INPUTS:
                raise ValueError(f"{name!r} cannot be a hyperparameter name")
        _check_defined(body, _INPUTS + tuple(hyper))
        body = rename_variables(body, (*_INPUTS, *hyper), _RESERVED)
    if "update" not in body.assigned():
        raise ProgramError("the program never assigns 'update'")
    return body, hyper, lr_default


def _docstrings(program: Program, class_name: str, doc: str, hyper: dict[str, float], *,
                flat: bool, evolved: bool, lr_multiple: float, reads_lr: bool,
                state: list[str], across: list[str]) -> tuple[str, str]:
    """The module's docstring (with the source program) and the class's."""
    summary = doc.strip() or ("An optimizer discovered by evoprog." if evolved
                              else f"The {class_name} optimizer.")
    if not summary.endswith("."):
        summary += "."
    title = summary if summary.startswith(class_name) else f"{class_name}: {summary}"
    module_doc = (f"{title}\n\nGenerated by evoprog from the program:\n\n"
                  + "\n".join("    " + line for line in format_program(program).splitlines())
                  + "\n")
    names = ", ".join(f"``{s}``" for s in state)
    kept = (f"state {names} {'starts' if len(state) == 1 else 'start'} at zero and "
            if state else "")
    class_doc = (f"{summary}\n\nEach step computes ``update`` for every parameter ``w`` from "
                 f"its gradient ``g``\nand applies ``w -= update``; {kept}``step``\ncounts "
                 "1, 2, ....")
    if evolved and hyper:
        class_doc += (f"\n\n{', '.join(hyper)}: the program's constants, exposed as "
                      "hyperparameters.")
    if flat:
        whose = "every group's" if across else "a group's"
        class_doc += ("\n\n``foreach`` is accepted as in torch.optim; this optimizer always "
                      f"updates {whose}\nparameters together, laid end to end.")
    else:
        class_doc += ("\n\n``foreach``: update a group's parameters together with torch's "
                      "multi-tensor kernels\n(None: when they are on a GPU), as in "
                      "torch.optim; else one parameter at a time.")
    if across:
        names = " and ".join(f"``{op}``" for op in across)
        class_doc += "\n\n" + textwrap.fill(
            f"{names} take{'s' if len(across) == 1 else ''} the norm over the parameters of "
            "every group together, as the search did; each group's settings apply to its "
            "own parameters. Parameters on several devices or of several dtypes run one "
            "device and dtype at a time (a warning says so).", 84)
    if evolved and lr_multiple != 1.0 and reads_lr:
        class_doc += (f"\n\nlr defaults to the learning rate the search scored best: "
                      f"{lr_multiple:g} x the program's own.")
    if not reads_lr:
        class_doc += ("\n\nThis program never reads the learning rate: ``lr`` is kept "
                      "for schedulers\nbut changes nothing; the step size comes from "
                      "the constants.")
    return module_doc, class_doc


def _state_init(used_state: list[str], indent: str) -> list[str]:
    lines = [f"{indent}state = self.state[p]",
             f"{indent}if not state:",
             f'{indent}    state["step"] = 0']
    lines += [f'{indent}    state["{s}"] = torch.zeros_like(p)' for s in used_state]
    return lines + [f'{indent}state["step"] += 1']


def _loop_step(reads: set[str], body: list[str], used_state: list[str],
               written_state: list[str], group_reads: list[str], per_param_reads: list[str],
               tensor: dict[str, bool]) -> list[str]:
    """step()'s group loop for elementwise programs: each parameter in its own shape,
    or all of them at once on the foreach path."""
    ind = " " * 16
    lines = ["        for group in self.param_groups:",
             '            params = [p for p in group["params"] if p.grad is not None]',
             "            if not params:  # the foreach kernels reject empty lists",
             "                continue",
             "            for p in params:"]
    lines += _state_init(used_state, ind)
    lines += ['            foreach = group["foreach"]',
              "            if foreach is None:",
              "                foreach = all(p.is_cuda for p in params)"]
    if "step" in reads:  # one python step number for all: parameters must agree on it
        lines += ['            if foreach and len({self.state[p]["step"] for p in params})'
                  ' == 1:']
    else:
        lines += ["            if foreach:"]
    lines += ["                self._step_foreach(group, params)",
              "                continue"]
    lines += [f'            {s} = group["{s}"]' for s in group_reads if s not in per_param_reads]
    lines += ["            for p in params:",
              "                state = self.state[p]"]
    lines += [f'{ind}{s} = group["{s}"]' for s in per_param_reads]
    sources = {"w": "p", "g": "p.grad", "m": 'state["m"]', "v": 'state["v"]',
               "step": 'state["step"]'}
    lines += [f"{ind}{name} = {src}" for name, src in sources.items() if name in reads]
    lines += [""] + [ind + line for line in body] + [""]
    for s in written_state:
        lines.append(f'{ind}state["{s}"].{"copy_" if tensor[s] else "fill_"}({s})')
    lines.append(f"{ind}p.sub_(update)")
    return lines


def _foreach_method(reads: set[str], body: list[str], written_state: list[str],
                    group_reads: list[str], is_list: dict[str, bool]) -> list[str]:
    """``_step_foreach``: the program on lists of a group's tensors, one multi-tensor
    kernel per instruction where torch has one."""
    ind = " " * 8
    lines = ["    def _step_foreach(self, group, params):",
             f'{ind}"""All of a group\'s parameters at once, with multi-tensor kernels."""']
    lines += [f'{ind}{s} = group["{s}"]' for s in group_reads]
    sources = {"w": "params", "g": "[p.grad for p in params]",
               "m": '[self.state[p]["m"] for p in params]',
               "v": '[self.state[p]["v"] for p in params]',
               "step": 'self.state[params[0]]["step"]'}
    lines += [f"{ind}{name} = {src}" for name, src in sources.items() if name in reads]
    if any("scalar." in line for line in body):
        lines.append(f"{ind}scalar = torch.zeros((), dtype=torch.float64)  # python math")
    lines += [""] + [ind + line for line in body] + [""]
    for s in written_state:
        if is_list[s]:
            lines += [f"{ind}for p, new in zip(params, {s}):",
                      f'{ind}    self.state[p]["{s}"] = new']
        else:
            lines += [f"{ind}for p in params:",
                      f'{ind}    self.state[p]["{s}"].fill_({s})']
    lines.append(f"{ind}torch._foreach_sub_(params, update)")
    return lines


def _flat_step(reads: set[str], body: list[str], used_state: list[str],
               written_state: list[str], group_reads: list[str],
               tensor: dict[str, bool], across: bool) -> list[str]:
    """step()'s loop for programs with reductions: parameters laid end to end (per device
    and dtype), so per-tensor and global reductions see what they saw during search.
    ``across``: the program has a global reduction, so every group's parameters run
    together, each group's settings on its own segment, as in ``ProgramOptimizer``;
    else a group at a time, which gives the same updates with python-number settings."""
    if across:
        ind = " " * 12
        lines = ["        by_kind = {}",
                 "        for group in self.param_groups:",
                 '            for p in group["params"]:',
                 "                if p.grad is not None:",
                 "                    kind = (p.device, p.dtype)",
                 "                    by_kind.setdefault(kind, []).append((p, group))",
                 "        for members in by_kind.values():",
                 f"{ind}params = [p for p, _ in members]"]
        settings = [f'{ind}{s} = _setting(members, "{s}")' for s in group_reads]
    else:
        ind = " " * 16
        lines = ["        for group in self.param_groups:",
                 "            by_kind = {}",
                 '            for p in group["params"]:',
                 "                if p.grad is not None:",
                 "                    by_kind.setdefault((p.device, p.dtype), []).append(p)",
                 "            for params in by_kind.values():"]
        settings = [f'{ind}{s} = group["{s}"]' for s in group_reads]
    lines += [f"{ind}for p in params:"]
    lines += _state_init(used_state, ind + "    ")
    lines += settings
    lines += [f"{ind}shapes = [p.shape for p in params]"]
    sources = {"w": "_flatten(params)", "g": "_flatten([p.grad for p in params])",
               "m": '_flatten([self.state[p]["m"] for p in params])',
               "v": '_flatten([self.state[p]["v"] for p in params])'}
    lines += [f"{ind}{name} = {src}" for name, src in sources.items() if name in reads]
    if "step" in reads:
        lines += [
            f'{ind}steps = [self.state[p]["step"] for p in params]',
            f"{ind}if len(set(steps)) == 1:",
            f"{ind}    step = params[0].new_tensor(steps[0])",
            f"{ind}else:  # parameters that went without a gradient count their own steps",
            f'{ind}    step = torch.cat([p.new_full((p.numel(),), self.state[p]["step"])',
            f"{ind}                      for p in params])",
        ]
    lines += [""] + [ind + line for line in body] + [""]
    writes = [("update", "updates")] + [(s, f"new_{s}") for s in written_state]
    for name, split in writes:
        if tensor[name]:
            lines.append(f"{ind}{split} = _unflatten({name}, shapes)")
    lines.append(f"{ind}for i, p in enumerate(params):")
    for s in written_state:
        if tensor[s]:
            lines.append(f'{ind}    self.state[p]["{s}"].copy_(new_{s}[i])')
        else:
            lines.append(f'{ind}    self.state[p]["{s}"].fill_({s})')
    lines.append(f"{ind}    p.sub_({'updates[i]' if tensor['update'] else 'update'})")
    return lines


def _with_dependencies(names: set[str]) -> set[str]:
    todo, done = list(names), set()
    while todo:
        name = todo.pop()
        if name not in done:
            done.add(name)
            todo += _HELPERS[name][1]
    return done


def export_known(known: KnownProgram, class_name: str | None = None) -> str:
    """A known program as a standalone optimizer: its template's hyperparameters are the
    constructor's arguments, with its defaults (``lr`` first)."""
    if known.family != "optimizer":
        raise ProgramError(f"{known.name!r} is a {known.family} program, not an optimizer")
    return export_source(known.template_program(), class_name or known.class_name,
                         dict(known.defaults),
                         doc=known.description)


def export_program(program: Program, class_name: str = "EvolvedOptimizer",
                   lr_multiple: float = 1.0) -> str:
    """An evolved program as a standalone optimizer (lr scale folded, constants named).

    ``lr_multiple``: the learning-rate multiple the search scored the program best at
    (its ``lr`` input was the schedule times that); the default ``lr`` includes it."""
    return export_source(program, class_name, lr_multiple=lr_multiple)

"""Export a layer program as a standalone ``nn.Module`` source file that imports only torch.

The module's forward is the program written out line by line with the runtime module's
exact semantics: biased variances, ``std = sqrt(var + eps)``, groups = the largest
divisor of C at most ``groups``, batch aggregates with running averages (buffers named
as in ``ProgramLayer``, so state dicts are interchangeable), then ``y * gamma + beta``.
Division by a standard deviation (at least ``sqrt(eps)``, or a max/sum involving one) is
written plainly, a difference of at most a few parts in a million; other divisions keep
the registry's ``+ 1e-8`` (an ``exp`` or ``sigmoid`` can underflow to zero).
"""

from __future__ import annotations

import re

from .export import check_class_name, rename_variables
from .known import KNOWN_LAYERS, get_known
from .layer_module import running_buffers
from .layer_ops import AGGREGATES
from .layer_space import LayerSpace
from .program import Arg, Instruction, Program, ProgramError
from .space import Space

_UNARY = {
    "negative": "-{0}", "sigmoid": "torch.sigmoid({0})", "tanh": "torch.tanh({0})",
    "exp": "torch.exp({0})", "log": "torch.log(torch.abs({0}))", "abs": "torch.abs({0})",
    "square": "torch.square({0})", "sqrt": "torch.sqrt(torch.abs({0}))",
}
_INFIX = {"add": "+", "sub": "-", "mul": "*"}
_POSITIVE_OPS = {op for op, (_, s) in AGGREGATES.items() if s == "std"}

_HELPERS = {
    "var": '''def _var(a, dims):
    """Biased variance in two passes: mean, then mean squared deviation."""
    deviation = a - a.mean(dim=dims, keepdim=True)
    return (deviation * deviation).mean(dim=dims, keepdim=True)
''',
    "channel": '''def _channel_view(p, x):
    """A (1, C, 1, 1) tensor shaped to broadcast against x (NC or NCHW)."""
    return p if x.dim() == p.dim() else p.reshape(1, -1, *[1] * (x.dim() - 2))
''',
    "groups": '''def _group_count(channels, groups):
    """The largest divisor of channels that is at most groups."""
    return max(g for g in range(1, min(channels, groups) + 1) if channels % g == 0)
''',
    "batch": '''def _batch_dims(x):
    return (0, *range(2, x.dim()))
''',
    "layer": '''def _layer_dims(x):
    return tuple(range(1, x.dim()))
''',
    "instance": '''def _instance_mean(a):
    return a.mean(dim=tuple(range(2, a.dim())), keepdim=True) if a.dim() > 2 else a


def _instance_var(a):
    if a.dim() <= 2:  # NC input: each value is its own instance
        return torch.zeros_like(a)
    return _var(a, tuple(range(2, a.dim())))
''',
    "group": '''def _per_channel(stat, x):
    n, c = x.shape[:2]
    return stat.expand(n, stat.shape[1], c // stat.shape[1]).reshape(
        n, c, *[1] * (x.dim() - 2))


def _group_mean(x, groups):
    return _per_channel(x.reshape(x.shape[0], groups, -1).mean(-1, keepdim=True), x)


def _group_var(x, groups):
    flat = x.reshape(x.shape[0], groups, -1)
    return _per_channel(_var(flat, (-1,)), x)
''',
}


# Names the generated forward uses itself: program variables so named are renamed.
_RESERVED = frozenset({"self", "torch", "nn", "_stat"}) | frozenset(
    re.findall(r"^def (\w+)", "".join(_HELPERS.values()), re.MULTILINE))


class _Writer:
    """Turns one pruned layer program into the body of ``forward``."""

    def __init__(self, program: Program):
        self.program = program
        self.buffers = running_buffers(program)
        # Variables at least sqrt(eps): a std, a max with one, a sum of them. A division
        # by one is written plainly (the registry's + 1e-8 changes it by a few parts in a
        # million). Not a product: std * std can be as small as eps, and std**4 as eps**2,
        # where the + 1e-8 dominates.
        self.positive: set[str] = set()
        self.full: set[str] = {"x"}
        self.helpers: set[str] = {"channel"}
        self.lines: list[str] = []

    @staticmethod
    def arg(a: Arg, tensor: bool) -> str:
        if isinstance(a, str):
            return a
        return f"x.new_tensor({a!r})" if tensor else repr(a)

    def write(self) -> list[str]:
        reads = self.program.read()
        for p in ("v0", "v1"):
            if p in reads:
                self.lines.append(f"{p} = _channel_view(self.{p}, x)")
        for i, ins in enumerate(self.program.instructions):
            self.instruction(i, ins)
        if "y" not in self.full:
            self.lines.append("y = y.expand_as(x)")
        self.lines.append("return y * _channel_view(self.gamma, x) + "
                          "_channel_view(self.beta, x)")
        return self.lines

    def instruction(self, index: int, ins: Instruction) -> None:
        out, op, args = ins.out, ins.op, ins.args
        if op in AGGREGATES:
            self.aggregate(index, out, op, args[0])
            self.full.discard(ins.out)
        else:
            self.lines.append(f"{out} = {self.elementwise(op, args)}")
            names = [a for a in args if isinstance(a, str)]
            if any(a in self.full for a in names):
                self.full.add(ins.out)
            else:
                self.full.discard(ins.out)
        positive = (op in _POSITIVE_OPS
                    or (op == "max" and any(a in self.positive for a in args))
                    or (op == "add" and all(a in self.positive for a in args)))
        (self.positive.add if positive else self.positive.discard)(ins.out)

    def elementwise(self, op: str, args: tuple[Arg, ...]) -> str:
        both_const = not any(isinstance(a, str) for a in args)
        if op in _UNARY:
            return _UNARY[op].format(self.arg(args[0], True))
        a, b = (self.arg(v, both_const) for v in args)
        if op in _INFIX:
            return f"{a} {_INFIX[op]} {b}"
        if op == "div":
            return f"{a} / {b}" if args[1] in self.positive else f"{a} / ({b} + 1e-8)"
        constants = [v for v in args if not isinstance(v, str)]
        if op == "max" and len(constants) == 1 and constants[0] == 0.0:
            # ReLU, as the runtime runs it (ops.WITH_CONSTANT): its gradient at 0 is 0
            return f"torch.relu({a if isinstance(args[0], str) else b})"
        if op in ("max", "min"):
            clamp = "torch.clamp_min" if op == "max" else "torch.clamp_max"
            if not both_const and not isinstance(args[1], str):
                return f"{clamp}({a}, {b})"
            if not both_const and not isinstance(args[0], str):
                return f"{clamp}({b}, {a})"
            return f"torch.{'maximum' if op == 'max' else 'minimum'}({a}, {b})"
        raise ProgramError(f"op {op!r} cannot be exported as a layer")

    def aggregate(self, index: int, out: str, op: str, a: Arg) -> None:
        axis, stat = AGGREGATES[op]
        self.helpers.add(axis)
        if stat != "mean":
            self.helpers.add("var")
        src = self.arg(a, True)
        if a not in self.full:
            src = f"{src}.expand_as(x)"
        value = "var" if stat != "mean" else "mean"
        if axis == "group":
            expr = f"_group_{value}({src}, self.groups)"
        elif axis == "instance":
            expr = f"_instance_{value}({src})"
        elif value == "var":
            expr = f"_var({src}, _{axis}_dims(x))"
        else:
            expr = f"{src}.mean(dim=_{axis}_dims(x), keepdim=True)"
        if index in self.buffers:
            buffer = f"self.{self.buffers[index]}"
            self.lines += [
                "if self.training:",
                f"    _stat = {expr}",
                "    with torch.no_grad():",
                f"        {buffer}.mul_(1 - self.momentum).add_(",
                f"            self.momentum * _stat.reshape({buffer}.shape))",
                "else:",
                f"    _stat = _channel_view({buffer}, x)",
            ]
            expr = "_stat"
        if stat == "std":
            expr = f"torch.sqrt({expr} + self.eps)"
        self.lines.append(f"{out} = {expr}")


def export_layer(program: Program, class_name: str = "EvolvedLayer", doc: str = "",
                 space: Space = LayerSpace) -> str:
    """Source of a module ``class_name(num_features, [groups=32,] eps=1e-5,
    [momentum=0.1])`` computing ``program``; raises ProgramError if it is invalid."""
    check_class_name(class_name)
    reason = space.invalid_reason(program)
    if reason:
        raise ProgramError(f"not a valid {space.family} program: {reason}")
    program = space.prune(program)
    writer = _Writer(rename_variables(program, (*space.inputs, *space.outputs), _RESERVED))
    body = writer.write()
    reads = program.read()
    uses_groups = "group" in writer.helpers
    uses_batch = bool(writer.buffers)
    signature = ["num_features"]
    signature += ["groups=32"] if uses_groups else []
    signature += ["eps=1e-5"] + (["momentum=0.1"] if uses_batch else [])
    init = ["super().__init__()", "self.num_features = num_features"]
    if uses_groups:
        writer.helpers.add("groups")
        init.append("self.groups = _group_count(num_features, groups)")
    init.append("self.eps = eps")
    if uses_batch:
        init.append("self.momentum = momentum")
    init.append("shape = (1, num_features, 1, 1)")
    init += ["self.gamma = nn.Parameter(torch.ones(shape))",
             "self.beta = nn.Parameter(torch.zeros(shape))"]
    init += [f"self.v{k} = nn.Parameter(torch.{'zeros' if k == 0 else 'ones'}(shape))"
             for k in (0, 1) if f"v{k}" in reads]
    for name in writer.buffers.values():
        init.append(f"self.register_buffer({name!r}, torch."
                    f"{'zeros' if name.startswith('running_mean') else 'ones'}(shape))")
    listing = "\n".join("    " + line for line in space.listing(program).splitlines())
    doc = doc or "An evolved normalization-activation layer."
    helpers = "\n\n".join(_HELPERS[h] for h in _HELPERS if h in writer.helpers)
    return (
        f'"""{class_name}: {doc}\n\nExported by evoprog from the layer program:\n\n'
        f'{listing}\n\nOutput: y * gamma + beta (per-channel affine).\n'
        + ("\nThe running variance averages the biased batch variance, as the search\n"
           "did; nn.BatchNorm2d averages the unbiased one, B / (B - 1) times larger\nfor B "
           "values per channel, so eval-mode outputs differ slightly from it.\n"
           if any(name.startswith("running_var") for name in writer.buffers.values()) else "")
        + '"""\n\n'
        "import torch\nfrom torch import nn\n\n\n"
        f"{helpers}\n\n"
        f"class {class_name}(nn.Module):\n"
        f"    def __init__(self, {', '.join(signature)}):\n"
        + "".join(f"        {line}\n" for line in init)
        + "\n    def forward(self, x):\n"
        + "".join(f"        {line}\n" for line in body)
    )


def export_known_layer(name: str, class_name: str | None = None) -> str:
    """Source of a known layer (``evonorm_s0`` -> ``EvoNormS0``, ...)."""
    known = get_known(name)
    if known.name not in KNOWN_LAYERS:
        raise ProgramError(f"{known.name!r} is a {known.family} program, not a layer")
    return export_layer(known.program(), class_name or known.class_name, known.description)

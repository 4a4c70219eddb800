"""Exported optimizers: loaded from a file as users load them, compared against the
interpreter (``ProgramOptimizer``), a hand-written Lion and ``torch.optim.AdamW``."""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import itertools
import random
import re
import warnings
from pathlib import Path

import pytest
import torch

from evoprog.programs.export import (
    OP_CODE,
    export_known,
    export_program,
    fold_lr_scale,
    reads_learning_rate,
)
from evoprog.programs.known import KNOWN
from evoprog.programs.layer_ops import LAYER_OPS
from evoprog.programs.mutation import mutate
from evoprog.programs.ops import OPS
from evoprog.programs.optimizer import ProgramOptimizer
from evoprog.programs.program import Instruction, Program, parse_program
from evoprog.programs.space import OptimizerSpace

STEPS = 20
_counter = itertools.count()

LAYOUT_PROGRAM = """\
m = interp(g, m, 0.9)
v = interp(g, v, 0.5)
n = norm(g)
gn = global_norm(v)
o = orthogonalize(m)
u = o * n
u = u / gn
s = power(0.99, step)
u = u * s
update = clip_by_global_norm(u, 1.0)
lr = lr * 0.01
update = update * lr
"""


def load(source: str, tmp_path: Path):
    """Import generated source from a file, the way a user would."""
    path = tmp_path / f"exported_{next(_counter)}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exported_class(source: str, tmp_path: Path) -> type:
    module = load(source, tmp_path)
    classes = [c for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)
               and c.__module__ == module.__name__]
    assert len(classes) == 1
    return classes[0]


def initial_params(seed: int = 0, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """A weight matrix and a bias, at the scale of an initialised layer."""
    gen = torch.Generator().manual_seed(seed)
    return [0.5 * torch.randn(4, 3, generator=gen, dtype=dtype),
            0.5 * torch.randn(4, generator=gen, dtype=dtype)]


def grad_sequence(steps: int = STEPS, seed: int = 1,
                  dtype: torch.dtype = torch.float32) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(4, 3, generator=gen, dtype=dtype),
             torch.randn(4, generator=gen, dtype=dtype)] for _ in range(steps)]


def run(make_optimizer, grads: list[list[torch.Tensor]], seed: int = 0) -> list[torch.Tensor]:
    """Parameters after stepping an optimizer with the given gradients."""
    dtype = grads[0][0].dtype
    params = [p.clone().requires_grad_(True) for p in initial_params(seed, dtype)]
    optimizer = make_optimizer(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach() for p in params]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def test_op_code_covers_every_op():
    assert set(OP_CODE) == set(OPS) - set(LAYER_OPS)


def reference_lion(params, grads, lr, beta1, beta2, weight_decay):
    """Lion from its definition (Chen et al. 2023, Program 1)."""
    params = [p.clone() for p in params]
    ms = [torch.zeros_like(p) for p in params]
    for step_grads in grads:
        for p, m, g in zip(params, ms, step_grads, strict=True):
            c = beta1 * m + (1 - beta1) * g
            p -= lr * (torch.sign(c) + weight_decay * p)
            m.copy_(beta2 * m + (1 - beta2) * g)
    return params


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lion_matches_its_definition(tmp_path, weight_decay, foreach):
    lion = exported_class(export_known(KNOWN["lion"]), tmp_path)
    assert lion.__name__ == "Lion"
    signature = inspect.signature(lion.__init__).parameters
    assert list(signature)[1:] == ["params", "lr", "beta1", "beta2", "weight_decay",
                                   "foreach"]
    assert [signature[k].default for k in ("lr", "beta1", "beta2", "weight_decay")] == \
        [1e-4, 0.9, 0.99, 0.0]
    grads = grad_sequence()
    got = run(lambda ps: lion(ps, lr=0.01, weight_decay=weight_decay, foreach=foreach),
              grads)
    want = reference_lion(initial_params(), grads, 0.01, 0.9, 0.99, weight_decay)
    assert max_diff(got, want) < 1e-6


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-7)])
def test_adamw_matches_torch(tmp_path, dtype, tolerance, foreach):
    adamw = exported_class(export_known(KNOWN["adamw"]), tmp_path)
    signature = inspect.signature(adamw.__init__).parameters
    assert list(signature)[2:] == ["lr", "beta1", "beta2", "eps", "weight_decay", "foreach"]
    grads = grad_sequence(dtype=dtype)
    settings = {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.05,
                "foreach": foreach}
    got = run(lambda ps: adamw(ps, **settings), grads)
    want = run(lambda ps: torch.optim.AdamW(
        ps, lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.05), grads)
    # float64 shows the formula is torch's: only the interpreter's safe 1e-8s differ.
    assert max_diff(got, want) < tolerance
    defaults = run(adamw, grads)
    torch_defaults = run(lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01), grads)
    assert max_diff(defaults, torch_defaults) < 1e-6


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_export_matches_interpreter(tmp_path, name):
    known = KNOWN[name]
    cls = exported_class(export_known(known), tmp_path)
    assert cls.__name__ == known.class_name
    grads = grad_sequence()
    want = run(lambda ps: ProgramOptimizer(ps, known.program()), grads)
    for foreach in (None, False, True):
        got = run(lambda ps, foreach=foreach: cls(ps, foreach=foreach), grads)
        assert max_diff(got, want) < 1e-6
    assert max_diff(got, initial_params()) > 0  # it did train


def train_model(make_optimizer, steps: int = STEPS, skip_bias_every: int = 0):
    """A linear layer trained on fixed random data, with closures; returns its weights."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    data = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    target = torch.randn(16, 4, generator=torch.Generator().manual_seed(3))
    optimizer = make_optimizer(model.parameters())

    for i in range(steps):
        def closure(i=i):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(data), target)
            loss.backward()
            if skip_bias_every and i % skip_bias_every == 0:
                model.bias.grad = None
            return loss
        optimizer.step(closure)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("text", [OptimizerSpace.seed_text, LAYOUT_PROGRAM],
                         ids=["seed", "layout_ops"])
@pytest.mark.parametrize("skip", [0, 3])
def test_evolved_export_matches_interpreter(tmp_path, text, skip):
    program = parse_program(text)
    cls = exported_class(export_program(program), tmp_path)
    got = train_model(cls, skip_bias_every=skip)
    want = train_model(lambda ps: ProgramOptimizer(ps, program), skip_bias_every=skip)
    assert max_diff(got, want) < 1e-6
    grads = grad_sequence()
    assert max_diff(run(cls, grads), run(lambda ps: ProgramOptimizer(ps, program), grads)) < 1e-6


def test_layout_program_uses_flat_form_with_only_needed_helpers():
    source = export_program(parse_program(LAYOUT_PROGRAM))
    for helper in ("_norm", "_global_norm", "_orthogonalize", "_newton_schulz",
                   "_clip_by_global_norm", "_segment_sum", "_flatten", "_unflatten"):
        assert f"def {helper}(" in source
    for unused in ("_dot", "_cosine_sim", "_l2_normalize"):
        assert f"def {unused}(" not in source
    # elementwise: no flat-form helpers, only the safe python power for bias correction
    assert re.findall(r"\ndef (_\w+)", export_known(KNOWN["adamw"])) == ["_power"]


def test_lr_fold_and_constants(tmp_path):
    source = export_program(OptimizerSpace.seed())
    cls = exported_class(source, tmp_path)
    signature = inspect.signature(cls.__init__).parameters
    assert {k: p.default for k, p in signature.items() if k not in ("self", "params")} == \
        {"lr": 0.001, "c1": 0.9, "c2": 0.999, "c3": 0.01, "foreach": None}
    assert "0.001" not in source.split("def step", 1)[1]
    optimizer = cls([torch.zeros(2, requires_grad=True)])
    assert optimizer.param_groups[0]["c2"] == 0.999


def test_lr_fold_rules():
    folded, scale = fold_lr_scale(parse_program("update = g * lr\nlr = lr * 0.1"))
    assert scale is None  # lr is read before it is scaled
    folded, scale = fold_lr_scale(parse_program("x = 0.5 * lr\nlr = lr * 0.1\nupdate = g * x"))
    assert scale is None  # the first reader is not the scale
    folded, scale = fold_lr_scale(parse_program("lr = 0.3 * lr\nupdate = g * lr"))
    assert scale == 0.3 and len(folded) == 1
    folded, scale = fold_lr_scale(parse_program("lr = lr * -0.3\nupdate = g * lr"))
    assert scale is None  # a negative lr would not pass validation


def test_exported_files_import_only_torch_and_math():
    sources = [export_known(k) for k in KNOWN.values()]
    sources += [export_program(OptimizerSpace.seed()), export_program(
        parse_program(LAYOUT_PROGRAM)), export_program(parse_program("x = pi()\n"
                                                                     "update = g * x")),
                export_program(parse_program("n = global_norm(g)\nupdate = g / n"))]
    for source in sources:
        compile(source, "<exported>", "exec")
        imported = set()
        for node in ast.parse(source).body:
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            assert not isinstance(node, ast.ImportFrom)
        assert imported <= {"torch", "math", "warnings"}
        assert ("math" in imported) == ("math." in source)
        assert ("warnings" in imported) == ("warnings." in source)


def test_orthogonalize_takes_a_parameter_without_rows(tmp_path):
    program = parse_program("m = interp(g, m, 0.9)\no = orthogonalize(m)\n"
                            "update = o * 0.01")
    cls = exported_class(export_program(program), tmp_path)
    results = []
    for make in (lambda ps: ProgramOptimizer(ps, program), cls):
        gen = torch.Generator().manual_seed(0)
        params = [torch.zeros(0, 3, requires_grad=True),
                  torch.randn(4, 3, generator=gen).requires_grad_(True)]
        optimizer = make(params)
        for _ in range(2):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            optimizer.step()
        results.append([p.detach() for p in params])
    for got, want in zip(*results, strict=True):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)


def test_math_used_only_on_the_foreach_path_is_imported(tmp_path):
    # sign of a constant has no python form: a 0-d tensor on the loop path, a python
    # number on the foreach path, whose sqrt is then math.sqrt.
    program = parse_program("m = interp(g, m, 0.9)\nv = sign(1.2327)\ns = sqrt(v)\n"
                            "update = m / s\nupdate = update * 0.01")
    cls = exported_class(export_program(program), tmp_path)
    grads = grad_sequence(3)
    want = run(lambda ps: ProgramOptimizer(ps, program), grads)
    assert max_diff(run(lambda ps: cls(ps, foreach=True), grads), want) < 1e-6


@pytest.mark.parametrize("text", [KNOWN["adamw"].template, LAYOUT_PROGRAM],
                         ids=["per_parameter", "flat"])
def test_state_dict_round_trip(tmp_path, text):
    if text == LAYOUT_PROGRAM:
        cls = exported_class(export_program(parse_program(text)), tmp_path)
    else:
        cls = exported_class(export_known(KNOWN["adamw"]), tmp_path)
    grads = grad_sequence(10)
    params = [p.clone().requires_grad_(True) for p in initial_params()]
    optimizer = cls(params)
    for step_grads in grads[:5]:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    restored = cls(twins)
    restored.load_state_dict(saved)
    for step_grads in grads[5:]:
        for ps in (params, twins):
            for p, g in zip(ps, step_grads, strict=True):
                p.grad = g.clone()
        optimizer.step()
        restored.step()
    for a, b in zip(params, twins, strict=True):
        assert torch.equal(a, b)
    assert restored.state[twins[0]]["step"] == 10


def test_program_optimizer_state_dict_round_trip():
    program = parse_program(LAYOUT_PROGRAM)
    grads = grad_sequence(8)
    params = [p.clone().requires_grad_(True) for p in initial_params()]
    optimizer = ProgramOptimizer(params, program)
    twins = None
    restored = None
    for i, step_grads in enumerate(grads):
        if i == 4:
            twins = [p.detach().clone().requires_grad_(True) for p in params]
            restored = ProgramOptimizer(twins, program)
            restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        if restored is not None:
            for p, g in zip(twins, step_grads, strict=True):
                p.grad = g.clone()
            restored.step()
    for a, b in zip(params, twins, strict=True):
        assert torch.equal(a, b)


def test_closure_returns_loss(tmp_path):
    for cls in (exported_class(export_known(KNOWN["lion"]), tmp_path),
                exported_class(export_program(parse_program(LAYOUT_PROGRAM)), tmp_path),
                lambda ps: ProgramOptimizer(ps, KNOWN["lion"].program())):
        w = torch.ones(3, requires_grad=True)
        optimizer = cls([w])

        def closure(optimizer=optimizer, w=w):
            optimizer.zero_grad()
            loss = (w * w).sum()
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        assert loss.item() == 3.0
        assert w.grad is not None and torch.all(w < 1.0)
        assert optimizer.step() is None


def test_negative_lr_is_rejected(tmp_path):
    cls = exported_class(export_known(KNOWN["sgd"]), tmp_path)
    with pytest.raises(ValueError):
        cls([torch.zeros(1, requires_grad=True)], lr=-1.0)
    with pytest.raises(ValueError):
        ProgramOptimizer([torch.zeros(1, requires_grad=True)], "update = g * lr", lr=-1.0)


def test_variable_names_that_clash_with_python_are_renamed(tmp_path):
    program = parse_program("lambda = interp(g, m, 0.9)\nm = lambda * 1.0\n"
                            "p = sign(m)\nc1 = p * 0.5\nsum = c1 + step\nstate = sqrt(sum)\n"
                            "update = c1 * state\nlr = lr * 0.01\nupdate = update * lr\n"
                            "lr = lr * 2.0\nupdate = update * lr")
    cls = exported_class(export_program(program), tmp_path)
    grads = grad_sequence()
    assert max_diff(run(cls, grads), run(lambda ps: ProgramOptimizer(ps, program), grads)) < 1e-6


_ARGUMENTS = {
    0: [()],
    1: [("g",), ("step",), ("lr",)],
    2: [("g", "m"), ("g", "lr"), ("step", "g"), ("step", "lr")],
    3: [("g", "m", "w"), ("g", "lr", "m"), ("lr", "step", "g"), ("lr", "step", "lr")],
}


def _op_program(op: str, args: tuple[str, ...], flat: bool) -> Program:
    """``op`` on tensors, python scalars or both, its value squashed into a small update."""
    ins = [Instruction("m", "interp", ("g", "m", 0.9)),
           Instruction("x", op, args),
           Instruction("s", "tanh", ("x",)),
           Instruction("update", "mul", ("s", "g"))]
    if flat:  # a global reduction makes the exporter lay the parameters end to end
        ins += [Instruction("n", "global_norm", ("g",)),
                Instruction("update", "div", ("update", "n"))]
    ins += [Instruction("update", "mul", ("update", 0.01))]
    return Program(tuple(ins))


@pytest.mark.parametrize("op", sorted(set(OPS) - set(LAYER_OPS)))
def test_every_op_matches_interpreter(tmp_path, op):
    grads = grad_sequence(5)
    for args, flat in itertools.product(_ARGUMENTS[OPS[op].arity], (False, True)):
        program = _op_program(op, args, flat)
        cls = exported_class(export_program(program), tmp_path)
        want = run(lambda ps, program=program: ProgramOptimizer(ps, program), grads)
        for foreach in (False, True):  # the flat form takes ``foreach`` and ignores it
            got = run(lambda ps, cls=cls, foreach=foreach: cls(ps, foreach=foreach), grads)
            diff = max_diff(got, want)
            assert diff < 1e-6, (op, args, flat, foreach, diff)


def test_mutated_programs_export_and_match(tmp_path):
    """Random evolved-looking programs export to importable files that agree with the
    interpreter (float64, so that only semantics, not rounding, can differ)."""
    grads = grad_sequence(3, dtype=torch.float64)
    for seed in range(30):
        rng = random.Random(seed)
        program = OptimizerSpace.seed()
        for _ in range(rng.randint(1, 10)):
            program, _ = mutate(program, OptimizerSpace, rng)
        cls = exported_class(export_program(program), tmp_path)
        want = run(lambda ps, program=program: ProgramOptimizer(ps, program), grads)
        for foreach in (False, True):
            got = run(lambda ps, cls=cls, foreach=foreach: cls(ps, foreach=foreach), grads)
            for a, b in zip(got, want, strict=True):
                assert torch.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True), \
                    (foreach, str(program))


def test_python_number_arithmetic_gives_inf_where_tensors_do(tmp_path):
    # lr = 0 (a warm-up's first value) to a negative power: inf, as the interpreter
    # computes it, not a ZeroDivisionError from python's ``0.0 ** -1.4``.
    program = parse_program("m = interp(g, m, 0.4589)\nlr = power(lr, -1.4246)\n"
                            "s = sqrt(-0.2872)\nupdate = m / s\nlr = lr * -0.002928\n"
                            "update = clip(update, lr)")
    cls = exported_class(export_program(program), tmp_path)
    grads = grad_sequence(steps=3)
    got = run(lambda ps: cls(ps, lr=0.0), grads)
    want = run(lambda ps: ProgramOptimizer(ps, program, lr=0.0), grads)
    assert max_diff(got, want) < 1e-6


@pytest.mark.parametrize("division", [
    "k = lr / s",                    # lr / 0: inf
    "k = reciprocal(s)\nk = k * lr",  # 1 / 0: inf
    "n = negative(lr)\nk = n / s",    # -lr / 0: -inf
    "z = lr - lr\nk = z / s",         # 0 / 0: nan
    "k = lr / -1e-8",                # a constant, exported as a python number
    "z = lr - lr\nn = z / s\nk = max(lr, n)",  # nan wins a maximum, as in torch
    "z = lr - lr\nn = z / s\nk = min(lr, n)",
])
def test_python_numbers_give_inf_or_nan_where_tensors_do(tmp_path, division):
    # s + 1e-8 is exactly 0 in the safe division's denominator.
    program = parse_program(f"m = interp(g, m, 0.9)\ne = eps()\ns = negative(e)\n"
                            f"{division}\nu = sign(m)\nupdate = u * k")
    cls = exported_class(export_program(program), tmp_path)
    grads = grad_sequence(steps=2)
    want = run(lambda ps: ProgramOptimizer(ps, program), grads)
    assert not all(torch.isfinite(p).all() for p in want)
    for foreach in (False, True):
        got = run(lambda ps, foreach=foreach: cls(ps, foreach=foreach), grads)
        for a, b in zip(got, want, strict=True):
            assert torch.allclose(a, b, equal_nan=True), (foreach, a, b)


@pytest.mark.parametrize("foreach", [None, False, True])
def test_groups_without_gradients_are_skipped(tmp_path, foreach):
    lion = exported_class(export_known(KNOWN["lion"]), tmp_path)
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    lion([a, b], foreach=foreach).step()  # before any backward
    assert torch.equal(a, torch.ones(3)) and torch.equal(b, torch.ones(3))
    grad = torch.tensor([1.0, -2.0, 3.0])
    a.grad = grad.clone()
    lion([{"params": [a]}, {"params": [b]}], lr=0.1, foreach=foreach).step()
    alone = torch.ones(3, requires_grad=True)
    alone.grad = grad.clone()
    lion([alone], lr=0.1, foreach=foreach).step()
    assert torch.equal(a, alone) and not torch.equal(a, torch.ones(3))
    assert torch.equal(b, torch.ones(3))


def test_flat_form_lays_out_each_dtype_apart_as_the_interpreter_does(tmp_path):
    program = parse_program("update = clip_by_global_norm(g, 1.0)\nlr = lr * 0.1\n"
                            "update = update * lr")
    cls = exported_class(export_program(program), tmp_path)

    def steps(make_optimizer):
        params = [torch.zeros(4, requires_grad=True),
                  torch.zeros(4, dtype=torch.float64, requires_grad=True)]
        optimizer = make_optimizer(params)
        for _ in range(2):
            params[0].grad = torch.full((4,), 3.0)
            params[1].grad = torch.full((4,), 4.0, dtype=torch.float64)
            optimizer.step()
        return [p.detach().double() for p in params]

    with pytest.warns(UserWarning, match="several dtypes"):
        got = steps(cls)
    with pytest.warns(UserWarning, match="several dtypes"):
        want = steps(lambda ps: ProgramOptimizer(ps, program))
    assert max_diff(got, want) < 1e-6
    assert got[0][0].item() == pytest.approx(-0.1)  # each dtype clipped to norm 1 alone


def test_zero_dimensional_parameters_with_constant_state():
    program = parse_program("v = exp2(0.5)\nupdate = g * v")
    w = torch.tensor(1.0, requires_grad=True)
    w.grad = torch.tensor(1.0)
    ProgramOptimizer([w], program).step()
    assert w.item() == pytest.approx(1.0 - 2 ** 0.5)


def test_a_program_that_never_reads_lr_says_so(tmp_path):
    program = parse_program("s = sqrt(w)\nlr = s / 0.3169\nupdate = g * lr")
    assert not reads_learning_rate(program)
    assert reads_learning_rate(OptimizerSpace.seed())
    source = export_program(program)
    assert "never reads the learning rate" in source
    cls = exported_class(source, tmp_path)
    grads = grad_sequence(steps=2)
    assert max_diff(run(lambda ps: cls(ps, lr=1e-5), grads), run(cls, grads)) == 0
    assert "never reads" not in export_program(OptimizerSpace.seed())


def test_foreach_path_runs_multi_tensor_kernels_and_falls_back_when_steps_differ(tmp_path):
    source = export_known(KNOWN["adamw"])
    assert "torch._foreach_lerp(g, m, beta1)" in source.split("def _step_foreach", 1)[1]
    cls = exported_class(source, tmp_path)
    # The bias is skipped every third step, so its step count falls behind the weight's:
    # the foreach path needs one step number, so those groups take the loop.
    want = train_model(lambda ps: ProgramOptimizer(ps, KNOWN["adamw"].program()),
                       skip_bias_every=3)
    got = train_model(lambda ps: cls(ps, foreach=True), skip_bias_every=3)
    assert max_diff(got, want) < 1e-6
    optimizer = cls([torch.zeros(2, requires_grad=True)])
    assert optimizer.param_groups[0]["foreach"] is None  # chosen per step: GPU or not


@pytest.mark.parametrize("name, state", [("sgd", None), ("lion", "state ``m`` starts"),
                                         ("adam", "state ``m``, ``v`` start")])
def test_the_docstring_names_only_the_state_the_optimizer_keeps(name, state):
    text = " ".join(export_known(KNOWN[name]).split())
    assert "Each step computes ``update``" in text
    if state is None:
        assert "state ``" not in text
    else:
        assert f"{state} at zero" in text


@pytest.mark.parametrize("source", [
    export_known(KNOWN["lion"]),  # a step() that loops over the parameters
    export_program(parse_program("n = global_norm(g)\nupdate = g / n\n"  # a flat one
                                 "update = update * lr")),
])
def test_sparse_gradients_are_refused_with_a_clear_error(tmp_path, source):
    assert ("_flatten(" in source) == ("global_norm" in source)
    cls = exported_class(source, tmp_path)
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    embedding(torch.tensor([1, 2])).sum().backward()
    before = embedding.weight.detach().clone()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        cls(embedding.parameters()).step()
    assert torch.equal(embedding.weight, before)


def _two_parameter_updates(make, groups: list[dict] | None,
                           dtypes=(torch.float32, torch.float32)) -> tuple[torch.Tensor, list]:
    """The first update of two parameters with gradients [3, 0, 0] and [0, 4, 0, 0], in one
    group (``groups`` None) or in two with these extra settings; with what was warned."""
    a = torch.zeros(3, dtype=dtypes[0], requires_grad=True)
    b = torch.zeros(4, dtype=dtypes[1], requires_grad=True)
    params = [a, b] if groups is None else [{"params": [a], **groups[0]},
                                             {"params": [b], **groups[1]}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = make(params)
    a.grad = torch.tensor([3.0, 0.0, 0.0], dtype=dtypes[0])
    b.grad = torch.tensor([0.0, 4.0, 0.0, 0.0], dtype=dtypes[1])
    optimizer.step()
    return torch.cat([-a.detach(), -b.detach().to(a.dtype)]), [str(w.message) for w in caught]


def test_global_norm_spans_every_parameter_group(tmp_path):
    """The search takes global_norm over all parameters; the exported class and
    ProgramOptimizer do too, whatever the parameter groups, each group's lr (and, when
    exported, its hyperparameters) applying to its own parameters."""
    text = "n = global_norm(g)\nu = g / n\nupdate = u * lr\n"
    exported = load(export_program(parse_program(text), "GlobalStep"), tmp_path).GlobalStep
    assert "every group together" in exported.__doc__
    for make in (lambda p: exported(p, lr=1.0),
                 lambda p: ProgramOptimizer(p, parse_program(text), lr=1.0)):
        for groups in (None, [{}, {}]):
            update, said = _two_parameter_updates(make, groups)
            assert said == []
            assert torch.allclose(update, torch.tensor([0.6, 0, 0, 0, 0.8, 0, 0]))
        update, said = _two_parameter_updates(make, [{}, {"lr": 0.5}])
        assert said == []
        assert torch.allclose(update, torch.tensor([0.6, 0, 0, 0, 0.4, 0, 0]))

    # An evolved program's constants are hyperparameters, per group like lr.
    scaled = "n = global_norm(g)\nu = g / n\nupdate = u * 0.5\n"
    exported = load(export_program(parse_program(scaled), "Scaled"), tmp_path).Scaled
    update, _ = _two_parameter_updates(exported, [{}, {"c1": 0.25}])
    assert torch.allclose(update, torch.tensor([0.3, 0, 0, 0, 0.2, 0, 0]))


def test_global_norm_over_several_dtypes_warns_and_runs_each(tmp_path):
    """Tensors of two dtypes cannot be laid end to end: each dtype's parameters take
    their own norm, and both optimizers say so when they are made."""
    text = "n = clip_by_global_norm(g, 1.0)\nupdate = n * lr\n"
    exported = load(export_program(parse_program(text), "Clipped"), tmp_path).Clipped
    note = ("clip_by_global_norm: the parameters are on several devices or of several "
            "dtypes, and the norm is taken over those of one device and dtype at a time; "
            "the search took it over all parameters together")
    for make in (lambda p: exported(p, lr=1.0),
                 lambda p: ProgramOptimizer(p, parse_program(text), lr=1.0)):
        update, said = _two_parameter_updates(make, None, (torch.float32, torch.float64))
        assert said == [note]
        assert torch.allclose(update, torch.tensor([1.0, 0, 0, 0, 1.0, 0, 0]))


def test_per_tensor_reductions_take_each_groups_lr(tmp_path):
    """A program with per-tensor reductions runs every group's parameters together in
    ProgramOptimizer and group by group in the exported class: the same updates."""
    text = "u = l2_normalize(g)\nupdate = u * lr\n"
    exported = load(export_program(parse_program(text), "Normalized"), tmp_path).Normalized
    for make in (lambda p: exported(p, lr=1.0),
                 lambda p: ProgramOptimizer(p, parse_program(text), lr=1.0)):
        update, said = _two_parameter_updates(make, [{"lr": 2.0}, {}])
        assert said == []
        assert torch.allclose(update, torch.tensor([2.0, 0, 0, 0, 1.0, 0, 0]))

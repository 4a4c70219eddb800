"""Parts of one digits_mlp training step, each timed against a faster way to do it.

    python benchmarks/step_parts.py [--calls 300] [--rounds 5] [--compile]

On the evaluator's own tensors for the default tier-A evaluation (6 rows of the MLP's
26,122 parameters, batch 128, one torch thread, glibc keeping freed memory as the trainer
has it):

* the AdamW program (``known.KNOWN["adamw"]``, bias corrections included) run by the
  interpreter, which makes a fresh tensor for every instruction, against the same
  arithmetic written by hand with two scratch buffers and in-place ops: how much an
  interpreter that reused buffers could save;
* ``torch.log_softmax`` over the 10 classes against log-softmax and softmax from one
  exponential, as ``FlatMLP.loss_and_grad`` computes them;
* ``torch.sqrt`` of a real second moment (the square of the MLP's first gradient on
  the digits, in which about a fifth of the entries are exactly zero) against the
  program op ``sqrt``, which takes numpy's root on the CPU: torch's CPU kernel takes a
  slow path for every vector of floats that holds a zero; and a whole ``digits_mlp``
  tier-A evaluation of the AdamW program with each;
* with ``--compile``, the MLP's whole loss and gradient (``FlatMLP.loss_and_grad``,
  the model is the same for every program, so a worker would compile it once) as it
  runs against ``torch.compile`` of it: whether a compiler could fuse what the
  hand-written backward leaves as separate ops. Needs a C++ compiler; the compile time
  is printed.

Rounds alternate between the ways; each figure is the median call of its best round.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from evoprog.evaluators.data import digits
from evoprog.evaluators.mlp import FlatMLP, log_softmax_and_softmax
from evoprog.evaluators.tasks import DigitsMLP
from evoprog.evaluators.trainer import compile_program, keep_freed_memory
from evoprog.programs.known import KNOWN
from evoprog.programs.ops import OPS

ROWS, SIZES, BATCH = 6, (64, 128, 128, 10), 128


def adamw_by_hand(scratch: tuple[torch.Tensor, torch.Tensor]) -> Callable:
    """The AdamW program's arithmetic with in-place ops on two scratch buffers."""
    a, b = scratch

    def run(w, g, m, v, lr, step):
        m = torch.lerp(m, g, 0.1)
        torch.square(g, out=a)
        v = torch.lerp(v, a, 0.001)
        bc1, bc2 = 1 - 0.9 ** step, 1 - 0.999 ** step
        torch.div(v, bc2 + 1e-8, out=a).abs_().sqrt_().add_(1e-8).add_(1e-8)
        torch.div(m, bc1 + 1e-8, out=b).div_(a)
        torch.mul(w, 0.01, out=a)
        return b.add_(a).mul_(lr * 0.001), m, v
    return run


def interpreted() -> Callable:
    mlp = FlatMLP(SIZES)
    program, _ = compile_program(KNOWN["adamw"].program(), mlp.layout,
                                 torch.device("cpu"), torch.float32)

    def run(w, g, m, v, lr, step):
        out = program({"w": w, "g": g, "m": m, "v": v, "lr": lr, "step": step})
        return out["update"], out["m"], out["v"]
    return run


def time_update(run: Callable, calls: int) -> float:
    """Median seconds per call over ``calls`` steps with state carried, as in training."""
    gen = torch.Generator().manual_seed(0)
    n = FlatMLP(SIZES).layout.numel
    w = torch.randn(ROWS, n, generator=gen) * 0.1
    m, v = torch.zeros(ROWS, n), torch.zeros(ROWS, n)
    lr = torch.ones(ROWS, 1)
    seconds = []
    for i in range(calls):
        g = torch.randn(ROWS, n, generator=gen) * 0.01
        start = time.perf_counter()
        update, m, v = run(w, g, m, v, lr, torch.full((ROWS, 1), float(i + 1)))
        seconds.append(time.perf_counter() - start)
        w = w - update
    return statistics.median(seconds)


def _largest_difference(one: Callable, other: Callable, steps: int = 10) -> float:
    """Largest difference between two ways' updates over ``steps`` steps, relative to the
    largest update: the by-hand way must compute what the program does."""
    gen = torch.Generator().manual_seed(1)
    n = FlatMLP(SIZES).layout.numel
    w = torch.randn(ROWS, n, generator=gen)
    states = [(torch.zeros(ROWS, n), torch.zeros(ROWS, n)) for _ in range(2)]
    worst = 0.0
    for i in range(steps):
        g = torch.randn(ROWS, n, generator=gen) * 0.01
        step = torch.full((ROWS, 1), float(i + 1))
        updates = []
        for k, run in enumerate((one, other)):
            update, m, v = run(w, g, *states[k], torch.ones(ROWS, 1), step)
            states[k] = (m.clone(), v.clone())
            updates.append(update.clone())
        worst = max(worst, float((updates[0] - updates[1]).abs().max()
                                 / updates[0].abs().max()))
        w = w - updates[0]
    return worst


def median_seconds(call: Callable[[], object], calls: int) -> float:
    """Median seconds of ``calls`` calls of ``call()``."""
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def time_loss(fn: Callable, calls: int) -> float:
    h = torch.randn(ROWS, BATCH, SIZES[-1], generator=torch.Generator().manual_seed(0))
    return median_seconds(lambda: fn(h), calls)


def second_moment() -> torch.Tensor:
    """(ROWS, N): the square of the MLP's first gradient on one digits minibatch per row,
    with the exact zeros real gradients have (pixels blank in the whole minibatch, units
    the ReLU switched off)."""
    data, mlp = digits(), FlatMLP(SIZES)
    theta = mlp.init([torch.Generator().manual_seed(i) for i in range(ROWS)])
    index = torch.arange(ROWS * BATCH) % len(data.y_train)
    x = data.x_train[index].view(ROWS, BATCH, -1)
    y = data.y_train[index].view(ROWS, BATCH)
    with torch.no_grad():
        _, grad = mlp.loss_and_grad(theta, x, y)
    return grad * grad


def time_evaluation(sqrt: Callable, evaluations: int) -> float:
    """Median seconds of a digits_mlp tier-A evaluation of the AdamW program with the
    program op ``sqrt`` computed by ``sqrt``."""
    task = DigitsMLP("A", normalize=False)
    program = KNOWN["adamw"].program()
    kept = OPS["sqrt"]
    OPS["sqrt"] = dataclasses.replace(kept, torch_fn=sqrt)
    try:
        return median_seconds(lambda: task.evaluate(program), evaluations)
    finally:
        OPS["sqrt"] = kept


def time_loss_and_grad(fn: Callable, calls: int) -> float:
    """Median seconds per call of a (theta, x, y) -> (losses, grad) function on the
    evaluator's shapes."""
    gen = torch.Generator().manual_seed(0)
    mlp = FlatMLP(SIZES)
    theta = mlp.init([torch.Generator().manual_seed(i) for i in range(ROWS)])
    x = torch.randn(ROWS, BATCH, SIZES[0], generator=gen)
    y = torch.randint(0, SIZES[-1], (ROWS, BATCH), generator=gen)
    seconds = []
    with torch.no_grad():
        for _ in range(calls):
            start = time.perf_counter()
            fn(theta, x, y)
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def compiled_loss_and_grad() -> tuple[Callable, float]:
    """``torch.compile`` of ``FlatMLP.loss_and_grad`` and the seconds its first call took."""
    mlp = FlatMLP(SIZES)
    compiled = torch.compile(mlp.loss_and_grad, dynamic=False)
    start = time.perf_counter()
    time_loss_and_grad(compiled, 1)
    return compiled, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the MLP's loss and gradient")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    n = FlatMLP(SIZES).layout.numel
    scratch = (torch.empty(ROWS, n), torch.empty(ROWS, n))
    v = second_moment()
    ways = {
        "AdamW program, interpreter": lambda: time_update(interpreted(), args.calls),
        "AdamW program, by hand in place": lambda: time_update(adamw_by_hand(scratch),
                                                               args.calls),
        "torch.log_softmax": lambda: time_loss(
            lambda h: torch.log_softmax(h, dim=-1), args.calls),
        "log-softmax from one exponential": lambda: time_loss(
            log_softmax_and_softmax, args.calls),
        "torch.sqrt of a second moment": lambda: median_seconds(
            lambda: torch.sqrt(v), args.calls),
        "sqrt op (numpy's root)": lambda: median_seconds(
            lambda: OPS["sqrt"].torch_fn(v), args.calls),
        "evaluation with torch.sqrt": lambda: time_evaluation(
            lambda x: torch.sqrt(torch.abs(x)), 3),
        "evaluation with the sqrt op": lambda: time_evaluation(OPS["sqrt"].torch_fn, 3),
    }
    if args.compile:
        compiled, compile_seconds = compiled_loss_and_grad()
        ways["MLP loss and gradient, as it runs"] = lambda: time_loss_and_grad(
            FlatMLP(SIZES).loss_and_grad, args.calls)
        ways["MLP loss and gradient, compiled"] = lambda: time_loss_and_grad(
            compiled, args.calls)
    agree = _largest_difference(interpreted(), adamw_by_hand(scratch))
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, way in ways.items():
            best[name] = min(best.get(name, float("inf")), way())
    print(f"({ROWS}, {n:,}) parameters, logits ({ROWS}, {BATCH}, {SIZES[-1]}), 1 thread, "
          f"median call of the best of {args.rounds} rounds of {args.calls}")
    print(f"{'part':34} {'us/call':>8}")
    for name, seconds in best.items():
        print(f"{name:34} {seconds * 1e6:8.1f}")
    print(f"largest relative difference of the two AdamW ways over 10 steps: {agree:.1e}")
    print(f"update_in_place_speedup: {best[next(iter(ways))] / best[list(ways)[1]]:.2f}")
    print(f"log_softmax_speedup: {best[list(ways)[2]] / best[list(ways)[3]]:.2f}")
    print(f"zero entries of the second moment: {float((v == 0).float().mean()):.1%}")
    print(f"sqrt_speedup: {best[list(ways)[4]] / best[list(ways)[5]]:.2f}")
    print(f"evaluation_sqrt_speedup: {best[list(ways)[6]] / best[list(ways)[7]]:.2f}")
    if args.compile:
        print(f"torch.compile took {compile_seconds:.1f} s for its first call")
        print(f"compile_speedup: {best[list(ways)[8]] / best[list(ways)[9]]:.2f}")


if __name__ == "__main__":
    main()

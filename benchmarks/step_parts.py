"""Parts of one digits_mlp training step, each timed against a faster way to do it.

    python benchmarks/step_parts.py [--calls 300] [--rounds 5]

On the evaluator's own tensors for the default tier-A evaluation (6 rows of the MLP's
26,122 parameters, batch 128, one torch thread, glibc keeping freed memory as the trainer
has it):

* the AdamW program (``known.KNOWN["adamw"]``, bias corrections included) run by the
  interpreter, which makes a fresh tensor for every instruction, against the same
  arithmetic written by hand with two scratch buffers and in-place ops: how much an
  interpreter that reused buffers could save;
* ``torch.log_softmax`` over the 10 classes against log-softmax and softmax from one
  exponential, as ``FlatMLP.loss_and_grad`` computes them.

Rounds alternate between the ways; each figure is the median call of its best round.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from evoprog.evaluators.mlp import FlatMLP, log_softmax_and_softmax
from evoprog.evaluators.trainer import compile_program, keep_freed_memory
from evoprog.programs.known import KNOWN

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


def time_loss(fn: Callable, calls: int) -> float:
    h = torch.randn(ROWS, BATCH, SIZES[-1], generator=torch.Generator().manual_seed(0))
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(h)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    n = FlatMLP(SIZES).layout.numel
    scratch = (torch.empty(ROWS, n), torch.empty(ROWS, n))
    ways = {
        "AdamW program, interpreter": lambda: time_update(interpreted(), args.calls),
        "AdamW program, by hand in place": lambda: time_update(adamw_by_hand(scratch),
                                                               args.calls),
        "torch.log_softmax": lambda: time_loss(
            lambda h: torch.log_softmax(h, dim=-1), args.calls),
        "log-softmax from one exponential": lambda: time_loss(
            log_softmax_and_softmax, args.calls),
    }
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


if __name__ == "__main__":
    main()

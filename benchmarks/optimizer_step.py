"""Step time of exported optimizers, loop and foreach paths, beside torch.optim.

The exported AdamW (``evoprog export adamw``) and Lion run on a stack of 64x64 weight
matrices and biases with fixed gradients, one torch thread, rounds alternating between
the ways so drifts in machine speed fall on all of them. Prints milliseconds per step
(best round) and each way's time over torch.optim.AdamW's foreach step.

Run: python benchmarks/optimizer_step.py [--layers 40] [--steps 50] [--rounds 5]
     python benchmarks/optimizer_step.py --keep-freed-memory
         the same with glibc told to keep freed memory (as evoprog's trainer does), which
         spares the foreach path's lists of temporaries fresh pages every step
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from evoprog.evaluators.trainer import keep_freed_memory
from evoprog.programs.export import export_known
from evoprog.programs.known import KNOWN


def exported(name: str) -> type[torch.optim.Optimizer]:
    """The known optimizer's exported class, imported from a file as a user would."""
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(export_known(KNOWN[name]))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, KNOWN[name].class_name)


def parameters(layers: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [torch.randn(64, 64, requires_grad=True) for _ in range(layers)]
    params += [torch.randn(64, requires_grad=True) for _ in range(layers)]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def step_ms(make: Callable, layers: int, steps: int) -> float:
    optimizer = make(parameters(layers))
    optimizer.step()  # state created outside the timing
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="raise glibc's mmap and trim thresholds first")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.keep_freed_memory and not keep_freed_memory():
        parser.error("--keep-freed-memory needs glibc")
    adamw, lion = exported("adamw"), exported("lion")
    ways = {
        "torch.optim.AdamW foreach": lambda ps: torch.optim.AdamW(ps, foreach=True),
        "torch.optim.AdamW loop": lambda ps: torch.optim.AdamW(ps, foreach=False),
        "exported AdamW foreach": lambda ps: adamw(ps, foreach=True),
        "exported AdamW loop": lambda ps: adamw(ps, foreach=False),
        "exported Lion foreach": lambda ps: lion(ps, foreach=True),
        "exported Lion loop": lambda ps: lion(ps, foreach=False),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, make in ways.items():
            times[name].append(step_ms(make, args.layers, args.steps))
    n = sum(p.numel() for p in parameters(args.layers))
    malloc = "glibc keeps freed memory" if args.keep_freed_memory else "default malloc"
    print(f"{2 * args.layers} tensors, {n:,} parameters, CPU, 1 thread, {malloc}, best "
          f"of {args.rounds} rounds of {args.steps} steps")
    base = min(times["torch.optim.AdamW foreach"])
    print(f"{'way':28} {'ms/step':>8} {'x torch foreach':>16}")
    for name, values in times.items():
        print(f"{name:28} {min(values):8.2f} {min(values) / base:16.2f}")
    loop, foreach = min(times["exported AdamW loop"]), min(times["exported AdamW foreach"])
    print(f"exported_adamw_foreach_speedup: {loop / foreach:.2f}")


if __name__ == "__main__":
    main()

"""Layer calibration: known layers on each architecture at small and large batch, and the
speed of the exported EvoNorm-S0 against a straightforward module with the same formula.

Run: python benchmarks/layers.py   (one thread; prints a table, then ``s0_time_ratio``)
     python benchmarks/layers.py --spread 6 [FILE ...]
         the search's tier-A fitness of the known layers (and of layer programs in
         FILEs) under 6 training seeds: how far one seed's score is from the mean
     python benchmarks/layers.py --relu 5
         seconds of the search's tier-A evaluation of BN-ReLU with max(x, 0) run as
         torch.relu, as the search runs it, and as clamp_min, alternating for 5 rounds;
         ends with ``relu_speedup``
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from evoprog.evaluators.layer_tasks import LAYER_TIERS, LayerSettings, LayerTask
from evoprog.programs.known import get_known
from evoprog.programs.layer_export import export_known_layer
from evoprog.programs.ops import WITH_CONSTANT
from evoprog.programs.program import Program, parse_program

LAYERS = ("bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0")
BATCHES = (4, 128)


class NaiveS0(nn.Module):
    """EvoNorm-S0 written the obvious way: x * sigmoid(v1 x) / sqrt(var_group(x) + eps)."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.v1 = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        n, c, h, w = x.shape
        g = x.reshape(n, self.groups, c // self.groups, h, w)
        var = g.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
        std = torch.sqrt(var + self.eps).expand_as(g).reshape(n, c, h, w)
        return x * torch.sigmoid(self.v1 * x) / std * self.gamma + self.beta


def exported_s0() -> type[nn.Module]:
    path = Path(tempfile.mkdtemp()) / "evonorm_s0.py"
    path.write_text(export_known_layer("evonorm_s0"))
    spec = importlib.util.spec_from_file_location("evonorm_s0", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EvoNormS0


def step_time(layer: nn.Module, x: torch.Tensor, repeats: int = 60) -> float:
    """Median seconds of one forward + backward."""
    times = []
    for _ in range(repeats + 5):
        x.grad = None
        start = time.perf_counter()
        layer(x).sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def seed_spread(seeds: int, files: list[str]) -> None:
    """Tier-A fitness of each layer under every seed from 0 to ``seeds - 1``: the noise
    a search's one-seed score carries."""
    programs: dict[str, Program] = {name: get_known(name).program()
                                    for name in LAYERS}
    programs.update({Path(f).name: parse_program(Path(f).read_text()) for f in files})
    print(f"digits_layers tier A fitness (mean over {len(LAYER_TIERS['A'].architectures)} "
          f"architectures) with seeds 0-{seeds - 1}, one seed at a time")
    print(f"{'layer':20} {'seed 0':>7} {'mean':>7} {'sd':>7} {'min':>7} {'max':>7}")
    for name, program in programs.items():
        fitness = []
        for seed in range(seeds):
            task = LayerTask("A", dataclasses.replace(LAYER_TIERS["A"], seeds=(seed,)))
            result = task.evaluate(program)
            fitness.append(result.fitness if result.ok else float("nan"))
        sd = statistics.stdev(fitness) if seeds > 1 else float("nan")
        print(f"{name:20} {fitness[0]:7.4f} {statistics.mean(fitness):7.4f} {sd:7.4f} "
              f"{min(fitness):7.4f} {max(fitness):7.4f}", flush=True)


def relu_timing(rounds: int) -> None:
    """The search's tier-A evaluation of BN-ReLU with max(x, 0) run as torch.relu
    (``ops.WITH_CONSTANT``) and as clamp_min, alternating: median seconds and score."""
    program = get_known("bn_relu").program()
    task = LayerTask("A")
    task.evaluate(program)  # warm-up: data, first allocations
    seconds: dict[str, list[float]] = {"torch.relu": [], "clamp_min": []}
    scores: dict[str, float | None] = {}
    for _ in range(rounds):
        for way in seconds:
            relu = WITH_CONSTANT.pop(("max", 0.0)) if way == "clamp_min" else None
            try:
                start = time.perf_counter()
                scores[way] = task.evaluate(program).fitness
                seconds[way].append(time.perf_counter() - start)
            finally:
                if relu is not None:
                    WITH_CONSTANT[("max", 0.0)] = relu
    print(f"BN-ReLU, digits_layers tier A, median of {rounds} evaluations, 1 thread")
    print(f"{'max(x, 0) as':14} {'seconds':>8} {'score':>7}")
    median = {way: statistics.median(values) for way, values in seconds.items()}
    for way in seconds:
        print(f"{way:14} {median[way]:8.3f} {scores[way]:7.4f}")
    print(f"relu_speedup: {median['clamp_min'] / median['torch.relu']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spread", type=int, metavar="SEEDS",
                        help="print the fitness spread over this many seeds instead")
    parser.add_argument("files", nargs="*", help="layer programs to add to --spread")
    parser.add_argument("--relu", type=int, metavar="ROUNDS",
                        help="time BN-ReLU's evaluation with max(x, 0) as relu and clamp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.relu:
        relu_timing(args.relu)
        return
    if args.spread:
        seed_spread(args.spread, args.files)
        return
    base = LayerSettings(quality_step=None, max_grad_norm=float("inf"), steps=150)
    print(f"validation accuracy after {base.steps} Adam steps (width {base.width}), "
          "eval mode")
    header = f"{'layer':12} {'batch':>5} " + " ".join(f"{a:>9}" for a in base.architectures)
    print(header + f" {'mean':>6} {'sec':>5}")
    for name in LAYERS:
        for batch in BATCHES:
            task = LayerTask(settings=dataclasses.replace(base, batch_size=batch))
            result = task.evaluate(get_known(name).program())
            scores = result.metrics.get("scores", {})
            cells = " ".join(f"{scores.get(a, float('nan')):9.3f}" for a in base.architectures)
            mean = result.fitness if result.fitness is not None else float("nan")
            print(f"{name:12} {batch:5d} {cells} {mean:6.3f} {result.seconds:5.1f}"
                  + ("" if result.ok else f"  {result.reason}"))
    x = torch.randn(16, 64, 16, 16, requires_grad=True)
    fast, naive = exported_s0()(64), NaiveS0(64)
    for _ in range(3):  # interleave to share any drift in machine speed
        t_fast, t_naive = step_time(fast, x), step_time(naive, x)
    print(f"exported EvoNormS0 fwd+bwd {t_fast * 1e3:.2f} ms, straightforward "
          f"{t_naive * 1e3:.2f} ms  (x: {tuple(x.shape)})")
    print(f"s0_time_ratio: {t_fast / t_naive:.3f}")


if __name__ == "__main__":
    sys.exit(main())

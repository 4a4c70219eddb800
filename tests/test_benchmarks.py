"""Every benchmark runs from the command line on a tiny budget and prints its figures.

The figures themselves are measured at full size (benchmarks/README.md); these runs only
check that each script still works end to end against the current code and that its
closing lines are there and hold numbers in range.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, *args: str, timeout: float = 240) -> str:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def figure(output: str, name: str) -> float:
    """The value of the closing line ``name: <number>``."""
    found = re.findall(rf"^{name}: ([-+0-9.eE]+)$", output, flags=re.MULTILINE)
    assert found, f"no line {name!r} in:\n{output[-2000:]}"
    return float(found[-1])


def test_analysis_real_search_then_report(tmp_path):
    db = tmp_path / "analysis.db"
    out = run_benchmark("analysis.py", "--children", "40", "--population", "8",
                        "--tournament", "3", "--db", str(db))
    served = figure(out, "served_without_training")
    assert 0 < served < 1 and 0 < figure(out, "analysis_ms_median") < 1000
    again = run_benchmark("analysis.py", "--report", str(db))
    assert figure(again, "served_without_training") == served
    audit = run_benchmark("fingerprint_audit.py", str(db))
    assert "| optimizer: fingerprint in use |" in audit


def test_analysis_surrogate():
    out = run_benchmark("analysis.py", "--surrogate", "--children", "200")
    assert 0 < figure(out, "served_without_training") < 1


def test_reachability_both_targets_with_neutral_children_and_restarts(tmp_path):
    for target in ("lion", "evonorm"):
        out = run_benchmark("reachability.py", "--target", target, "--seeds", "1",
                            "--budget", "150", "--population", "8", "--tournament", "3",
                            "--neutral", "--restart-every", "60", "--restart-from", "best",
                            "--db", str(tmp_path / f"{target}.db"))
        assert f"agreement with {target}" in out and "neutral children kept" in out
        assert "restarts every 60 from the best" in out
        rows = re.findall(r"^(evolution|random) +0 +\d+ +(yes|no) .* ([0-9.]+) +\S+$", out,
                          flags=re.MULTILINE)
        assert [row[0] for row in rows] == ["evolution", "random"], out
        assert all(0 < float(row[2]) <= 1 for row in rows)
        for strategy in ("evolution", "random"):
            assert re.search(rf"^{strategy}_found: [01] of 1", out, flags=re.MULTILINE)


def test_lion_agreement_sees_the_learning_rate():
    """Lion at any constant learning rate agrees fully; Lion that ignores its decaying
    ``lr`` input does not, so the reachability fitness pulls towards reading it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reachability",
                                                  BENCHMARKS / "reachability.py")
    reachability = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reachability)
    lion = "c = interp(g, m, 0.9)\nu = sign(c)\nupdate = u * {}\nm = interp(g, m, 0.99)"
    assert reachability.agreement(lion.format("lr")) == pytest.approx(1.0)
    halved = lion.format("lr").replace("u * lr", "u * lr\nupdate = update * 0.5")
    assert reachability.agreement(halved) == pytest.approx(1.0)
    assert reachability.agreement(lion.format("0.01")) < 0.9


def test_throughput_one_thread_and_whole_machine():
    out = run_benchmark("throughput.py", "--repeats", "1", "--seeds", "1", "--scales", "1",
                        "--per-core", "1")
    for name in ("throughput_ratio", "machine_throughput_ratio",
                 "machine_ratio_vs_parallel_loops"):
        assert figure(out, name) > 0
    assert 0 < figure(out, "train_time_share") <= 1
    # every way, one thread or all cores, trains the same models to the same accuracy
    accuracies = re.findall(r"^\| (?:evoprog|torch\.optim|ProgramOptimizer).* ([0-9.]+) \|$",
                            out, flags=re.MULTILINE)
    assert len(accuracies) == 6 and len(set(accuracies)) == 1, out


@pytest.mark.parametrize("script, args, figures", [
    ("step_parts.py", "--calls 5 --rounds 1",
     ["update_in_place_speedup", "log_softmax_speedup", "sqrt_speedup",
      "evaluation_sqrt_speedup"]),
    ("layers.py", "--relu 1", ["relu_speedup"]),
    ("optimizer_step.py", "--layers 2 --steps 3 --rounds 1",
     ["exported_adamw_foreach_speedup"]),
    ("scaling.py", "--budget 12 --parallel 4 --pairs 1 --driver-budget 60 --host-evals 1",
     ["scale_2_workers", "driver_results_per_s"]),
    ("devices.py", "--tasks digits_mlp --tiers A --evals 2",  # no GPU: the CPU row only
     ["evals_per_s cpu digits_mlp@A"]),
], ids=lambda value: value if isinstance(value, str) and value.endswith(".py") else "")
def test_timing_benchmarks_print_positive_figures(script, args, figures):
    out = run_benchmark(script, *args.split(), timeout=380)
    assert all(figure(out, name) > 0 for name in figures)


def test_calibrate_grid():
    out = run_benchmark("calibrate.py", "--tiers", "A", "--tasks", "digits_mlp",
                        "--optimizers", "adamw_paper,lion", "--scales", "1")
    rows = re.findall(r"^\| digits_mlp \| A \| (\w+) \| 1 \| ([0-9.]+) \| [0-9.]+ \| ok \|$",
                      out, flags=re.MULTILINE)
    assert [name for name, _ in rows] == ["adamw_paper", "lion"], out
    assert all(0 < float(metric) <= 1 for _, metric in rows)


def test_layers_spread():
    out = run_benchmark("layers.py", "--spread", "1")
    rows = re.findall(r"^(bn_relu|gn_relu|evonorm_b0|evonorm_s0) +([0-9.]+) ", out,
                      flags=re.MULTILINE)
    assert [name for name, _ in rows] == ["bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0"]
    assert all(0 < float(fitness) <= 1 for _, fitness in rows)

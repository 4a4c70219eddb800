"""The digits proxy task: good optimizers score well, filters fire, results reproduce."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import comparable

from evoprog.evaluators import (
    TASKS,
    DigitsCNN,
    DigitsMLP,
    EvalResult,
    Filters,
    device,
    evaluate,
    get_task,
    machine,
)
from evoprog.evaluators.data import digits
from evoprog.evaluators.trainer import ProgramOutputError, _fit, cosine_schedule
from evoprog.programs.known import KNOWN
from evoprog.programs.ops import OPS
from evoprog.programs.program import parse_program
from evoprog.programs.space import OptimizerSpace

pytestmark = pytest.mark.usefixtures("one_thread")

BROKEN = "update = g * 0.0"
NO_FILTERS = Filters(progress_step=None, probe_checks=False)
# Tier A's filters without the probe checks, so each numeric filter is the one to fire.
NUMERIC_ONLY = dataclasses.replace(DigitsMLP.TIER_SETTINGS["A"].filters, probe_checks=False)


@pytest.fixture(scope="module")
def adamw() -> EvalResult:
    return evaluate(KNOWN["adamw"].program())


# --- results and registry ---------------------------------------------------------------

def test_result_round_trips_through_json():
    result = EvalResult(0.5, "ok", None, {"val_accuracy": 0.5, "per_seed": torch.tensor([0.25])},
                        1.5)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["metrics"]["per_seed"] == [0.25]
    assert EvalResult.from_dict(data).to_dict() == data


def test_result_validates_status_and_fitness():
    with pytest.raises(ValueError, match="status"):
        EvalResult(None, "maybe")
    with pytest.raises(ValueError, match="fitness"):
        EvalResult(None, "ok")
    with pytest.raises(ValueError, match="fitness"):
        EvalResult(0.3, "rejected", "nan")


def test_registry():
    task = get_task("digits_mlp")
    assert "digits_mlp" in TASKS
    assert (task.name, task.tier, task.family) == ("digits_mlp", "A", "optimizer")
    with pytest.raises(ValueError, match="digits_mlp"):
        get_task("imagenet")


def test_digits_split_is_fixed_stratified_and_scaled():
    split = digits()
    assert split is digits()  # cached per process
    assert split.x_train.shape == (1437, 64) and split.x_val.shape == (360, 64)
    assert split.x_train.min() >= 0 and split.x_train.max() <= 1
    val_counts = torch.bincount(split.y_val, minlength=10)
    assert val_counts.min() >= 35 and val_counts.max() <= 37  # stratified: ~36 per class


def test_cosine_schedule_runs_from_one_towards_zero():
    assert cosine_schedule(1, 200) == 1.0
    assert 0 < cosine_schedule(200, 200) < 1e-3


# --- fitness ----------------------------------------------------------------------------

def test_adamw_learns(adamw):
    assert adamw.status == "ok" and adamw.reason is None
    assert adamw.metrics["metric"] == adamw.metrics["val_accuracy"] > 0.85
    assert adamw.fitness == pytest.approx(adamw.metrics["val_accuracy"]
                                          / adamw.metrics["seed_metric"])
    m = adamw.metrics
    assert m["steps"] == 200 and len(m["val_accuracy_per_seed"]) == 2
    assert m["train_loss_final"] < 0.5 * m["train_loss_initial"]
    assert m["val_loss"] > 0 and adamw.seconds > 0


def test_paper_seed_learns_and_broken_programs_do_not(adamw):
    seed = evaluate(OptimizerSpace.seed())
    assert seed.status == "ok" and seed.fitness == 1.0 and seed.metrics["metric"] > 0.85
    unfiltered = DigitsMLP(filters=NO_FILTERS)
    for text in (BROKEN, "update = g * 1e-12"):
        broken = unfiltered.evaluate(parse_program(text))
        assert broken.status == "ok"
        assert broken.metrics["metric"] < 0.3 < adamw.metrics["metric"] - 0.5


def test_evaluation_is_bit_for_bit_reproducible(adamw):
    again = evaluate(KNOWN["adamw"].program())
    assert comparable(again) == comparable(adamw)


def test_evaluation_reproduces_across_processes():
    # Every (seed, lr scale) row, the MLP's hand-written backward and the CNN's oneDNN
    # convolutions must give the same bits in a fresh process.
    script = (
        "import json, torch\n"
        "torch.set_num_threads(1)\n"
        "from evoprog.evaluators import DigitsCNN, DigitsMLP\n"
        "from evoprog.programs.known import KNOWN\n"
        "out = []\n"
        "for task in (DigitsMLP(steps=30), DigitsCNN(steps=10)):\n"
        "    r = task.evaluate(KNOWN['adamw'].program()).to_dict()\n"
        "    del r['seconds']\n"
        "    out.append(r)\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = [comparable(task.evaluate(KNOWN["adamw"].program()))
                for task in (DigitsMLP(steps=30), DigitsCNN(steps=10))]
    finally:
        torch.set_num_threads(threads)
    assert here[0]["metrics"]["per_scale"][2]["lr_scale"] == 10.0
    assert json.loads(out.stdout) == json.loads(json.dumps(here))


def test_every_evaluation_names_the_kind_of_machine_its_score_is_exact_for(adamw):
    assert adamw.metrics["machine"] == machine()
    assert machine().endswith(f"torch {torch.__version__}")
    if device().type == "cpu":
        assert torch.backends.cpu.get_cpu_capability() in machine()
    # Kernels picked for another instruction set round differently: the record says so.
    script = "from evoprog.evaluators import machine\nprint(machine())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120, env={**os.environ, "EVOPROG_DEVICE": "cpu",
                                                       "ATEN_CPU_CAPABILITY": "default"})
    assert "DEFAULT, torch" in out.stdout


def test_batched_seeds_match_seeds_run_alone():
    program = KNOWN["adamw"].program()
    both = DigitsMLP(seeds=(0, 1), steps=60).evaluate(program).metrics["per_scale"]
    assert len(both) == 3  # tier A's lr scales, each with its own rows
    for i, seed in enumerate((0, 1)):
        alone = DigitsMLP(seeds=(seed,), steps=60).evaluate(program).metrics["per_scale"]
        for pair, single in zip(both, alone, strict=True):
            assert pair["val_loss_per_seed"][0] != pair["val_loss_per_seed"][1]  # seeds differ
            assert single["val_loss_per_seed"][0] == pytest.approx(
                pair["val_loss_per_seed"][i], abs=1e-5)
            assert single["val_accuracy_per_seed"][0] == pytest.approx(
                pair["val_accuracy_per_seed"][i], abs=1e-5)


# --- filters ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, reason, max_step", [
    ("update = g * 0.0\nupdate = log(update)", "nan", 1),  # log(0) = -inf at step 1
    ("update = log(m)", "nan", 1),  # m starts at zero
    ("u = log(m)\nupdate = u - u", "nan", 1),  # -inf - -inf = NaN
    ("update = g * -10.0", "diverged", 5),  # gradient ascent: the loss explodes
    ("update = g * 1e6", "diverged", 1),  # the update itself is huge
    ("update = g * 1e-12", "no progress", 50),
])
def test_rejection_filters(text, reason, max_step):
    result = evaluate(parse_program(text), filters=NUMERIC_ONLY)
    assert (result.status, result.reason, result.fitness) == ("rejected", reason, None)
    assert 1 <= result.metrics["stopped_at_step"] <= max_step
    assert result.metrics["steps"] <= result.metrics["stopped_at_step"]


def test_no_progress_fires_at_step_50_and_stops_training():
    result = evaluate(parse_program(BROKEN), filters=NUMERIC_ONLY)
    assert result.reason == "no progress"
    assert result.metrics["stopped_at_step"] == result.metrics["steps"] == 50


@pytest.mark.parametrize("text, reason", [
    (BROKEN, "the update is below 1e-12 at every probe step"),
    ("a = abs(g)\nupdate = a * lr", "the update ignores the sign of g"),
    ("z = g - g\nwd = w * 0.01\nupdate = wd + z", "the update ignores the sign of g"),
    ("update = g * -10.0", "the update climbs the gradient at every probe step"),
    ("update = g * 1e9", "the first update exceeds 1000 at every gradient scale"),
    ("s = sign(g)\nupdate = s * 0.5",
     "the first update moves half the weights by 0.3 or more at every gradient scale"),
])
def test_probe_checks_refuse_futile_rules_before_training(text, reason):
    result = evaluate(parse_program(text))
    assert (result.status, result.reason, result.fitness) == ("rejected", f"static: {reason}",
                                                              None)
    assert result.metrics["steps"] == 0 and result.seconds < 1.0
    trained = evaluate(parse_program(text), filters=NUMERIC_ONLY)  # what training says
    assert trained.status == "rejected" and not trained.reason.startswith("static")


@pytest.mark.parametrize("name", [k for k, known in KNOWN.items()
                                  if known.family == "optimizer"])
def test_probe_checks_pass_every_known_optimizer(name):
    assert OptimizerSpace.futile_reason(KNOWN[name].program()) is None


def test_op_that_raises_fails_the_program(monkeypatch):
    def boom(x):
        raise RuntimeError("shapes do not match")

    monkeypatch.setitem(OPS, "negative", dataclasses.replace(OPS["negative"], torch_fn=boom))
    result = evaluate(parse_program("u = negative(g)\nupdate = u * 0.01"))
    assert result.status == "failed" and result.fitness is None
    assert result.reason == "error: RuntimeError: shapes do not match"
    assert result.metrics["stopped_at_step"] == 1


def test_update_of_impossible_shape_fails_the_program(monkeypatch):
    truncate = dataclasses.replace(OPS["negative"], torch_fn=lambda x: x[..., :5])
    monkeypatch.setitem(OPS, "negative", truncate)
    result = evaluate(parse_program("u = negative(g)\nupdate = u * 0.01"))
    assert result.status == "failed"
    assert result.reason.startswith("error: ProgramOutputError: update has shape (2, 5)")


@pytest.mark.parametrize("text, message", [
    ("update = x * g", "reads 'x' before it is defined"),
    ("m = g * 0.1", "never assigns 'update'"),
])
def test_malformed_programs_fail_with_a_reason(text, message):
    result = evaluate(parse_program(text))
    assert result.status == "failed" and message in result.reason


def test_update_of_shape_s_by_1_is_broadcast():
    # One number per seed (the gradient's global norm), the same for every parameter.
    program = parse_program("update = global_norm(g)\nupdate = update * 1e-4")
    result = DigitsMLP(steps=5, filters=NO_FILTERS).evaluate(program)
    assert result.status == "ok", result.reason


def test_fit_broadcasts_or_raises():
    shape = torch.Size((2, 7))
    assert _fit(torch.ones(2, 1), shape, "update").shape == shape
    assert _fit(torch.tensor(3.0), shape, "update").shape == shape
    for bad in (torch.ones(3, 7), torch.ones(2, 6), torch.ones(2, 2, 7)):
        with pytest.raises(ProgramOutputError):
            _fit(bad, shape, "update")


def test_a_watcher_sees_every_training_step_and_the_score_is_unchanged():
    from evoprog.evaluators.progress import watching
    from evoprog.programs.known import get_known

    steps: list[tuple[int, int]] = []
    seed = OptimizerSpace.seed()
    unwatched = evaluate(seed, "digits_mlp", "A")  # also scores the seed for the task
    with watching(lambda step, total: steps.append((step, total))):
        watched = evaluate(seed, "digits_mlp", "A")
    total = get_task("digits_mlp", "A").settings.steps
    assert steps == [(step, total) for step in range(1, total + 1)]
    assert watched.fitness == unwatched.fitness
    layer_steps: list[int] = []
    with watching(lambda step, total: layer_steps.append(total)):
        evaluate(get_known("bn_relu").program(), "digits_layers", "A")
    layer = get_task("digits_layers", "A").settings
    assert len(layer_steps) == layer.steps * 3 * len(layer.seeds)  # 3 architectures

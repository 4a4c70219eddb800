"""Layer tasks: each rejection filter fires on a layer built to trip it, and good layers
get one score per architecture."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from evoprog.evaluators.layer_tasks import LAYER_TASKS, LayerSettings, LayerTask
from evoprog.programs.known import get_known
from evoprog.programs.layer_space import LayerSpace
from evoprog.programs.program import parse_program

# One thread each, as search workers evaluate: two threads on a busy two-core machine
# make these small models tens of times slower.
pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = LayerSettings(steps=40, quality_step=40, width=4)


@pytest.fixture(scope="module")
def task(one_thread) -> LayerTask:
    return LayerTask(settings=SMALL)


@pytest.fixture(scope="module")
def s0_result(task):
    return task.evaluate(get_known("evonorm_s0").program())


def test_known_layer_gets_a_score_per_architecture(s0_result):
    assert s0_result.status == "ok", s0_result.reason
    scores = s0_result.metrics["scores"]
    assert set(scores) == {"resnet", "mobilenet", "plain"}
    assert all(0.2 < v <= 1.0 for v in scores.values())
    assert s0_result.fitness == pytest.approx(sum(scores.values()) / 3)
    assert s0_result.metrics["stress_grad_norm"] < SMALL.max_grad_norm
    assert json.loads(json.dumps(s0_result.to_dict()))["metrics"]["scores"] == scores


def test_evaluation_is_deterministic(task, s0_result):
    again = task.evaluate(get_known("evonorm_s0").program())
    assert again.metrics["scores"] == s0_result.metrics["scores"]


def test_quality_filter_rejects_a_layer_that_erases_its_input(task):
    result = task.evaluate(parse_program("y = x * 0.0"))
    assert result.status == "rejected"
    assert result.reason.startswith("quality: resnet validation accuracy 0.100 < 0.2")


def test_quality_threshold_is_configurable():
    lenient = LayerTask(settings=LayerSettings(steps=5, quality_step=5, min_accuracy=0.0,
                                               width=4, architectures=("plain",)))
    assert lenient.evaluate(parse_program("y = x * 0.0")).status == "ok"


def test_nan_filter_rejects_log_of_zero(task):
    result = task.evaluate(parse_program("a = log(v0)\ny = x + a"))
    assert result.status == "rejected"
    assert result.reason.startswith("nan: the layer's output is NaN/Inf")


def test_stability_filter_rejects_exploding_gradients(task):
    result = task.evaluate(parse_program("y = x * 1000.0"))
    assert result.status == "rejected"
    assert result.reason.startswith("unstable: gradient norm")
    # ... and under a looser threshold the same layer passes that filter.
    loose = LayerTask(settings=LayerSettings(steps=1, quality_step=None, width=4,
                                             max_grad_norm=float("inf"),
                                             architectures=("plain",)))
    assert not (loose.evaluate(parse_program("y = x * 1000.0")).reason or "").startswith(
        "unstable")


def test_static_filter_fails_invalid_programs(task):
    result = task.evaluate(parse_program("y = v0 * 2.0"))
    assert result.status == "failed"
    assert result.reason == "static: 'y' does not depend on 'x'"


def test_time_limit_rejects():
    slow = LayerTask(settings=LayerSettings(steps=50, quality_step=None, width=4,
                                            time_limit=0.0, architectures=("plain",)))
    result = slow.evaluate(get_known("bn_relu").program())
    assert result.status == "rejected" and result.reason.startswith("time limit")


def test_layer_tasks_registry():
    task = LAYER_TASKS["digits_layers"]("B")
    assert task.family == "layer" and task.tier == "B"
    assert task.settings.steps > LayerTask().settings.steps


def test_scores_average_one_training_run_per_seed():
    settings = LayerSettings(steps=20, quality_step=None, width=4, architectures=("plain",))
    program = get_known("bn_relu").program()
    single = {seed: LayerTask(settings=dataclasses.replace(settings, seeds=(seed,)))
              .evaluate(program).fitness for seed in (0, 1)}
    assert single[0] != single[1]  # the seed changes the weights and the minibatches
    both = LayerTask(settings=dataclasses.replace(settings, seeds=(0, 1))).evaluate(program)
    assert both.metrics["seed_scores"] == {"plain": [single[0], single[1]]}
    assert both.fitness == pytest.approx((single[0] + single[1]) / 2)
    assert LAYER_TASKS["digits_layers"]("B").settings.seeds == (0, 1)


def test_running_out_of_device_memory_is_raised_not_blamed_on_the_layer(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(LayerTask, "_train", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        LayerTask(settings=SMALL).evaluate(LayerSpace.seed())

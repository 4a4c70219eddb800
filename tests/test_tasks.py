"""Every proxy task at tier A: good optimizers beat broken ones, results reproduce, the
filters (time limit included) fire. (The funnel is the search's: test_search_modes.)"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import comparable
from torch import nn

from evoprog.evaluators import (
    TASKS,
    TIERS,
    Filters,
    device,
    evaluate,
    get_task,
)
from evoprog.evaluators.cnn import FlatCNN
from evoprog.evaluators.data import VOCAB, VOCAB_SIZE, char_windows, stdlib_text
from evoprog.evaluators.mlp import log_softmax_and_softmax
from evoprog.evaluators.tasks import CharLM, DigitsCNN, DigitsMLP
from evoprog.evaluators.trainer import MAX_INSTRUCTIONS
from evoprog.programs.known import KNOWN
from evoprog.programs.program import parse_program
from evoprog.programs.space import OptimizerSpace

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = [DigitsMLP, DigitsCNN, CharLM]
FLOOR = {"digits_mlp": 0.85, "digits_cnn": 0.7, "char_lm": 0.2}  # seed's metric at tier A


def _numeric_only(cls: type) -> Filters:
    """Tier A's filters without the probe checks, so the numeric filters decide."""
    return dataclasses.replace(cls.TIER_SETTINGS["A"].filters, probe_checks=False)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_probe_checks_override_keeps_the_tiers_other_filters(cls):
    for tier in TIERS:
        task = cls(tier, probe_checks=False)
        assert task.settings.filters == dataclasses.replace(
            cls.TIER_SETTINGS[tier].filters, probe_checks=False)
        assert cls(tier).settings.filters.probe_checks


def test_registry_tiers_and_suite():
    assert set(TASKS) == {"digits_mlp", "digits_cnn", "char_lm"}
    for name in TASKS:
        tasks = [get_task(name, tier) for tier in TIERS]
        assert [(t.name, t.tier) for t in tasks] == [(name, tier) for tier in TIERS]
        a, b, c = (t.settings for t in tasks)
        # Costlier tiers train longer, on more seeds or bigger batches.
        assert a.steps * a.batch_size * len(a.seeds) < b.steps * b.batch_size * len(b.seeds)
        assert b.steps * b.batch_size * len(b.seeds) < c.steps * c.batch_size * len(c.seeds)
        assert a.filters.time_limit is not None
    with pytest.raises(ValueError, match="tier"):
        get_task("digits_cnn", "D")
    assert device() == torch.device("cpu") or torch.cuda.is_available()


def test_stdlib_corpus_is_fixed_and_split():
    text = stdlib_text()
    assert text is stdlib_text() and len(text) == 1_000_000
    assert 0 <= int(text.min()) and int(text.max()) < VOCAB_SIZE == len(VOCAB) + 1
    split = char_windows(32, 512, 64)
    assert split.x_train.shape == (512, 32) and split.x_val.shape == (64, 32)
    assert torch.equal(split.x_train[:, 1:], split.y_train[:, :-1])  # y is x shifted


def test_flat_cnn_matches_nn_sequential():
    model = FlatCNN(side=8, channels=(4, 6), classes=10)
    theta = model.init([torch.Generator().manual_seed(s) for s in (0, 1)])
    x = torch.rand(2, 5, 64)
    batched = model.logits(theta, x)
    for s in range(2):
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(6 * 16, 10))
        with torch.no_grad():
            for p, value in zip(net.parameters(), model.layout.segments(theta[s:s + 1]),
                                strict=True):
                p.copy_(value[0])
            assert torch.allclose(net(x[s].view(5, 1, 8, 8)), batched[s], atol=1e-5)


def test_flat_mlp_hand_written_backward_matches_autograd():
    model = DigitsMLP(hidden=(32, 16)).model()
    theta = model.init([torch.Generator().manual_seed(s) for s in (0, 1, 2)])
    x, y = torch.rand(3, 20, 64), torch.randint(0, 10, (3, 20))
    losses, grad = model.loss_and_grad(theta, x, y)
    leaf = theta.clone().requires_grad_(True)
    expected = model.losses(leaf, x, y)
    (expected_grad,) = torch.autograd.grad(expected.sum(), leaf)
    assert torch.allclose(losses, expected.detach(), atol=1e-6)
    assert torch.allclose(grad, expected_grad, atol=1e-7)


def test_flat_mlp_log_softmax_is_stable_for_large_logits():
    h = torch.tensor([[[1e4, -1e4, 0.0], [-3e3, -3e3, -3e3 + 1.0]]])
    log_p, p = log_softmax_and_softmax(h)
    assert torch.isfinite(log_p).all() and torch.isfinite(p).all()
    assert torch.allclose(log_p, torch.log_softmax(h, dim=-1))
    assert torch.allclose(p, torch.softmax(h, dim=-1))
    assert torch.allclose(p.sum(dim=-1), torch.ones(1, 2))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_seed_beats_broken_programs(cls):
    seed = cls(normalize=False).evaluate(OptimizerSpace.seed())
    assert seed.status == "ok", seed.reason
    assert seed.fitness == seed.metrics["metric"] > FLOOR[cls.name]
    zero = parse_program("update = g * 0.0")
    broken = cls(normalize=False, filters=_numeric_only(cls)).evaluate(zero)
    assert (broken.status, broken.reason) == ("rejected", "no progress")
    refused = cls(normalize=False).evaluate(zero)  # the probe shows it cannot train
    assert (refused.status, refused.reason) == ("rejected",
                                                "static: the update is below 1e-12 at "
                                                "every probe step")
    tiny = cls(normalize=False, filters=Filters(progress_step=None)).evaluate(
        parse_program("update = g * 1e-9"))
    assert tiny.status == "ok" and tiny.fitness < seed.fitness - 0.15


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_normalized_fitness_is_bit_for_bit_reproducible(cls):
    program = KNOWN["adamw"].program()
    first = cls(steps=20).evaluate(program)
    again = cls(steps=20).evaluate(program)
    assert comparable(first) == comparable(again)
    reference = first.metrics["seed_metric"]
    assert first.fitness == pytest.approx(first.metrics["metric"] / reference)
    assert cls(steps=20).evaluate(OptimizerSpace.seed()).fitness == 1.0


@pytest.mark.parametrize("cls", [DigitsCNN, CharLM], ids=lambda c: c.name)
@pytest.mark.parametrize("text, reason", [
    ("update = log(m)", "nan"),
    ("update = g * -1e3", "diverged"),
    ("update = g * 1e-12", "no progress"),
])
def test_numeric_filters(cls, text, reason):
    result = cls(normalize=False, filters=_numeric_only(cls)).evaluate(parse_program(text))
    assert (result.status, result.reason, result.fitness) == ("rejected", reason, None)
    assert result.metrics["stopped_at_step"] <= cls.TIER_SETTINGS["A"].filters.progress_step


@pytest.mark.parametrize("name", list(TASKS))
def test_time_limit_stops_a_slow_run(name):
    slow = TASKS[name](filters=Filters(time_limit=1e-6))
    result = slow.evaluate(KNOWN["adamw"].program())
    assert (result.status, result.reason, result.fitness) == ("rejected", "time limit", None)
    assert result.metrics["stopped_at_step"] == result.metrics["steps"] == 1


def test_time_limit_can_be_lifted_alone():
    """``time_limit=None`` lifts a tier's limit and keeps its other filters, for every
    task; layer tasks take no other setting by name."""
    for name in TASKS:
        tier = get_task(name, "B")
        lifted = get_task(name, "B", time_limit=None)
        assert tier.settings.filters.time_limit is not None
        assert lifted.settings.filters == dataclasses.replace(tier.settings.filters,
                                                              time_limit=None)
    for name in ("digits_layers", "digits_layers_small_batch"):
        task = get_task(name, "B", time_limit=5.0)
        assert task.settings.time_limit == 5.0
        assert task.settings.steps == get_task(name, "B").settings.steps
    assert get_task("digits_layers_small_batch", time_limit=5.0).settings.batch_size == 8
    with pytest.raises(ValueError, match="takes no settings"):
        get_task("digits_layers", steps=5)


def test_overlong_program_fails_before_training():
    text = "\n".join(["u = g * 0.5"] * (MAX_INSTRUCTIONS + 1) + ["update = u * 0.001"])
    result = evaluate(parse_program(text), "digits_mlp")
    assert result.status == "failed" and "instructions" in result.reason
    assert result.metrics["stopped_at_step"] == 0


# --- learning-rate scales ---------------------------------------------------------------

SGD = KNOWN["sgd"].program(lr=0.1)


def test_lr_scales_are_bit_for_bit_reproducible_and_pick_the_best_scale():
    task = DigitsMLP(normalize=False, steps=20, lr_scales=(1, 3, 10))
    assert task.settings.lr_scales == (1.0, 3.0, 10.0)
    first, again = task.evaluate(SGD), task.evaluate(SGD)
    assert comparable(first) == comparable(again)
    per_scale = first.metrics["per_scale"]
    assert [e["lr_scale"] for e in per_scale] == [1.0, 3.0, 10.0]
    assert all(e["status"] == "ok" for e in per_scale)
    best = max(per_scale, key=lambda e: e["metric"])
    assert first.metrics["lr_scale"] == best["lr_scale"] != 1.0
    assert first.fitness == first.metrics["metric"] == best["metric"]
    assert first.metrics["val_accuracy_per_seed"] == best["val_accuracy_per_seed"]
    # Each scale trains as it would alone: the program sees lr x scale.
    alone = DigitsMLP(normalize=False, steps=20, lr_scales=(best["lr_scale"],)).evaluate(SGD)
    assert alone.fitness == pytest.approx(best["metric"], abs=1e-5)
    scaled = DigitsMLP(normalize=False, steps=20, lr_scales=(1,)).evaluate(
        KNOWN["sgd"].program(lr=0.1 * best["lr_scale"]))
    assert scaled.fitness == pytest.approx(best["metric"], abs=1e-5)


def test_a_diverging_scale_does_not_reject_the_candidate():
    result = DigitsMLP(normalize=False, steps=20, lr_scales=(1, 1000, 3)).evaluate(SGD)
    assert result.status == "ok" and result.metrics["lr_scale"] == 3.0
    low, diverged, high = result.metrics["per_scale"]
    assert diverged["status"] == "rejected" and diverged["reason"] == "diverged"
    assert diverged["stopped_at_step"] <= 5 and "metric" not in diverged
    # The rows of the other scales train on as if the diverged ones had never been there.
    without = DigitsMLP(normalize=False, steps=20, lr_scales=(1, 3)).evaluate(SGD)
    for kept, reference in zip((low, high), without.metrics["per_scale"], strict=True):
        assert kept["status"] == "ok" and kept["lr_scale"] == reference["lr_scale"]
        assert kept["metric"] == pytest.approx(reference["metric"], abs=1e-5)


def test_the_candidate_is_rejected_when_every_scale_fails():
    result = DigitsMLP(normalize=False, steps=20, lr_scales=(300, 1000)).evaluate(SGD)
    assert (result.status, result.reason, result.fitness) == ("rejected", "diverged", None)
    steps = [e["stopped_at_step"] for e in result.metrics["per_scale"]]
    assert all(e["status"] == "rejected" for e in result.metrics["per_scale"])
    assert result.metrics["stopped_at_step"] == max(steps)


def test_scales_filter_progress_per_scale_and_normalize_at_the_same_scales():
    # At scale 1e-6 AdamW makes no progress by step 10; at scale 1 it does.
    task = DigitsMLP(steps=20, lr_scales=(1e-6, 1), filters=Filters(progress_step=10))
    result = task.evaluate(KNOWN["adamw"].program())
    slow, fine = result.metrics["per_scale"]
    assert (slow["status"], slow["reason"], slow["stopped_at_step"]) == (
        "rejected", "no progress", 10)
    assert result.ok and result.metrics["lr_scale"] == 1.0 == fine["lr_scale"]
    seed = task.evaluate(OptimizerSpace.seed())
    assert seed.fitness == 1.0 and seed.metrics["metric"] == result.metrics["seed_metric"]


def test_a_program_that_ignores_lr_trains_one_scale_for_all():
    result = DigitsMLP(normalize=False, steps=10, lr_scales=(1, 3)).evaluate(
        parse_program("update = g * 0.01"))
    first, second = result.metrics["per_scale"]
    assert result.metrics["lr_scale"] == 1.0
    assert {k: v for k, v in first.items() if k != "lr_scale"} == {
        k: v for k, v in second.items() if k != "lr_scale"}


@pytest.mark.parametrize("scales", [(), (0.0,), (1.0, -3.0), (math.inf,)])
def test_lr_scales_must_be_positive(scales):
    with pytest.raises(ValueError, match="lr_scales must be positive"):
        get_task("digits_mlp", "B", lr_scales=scales)  # refused before any training
    with pytest.raises(ValueError, match="lr_scales must be positive"):
        DigitsMLP(steps=5, lr_scales=scales)


@pytest.mark.parametrize("overrides, message", [
    ({"seeds": ()}, "at least one seed"),
    ({"steps": 0}, "at least 1"),
    ({"batch_size": 0}, "at least 1"),
])
def test_settings_that_cannot_train_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        DigitsMLP(**overrides)  # refused before any training


def test_a_batch_larger_than_the_training_set_is_one_clear_error():
    with pytest.raises(ValueError, match="a batch of 5000 from 1437 training examples"):
        evaluate(KNOWN["adamw"].program(), "digits_mlp", "A", batch_size=5000, steps=2)


def test_seed_reference_is_kept_per_tier(monkeypatch):
    """The char LM's validation windows depend on the tier, so two tiers trained with
    the same settings still need a seed reference each."""
    from evoprog.evaluators import EvalResult, tasks

    monkeypatch.setattr(tasks, "_SEED_METRICS", {})  # no reference from earlier tests
    tier_a, tier_b = CharLM("A"), CharLM("B")
    tier_b.settings = tier_a.settings
    calls = []

    def run(self, program, settings=None):
        calls.append(self.tier)
        return EvalResult(fitness=float(len(calls)), status="ok")

    monkeypatch.setattr(CharLM, "run", run)
    assert (tier_a.seed_metric(), tier_b.seed_metric()) == (1.0, 2.0)
    assert calls == ["A", "B"]


def test_running_out_of_device_memory_is_raised_not_blamed_on_the_program(monkeypatch):
    """The trainer records what a program does wrong as its failure, but not the
    device running out of memory: that is raised, for the search to run it again."""
    from evoprog.programs.interpreter import CompiledProgram

    def out_of_memory(self, env):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(CompiledProgram, "__call__", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        DigitsMLP(steps=2).evaluate(KNOWN["adamw"].program())


def test_a_progress_watcher_can_tell_the_seed_reference_from_the_program(monkeypatch):
    """Normalizing trains the AdamW seed after the program: a command's status line
    must not show those steps as the program's."""
    from evoprog.evaluators import get_task, tasks
    from evoprog.evaluators.progress import reference_in_training, watching

    monkeypatch.setattr(tasks, "_SEED_METRICS", {})  # the seed trains here
    seen = []
    task = get_task("digits_mlp", steps=4, lr_scales=(1.0,))
    with watching(lambda step, steps: seen.append((step, reference_in_training()))):
        assert task.evaluate(KNOWN["lion"].program()).ok
    program, reference = seen[:4], seen[4:]
    assert [step for step, _ in program] == [1, 2, 3, 4] and {r for _, r in program} == {None}
    assert [step for step, _ in reference] == [1, 2, 3, 4]
    assert {r for _, r in reference} == {"now the AdamW seed that fitness is relative to"}
    assert reference_in_training() is None

"""Proxy tasks: small, fast training runs that score a candidate program."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..programs.program import Program
from .data import digits
from .mlp import FlatMLP
from .result import EvalResult
from .trainer import Filters, train


class Task:
    """A way to score a program of one family.

    ``tier`` orders tasks by cost: tier "A" is the cheap proxy every candidate gets.
    """

    name: str = ""
    tier: str = "A"
    family: str = ""

    def evaluate(self, program: Program) -> EvalResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, tier={self.tier!r})"


class DigitsMLP(Task):
    """Optimizer proxy: train an MLP 64-128-128-10 (ReLU) on scikit-learn's digits.

    The candidate update rule trains one model per seed (all seeds in one vectorized
    run) for ``steps`` minibatch steps with a cosine schedule fed to the program as
    ``lr``. Fitness is the mean over seeds of the validation accuracy (360 held-out
    images) after the last step; higher is better. Programs that crash, blow up or do
    not learn are stopped early (see ``trainer``) and get no fitness.
    """

    name = "digits_mlp"
    tier = "A"
    family = "optimizer"

    def __init__(self, seeds: Sequence[int] = (0, 1), steps: int = 200, batch_size: int = 128,
                 hidden: Sequence[int] = (128, 128), filters: Filters | None = None):
        self.seeds = tuple(int(s) for s in seeds)
        self.steps = steps
        self.batch_size = batch_size
        self.hidden = tuple(hidden)
        self.filters = filters if filters is not None else Filters()

    def evaluate(self, program: Program) -> EvalResult:
        start = time.perf_counter()
        data = digits()
        model = FlatMLP((data.features, *self.hidden, data.classes))
        result = train(program, model, data, self.seeds, self.steps, self.batch_size,
                       self.filters)
        result.seconds = time.perf_counter() - start
        return result

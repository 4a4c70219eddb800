"""What the plots say, read back from matplotlib's own objects."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from evoprog.search.plots import _plot_front  # noqa: E402


def test_the_pareto_legend_counts_each_program_once():
    """A cache hit repeats its program's scores: the front has two programs, not three."""
    def individual(*values):
        return {"metrics": {"scores": dict(zip(("plain", "resnet", "mobilenet"), values,
                                               strict=True))}}

    scored = [individual(0.9, 0.5, 0.7), individual(0.9, 0.5, 0.7),  # a copy
              individual(0.5, 0.9, 0.7), individual(0.4, 0.4, 0.4)]
    fig, ax = plt.subplots()
    try:
        _plot_front(ax, scored)
        _, labels = ax.get_legend_handles_labels()
    finally:
        plt.close(fig)
    assert "Pareto front over 3 scores (2)" in labels

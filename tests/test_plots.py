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


def test_the_rediscovery_plot_marks_an_unfinished_run():
    """A run stopped before its budget ends its curve with a hollow circle, in the
    legend once; a finished run gets none."""
    from evoprog.search.plots import rediscovery_figure
    from evoprog.search.rediscover import Report, RunReport

    def run(run_id, strategy, status):
        return RunReport(run_id=run_id, seed=0, strategy=strategy, individuals=5,
                         generated=5, evaluated=4, seconds=1.0, best_fitness=1.1,
                         curve=[(1, 1.0), (3, 1.1)], status=status)

    def circles(report):
        fig = rediscovery_figure(report)
        try:
            ax = fig.axes[0]
            _, labels = ax.get_legend_handles_labels()
            hollow = [line for line in ax.get_lines() if line.get_marker() == "o"]
            return labels, len(hollow)
        finally:
            plt.close(fig)

    labels, hollow = circles(Report("lion", {}, [run(1, "evolution", "stopped"),
                                                 run(2, "random", "interrupted"),
                                                 run(3, "evolution", "finished")], []))
    assert hollow == 2
    assert labels.count("run unfinished (budget not all searched)") == 1
    labels, hollow = circles(Report("lion", {}, [run(3, "evolution", "finished")], []))
    assert hollow == 0 and not any("unfinished" in label for label in labels)

"""Figures: a run's fitness over birth order (with its Pareto front when candidates have
several scores) and a rediscovery study's best fitness against children evaluated.

matplotlib is imported inside the functions, with its file-only backend, so commands
that draw nothing do not pay for it and no display is needed.
"""

from __future__ import annotations

from pathlib import Path

from ..programs.program import parse_program
from ..programs.space import get_space
from .output_files import save_figure
from .pareto import pareto_front
from .ranking import distinct_functions


def first_recognized(family: str, individuals: list[dict]) -> list[tuple[dict, str]]:
    """(individual, label) for the first individual of each known program found."""
    space = get_space(family)
    ok = [ind for ind in individuals if ind["status"] == "ok"]
    found: dict[str, tuple[dict, str]] = {}
    # Each function is recognized once, at its first individual: fingerprints cost ~1 ms,
    # recognition ~10x more.
    for ind in distinct_functions(ok, len(ok), space, {}):
        match = space.recognize(parse_program(ind["text"]))
        if match is not None and match.name not in found:
            found[match.name] = (ind, str(match))
    return list(found.values())


def plot_run(run: dict, individuals: list[dict], output: Path) -> None:
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = int(run["config"].get("population", 100))
    ok = [(i["birth"], i["fitness"]) for i in individuals
          if i["status"] == "ok" and i["fitness"] is not None]
    bad = [i["birth"] for i in individuals if i["status"] != "ok"]
    scored = [i for i in individuals if i["status"] == "ok"
              and len((i["metrics"] or {}).get("scores") or {}) >= 2]
    if scored:
        fig, (ax, front_ax) = plt.subplots(1, 2, figsize=(16, 5.5), dpi=120,
                                           gridspec_kw={"width_ratios": [3, 2]})
        _plot_front(front_ax, scored)
    else:
        fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    if ok:
        births, fits = zip(*ok, strict=True)
        ax.scatter(births, fits, s=6, color="0.65", label="individual", zorder=1)
        best, running = [], float("-inf")
        for f in fits:
            running = max(running, f)
            best.append(running)
        ax.step(births, best, where="post", color="tab:red", lw=2, label="best so far")
        medians = [statistics.median(fits[max(0, k - window + 1):k + 1])
                   for k in range(len(fits))]
        ax.plot(births, medians, color="tab:blue", lw=1.5,
                label=f"population median (last {window})")
        low, high = min(fits), max(fits)
    else:
        low, high = 0.0, 1.0
    pad = 0.08 * (high - low or 1.0)
    ax.set_ylim(low - 2 * pad, high + 2 * pad)
    if bad:
        ax.scatter(bad, [low - 1.5 * pad] * len(bad), marker="|", s=60, color="black",
                   label=f"rejected / failed ({len(bad)})", zorder=2)
    last = max((i["birth"] for i in individuals), default=1) or 1
    for k, (ind, label) in enumerate(first_recognized(run["family"], individuals)):
        # Below the best-so-far line, one step lower each, so labels do not overlap;
        # those in the right part of the plot extend to the left.
        right = ind["birth"] > 0.6 * last
        ax.annotate(label, (ind["birth"], ind["fitness"]), xytext=(-8 if right else 8,
                                                                   -24 - 16 * k),
                    textcoords="offset points", fontsize=8, ha="right" if right else "left",
                    arrowprops={"arrowstyle": "->", "color": "0.3"},
                    bbox={"boxstyle": "round", "fc": "lightyellow", "ec": "0.6"}, zorder=4)
    ax.set_xlabel("birth order")
    ax.set_ylabel("fitness")
    ax.set_title(f"run {run['id']} ({run['family']}): {len(individuals)} individuals")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    save_figure(fig, output)


def _plot_front(ax, scored: list[dict]) -> None:
    """Per-task (per-architecture) scores of the first two keys, with the run's Pareto
    front over all keys highlighted."""
    keys = sorted(scored[0]["metrics"]["scores"])
    scores = [i["metrics"]["scores"] for i in scored]
    front = pareto_front(scores)
    xs = [s.get(keys[0], float("nan")) for s in scores]
    ys = [s.get(keys[1], float("nan")) for s in scores]
    ax.scatter(xs, ys, s=8, color="0.65", label="individual")
    points = sorted((xs[i], ys[i]) for i in front)
    # Copies of one program (cache hits) share its scores: count each point once.
    distinct = {tuple(sorted(scores[i].items())) for i in front}
    ax.plot(*zip(*points, strict=True), "o", color="tab:red", ms=6,
            label=f"Pareto front over {len(keys)} scores ({len(distinct)})")
    ax.set_xlabel(keys[0])
    ax.set_ylabel(keys[1])
    ax.set_title("per-task scores")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def plot_rediscovery(report, output: Path) -> None:
    save_figure(rediscovery_figure(report), output)


def rediscovery_figure(report):
    """Best fitness so far against children evaluated, one curve per run; a star where
    the target entered the top 10, a hollow circle where an unfinished run stops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    colors = {"evolution": "tab:red", "random": "tab:blue"}
    labelled: set[str] = set()
    for r in report.runs:
        if not r.curve:
            continue
        xs, ys = zip(*r.curve, strict=True)
        xs, ys = [*xs, r.evaluated], [*ys, ys[-1]]
        label = None if r.strategy in labelled else f"{r.strategy} (best so far)"
        labelled.add(r.strategy)
        ax.step(xs, ys, where="post", color=colors[r.strategy], alpha=0.8, label=label)
        if r.found:
            ax.plot([r.evaluated_by_then], [r.fitness], "k*", ms=10)
        if not r.finished:  # its budget not all searched: the curve stops early
            unfinished = "unfinished" not in labelled
            labelled.add("unfinished")
            ax.plot([xs[-1]], [ys[-1]], "o", mfc="none", mec=colors[r.strategy], ms=9,
                    label="run unfinished (budget not all searched)" if unfinished
                    else None)
    ax.set_xlabel("children evaluated (cache hits excluded)")
    ax.set_ylabel("best fitness so far")
    ax.set_title(f"rediscovering {report.target}: stars mark the target family "
                 "entering the top 10")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig



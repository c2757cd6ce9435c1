"""Pictures of a comparison: loss curves per scenario (non-finite steps marked) and the stability map.

    plot_compare(result, "compare.png")

matplotlib is an optional extra (``pip install 'mnist-softmax[plot]'``) imported only here, only
when a plot is asked for; without it :func:`require_matplotlib` raises
:class:`mnist_cli.errors.MissingExtraError` with the install line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mnist_cli.compare import CompareResult, to_document
from mnist_cli.errors import MissingExtraError
from mnist_cli.fileio import atomic_write
from mnist_cli.present import map_grid, number_text

INSTALL_HINT = "pip install 'mnist-softmax[plot]'"
NCOLS = 4  # loss-curve panels per row
NEVER = "#d9f0d3"  # heat-map colour of a cell that never went non-finite
NOT_RUN = "#eeeeee"


def require_matplotlib():
    """Return ``matplotlib.pyplot`` on the non-interactive Agg backend, or raise MissingExtraError."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError(f"{{plot}} needs matplotlib: {INSTALL_HINT}") from None
    return plt


def _curves(ax, runs: list, colors: dict) -> None:
    """Training loss of each run against the step, log scale; non-finite steps as ticks on top."""
    for k, run in enumerate(runs):
        losses = run.result.losses
        steps = np.arange(1, losses.size + 1)
        bad = ~np.isfinite(losses)
        color = colors[run.loss]
        shown = np.where(bad | (losses <= 0), np.nan, losses)  # log scale: breaks the line where undefined
        few = np.isfinite(shown).sum() < 20  # a run that broke at once: show its few points
        ax.plot(steps, shown, color=color, lw=1.0, marker="o" if few else None, ms=3, label=f"{run.loss}")
        if bad.any():
            first = int(steps[bad][0])
            y = 0.96 - 0.06 * k  # one row of ticks per loss, in axes coordinates
            ax.plot(steps[bad], np.full(bad.sum(), y), "|", color=color, ms=6, mew=0.6,
                    transform=ax.get_xaxis_transform(), label=f"{run.loss}: non-finite ({bad.sum()} steps)")
            ax.axvline(first, color=color, ls="--", lw=0.8)
            ax.annotate(f"{run.loss} NaN from step {first}", xy=(first, y - 0.05), xycoords=("data", "axes fraction"),
                        xytext=(4, 0), textcoords="offset points", fontsize=7, color=color, va="top")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")


def _heatmap(ax, grid: dict, loss: str, labels: dict) -> None:
    """First non-finite step per cell: red, darker = earlier; green = never; grey = not run."""
    import matplotlib.colors as mcolors
    from matplotlib.patches import Rectangle

    steps = grid["steps"][loss]
    values = np.array([[math.log10(s) if s is not None else np.nan for s in row] for row in steps], dtype=float)
    values = values.reshape(len(grid["rows"]) or 1, len(grid["cols"]))
    cmap = mcolors.LinearSegmentedColormap.from_list("fail", ["#67000d", "#fcbba1"]).with_extremes(bad=NEVER)
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=3, aspect="auto")
    for i, row in enumerate(steps):
        for j, s in enumerate(row):
            ran = grid["ran"][i][j]
            if not ran:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=NOT_RUN))
            text = ("never" if s is None else f"step {s}") if ran else "not run"
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if s is not None and s < 30 else "black")
    ax.set_xticks(range(len(grid["cols"])), [labels["col"](v) for v in grid["cols"]])
    ax.set_yticks(range(len(grid["rows"]) or 1), [labels["row"](r) for r in grid["rows"]] or [""])
    ax.set_xlabel(labels["col_name"])
    ax.set_ylabel(labels["row_name"])
    ax.set_title(f"{loss}: first non-finite step", fontsize=10)


_NAMES = {"dtype": "dtype", "lr": "learning rate", "input_scale": "input scale", "seed": "seed"}


def _value(axis: str, v) -> str:
    return f"x{number_text(v)}" if axis == "input_scale" else (number_text(v) if axis == "lr" else str(v))


def plot_compare(result: CompareResult, path: str | Path, doc: dict | None = None) -> Path:
    """Write the figure to ``path`` (PNG): one loss-curve panel per scenario, one heat map per loss."""
    plt = require_matplotlib()
    doc = doc if doc is not None else to_document(result)
    path = Path(path)
    scenarios = doc["scenarios"]
    losses = doc["settings"]["losses"]
    runs_by_label: dict[str, list] = {}
    for run in result.runs:
        runs_by_label.setdefault(run.cell.label, []).append(run)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {loss: palette[i % len(palette)] for i, loss in enumerate(losses)}

    ncols = min(NCOLS, len(scenarios))
    nrows = math.ceil(len(scenarios) / ncols)
    grid = map_grid(doc["stability_map"])
    fig = plt.figure(figsize=(4.2 * ncols, 3.4 * nrows + 3.6), layout="constrained")
    sub_curves, sub_map = fig.subfigures(2, 1, height_ratios=[3.4 * nrows, 3.6])
    axes = np.atleast_1d(sub_curves.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, s in zip(axes, scenarios):
        _curves(ax, runs_by_label[s["label"]], colors)
        about = f"lr {s['lr']:g}, input x{s['input_scale']:g}, {s['dtype']}, seed {s['seed']}"
        ax.set_title(f"{s['label']}\n{about}" if s["name"] else s["label"], fontsize=9)  # else the label says it
    for ax in axes[len(scenarios):]:
        ax.set_visible(False)
    st = doc["settings"]
    sub_curves.suptitle(f"Training loss per scenario ({st['steps']} steps of {st['batch_size']}, "
                        f"{doc['data']['n_train']} training images); ticks on top = non-finite steps")

    labels = {
        "col": lambda v: _value(grid["col_axis"], v),
        "row": lambda r: ", ".join(_value(a, v) for a, v in zip(grid["row_axes"], r)),
        "col_name": _NAMES[grid["col_axis"]],
        "row_name": ", ".join(_NAMES[a] for a in grid["row_axes"]),
    }
    map_axes = np.atleast_1d(sub_map.subplots(1, len(losses), squeeze=False)).ravel()
    for ax, loss in zip(map_axes, losses):
        _heatmap(ax, grid, loss, labels)
    sub_map.suptitle("Stability map: first non-finite step (green = never)")
    try:
        with atomic_write(path, "{plot} path") as fh:
            fig.savefig(fh, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path

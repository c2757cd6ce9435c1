"""Pictures of a comparison: the stability map as heat maps, and loss curves of a chosen few cells.

    plot_compare(doc, "compare.png", curves)   # doc: compare's document; curves: (cell label, loss) -> per-step losses

The map has one panel per (dtype, loss): learning rate down, input scale across; a cell's colour is
the earliest first non-finite step over its seeds (dark red = step 1-3, light = late, green =
never), its text how many seeds broke ("2/3") and that step. Loss curves are drawn for the named
scenarios (or, in a sweep without any, at most :data:`MAX_CURVES` cells: the earliest breaks and a
healthy one), on a log step axis so a break at step 2 is as visible as one at step 900; where the
losses coincide, the first is drawn solid and the next ones dashed on top.

matplotlib is an optional extra (``pip install 'mnist-softmax[plot]'``) imported only here, only
when a plot is asked for; without it :func:`require_matplotlib` raises
:class:`mnist_cli.errors.MissingExtraError` with the install line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mnist_cli.errors import MissingExtraError, SettingsError
from mnist_cli.fileio import atomic_write
from mnist_cli.report.compare import form_text, forms, seed_steps
from mnist_cli.report.evaluate import confusion_title
from mnist_cli.report.text import accuracy_text, number_text

INSTALL_HINT = "pip install 'mnist-softmax[plot]'"
NCOLS = 4  # loss-curve panels per row
MAX_CURVES = 4  # loss-curve panels of a sweep without named scenarios
NEVER = "#d9f0d3"  # heat-map colour of a cell that never went non-finite
NOT_RUN = "#eeeeee"
STYLES = ("-", "--", ":", "-.")  # one per loss, in order: later losses dashed over earlier ones


#: file name ending -> the image format written (matplotlib's name for it)
IMAGE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def image_format(path) -> str:
    """The format the file at ``path`` is written in, chosen by its ending; :class:`SettingsError` for
    any other ending (writing PNG bytes into ``map.jpg`` would only mislead)."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise SettingsError("plot", f"{Path(path).name!r}: the file name must end in "
                            f"{', '.join(IMAGE_FORMATS)} (the image format is chosen by it)")
    return IMAGE_FORMATS[suffix]


def probe_plot(path) -> None:
    """Before any work: the format is known from the name (:class:`SettingsError`, exit 2), matplotlib
    is installed (:class:`MissingExtraError`) and the file can be written (:class:`OutputError`)."""
    from mnist_cli.fileio import check_writable

    image_format(path)
    require_matplotlib()
    check_writable(path, "{plot} path")


def save_figure(plt, fig, path) -> Path:
    """Write ``fig`` to ``path`` atomically in the format its ending names, and close it."""
    try:
        with atomic_write(path, "{plot} path") as fh:
            fig.savefig(fh, dpi=100, format=image_format(path))
    finally:
        plt.close(fig)
    return Path(path)


def plot_evaluation(path, W: np.ndarray, report: dict, mistake_images: np.ndarray) -> Path:
    """The tutorial's classic figure: each class's column of ``W`` (784,) as a 28x28 template (red:
    ink there raises the class's logit, blue: lowers it), over the most confident mistakes of
    ``report["confident_mistakes"]`` (their images ``mistake_images`` (m, 784)) with label, prediction
    and probability; beside them the confusion matrix (:func:`_confusion_panel`)."""
    plt = require_matplotlib()
    k, m = W.shape[1], len(mistake_images)
    rows, cols = 2 + (1 if m else 0), max(5, m)
    fig = plt.figure(figsize=(2.0 * cols + 5.2, 2.3 * rows + 0.6), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[2.0 * cols, 5.2])
    axes = left.subplots(rows, cols, squeeze=False)
    finite = W[np.isfinite(W)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    for c in range(k):
        ax = axes[c // 5, c % 5]
        ax.imshow(W[:, c].reshape(28, 28), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"W for {c}", fontsize=10)
        bad = int(np.count_nonzero(~np.isfinite(W[:, c])))
        if bad:  # NaN pixels draw as nothing: say so rather than show a blank square
            ax.text(0.5, 0.5, f"{bad} of {W.shape[0]}\nnon-finite", ha="center", va="center", fontsize=8,
                    color="firebrick", transform=ax.transAxes)
    for j, (img, mk) in enumerate(zip(mistake_images, report["confident_mistakes"])):
        ax = axes[2, j]
        ax.imshow(np.asarray(img).reshape(28, 28), cmap="gray_r")
        ax.set_title(f"#{mk['index']}: {mk['label']} read as {mk['predicted']}\np = {mk['probability']:.3f}",
                     fontsize=9, color="firebrick")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_visible(False)
    _confusion_panel(right.subplots(), report)
    fig.suptitle(evaluation_title(report, W, m) + "; right: the confusion matrix", fontsize=10)
    return save_figure(plt, fig, path)


def _confusion_panel(ax, report: dict) -> None:
    """scikit-learn's ``ConfusionMatrixDisplay``: true class down, predicted across, each cell's value
    written in it (counts, or 2-decimal fractions with ``--normalize``), dark cells in white text."""
    norm = report.get("confusion_normalized")
    cm = np.asarray(norm["matrix"] if norm else report["confusion_matrix"], dtype=np.float64)  # (k, k)
    k = cm.shape[0]
    top = float(cm.max()) if cm.size else 1.0
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=top or 1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]:.2f}" if norm else f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > top / 2 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set(xlabel="predicted label", ylabel="true label")
    ax.set_title(confusion_title(report), fontsize=9)


#: The most images predict --plot draws (the first ones of the report).
MAX_PANELS = 20


def plot_predictions(path, images: np.ndarray, report: dict) -> Path:
    """The 28x28 images the model saw (``images`` (n, 784) uint8, after a picture's MNIST geometry), at most
    :data:`MAX_PANELS`, each titled with its index, label (if known), prediction and its probability;
    white on black as MNIST stores them."""
    plt = require_matplotlib()
    rows = report["predictions"][:MAX_PANELS]
    cols = min(len(rows), 5)
    fig, axes = plt.subplots((len(rows) + cols - 1) // cols, cols, squeeze=False, layout="constrained",
                             figsize=(max(2.0 * cols, 6.0), 2.3 * ((len(rows) + cols - 1) // cols) + 0.5))
    for ax, img, row in zip(axes.ravel(), images, rows):
        ax.imshow(np.asarray(img).reshape(28, 28), cmap="gray", vmin=0, vmax=255)
        label = "" if row["label"] is None else f": label {row['label']}"
        guess = (f"read as {row['predicted']} (p = {row['probabilities'][row['predicted']]:.3f})"
                 if row["predicted"] is not None else "non-finite logits")
        wrong = row["label"] is not None and row["label"] != row["predicted"]
        ax.set_title(f"#{row['index']}{label}\n{guess}", fontsize=9, color="firebrick" if wrong else "black")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_visible(False)
    fig.suptitle(f"What the model saw: the 28x28 inputs of {report['source']}"
                 + (f" (the first {MAX_PANELS})" if len(report["predictions"]) > MAX_PANELS else ""), fontsize=10)
    return save_figure(plt, fig, path)


def evaluation_title(report: dict, W: np.ndarray, mistakes: int) -> str:
    """The title of :func:`plot_evaluation`: what the colours mean and their range (or that the weights
    are not finite), the row of mistakes only when there is one, and the accuracy as the text report
    words it (``n/a`` with the reason when a logit was non-finite)."""
    finite = W[np.isfinite(W)]
    if finite.size == W.size:
        scale = f"|W| up to {float(np.max(np.abs(W))) if W.size else 0.0:.3g}"
    else:
        scale = f"non-finite weights: {W.size - finite.size} of {W.size}, drawn blank"
    below = "below: the most confident mistakes; " if mistakes else ""
    accuracy = accuracy_text(report["accuracy"], report.get("accuracy_meaningful", True), report.get(
        "weights_finite", finite.size == W.size))
    return (f"Templates: each class's weights as a 28x28 image (red: ink there raises the logit, blue: lowers it; "
            f"{scale})\n{below}{report['split']} accuracy {accuracy}")


def plot_training(path, summary: dict, losses: np.ndarray, history: list[dict]) -> Path:
    """Loss (every step's batch loss, light; the training and validation loss of the current
    parameters, bold) and accuracy (training and validation) against the step, non-finite steps
    marked on top."""
    plt = require_matplotlib()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    steps = np.arange(1, len(losses) + 1)
    finite = np.isfinite(losses)
    ax_loss.plot(steps[finite], losses[finite], color="0.75", lw=0.8, label="batch loss")
    bad = steps[~finite]
    if bad.size:
        ax_loss.plot(bad, np.full(bad.size, 1.0), "|", color="firebrick", transform=ax_loss.get_xaxis_transform(),
                     ms=8, label="non-finite step")
    for key, name, color in (("train", "training", "tab:blue"), ("val", "validation", "tab:orange")):
        # a non-finite loss means non-finite logits: their accuracy only counts zeros, so it is not drawn
        points = [r for r in history if f"{key}_loss" in r and math.isfinite(r[f"{key}_loss"])]
        if points:
            at = [r["step"] for r in points]
            ax_loss.plot(at, [r[f"{key}_loss"] for r in points], "o-", color=color, ms=3, label=f"{name} loss")
            ax_acc.plot(at, [r[f"{key}_accuracy"] for r in points], "o-", color=color, ms=3,
                        label=f"{name} accuracy")
    if not any(ax_acc.lines):  # say why the curves are missing, on a step axis of the run's own length
        why = ("no accuracy curve: the parameters were non-finite at every scored step" if history
               else "no accuracy curve: none scored (add --val-split, or more steps than --log-every)")
        ax_acc.text(0.5, 0.6, why, ha="center", fontsize=8, wrap=True, transform=ax_acc.transAxes)
        ax_acc.set_xlim(1, max(len(losses), 2))
    if not finite.any():
        ax_loss.text(0.5, 0.5, "no loss curve: every step's loss was non-finite", ha="center", fontsize=8,
                     transform=ax_loss.transAxes)
        ax_loss.set_xlim(1, max(len(losses), 2))
    if summary.get("accuracy_meaningful", True):
        ax_acc.axhline(summary["test_accuracy"], color="tab:green", ls="--", lw=1,
                       label=f"test accuracy, final model ({summary['test_accuracy']:.4f})")
    else:
        ax_acc.text(0.5, 0.5, "test accuracy n/a (non-finite weights)", ha="center", transform=ax_acc.transAxes)
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="Loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    c = summary["config"]
    fig.suptitle(f"{c['loss']} loss, lr {number_text(c['lr'])}, batch {c['batch_size']}, {summary['steps']} steps, "
                 f"input x{number_text(c['input_scale'])}, {c['dtype']}", fontsize=10)
    return save_figure(plt, fig, path)


def require_matplotlib():
    """Return ``matplotlib.pyplot`` on the non-interactive Agg backend, or raise MissingExtraError."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError(f"{{plot}} needs matplotlib: {INSTALL_HINT}") from None
    return plt


def title(s: dict) -> str:
    """The one title format of a cell: its label, then its settings."""
    form = form_text((s["dtype"], s.get("precision", "pure")))
    return f"{s['label']}\nlr {number_text(s['lr'])}, input x{number_text(s['input_scale'])}, {form}, seed {s['seed']}"


def _curves(ax, runs: dict[str, np.ndarray], colors: dict) -> None:
    """Training loss of each run (loss name -> its per-step losses) against the step (both axes log);
    non-finite steps as ticks on top."""
    for k, (name, losses) in enumerate(runs.items()):
        steps = np.arange(1, losses.size + 1)
        bad = ~np.isfinite(losses)
        color, style = colors[name], STYLES[k % len(STYLES)]
        shown = np.where(bad | (losses <= 0), np.nan, losses)  # log scale: breaks the line where undefined
        few = np.isfinite(shown).sum() < 20  # a run that broke at once: show its few points
        ax.plot(steps, shown, color=color, ls=style, lw=1.6 if k == 0 else 1.0, marker="o" if few else None, ms=3,
                label=name, zorder=2 + k)
        if bad.any():
            first = int(steps[bad][0])
            y = 0.96 - 0.06 * k  # one row of ticks per loss, in axes coordinates
            ax.plot(steps[bad], np.full(bad.sum(), y), "|", color=color, ms=6, mew=0.6,
                    transform=ax.get_xaxis_transform())
            ax.axvline(first, color=color, ls="--", lw=0.8)
            ax.annotate(f"{name} non-finite from step {first}", xy=(first, y - 0.05),
                        xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        color=color, va="top")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step (log scale)")
    ax.set_ylabel("training loss (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")


def _agreement(doc: dict) -> dict:
    """((dtype, precision), loss) -> 2-D arrays over (lr, input scale): seeds that broke, seeds run, earliest
    first step (from :func:`mnist_cli.report.compare.seed_steps`, as the text map counts them)."""
    m = doc["stability_map"]
    lrs, scales = m["values"]["lr"], m["values"]["input_scale"]
    seeds = seed_steps(m)
    out = {}
    for form in forms(m):
        for loss in m["losses"]:
            broke = np.zeros((len(lrs), len(scales)), int)
            ran = np.zeros_like(broke)
            first = np.full(broke.shape, np.nan)
            for i, lr in enumerate(lrs):
                for j, scale in enumerate(scales):
                    steps = seeds.get((form, lr, scale), {}).get(loss, [])
                    failed = [t for t in steps if t is not None]
                    ran[i, j], broke[i, j] = len(steps), len(failed)
                    first[i, j] = min(failed, default=np.nan)
            out[form, loss] = (broke, ran, first)
    return out


def _heatmap(ax, broke, ran, first, lrs, scales, steps: int, name: str):
    import matplotlib.colors as mcolors
    from matplotlib.patches import Rectangle

    cmap = mcolors.LinearSegmentedColormap.from_list("fail", ["#67000d", "#fcbba1"]).with_extremes(bad=NEVER)
    image = ax.imshow(np.ma.masked_invalid(np.log10(first)), cmap=cmap, vmin=0, vmax=math.log10(max(steps, 10)),
                      aspect="auto", origin="lower")
    n_cells = broke.size
    font = 9 if n_cells <= 30 else (7 if n_cells <= 80 else 5)
    for i in range(broke.shape[0]):
        for j in range(broke.shape[1]):
            if not ran[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=NOT_RUN))
                continue
            text = (f"{broke[i, j]}/{ran[i, j]}\nstep {int(first[i, j])}" if broke[i, j]
                    else ("never" if ran[i, j] == 1 else f"0/{ran[i, j]}"))
            dark = broke[i, j] and first[i, j] < 30
            ax.text(j, i, text, ha="center", va="center", fontsize=font, color="white" if dark else "black")
    ax.set_xticks(range(len(scales)), [f"x{number_text(v)}" for v in scales], fontsize=8)
    ax.set_yticks(range(len(lrs)), [number_text(v) for v in lrs], fontsize=8)
    ax.set_xlabel("input scale")
    ax.set_ylabel("learning rate")
    ax.set_title(name, fontsize=10)
    return image


def _chosen(doc: dict) -> list[dict]:
    """The cells whose loss curves are drawn: the named scenarios, else a few (earliest breaks, one healthy)."""
    named = [s for s in doc["scenarios"] if s["name"]]
    if named:
        return named[: 2 * NCOLS]
    first = lambda s: min((r["first_nonfinite_step"] for r in s["runs"].values() if r["first_nonfinite_step"]),
                          default=math.inf)
    ranked = sorted(doc["scenarios"], key=first)
    broken = [s for s in ranked if first(s) < math.inf][: MAX_CURVES - 1]
    healthy = [s for s in ranked if first(s) == math.inf][:1]
    return (broken + healthy)[:MAX_CURVES] or ranked[:MAX_CURVES]


def plot_compare(doc: dict, path: str | Path, curves: dict[tuple[str, str], np.ndarray]) -> Path:
    """Write the figure to ``path``: loss curves of the chosen cells over the heat maps. ``doc`` is
    compare's document; ``curves`` maps (cell label, loss) to that run's per-step training losses (the
    document holds 40-point curves only; the log step axis wants every step)."""
    plt = require_matplotlib()
    path = Path(path)
    losses = doc["settings"]["losses"]
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {loss: palette[i % len(palette)] for i, loss in enumerate(losses)}
    chosen = _chosen(doc)
    maps = _agreement(doc)
    m = doc["stability_map"]
    lrs, scales, dtypes = m["values"]["lr"], m["values"]["input_scale"], forms(m)  # a row per dtype and precision

    ncols = min(NCOLS, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    panel_w = max(3.2, 0.9 * len(scales) + 1.6)
    panel_h = max(2.6, 0.35 * len(lrs) + 1.4)
    fig_w = max(4.2 * ncols, panel_w * len(losses) + 1.5)
    fig = plt.figure(figsize=(fig_w, 3.4 * nrows + panel_h * len(dtypes) + 1.2), layout="constrained")
    sub_curves, sub_map = fig.subfigures(2, 1, height_ratios=[3.4 * nrows, panel_h * len(dtypes) + 0.6])
    axes = np.atleast_1d(sub_curves.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, s in zip(axes, chosen):
        _curves(ax, {loss: curves[s["label"], loss] for loss in s["runs"]}, colors)
        ax.set_title(title(s), fontsize=9)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    st = doc["settings"]
    sub_curves.suptitle(f"Training loss ({st['steps']} steps of {st['batch_size']}, {doc['data']['n_train']} "
                        "training images); ticks on top = non-finite steps")
    map_axes = np.atleast_2d(sub_map.subplots(len(dtypes), len(losses), squeeze=False))
    image = None
    for r, form in enumerate(dtypes):
        for c, loss in enumerate(losses):
            image = _heatmap(map_axes[r, c], *maps[form, loss], lrs, scales, st["steps"], f"{loss}, {form_text(form)}")
    seeds = len(m["values"]["seed"])
    sub_map.suptitle(f"Stability map: seeds that went non-finite (of {seeds}) and the earliest first "
                     "non-finite step (colour; green = never)")
    if image is not None:
        bar = sub_map.colorbar(image, ax=map_axes, shrink=0.8, label="first non-finite step")
        ticks = [t for t in (1, 2, 3, 10, 30, 100, 300, 1000, 3000, 10000) if t <= max(st["steps"], 10)]
        bar.set_ticks([math.log10(t) for t in ticks], labels=[str(t) for t in ticks])
    return save_figure(plt, fig, path)

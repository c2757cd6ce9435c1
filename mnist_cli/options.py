"""Options shared by several commands, defined once (as pip-tools does) and applied as decorators."""

from __future__ import annotations

import math

import click

from mnist_cli.settings import (
    DATA_DIR_ENV,
    DATASET_ENV,
    DATASET_NAMES,
    MAX_RUNS,
    MIRRORS_ENV,
    OFFLINE_ENV,
    THREADS_ENV,
    WORKERS_ENV,
)


def _compose(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


data_options = _compose(
    click.option(
        "--dataset",
        type=click.Choice(DATASET_NAMES),
        envvar=DATASET_ENV,
        show_envvar=True,
        default="mnist",
        show_default=True,
        help="Which declared dataset (verified by its pinned SHA-256); each has its own default data directory. "
        "Another MNIST-format dataset: --data-dir with its files (reported as NOT verified).",
    ),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=str),
        envvar=DATA_DIR_ENV,
        show_envvar=True,
        default=None,
        help="Where MNIST lives (downloaded or your own MNIST-format files). "
        "Default: the platform's user cache directory.",
    ),
    click.option(
        "--mirror",
        "mirrors",
        multiple=True,
        metavar="URL|DIR",
        help="Try this mirror first (http(s) URL or a local directory holding the .gz files). "
        f"Repeatable. {MIRRORS_ENV} (space-separated) adds more.",
    ),
    click.option(
        "--offline",
        is_flag=True,
        envvar=OFFLINE_ENV,
        show_envvar=True,
        help="Never touch the network: use files already present (local-directory mirrors still work).",
    ),
)

output_options = _compose(
    click.option("--json", "as_json", is_flag=True,
                 help="Print one JSON document instead of the readable report (and no progress bars)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
)


def given_once(ctx, param, values):
    """A click callback for a ``multiple=True`` option that takes one value: refuses a second (click would
    keep only the last, silently); the value or None."""
    if len(values) > 1:
        raise click.BadParameter(f"given {len(values)} times ({', '.join(values)}); give one (run the command once "
                                 "per file)")
    return values[0] if values else None


def train_precision_options(f):
    """``train``'s ``--precision``, ``--loss-scale``, ``--mixed-policy`` and ``--framework``."""
    from mnist_cli.settings import FRAMEWORK_NAMES, MIXED_POLICY_NAMES, PRECISION_NAMES, TUTORIAL

    f = click.option("--framework", type=click.Choice(FRAMEWORK_NAMES), default=None,
                     help="Compute the losses as this framework does (measured: tensorflow flushes subnormals, so its "
                     "float32 softmax underflows from a gap of 87.3, not 104; torch rounds a half softmax once); "
                     f"numpy = pure IEEE.  [default: {TUTORIAL.framework}]")(f)
    f = click.option("--mixed-policy", type=click.Choice(MIXED_POLICY_NAMES), default=None,
                     help="--precision mixed only: the --framework's policy of which ops compute in float32 (numpy: "
                     "float32-softmax; torch: autocast-cuda, autocast-cpu = only cross_entropy; tensorflow: "
                     "mixed_float16, mixed_bfloat16 = none, Keras's).  [default: the framework's first]")(f)
    f = click.option("--loss-scale", type=LOSS_SCALE, default=None, metavar="none|dynamic|N",
                     help="--precision mixed only: dynamic = the framework's scaler (torch.amp.GradScaler: 2^16; Keras "
                     "LossScaleOptimizer: 2^15; x2 after 2000 finite steps, x0.5 and skip on a non-finite gradient); "
                     f"N = a fixed scale.  [default: {TUTORIAL.loss_scale}]")(f)
    return click.option("--precision", type=click.Choice(PRECISION_NAMES), default=None,
                        help="float16/bfloat16 only: pure rounds everything to the dtype; mixed: float32 master "
                        "weights, products in the dtype, the ops --mixed-policy lists in float32 (default: CUDA "
                        "autocast's policy, softmax, log and the loss in float32; under --framework tensorflow "
                        f"Keras's mixed_float16).  [default: {TUTORIAL.precision}]")(f)


def compute_options(f):
    """``--dtype``, ``--precision`` and ``--framework`` of ``evaluate`` and ``predict``: compute a saved model's
    logits in another form than its own, or as a framework does."""
    from mnist_cli.settings import DTYPE_NAMES, FRAMEWORK_NAMES, PRECISION_NAMES

    f = click.option("--framework", type=click.Choice(FRAMEWORK_NAMES), default=None,
                     help="Compute as this framework does (tensorflow flushes subnormal logits and probabilities to "
                     "0; the loss as its fused kernel computes it in the model's dtype); the report says which "
                     "computed; numpy = pure IEEE, the loss in float64.  [default: the one it was trained with]")(f)

    f = click.option("--precision", type=click.Choice(PRECISION_NAMES), default=None,
                     help="With --dtype float16/bfloat16: pure or mixed (autocast: half products, float32 softmax)."
                     "  [default: pure]")(f)
    return click.option("--dtype", type=click.Choice(DTYPE_NAMES), default=None,
                        help="Compute the logits in this dtype instead of the model's own (float16/bfloat16: the "
                        "weights rounded to it, or float32 masters with --precision mixed).  [default: the model's]")(f)


class FiniteFloat(click.FloatRange):
    """A float range that also refuses NaN and infinity (``click.FloatRange`` lets NaN through)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


POSITIVE = FiniteFloat(min=0, min_open=True)


class ValSplitType(click.ParamType):
    """``--val-split``: a whole number of images (``5000``) or a fraction 0 < x < 1 (``0.1``, Keras's
    ``validation_split``); :func:`mnist_cli.settings.val_count` turns either into a count."""

    name = "validation split"

    def convert(self, value, param, ctx):
        from mnist_cli.settings import val_split_ok

        if isinstance(value, (int, float)) and val_split_ok(value):
            return value
        text = str(value).strip()
        try:
            parsed = int(text) if text.lstrip("+").isdigit() else float(text)
        except ValueError:
            parsed = None
        if parsed is None or not val_split_ok(parsed):
            self.fail(f"{value!r} is neither a number of images >= 0 (5000) nor a fraction 0 < x < 1 (0.1).",
                      param, ctx)
        return parsed


VAL_SPLIT = ValSplitType()


class LossScaleType(click.ParamType):
    """``none``, ``dynamic`` or a positive float32 number, kept as its canonical text (``TrainConfig.loss_scale``,
    :class:`mnist_cli.settings.LossScale`)."""

    name = "loss scale"

    def convert(self, value, param, ctx):
        from mnist_cli.settings import LossScale

        try:
            return LossScale.parse(value).text
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not none, dynamic or a positive number up to 3.4e38 (a float32), e.g. 1024.",
                      param, ctx)


LOSS_SCALE = LossScaleType()


#: ``--foreign`` (evaluate, predict): accept an archive of just W and b, from elsewhere (mnist_cli.model.Model.load).
foreign_option = click.option(
    "--foreign", is_flag=True,
    help="Accept MODEL.npz holding just W (784x10) and b (10) from elsewhere (np.savez(path, W=W, b=b)), with "
    "every other check kept; nothing is known of its training (input scale 1 unless --input-scale).")


def threads_option(f):
    """``--threads N`` (``MNIST_SOFTMAX_THREADS``): the tool's own threads; BLAS always runs on one."""
    from mnist_cli.settings import DEFAULT_THREADS, MAX_THREADS

    return click.option(
        "--threads",
        type=click.IntRange(1, MAX_THREADS),
        envvar=THREADS_ENV,
        show_envvar=True,
        default=DEFAULT_THREADS,
        show_default=True,
        help="Threads for large batches (--full-batch) and evaluation. Results are bit-identical for any "
        "value; BLAS always runs single-threaded (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS change nothing). "
        "The default is fastest on a busy machine; more helps only full batches on idle cores.",
    )(f)


class Workers(click.ParamType):
    """A number of worker processes from 1 to ``MAX_WORKERS``, or ``auto``."""

    name = "workers"

    def convert(self, value, param, ctx):
        from mnist_cli.settings import MAX_WORKERS

        text = str(value).strip().lower()
        if text == "auto":
            return text
        if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
            self.fail(f"{value!r} is not auto or a number of workers from 1 to {MAX_WORKERS}.", param, ctx)
        return int(text)


def workers_option(f):
    """``--workers N|auto`` (``MNIST_SOFTMAX_WORKERS``): processes compare deals its groups of runs out to."""
    from mnist_cli.settings import AUTO_WORKERS_FROM

    return click.option(
        "--workers",
        type=Workers(),
        envvar=WORKERS_ENV,
        show_envvar=True,
        default="auto",
        show_default=True,
        help="Processes training the independent groups of runs (a stack of runs sharing a seed, dtype, precision "
        "and profile, or one run of another profile's float32/float64): this one and N-1 workers. auto = the CPUs "
        f"this process may use, at most one per group, and 1 below {AUTO_WORKERS_FROM:.0e} training examples in all (runs "
        "x steps x batch: a worker's start, "
        "~0.35 s, costs more than it wins there). Every number is bit-identical for any value.",
    )(f)


def normalize_option(f):
    """``evaluate --normalize true|pred|all``: scikit-learn's normalized confusion matrix."""
    from mnist_cli.settings import NORMALIZE_NAMES

    return click.option("--normalize", type=click.Choice(NORMALIZE_NAMES), default=None,
        help="Show the confusion matrix normalized as scikit-learn's confusion_matrix(normalize=...): over "
        "each true class (rows sum to 1), each predicted class (columns) or all examples.  [default: counts]")(f)


#: ``predict --out FILE`` and ``--plot FILE``: where its rows and the 28x28 inputs it saw are written.
predict_output_options = _compose(
    click.option("--out", type=click.Path(dir_okay=False), default=None, metavar="FILE.npy|csv|jsonl",
        help="Also write every image's index, label, predictions and probabilities to FILE (atomically): "
        ".npy a structured array, .csv a table, .jsonl one --json row per line."),
    click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png|svg|pdf",
        help="Also draw the 28x28 inputs the model saw (a picture after MNIST's geometry), at most 20."),
)


# --- list values: --index, --losses, --seeds, --lr / --input-scale sweeps ---------------------------------


def int_list(value):
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated whole numbers, e.g. 0,1,2") from None
    if not out:
        raise click.BadParameter("give at least one index")
    return out


def comma_list(convert, what: str, choices=None):
    """A click callback turning ``"a,b,c"`` into a tuple of converted values (None stays None)."""

    def callback(ctx, param, value):
        if value is None:
            return None
        items = [v.strip() for v in value.split(",")]
        try:
            out = tuple(convert(v) for v in items)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of {what}") from None
        bad = [v for v in out if choices is not None and v not in choices]
        if bad:
            raise click.BadParameter(f"{bad[0]!r} is not one of {', '.join(choices)}")
        if len(set(out)) != len(out):
            raise click.BadParameter(f"{value!r} lists a value twice")
        return out

    return callback


#: Significant digits a range's values are rounded to, so labels and file names stay short.
RANGE_DIGITS = 4


def sweep(what: str):
    """A click callback for ``--lr`` / ``--input-scale``: a comma-separated list whose items are numbers or
    ranges ``a:b:N`` (N evenly spaced values from a to b) or ``a:b:logN`` (N log-spaced values)."""

    def callback(ctx, param, value):
        if value is None:
            return None
        out: list[float] = []
        for item in (v.strip() for v in value.split(",")):
            try:
                out += number_range(item) if ":" in item else [positive_number(item)]
            except ValueError as exc:  # a range words its own problem; a lone item is not a positive number
                raise click.BadParameter(str(exc) if ":" in item else f"{item!r} is not a positive finite number; "
                                         f"{what}") from None
        if len(set(out)) != len(out):
            raise click.BadParameter(f"{value!r} gives {_repeats(out)} twice: drop the repeat or use fewer values")
        return tuple(out)

    return callback


def _repeats(values: list[float], shown: int = 5) -> str:
    """The values listed more than once, the first ``shown`` of them (an error line stays one line)."""
    seen, twice = set(), []
    for v in values:
        if v in seen and v not in twice:
            twice.append(v)
        seen.add(v)
    more = f" and {len(twice) - shown:,} more" if len(twice) > shown else ""
    return ", ".join(map(repr, twice[:shown])) + more


def number_range(item: str) -> list[float]:
    fix = "write a:b:N or a:b:logN with positive numbers a, b and N >= 2, e.g. 0.1:10:log8"
    parts = item.split(":")
    if len(parts) != 3:
        raise ValueError(f"{item!r} is not a range: {fix}")
    try:
        a, b = positive_number(parts[0]), positive_number(parts[1])
    except ValueError:
        raise ValueError(f"{item!r}: the ends of a range must be positive numbers; {fix}") from None
    log = parts[2].startswith("log")
    count = parts[2][3:] if log else parts[2]
    if not count.isdigit() or int(count) < 2:
        raise ValueError(f"{item!r}: a range needs a whole number of values N >= 2 after the last colon; {fix}")
    n = int(count)
    if n > MAX_RUNS:  # before the list is built: a:b:log100000000 must not take gigabytes to refuse
        raise ValueError(f"{item!r}: {n:,} values is more than the {MAX_RUNS:,} runs a compare may make; use fewer")
    if log:
        values = [a * (b / a) ** (i / (n - 1)) for i in range(n)]
    else:
        values = [a + (b - a) * i / (n - 1) for i in range(n)]
    return [a] + [float(f"{v:.{RANGE_DIGITS}g}") for v in values[1:-1]] + [b]


def positive_number(text: str) -> float:
    x = float(text)
    if not (x > 0 and x != float("inf")):
        raise ValueError(text)
    return x


def seed_number(text: str) -> int:
    x = int(text)
    if x < 0:
        raise ValueError(text)
    return x

"""Options shared by several commands, defined once (as pip-tools does) and applied as decorators."""

from __future__ import annotations

import math

import click

from mnist_cli.settings import DATA_DIR_ENV, MIRRORS_ENV, OFFLINE_ENV, THREADS_ENV


def _compose(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


data_options = _compose(
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


class FiniteFloat(click.FloatRange):
    """A float range that also refuses NaN and infinity (``click.FloatRange`` lets NaN through)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


POSITIVE = FiniteFloat(min=0, min_open=True)


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

"""The ``mnist-softmax`` command line: thin click adapters over the library.

Each command parses options, calls one library function and prints its result. Library errors
(:class:`mnist_cli.errors.MnistError`) become one-line messages with exit code 1; bad flags exit 2;
Ctrl-C exits 130, SIGTERM 143 (after the same clean-up); ``train --fail-on-nan`` exits 3 when any
non-finite value occurred. Library notices (the ``mnist_cli`` logger) are printed on stderr.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import click

from mnist_cli import __version__
from mnist_cli.errors import MnistError, OutputError
from mnist_cli.options import POSITIVE, FiniteFloat, data_options, output_options

EXIT_NAN = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a terminated process


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so every clean-up that Ctrl-C gets runs too."""


def _on_sigterm(signum, frame):
    raise _Terminated()


class _Notices(logging.Handler):
    """Library notices (a lock wait, a cache rebuilt), one line each on stderr."""

    def emit(self, record):
        click.echo(record.getMessage(), err=True)


logging.getLogger("mnist_cli").addHandler(_Notices(logging.INFO))


class _Group(click.Group):
    """A group that turns library errors, Ctrl-C and SIGTERM into one-line messages and exit codes."""

    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
        try:
            return super().invoke(ctx)
        except MnistError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, _Terminated)
            click.echo("Terminated." if terminated else "Interrupted.", err=True)
            ctx.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        except OSError as exc:  # disk full, permission denied, ... outside what the library wrapped
            name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{name}: check the path and free space.") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=str))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mnist-softmax")
def main():
    """Softmax regression on MNIST: why the naive cross-entropy breaks and the fused one does not.

    \b
    Examples:
      mnist-softmax download
      mnist-softmax train --loss fused
      mnist-softmax train --loss naive --input-scale 255 --explain-nan
      mnist-softmax compare
      mnist-softmax evaluate model.npz --json
    """


@main.command()
@click.option("--force", is_flag=True, help="Fetch every file again, even when present and valid (replaces your own files too).")
@data_options
@output_options
def download(force, data_dir, mirrors, offline, as_json, quiet):
    """Fetch the four MNIST files into the data directory and verify them.

    A file counts only if its decompressed content has the pinned size and SHA-256. Files already
    present and valid are not fetched again; a corrupt one is replaced. Mirrors are tried in order
    (--mirror, then MNIST_SOFTMAX_MIRRORS, then the public ones) and any failure moves on to the next.

    \b
    Examples:
      mnist-softmax download
      mnist-softmax download --mirror ../shared/datasets/mnist --offline
      mnist-softmax download --data-dir ./data --json
      mnist-softmax download --force
    """
    from mnist_cli.download import ensure_mnist

    # bars on stderr like train's and compare's: not with --quiet or --json (the library checks for a terminal)
    report = ensure_mnist(data_dir, mirrors=mirrors, offline=offline, force=force, progress=not (quiet or as_json),
                          rehash=True)
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(report.summary())


def _load_data(data_dir, mirrors, offline, quiet):
    from mnist_cli.data import load_mnist

    return load_mnist(data_dir, mirrors=mirrors, offline=offline, progress=not quiet)


@main.command()
@click.option("--loss", type=click.Choice(["fused", "naive", "clipped"]), default=None,
              help="fused = softmax_cross_entropy_with_logits; naive = -sum(y_*log(softmax(z))); "
              "clipped = log(clip(p, 1e-10, 1)).  [default: fused]")
@click.option("--preset", type=click.Choice(["tutorial", "best"]), default="tutorial", show_default=True,
              help="Starting hyper-parameters; flags given explicitly override them.")
@click.option("--lr", type=POSITIVE, default=None, help="Learning rate.  [default: 0.5]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Examples per step.  [default: 100]")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="SGD steps.  [default: 1000]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Train for N passes over the data instead of --steps.")
@click.option("--full-batch", is_flag=True, default=None, help="Each step uses the whole training set (batch = n).")
@click.option("--init", type=click.Choice(["zeros", "normal"]), default=None, help="Initial W.  [default: zeros]")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None, help="Dtype of every array.  [default: float32]")
@click.option("--input-scale", type=POSITIVE, default=None,
              help="Pixels map to [0, SCALE]; 255 = raw pixels, the classic beginner mistake.  [default: 1]")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Drives init and shuffling: same seed, same numbers.  [default: 0]")
@click.option("--train-limit", type=click.IntRange(min=1), default=None, help="Train on the first N examples only (smoke runs).")
@click.option("--lr-decay", type=FiniteFloat(min=0, max=1, min_open=True), default=None,
              help="Multiply the learning rate by this after each epoch.  [default: 1 = constant]")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=None, help="L2 penalty on W.  [default: 0]")
@click.option("--average-epochs", type=click.IntRange(min=1), default=None,
              help="Report the average of the iterates over the last N epochs (Polyak-Ruppert averaging).")
@click.option("--plain-loop", is_flag=True,
              help="Run the plain reference loop (one NumPy call per formula) instead of the fast step; same results.")
@click.option("--stop-on-nan", is_flag=True, help="Stop at the first non-finite loss or gradient (TF would go on).")
@click.option("--fail-on-nan", is_flag=True, help=f"Exit with code {EXIT_NAN} if any non-finite value occurred (CI).")
@click.option("--explain-nan", is_flag=True, help="Explain the first non-finite step: which example, which logit gap, which operation.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), default=None, help="Write parameters and metadata to this .npz.")
@click.option("--metrics-out", type=click.Path(dir_okay=False), default=None, help="Write a JSONL record every --log-every steps.")
@click.option("--log-every", type=click.IntRange(min=1), default=100, show_default=True, help="Steps between --metrics-out records.")
@data_options
@output_options
def train(loss, preset, lr, batch_size, steps, epochs, full_batch, init, dtype, input_scale, seed, train_limit,
          lr_decay, weight_decay, average_epochs, plain_loop, stop_on_nan, fail_on_nan, explain_nan, save_path, metrics_out, log_every,
          data_dir, mirrors, offline, as_json, quiet):
    """Train softmax regression with one loss and report accuracy and every NaN.

    The defaults are the TensorFlow r1.4 tutorial (mnist_softmax.py): zeros init, lr 0.5, 1000 steps
    of 100 examples, pixels in [0, 1], float32. NaN is a result, not an error: the exit code is 0
    unless --fail-on-nan is given. MNIST is downloaded and verified first if it is missing.

    \b
    Examples:
      mnist-softmax train --loss fused
      mnist-softmax train --loss naive --input-scale 255 --explain-nan
      mnist-softmax train --loss naive --lr 5 --fail-on-nan      # exit 3 in CI
      mnist-softmax train --preset best --save best.npz
      mnist-softmax train --json --quiet | jq .test_accuracy
    """
    from mnist_cli.progress import bars_enabled, make_bar
    from mnist_cli.report import format_train, jsonable, train_summary
    from mnist_cli.train import PRESETS, TrainConfig, evaluate_accuracy
    from mnist_cli.train import train as run_train

    if steps is not None and epochs is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    if full_batch and batch_size is not None:
        raise click.UsageError("--full-batch sets the batch to all training examples: drop --batch-size")
    from mnist_cli.fileio import check_writable

    for path, what in ((save_path, "--save path"), (metrics_out, "--metrics-out path")):
        if path:
            check_writable(path, what)  # fail now, not after training
    overrides = dict(loss=loss, lr=lr, batch_size=batch_size, steps=steps, epochs=epochs, init=init, dtype=dtype,
                     input_scale=input_scale, seed=seed, train_limit=train_limit, lr_decay=lr_decay,
                     weight_decay=weight_decay, full_batch=full_batch)
    settings = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    if epochs is not None:
        settings["steps"] = None
    elif steps is not None:
        settings["epochs"] = None  # an explicit --steps overrides a preset's epochs
    if average_epochs is not None:
        settings.update(average=True, average_epochs=average_epochs)
    if plain_loop:
        settings["fast"] = False
    if stop_on_nan:
        settings["stop_on_nan"] = True
    try:
        config = TrainConfig(**settings)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None

    data = _load_data(data_dir, mirrors, offline, quiet or as_json)
    records = [] if metrics_out else None
    n_train = min(len(data.train_images), config.train_limit or len(data.train_images))
    per_epoch = 1 if config.full_batch else n_train // config.batch_size
    bar = make_bar(config.epochs * per_epoch if config.epochs else config.steps, "train", "step",
                   bars_enabled(quiet or as_json))

    def progress(step, loss_value, n_bad):
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss_value:.4g}", nan=n_bad, refresh=False)

    def on_log(step, record):
        records.append(record)

    try:
        result = run_train(data.train_images, data.train_labels, config,
                           progress=progress if bar is not None else None,
                           on_log=on_log if records is not None else None, log_every=log_every)
    except ValueError as exc:  # e.g. a batch larger than the (limited) training set
        raise click.UsageError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    summary = train_summary(
        result,
        test_accuracy=evaluate_accuracy(result.model, data.test_images, data.test_labels, config.input_scale),
        train_accuracy=evaluate_accuracy(result.model, data.train_images[:n_train], data.train_labels[:n_train],
                                         config.input_scale),
        n_test=len(data.test_labels),
        n_train=n_train,
    )
    summary["data"] = {"dir": str(data.data_dir), "verified": data.verified}
    explanation = None
    if explain_nan and result.snapshot is not None:
        from mnist_cli.forensics import explain, format_explanation

        explanation = explain(result.snapshot, config.dtype, config.loss)
        summary["explanation"] = explanation
    failed = []  # outputs that could not be written: reported after the run's report, then exit 1
    if save_path:
        result.model.meta.update(test_accuracy=summary["test_accuracy"], dataset_checksums=data.checksums,
                                 numpy_version=__import__("numpy").__version__, mnist_softmax_version=__version__)
        try:
            summary["saved"] = str(result.model.save(save_path))
        except OutputError as exc:
            failed.append(str(exc))
    if records is not None:
        records.append({"step": result.steps, "final": True, "loss": result.final_loss,
                        "test_accuracy": summary["test_accuracy"], "train_accuracy": summary["train_accuracy"]})
        from mnist_cli.fileio import atomic_write

        try:
            with atomic_write(metrics_out, "--metrics-out path") as fh:
                fh.write("".join(json.dumps(jsonable(r)) + "\n" for r in records).encode())
        except OutputError as exc:
            failed.append(str(exc))

    if as_json:
        _print_json(jsonable(summary))
    else:
        click.echo(format_train(summary))
        if explain_nan:
            click.echo("")
            click.echo(format_explanation(explanation) if explanation else "No non-finite step to explain.")
        if "saved" in summary:
            click.echo(f"  saved           {summary['saved']}")
    if failed:
        raise click.ClickException("\n".join(failed))
    if fail_on_nan and result.nan.any_nonfinite:
        sys.exit(EXIT_NAN)


@main.command()
@click.argument("model_path", metavar="MODEL.npz", type=click.Path(dir_okay=False))
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True, help="Which MNIST split to score.")
@click.option("--input-scale", type=POSITIVE, default=None,
              help="Pixel scale the model expects.  [default: the one it was trained with]")
@data_options
@output_options
def evaluate(model_path, split, input_scale, data_dir, mirrors, offline, as_json, quiet):
    """Score a saved model and answer the argmax question on real data.

    Reports accuracy from argmax(logits) and from argmax(softmax(logits)), how many predictions
    differ between the two (floating-point ties can make them), per-class accuracy, the confusion
    matrix and counts of non-finite logits and probabilities. A model with NaN weights is
    evaluated, not refused.

    \b
    Examples:
      mnist-softmax train --save model.npz && mnist-softmax evaluate model.npz
      mnist-softmax evaluate model.npz --split train --json
    """
    from mnist_cli.evaluate import evaluate_model
    from mnist_cli.model import Model
    from mnist_cli.report import format_evaluate, jsonable

    model = Model.load(model_path)
    if input_scale is None:
        input_scale = model.input_scale
    data = _load_data(data_dir, mirrors, offline, quiet or as_json)
    images, labels = (data.test_images, data.test_labels) if split == "test" else (data.train_images, data.train_labels)
    report = evaluate_model(model, images, labels, input_scale)
    report.update(split=split, model=str(model_path), input_scale=input_scale,
                  data={"dir": str(data.data_dir), "verified": data.verified})
    if as_json:
        _print_json(jsonable(report))
    else:
        click.echo(format_evaluate(report, split))


# --- compare -------------------------------------------------------------------------------------

EXIT_EXPECTATION = 4  # compare --smoke / --check: an expected behaviour did not hold


def _comma_list(convert, what: str, choices=None):
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


def _positive(text: str) -> float:
    x = float(text)
    if not (x > 0 and x != float("inf")):
        raise ValueError(text)
    return x


def _seed(text: str) -> int:
    x = int(text)
    if x < 0:
        raise ValueError(text)
    return x


@main.command()
@click.option("--losses", default="naive,fused", show_default=True, metavar="LIST",
              callback=_comma_list(str, "losses", ("naive", "fused", "clipped")),
              help="Losses to compare (naive, fused, clipped), each trained from the same init on the same batches.")
@click.option("--lr", "lrs", default=None, metavar="LIST", callback=_comma_list(_positive, "positive numbers"),
              help="Learning rates to sweep, e.g. 0.5,2,5. Any of --lr/--input-scale/--dtype runs their grid "
              "instead of the default scenarios.")
@click.option("--input-scale", "input_scales", default=None, metavar="LIST",
              callback=_comma_list(_positive, "positive numbers"), help="Pixel scales to sweep, e.g. 1,255.")
@click.option("--dtype", "dtypes", default=None, metavar="LIST",
              callback=_comma_list(str, "dtypes", ("float32", "float64")), help="Dtypes to sweep: float32,float64.")
@click.option("--seeds", default="0", show_default=True, metavar="LIST", callback=_comma_list(_seed, "seeds >= 0"),
              help="Seeds (init and batch order) to run every cell with, e.g. 0,1,2,3.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="SGD steps per run.  [default: 1000; 200 with --smoke]")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True, help="Examples per step.")
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N examples only.  [default: all; 2000 with --smoke]")
@click.option("--smoke", is_flag=True,
              help=f"CI preset: 200 steps on 2000 examples (seconds), exit {EXIT_EXPECTATION} unless every "
              "expectation holds (and at once if none applies: see Exit codes).")
@click.option("--check", is_flag=True,
              help=f"Exit {EXIT_EXPECTATION} unless every expectation holds: fused finite everywhere, naive "
              "failing or finite where its named scenario says (and at once if none applies).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png",
              help="Also draw loss curves and the stability map to this PNG (needs the plot extra: "
              "pip install 'mnist-softmax[plot]').")
@click.option("--metrics-out", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write one JSONL file of per-step records per run into DIR.")
@click.option("--log-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Steps between --metrics-out records.")
@data_options
@output_options
def compare(losses, lrs, input_scales, dtypes, seeds, steps, batch_size, train_limit, smoke, check, plot_path,
            metrics_out, log_every, data_dir, mirrors, offline, as_json, quiet):
    """Train naive and fused side by side and show when, where and why naive breaks.

    Every loss is trained from the same initial parameters on the same batches (same seed), so
    each difference in the table is the loss's doing. With no sweep option it runs eight named
    scenarios, the 2x2x2 grid of lr 0.5|5, pixels x1|x255 and float32|float64, starting with the
    tutorial itself. It prints a table per scenario (accuracy, final loss, NaN/inf/gradient steps,
    first non-finite step, argmax agreement, a loss sparkline), the stability map, forensics of each
    first non-finite step and a conclusion computed from the results.

    \b
    Exit codes: 0 done; 1 an error; 2 a bad flag; 4 with --smoke or --check, an expectation failed,
    or none applies (checked are fused in every setting and naive in the named scenarios, so e.g.
    --losses clipped alone checks nothing): then it exits 4 at once, before any training.

    \b
    Examples:
      mnist-softmax compare
      mnist-softmax compare --lr 0.5,2,5 --seeds 0,1,2,3 --plot map.png
      mnist-softmax compare --losses naive,fused,clipped --input-scale 1,255 --dtype float32,float64
      mnist-softmax compare --smoke --quiet            # CI: seconds, exit 4 if the story changed
      mnist-softmax compare --json --metrics-out curves/
    """
    from mnist_cli.compare import (SMOKE, CompareConfig, planned_checks, probe_outputs, run_compare, to_document,
                                   write_metrics)
    from mnist_cli.compare_report import format_report
    from mnist_cli.progress import bars_enabled, make_bar
    from mnist_cli.report import jsonable

    preset = SMOKE if smoke else {}
    config = CompareConfig(
        losses=losses, lrs=lrs or (), input_scales=input_scales or (), dtypes=dtypes or (), seeds=seeds,
        steps=steps or preset.get("steps", CompareConfig.steps), batch_size=batch_size,
        train_limit=train_limit or preset.get("train_limit"), log_every=log_every if metrics_out else 0,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if (smoke or check) and not planned_checks(config):  # a check of nothing must not pass in CI
        nothing = click.ClickException(
            f"{'--smoke' if smoke else '--check'} would check nothing: no expectation covers --losses "
            f"{','.join(losses)} in these settings (fused is checked in every setting, naive in the named "
            "scenarios); add fused to --losses."
        )
        nothing.exit_code = EXIT_EXPECTATION
        raise nothing
    if plot_path:
        from mnist_cli.plot import require_matplotlib

        require_matplotlib()  # fail before the runs, not after
    probe_outputs(config, metrics_out=metrics_out, plot=plot_path)  # likewise: an unwritable path costs no runs

    data = _load_data(data_dir, mirrors, offline, quiet or as_json)
    n_runs = len(config.cells()) * len(config.losses)
    bar = make_bar(n_runs, "compare", "run", bars_enabled(quiet or as_json))

    def on_run(done, total, label):
        bar.update(1)
        bar.set_postfix_str(label, refresh=False)

    try:
        result = run_compare(data.train_images, data.train_labels, data.test_images, data.test_labels, config,
                             on_run=on_run if bar is not None else None)
    except ValueError as exc:  # e.g. a batch larger than the (limited) training set
        raise click.UsageError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    doc = to_document(result)
    doc["data"].update(dir=str(data.data_dir), verified=data.verified)
    failed = []  # outputs that could not be written: reported after the report, then exit 1
    try:
        if metrics_out:
            doc["metrics_files"] = [str(p) for p in write_metrics(result, metrics_out)]
    except OutputError as exc:
        failed.append(str(exc))
    try:
        if plot_path:
            from mnist_cli.plot import plot_compare

            doc["plot"] = str(plot_compare(result, plot_path, doc))
    except OutputError as exc:
        failed.append(str(exc))

    if as_json:
        _print_json(jsonable(doc))
    else:
        click.echo(format_report(doc))
        for key, what in (("metrics_files", "per-run curves"), ("plot", "plot")):
            if key in doc:
                where = metrics_out if key == "metrics_files" else doc[key]
                click.echo(f"Wrote {what}: {where}")
        click.echo(f"{n_runs} runs in {result.seconds:.1f} s.")
    if failed:
        raise click.ClickException("\n".join(failed))
    if (smoke or check) and not doc["ok"]:
        sys.exit(EXIT_EXPECTATION)


if __name__ == "__main__":  # pragma: no cover
    main()

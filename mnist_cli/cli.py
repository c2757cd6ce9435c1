"""The ``mnist-softmax`` command line: thin click adapters over the library.

Each command parses options (:mod:`mnist_cli.options`), calls one library function and prints its
result. How errors, signals and exit codes reach the shell, and the progress bars, are
:mod:`mnist_cli.shell`'s; ``train --fail-on-nan`` exits 3 when any non-finite value occurred.
"""

from __future__ import annotations

import json
import math
import sys
from functools import partial

import click

from mnist_cli import __version__
from mnist_cli.options import (
    LOSS_SCALE,
    POSITIVE,
    RANGE_DIGITS,
    VAL_SPLIT,
    FiniteFloat,
    comma_list,
    compute_options,
    data_options,
    foreign_option,
    given_once,
    int_list,
    normalize_option,
    output_options,
    predict_output_options,
    seed_number,
    sweep,
    threads_option,
    train_precision_options,
    workers_option,
)
from mnist_cli.settings import (
    DTYPE_NAMES,
    FRAMEWORK_NAMES,
    INIT_NAMES,
    LOSS_NAMES,
    PRECISION_NAMES,
    PRESETS,
    TUTORIAL,
)
from mnist_cli.shell import EXIT_EXPECTATION, EXIT_NAN, Group, RunBar, StepBar, check_outputs, exit_error, write_outputs


def _print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=str))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mnist-softmax")
def main():
    """Softmax regression on MNIST: why the naive cross-entropy breaks and the fused one does not.

    \b
    Examples:
      mnist-softmax download
      mnist-softmax train --loss fused
      mnist-softmax train --loss naive --input-scale 255 --explain-nan
      mnist-softmax train --loss naive --framework tensorflow --fail-on-nan
      mnist-softmax train --save model.npz && mnist-softmax evaluate model.npz
      mnist-softmax predict model.npz --index 0,1,2
      mnist-softmax compare

    Exit codes: 0 done; 1 an error (one line saying what and how to fix it; a bad environment
    variable, mirror or data directory too); 2 a bad flag, or settings that cannot work together;
    3 train --fail-on-nan saw a non-finite value; 4 compare --smoke/--check: an expectation failed
    or none applies; 130 Ctrl-C; 141 the reader of a pipe left; 143 SIGTERM.

    Environment: MNIST_SOFTMAX_DATASET, MNIST_SOFTMAX_DATA_DIR, MNIST_SOFTMAX_MIRRORS (space-separated),
    MNIST_SOFTMAX_OFFLINE, MNIST_SOFTMAX_THREADS, MNIST_SOFTMAX_WORKERS; download patience: MNIST_SOFTMAX_CONNECT_TIMEOUT,
    _READ_TIMEOUT, _DEADLINE, _RETRIES, _BACKOFF, _BACKOFF_MAX, _LOCK_TIMEOUT (defaults: mnist-softmax download --help).
    Shell completion: eval "$(_MNIST_SOFTMAX_COMPLETE=bash_source mnist-softmax)" (zsh_source, fish_source).
    """


@main.command(short_help="Fetch the four MNIST files and verify them.")
@click.option("--force", is_flag=True,
              help="Fetch every file again, even when present and valid (replaces your own files too).")
@data_options
@output_options
def download(force, dataset, data_dir, mirrors, offline, as_json, quiet):
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
      mnist-softmax download --dataset fashion-mnist

    Patience, in seconds (environment; the defaults): MNIST_SOFTMAX_CONNECT_TIMEOUT=10, _READ_TIMEOUT=30 (a
    stall), _DEADLINE=300 (per file and mirror), _RETRIES=3 (a count), _BACKOFF=0.5 (doubling), _BACKOFF_MAX=30,
    _LOCK_TIMEOUT=600 (another process fetching into the same directory).
    """
    from mnist_cli.data.datasets import dataset_spec
    from mnist_cli.data.download import ensure_mnist
    from mnist_cli.report.download import format_download

    # bars on stderr like train's and compare's: not with --quiet or --json (the library checks for a terminal)
    doc = ensure_mnist(data_dir, mirrors=mirrors, offline=offline, force=force, progress=not (quiet or as_json),
                       rehash=True, spec=dataset_spec(dataset)).to_dict()
    if as_json:
        _print_json(doc)
    else:
        click.echo(format_download(doc))


def _load_data(dataset, data_dir, mirrors, offline, quiet):
    from mnist_cli.data import load_mnist

    return load_mnist(data_dir, mirrors=mirrors, offline=offline, progress=not quiet, dataset=dataset)


@main.command(short_help="Train with one loss; report accuracy and every NaN.")
@click.option("--loss", type=click.Choice(LOSS_NAMES), default=None,
              help="fused = softmax_cross_entropy_with_logits; naive = -sum(y_*log(softmax(z))); "
              f"clipped = log(clip(p, 1e-10, 1)).  [default: {TUTORIAL.loss}]")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="tutorial", show_default=True,
              help="Starting hyper-parameters; flags given explicitly override them.")
@click.option("--lr", type=POSITIVE, default=None, help=f"Learning rate.  [default: {TUTORIAL.lr:g}]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help=f"Examples per step.  [default: {TUTORIAL.batch_size}]")
@click.option("--steps", type=click.IntRange(min=1), default=None, help=f"SGD steps.  [default: {TUTORIAL.steps}]")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Train for N passes over the data instead of --steps.")
@click.option("--full-batch", is_flag=True, default=None, help="Each step uses the whole training set (batch = n).")
@click.option("--init", type=click.Choice(INIT_NAMES), default=None, help=f"Initial W.  [default: {TUTORIAL.init}]")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None, metavar="MODEL.npz",
              help="Start from a saved model's W and b (same --dtype, --precision and --input-scale; refused "
              "otherwise, saying why); --steps/--epochs count from there and the new model records its parent.")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default=None,
              help="Dtype of every array (float16/bfloat16: emulated as hardware rounds them; with --precision "
              f"mixed, of the products only).  [default: {TUTORIAL.dtype}]")
@train_precision_options
@click.option("--input-scale", type=POSITIVE, default=None,
              help=f"Pixels map to [0, SCALE]; 255 = raw pixels, the classic beginner mistake."
              f"  [default: {TUTORIAL.input_scale:g}]")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help=f"Drives init and shuffling: same seed, same numbers.  [default: {TUTORIAL.seed}]")
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N examples only (smoke runs).")
@click.option("--lr-decay", type=FiniteFloat(min=0, max=1, min_open=True), default=None,
              help=f"Multiply the learning rate by this after each epoch.  [default: {TUTORIAL.lr_decay:g} = constant]")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=None,
              help=f"L2 penalty on W.  [default: {TUTORIAL.weight_decay:g}]")
@click.option("--average-epochs", type=click.IntRange(min=1), default=None,
              help="Report the average of the iterates over the last N epochs (Polyak-Ruppert averaging).")
@click.option("--val-split", type=VAL_SPLIT, default=None, metavar="N|FRACTION",
              help="Hold out the last N training images (TF's input_data: 5000) or the last FRACTION of them (0.1, "
              "Keras's validation_split) and report train and validation loss and accuracy per epoch and every "
              "--log-every steps; the model records which (evaluate --split val scores them).")
@click.option("--early-stop", type=click.IntRange(min=1), default=None, metavar="PATIENCE",
              help="With --val-split: stop when the validation loss has not improved for PATIENCE evaluations (epoch "
              "ends and every --log-every steps) and keep the best parameters (Keras's EarlyStopping with "
              "restore_best_weights); a non-finite loss never counts as best.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --save MODEL.npz: also write the model every N epochs to MODEL-epoch003.npz (epoch 3), "
              "atomically.")
@click.option("--plain-loop", "fast", flag_value=False, default=None,
              help="Run the plain reference loop (one NumPy call per formula) instead of the fast step; same results.")
@click.option("--stop-on-nan", is_flag=True, default=None,
              help="Stop at the first non-finite loss or gradient (TF would go on).")
@click.option("--fail-on-nan", is_flag=True, help=f"Exit with code {EXIT_NAN} if any non-finite value occurred (CI).")
@click.option("--explain-nan", is_flag=True,
              help="Explain the first non-finite step: which example, which logit gap, which operation.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), default=None,
              help="Write parameters and metadata to this .npz.")
@click.option("--metrics-out", type=click.Path(dir_okay=False), default=None,
              help="Write a JSONL record every --log-every steps.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png|svg|pdf",
              help="Draw loss and accuracy curves (training, and validation with --val-split) to this file "
              "(needs the plot extra: pip install 'mnist-softmax[plot]').")
@click.option("--log-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="Steps between --metrics-out records, validation scores (--val-split) and, when stderr is "
              "not a terminal, progress lines.")
@threads_option
@data_options
@output_options
def train(preset, fail_on_nan, explain_nan, save_path, metrics_out, plot_path, log_every, checkpoint_every, dataset,
          data_dir, mirrors, offline, as_json, quiet, **settings):
    """Train softmax regression with one loss and report accuracy and every NaN.

    The defaults are the TensorFlow r1.4 tutorial (mnist_softmax.py): zeros init, lr 0.5, 1000 steps
    of 100 examples, pixels in [0, 1], float32. NaN is a result, not an error: the exit code is 0
    unless --fail-on-nan is given. MNIST is downloaded and verified first if it is missing.

    \b
    Examples:
      mnist-softmax train --loss fused
      mnist-softmax train --loss naive --input-scale 255 --explain-nan
      mnist-softmax train --loss naive --lr 5 --fail-on-nan      # exit 3 in CI
      mnist-softmax train --dtype float16 --precision mixed --loss-scale dynamic
      mnist-softmax train --preset best --save best.npz
      mnist-softmax train --preset best --val-split 10000     # the held-out score it was chosen by
      mnist-softmax train --val-split 5000 --plot curves.png
      mnist-softmax train --init-from model.npz --epochs 2 --save more.npz   # continue a saved model
      mnist-softmax train --epochs 20 --val-split 0.1 --early-stop 3 --checkpoint-every 5 --save m.npz
      mnist-softmax train --json --quiet | jq .test_accuracy
    """
    from mnist_cli.fileio import jsonable
    from mnist_cli.report.train import format_train
    from mnist_cli.train import run_session, session_config, total_steps

    config = session_config(preset, **settings)
    if checkpoint_every and not save_path:
        raise click.UsageError("--checkpoint-every names its files after --save MODEL.npz: add --save.")
    check_outputs(dataset, data_dir, as_json, save=save_path, metrics_out=metrics_out, plot=plot_path)  # now, not after
    data = _load_data(dataset, data_dir, mirrors, offline, quiet or as_json)
    with StepBar(total_steps(config, len(data.train_images)), "train", "step", quiet or as_json,
                   every=log_every) as progress:
        session = run_session(data, config, explain=explain_nan, progress=progress,
                              log_every=log_every if metrics_out or config.val_split or plot_path else 0,
                              preset=preset, progress_every=math.gcd(10, log_every), history=bool(plot_path),
                              checkpoint_every=checkpoint_every or 0, save_path=save_path)
    failed = write_outputs((session.save, save_path), (session.write_metrics, metrics_out), (session.plot, plot_path))
    click.echo(json.dumps(jsonable(session.summary), indent=2, allow_nan=False) if as_json
               else format_train(session.summary, explain=explain_nan))
    if failed:  # the run's report first, then what could not be written
        raise click.ClickException("\n".join(failed))
    if fail_on_nan and session.result.nan.any_nonfinite:
        from mnist_cli.report.train import fail_on_nan_line

        click.echo(fail_on_nan_line(session.summary["nan"], session.result.steps, EXIT_NAN), err=True)
        sys.exit(EXIT_NAN)


@main.command(short_help="Score a saved model; answer the argmax question.")
@click.argument("model_path", metavar="MODEL.npz", type=click.Path(dir_okay=False))
@click.option("--split", type=click.Choice(["test", "train", "val"]), default="test", show_default=True,
              help="Which MNIST split to score; val: the training images the model was validated on (train "
              "--val-split records them), or those --val-split names.")
@click.option("--val-split", type=VAL_SPLIT, default=None, metavar="N|FRACTION",
              help="With --split val: the last N (or FRACTION) of the training images, as train --val-split holds "
              "them out.  [default: the model's own]")
@click.option("--input-scale", type=POSITIVE, default=None,
              help="Pixel scale the model expects.  [default: the one it was trained with]")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png|svg|pdf",
              help="Also draw the ten rows of W as 28x28 templates and the most confident mistakes "
              "(needs the plot extra: pip install 'mnist-softmax[plot]').")
@compute_options
@foreign_option
@normalize_option
@threads_option
@data_options
@output_options
def evaluate(model_path, split, val_split, input_scale, plot_path, dtype, precision, framework, foreign, normalize,
             threads, dataset, data_dir, mirrors, offline, as_json, quiet):
    """Score a saved model and answer the argmax question on real data.

    Reports accuracy from argmax(logits) and from argmax(softmax(logits)), how many predictions
    differ between the two (floating-point ties can make them; many more in float16/bfloat16, where
    the tool also counts the predictions rounding changed against float32), per-class accuracy, the confusion
    matrix and counts of non-finite logits and probabilities; then the test cross-entropy,
    precision/recall/F1 per class (scikit-learn's classification_report), the most frequent
    confusions, the most confident mistakes and the calibration (expected calibration error). A model
    with NaN weights is evaluated, not refused. It also prints the model's training settings and what
    it was trained with (threads, BLAS kernel, NumPy, CPU), from its metadata.

    \b
    Examples:
      mnist-softmax train --save model.npz && mnist-softmax evaluate model.npz
      mnist-softmax evaluate model.npz --split train --json
      mnist-softmax train --val-split 0.1 --save model.npz && mnist-softmax evaluate model.npz --split val
      mnist-softmax evaluate model.npz --plot templates.png
      mnist-softmax evaluate model.npz --dtype bfloat16      # what rounding the logits changes
      mnist-softmax evaluate model.npz --framework tensorflow  # as TF computes (subnormals flushed)
      mnist-softmax evaluate model.npz --normalize true --plot confusion.png
      mnist-softmax evaluate theirs.npz --foreign           # an archive of just W and b
    """
    from mnist_cli.evaluate import evaluate_file
    from mnist_cli.fileio import jsonable
    from mnist_cli.report.evaluate import format_evaluate

    check_outputs(dataset, data_dir, as_json, plot=plot_path)  # a bad name or no matplotlib costs no data load
    load = partial(_load_data, dataset, data_dir, mirrors, offline, quiet or as_json)
    report = evaluate_file(model_path, load, split=split, input_scale=input_scale, threads=threads, plot=plot_path,
                           dtype=dtype, precision=precision, normalize=normalize, val_split=val_split, foreign=foreign,
                           framework=framework)
    click.echo(json.dumps(jsonable(report), indent=2, allow_nan=False) if as_json else format_evaluate(report, split))


@main.command(short_help="A saved model's answer for test images or your own.")
@click.argument("model_path", metavar="MODEL.npz", type=click.Path(dir_okay=False))
@click.option("--index", "indices", default=None, metavar="LIST",
              callback=lambda ctx, param, v: int_list(v), help="Test-set indices, e.g. 0,1,2 or 2044.")
@click.option("--images", type=click.Path(dir_okay=False, exists=True), multiple=True, callback=given_once,
              metavar="FILE",
              help="An IDX (.gz or raw) or .npy file of 28x28 images, pixels 0-255, or a PNG/JPEG/BMP/GIF "
              "picture of one digit (needs the image extra: pip install 'mnist-softmax[image]').")
@click.option("--input-scale", type=POSITIVE, default=None,
              help="Pixel scale the model expects.  [default: the one it was trained with]")
@compute_options
@predict_output_options
@foreign_option
@data_options
@output_options
def predict(model_path, indices, images, input_scale, dtype, precision, framework, out, plot_path, foreign, dataset,
            data_dir, mirrors, offline, as_json, quiet):
    """Predict digits with a saved model: the label, argmax(logits) vs argmax(softmax(logits)) and
    the probabilities, for test-set images by index or for images of your own.

    \b
    Examples:
      mnist-softmax train --save model.npz                     # a model to predict with
      mnist-softmax predict model.npz --index 0,1,2
      mnist-softmax predict model.npz --images digits.npy --json  # uint8 (n, 28, 28) or (n, 784)
      mnist-softmax download --data-dir data                   # then every test image to a CSV:
      mnist-softmax predict model.npz --images data/t10k-images-idx3-ubyte.gz --out all.csv
      mnist-softmax predict model.npz --index 0 --dtype bfloat16  # the same weights in bfloat16
    """
    from mnist_cli.fileio import jsonable
    from mnist_cli.predict import predict_file
    from mnist_cli.report.predict import format_predict

    check_outputs(dataset, data_dir, as_json, out=out, plot=plot_path)
    load = partial(_load_data, dataset, data_dir, mirrors, offline, quiet or as_json)
    report = predict_file(model_path, indices=indices, images=images, input_scale=input_scale, dtype=dtype,
                          precision=precision, out=out, foreign=foreign, plot=plot_path, load_data=load,
                          framework=framework)
    click.echo(json.dumps(jsonable(report), indent=2, allow_nan=False) if as_json else format_predict(report))


# --- compare -------------------------------------------------------------------------------------

@main.command(short_help="Naive vs fused side by side: when, where, why naive breaks.")
@click.option("--losses", default="naive,fused", show_default=True, metavar="LIST",
              callback=comma_list(str, "losses", LOSS_NAMES),
              help="Losses to compare (naive, fused, clipped), each trained from the same init on the same batches.")
@click.option("--lr", "lrs", default=None, metavar="LIST", callback=sweep("e.g. 0.5,2,5 or 0.1:10:log8"),
              help="Learning rates to sweep: a list (0.5,2,5), a range of N values a:b:N, or N log-spaced values "
              f"a:b:logN (0.1:10:log8; inner values rounded to {RANGE_DIGITS} digits). Any of "
              "--lr/--input-scale/--dtype runs their grid instead of the default scenarios.")
@click.option("--input-scale", "input_scales", default=None, metavar="LIST",
              callback=sweep("e.g. 1,16,255 or 1:255:log3"), help="Pixel scales to sweep, e.g. 1,255 or 1:255:log3.")
@click.option("--dtype", "dtypes", default=None, metavar="LIST",
              callback=comma_list(str, "dtypes", DTYPE_NAMES), help=f"Dtypes to sweep: {','.join(DTYPE_NAMES)}.")
@click.option("--precision", "precisions", default=None, metavar="LIST",
              callback=comma_list(str, "precisions", PRECISION_NAMES),
              help="Precisions to sweep with the half dtypes: pure,mixed (mixed = CUDA autocast's policy).")
@click.option("--loss-scale", type=LOSS_SCALE, default=None, metavar="none|dynamic|N",
              help="Loss scaling of the mixed-precision cells.  [default: dynamic, torch.amp.GradScaler's]")
@click.option("--framework", "frameworks", default=None, metavar="LIST",
              callback=comma_list(str, "frameworks", FRAMEWORK_NAMES),
              help="Frameworks to sweep: numpy,torch,tensorflow (each cell computes as that framework does: "
              "tensorflow flushes subnormals, so float32 naive breaks from a gap of 87.3, torch from 104).")
@click.option("--scenarios", default=None, metavar="LIST", callback=comma_list(str, "scenario names"),
              help="Run only these named scenarios, e.g. tutorial,f16,f16-mixed (no sweep).  [default: all]")
@click.option("--seeds", default="0", show_default=True, metavar="LIST", callback=comma_list(seed_number, "seeds >= 0"),
              help="Seeds (init and batch order) to run every cell with, e.g. 0,1,2,3.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="SGD steps per run.  [default: 1000; 200 with --smoke]")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True, help="Examples per step.")
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N examples only.  [default: all; 2000 with --smoke]")
@click.option("--smoke", is_flag=True,
              help=f"CI preset: 200 steps on 2000 examples (seconds), exit {EXIT_EXPECTATION} unless every "
              "expectation measured on --dataset holds (and at once if none applies: see Exit codes).")
@click.option("--check", is_flag=True,
              help=f"Exit {EXIT_EXPECTATION} unless every expectation holds: fused finite everywhere, naive "
              "failing or finite where its named scenario says on --dataset (and at once if none applies).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png|svg|pdf",
              help="Also draw loss curves and the stability map to this file, in the format its ending names "
              "(needs the plot extra: pip install 'mnist-softmax[plot]').")
@click.option("--metrics-out", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write one JSONL file of per-step records per run into DIR.")
@click.option("--log-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Steps between the per-step records of each --metrics-out file (each ends with a final record).")
@click.option("--all-runs", is_flag=True,
              help="Print the per-run table even for a dense sweep (more than 16 cells: by default its map and a "
              "summary only).")
@click.option("--format", "table_format", type=click.Choice(["text", "markdown", "csv"]), default="text",
              show_default=True, help="markdown or csv: print only the per-run table, every run, in that format.")
@workers_option
@threads_option
@data_options
@output_options
def compare(losses, lrs, input_scales, dtypes, precisions, loss_scale, frameworks, scenarios, seeds, steps, batch_size,
            train_limit, smoke, check, plot_path, metrics_out, log_every, all_runs, table_format, workers, threads,
            dataset, data_dir, mirrors, offline, as_json, quiet):
    """Train naive and fused side by side and show when, where and why naive breaks.

    Every loss is trained from the same initial parameters on the same batches (same seed), so
    each difference in the table is the loss's doing. With no sweep option it runs fifteen named
    scenarios: the 2x2x2 grid of lr 0.5|5, pixels x1|x255 and float32|float64, starting with the
    tutorial itself, then five in half precision (where float16 and bfloat16 break naive, where pure
    float16 breaks even fused, where mixed precision saves naive and where it cannot), then lr 2 in
    PyTorch's and in TensorFlow's arithmetic (where the two frameworks' stories differ). It prints a
    table per scenario (accuracy, final loss, NaN/inf/gradient steps, first non-finite step, argmax
    agreement, a loss sparkline), the stability map, forensics of each first non-finite step and a
    conclusion computed from the results.

    Exit codes: 0 done; 1 an error; 2 a bad flag; 4 with --smoke or --check, an expectation failed,
    or none applies (checked are fused in every setting and naive in the named scenarios, so e.g.
    --losses clipped alone checks nothing): then it exits 4 at once, before any training.

    \b
    Examples:
      mnist-softmax compare
      mnist-softmax compare --lr 0.5,2,5 --seeds 0,1,2,3 --plot map.png
      mnist-softmax compare --lr 0.1:10:log5 --input-scale 1,16,255 --dtype float32,float64 --seeds 0,1,2 --plot map.png
      mnist-softmax compare --losses naive,fused,clipped --input-scale 1,255 --dtype float32,float64
      mnist-softmax compare --dtype float16,bfloat16,float32 --precision pure,mixed --input-scale 1,255
      mnist-softmax compare --scenarios tutorial,f16,f16-mixed
      mnist-softmax compare --lr 1,2,3 --framework torch,tensorflow --losses naive,fused
      mnist-softmax compare --smoke --quiet            # CI: seconds, exit 4 if the story changed
      mnist-softmax compare --json --metrics-out curves/
      mnist-softmax compare --workers 1                # one process (a machine busy with other work)
    """
    from mnist_cli.compare import add_metrics, add_plot, compare_config, planned_checks, probe_outputs, publish, run_compare
    from mnist_cli.shell import compare_text

    config = compare_config(smoke=smoke, losses=losses, lrs=lrs, input_scales=input_scales, dtypes=dtypes, seeds=seeds,
                            steps=steps, batch_size=batch_size, train_limit=train_limit,
                            log_every=log_every if metrics_out else 0, threads=threads, precisions=precisions,
                            loss_scale=loss_scale, scenarios=scenarios, workers=workers, frameworks=frameworks,
                            dataset=dataset)
    if (smoke or check) and not planned_checks(config):  # a check of nothing must not pass in CI
        raise exit_error(EXIT_EXPECTATION, f"{'--smoke' if smoke else '--check'} would check nothing: no expectation covers "
                    f"--losses {','.join(losses)} in these settings (fused is checked in every setting, naive in the "
                    "named scenarios); add fused to --losses.")
    check_outputs(dataset, data_dir, as_json, plot=plot_path)
    if as_json and table_format != "text":
        raise click.UsageError(f"--json prints the document, --format {table_format} a table: choose one")
    probe_outputs(config, metrics_out=metrics_out, plot=plot_path)  # an unwritable output costs no runs
    data = _load_data(dataset, data_dir, mirrors, offline, quiet or as_json)
    with RunBar(len(config.cells()) * len(config.losses), quiet or as_json) as on_run:
        result = run_compare(data.train_images, data.train_labels, data.test_images, data.test_labels, config,
                             on_run=on_run)
    doc = publish(result, data)
    failed = write_outputs((partial(add_metrics, doc, result), metrics_out), (partial(add_plot, doc, result), plot_path))
    click.echo(compare_text(doc, as_json, table_format, all_runs))
    if failed:  # the report first, then what could not be written
        raise click.ClickException("\n".join(failed))
    if (smoke or check) and not doc["ok"]:
        from mnist_cli.report.compare import failed_checks_line

        click.echo(failed_checks_line(doc, "--smoke" if smoke else "--check", EXIT_EXPECTATION), err=True)
        sys.exit(EXIT_EXPECTATION)

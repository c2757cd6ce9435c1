"""Where the command line meets the shell: exit codes, one-line errors, Ctrl-C, SIGTERM and broken pipes.

:class:`Group` is the ``mnist-softmax`` click group: library errors
(:class:`mnist_cli.errors.MnistError`) become one-line messages with exit code 1 and settings that cannot
work (:class:`mnist_cli.errors.SettingsError`) exit 2, each worded with the flags of the settings it names
(:func:`flag`); Ctrl-C exits 130, SIGTERM 143 (after the same clean-up), a reader that left the pipe 141.
Library notices (the ``mnist_cli`` logger) are printed on stderr; progress bars (:class:`StepBar`,
:class:`RunBar`) on stderr too, or a line every few steps where stderr is not a terminal.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from mnist_cli.errors import MnistError, OutputError, SettingsError

EXIT_NAN = 3  # train --fail-on-nan: a non-finite value occurred
EXIT_EXPECTATION = 4  # compare --smoke / --check: an expected behaviour did not hold
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a terminated process
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports when the reader of a pipe left early


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise again on the broken pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so every clean-up that Ctrl-C gets runs too."""


def _on_sigterm(signum, frame):
    raise _Terminated()


class _Notices(logging.Handler):
    """Library notices (a lock wait, a cache rebuilt), one line each on stderr."""

    def emit(self, record):
        click.echo(record.getMessage(), err=True)


logging.getLogger("mnist_cli").addHandler(_Notices(logging.INFO))


class _FitFormatter(click.HelpFormatter):
    """Click's help formatter, with the lines it keeps as written (``\\b`` blocks: examples, exit codes)
    wrapped to the terminal too (:func:`mnist_cli.report.text.fit`)."""

    def getvalue(self) -> str:
        from mnist_cli.report.text import fit, known_width

        return fit(super().getvalue(), min(self.width, known_width() or self.width))


class _Context(click.Context):
    formatter_class = _FitFormatter


class _Command(click.Command):
    context_class = _Context


class Group(click.Group):
    """A group that turns library errors, Ctrl-C and SIGTERM into one-line messages and exit codes,
    and lists its commands in the order of the work (download, train, evaluate, compare)."""

    context_class = _Context
    command_class = _Command  # every command's --help fits the terminal too

    def list_commands(self, ctx):
        return list(self.commands)  # in the order they are defined: the workflow, not the alphabet


    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
        try:
            return super().invoke(ctx)
        except SettingsError as exc:  # a setting that cannot work: worded with its flag, exit 2
            raise click.UsageError(exc.text(flag)) from None
        except MnistError as exc:  # worded with the flags of the settings it names
            raise click.ClickException(exc.text(flag)) from None
        except KeyboardInterrupt as exc:
            from mnist_cli.report.train import interrupted_text

            terminated = isinstance(exc, _Terminated)
            click.echo("Terminated." if terminated else "Interrupted.", err=True)
            if getattr(exc, "done", None):
                click.echo(interrupted_text(exc.done), err=True)
            ctx.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        except BrokenPipeError:  # `mnist-softmax compare --json | head -1`: the reader left; say nothing
            _quiet_stdout()
            ctx.exit(EXIT_BROKEN_PIPE)
        except OSError as exc:  # disk full, permission denied, ... outside what the library wrapped
            name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{name}: check the path and free space.") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


#: Library setting names whose flag is not ``--`` + the name with dashes.
_FLAGS = {"lrs": "--lr", "input_scales": "--input-scale", "dtypes": "--dtype", "average": "--average-epochs",
          "precisions": "--precision", "scenarios": "--scenarios"}


def flag(setting: str) -> str:
    """The CLI's spelling of a library setting (``batch_size`` -> ``--batch-size``)."""
    return _FLAGS.get(setting, "--" + setting.replace("_", "-"))


def check_outputs(dataset: str, data_dir, as_json: bool, **outputs) -> None:
    """Before any long work, refuse outputs (setting name -> path; None = not asked for) that would do
    harm: two naming one file, one replacing a file of the data directory in use, one on stdout beside
    the ``--json`` report (no parser reads the two as one document); then check each can be written (a
    plot: its format and matplotlib too). :class:`SettingsError` (exit 2) or :class:`OutputError`."""
    from mnist_cli.data.datasets import dataset_spec
    from mnist_cli.data.directory import refuse_data_files, resolve_data_dir
    from mnist_cli.fileio import check_distinct, check_writable, is_devnull, is_stdout

    check_distinct(outputs)
    refuse_data_files(resolve_data_dir(data_dir, dataset), outputs, dataset_spec(dataset))
    for setting, path in outputs.items():
        if path is not None and as_json and is_stdout(path) and not is_devnull(path):
            raise SettingsError((setting, "json"), f"{path} is stdout, where the JSON report goes, and the two "
                                f"would not parse as one document: write {{{setting}}} to a file")
    for setting, path in outputs.items():
        if path is not None and setting == "plot":
            probe_plot(path)
        elif path is not None:
            check_writable(path, f"{{{setting}}} path")


def probe_plot(path) -> None:
    """Before any work, when a plot is asked for: its name, matplotlib and the path are checked
    (:func:`mnist_cli.report.plots.probe_plot`, imported only then)."""
    if path:
        from mnist_cli.report.plots import probe_plot as probe

        probe(path)


def write_outputs(*writes) -> list[str]:
    """Run each ``(write, path)`` whose path is given; the messages of those that failed to write."""
    failed = []
    for write, path in writes:
        if path:
            try:
                write(path)
            except OutputError as exc:
                failed.append(exc.text(flag))
    return failed


class StepBar:
    """A progress bar of ``total`` steps as a ``progress(step, loss, nonfinite)`` callback (None when off)."""

    def __init__(self, total: int, desc: str, unit: str, quiet: bool, every: int = 0):
        from mnist_cli.progress import bars_enabled, make_bar

        self.bar = make_bar(total, desc, unit, bars_enabled(quiet))
        self.total, self.every = total, every if not quiet else 0  # lines instead, where no bar can be drawn
        # (line: train's every `every` steps, compare's per run; the one place either is decided)

    def __enter__(self):
        if self.bar is None and self.every:
            return self.line
        return self.update if self.bar is not None else None

    def line(self, step, loss_value, n_bad):
        """One line every ``every`` steps (a CI log): where the run is, its loss, its non-finite steps."""
        from mnist_cli.report.train import progress_line

        if step % self.every == 0 or step == self.total:
            click.echo(progress_line(step, self.total, loss_value, n_bad), err=True)

    def update(self, step, loss_value, n_bad):
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{loss_value:.4g}", nonfinite_steps=n_bad, refresh=False)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


class RunBar(StepBar):
    """A progress bar of ``total`` runs as an ``on_run(done, total, label)`` callback (None when off)."""

    def __init__(self, total: int, quiet: bool):
        super().__init__(total, "compare", "run", quiet, every=1)  # where no bar is drawn: a line per run

    def line(self, done, total, label):
        """One line per finished run (a CI log would otherwise be silent for the whole comparison)."""
        from mnist_cli.report.compare import run_line

        click.echo(run_line(done, total, label), err=True)

    def update(self, done, total, label):
        self.bar.update(1)
        self.bar.set_postfix_str(label, refresh=False)


def exit_error(code: int, message: str) -> click.ClickException:
    """A one-line error with its own exit code."""
    error = click.ClickException(message)
    error.exit_code = code
    return error


def compare_text(doc: dict, as_json: bool, table_format: str, all_runs: bool) -> str:
    """The compare document as JSON, as the readable report, or as a markdown or csv table."""
    import json

    from mnist_cli.fileio import jsonable
    from mnist_cli.report.compare import format_report, format_table

    if as_json:
        return json.dumps(jsonable(doc), indent=2, allow_nan=False)
    return format_report(doc, all_runs=all_runs) if table_format == "text" else format_table(doc, table_format)

"""The ``mnist-softmax`` command line: thin click adapters over the library.

Each command parses options, calls one library function and prints its result. Library errors
(:class:`mnist_cli.errors.MnistError`) become one-line messages with exit code 1; bad flags exit 2;
Ctrl-C exits 130; ``train --fail-on-nan`` exits 3 when any non-finite value occurred.
"""

from __future__ import annotations

import json
import sys

import click

from mnist_cli import __version__
from mnist_cli.errors import MnistError
from mnist_cli.options import data_options, output_options

EXIT_NAN = 3
EXIT_INTERRUPTED = 130


class _Group(click.Group):
    """A group that turns library errors and Ctrl-C into one-line messages and exit codes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MnistError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as exc:  # disk full, permission denied, ... outside what the library wrapped
            name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{name}: check the path and free space.") from None


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


if __name__ == "__main__":  # pragma: no cover
    main()

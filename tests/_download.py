"""What the tests of the data layer share: run `mnist-softmax download`, serve a tiny dataset, check a data
directory for partial or bad files."""

from __future__ import annotations

from pathlib import Path

from _server import Reply
from click.testing import CliRunner

from mnist_cli.cli import main
from mnist_cli.data.directory import verify_file

TRAIN = "train-images-idx3-ubyte.gz"


def download(*args: str):
    return CliRunner().invoke(main, ["download", "--quiet", *map(str, args)])


def routes(tiny, **replies) -> dict:
    """Good replies for every file of ``tiny``, except those given (keyed by file name)."""
    good = {f"/{name}": Reply(body=body) for name, body in tiny.gz.items()}
    return good | {f"/{name}": reply for name, reply in replies.items()}


def assert_clean(data_dir: Path, spec) -> None:
    """No temporary file anywhere, and every file at a final path is genuine."""
    assert not [p for p in data_dir.rglob("*") if p.name.endswith(".part")]
    for f in spec.files:
        for path in (data_dir / f.name, data_dir / f.raw_name):
            if path.exists():
                verify_file(path, f)

"""Writing output files (models, metrics, plots): strict JSON, checked paths, and no partial files.

    >>> with atomic_write(Path("model.npz"), "--save path") as fh:   # doctest: +SKIP
    ...     np.savez(fh, W=W)

The content goes to a temporary file beside the target, which is renamed over it only when the
``with`` block ends without an error; on any error or Ctrl-C the temporary file is removed and the
target is left as it was. (The dataset download has its own, richer variant in ``store.PartFile``.)
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from mnist_cli.errors import OutputError


@contextmanager
def atomic_write(path: str | os.PathLike, what: str) -> Iterator[BinaryIO]:
    """Yield a binary file handle whose content replaces ``path`` atomically on success.

    ``what`` names the option that chose the path, for the error message (e.g. ``"--save path"``).
    Raises :class:`OutputError` (one line: the path, the reason, the fix) when it cannot be written.
    """
    path = Path(path)

    def fail(exc: OSError) -> OutputError:
        return OutputError(f"cannot write {path}: {exc.strerror or exc}; choose a writable {what}")

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise fail(exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        mask = os.umask(0o022)  # mkstemp made the file private: give it an ordinary file's mode
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise fail(exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Fail now, before any long work, if ``path`` cannot be written: it is a directory, or its
    folder is missing or read-only. Probes by creating (and removing) a temporary file beside it."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; choose a file path for {what}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}; choose a writable {what}") from None
    os.close(fd)
    os.unlink(tmp)


def jsonable(obj):
    """Recursively convert numpy scalars/arrays and non-finite floats into strict-JSON values.

    JSON has no NaN or infinity: they become the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` (``float()`` reads them back).
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    return obj

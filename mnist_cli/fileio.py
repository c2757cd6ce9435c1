"""Writing output files (models, metrics, plots): strict JSON, checked paths, and no partial files.

    >>> with atomic_write(Path("model.npz"), "--save path") as fh:   # doctest: +SKIP
    ...     np.savez(fh, W=W)

The content goes to a temporary file beside the target, which is renamed over it only when the
``with`` block ends without an error; on any error or Ctrl-C the temporary file is removed and the
target is left as it was. The dataset download uses the same :class:`PartFile` (streaming, restart on
retry), with errors that name the data directory.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from mnist_cli.errors import OutputError


#: Suffix of the temporary files: a run that crashed may leave ``.NAME.XXXX.part`` behind.
PART_SUFFIX = ".part"


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


class PartFile:
    """A temporary file beside its final path, renamed into place only by :meth:`commit`.

    On any exit without a commit (an error, Ctrl-C) the temporary file is removed, so no partial or
    unverified file ever sits at a final path. ``fail(exc)`` turns an ``OSError`` into the error the
    caller wants to show (which option to change).
    """

    def __init__(self, root: Path, name: str, fail: Callable[[OSError], Exception]):
        self._fail = fail
        try:
            fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=PART_SUFFIX)
        except OSError as exc:
            raise fail(exc) from None
        self.path = Path(tmp)
        self.file = os.fdopen(fd, "w+b")
        self._done = False

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as exc:  # disk full, quota, ...
            raise self._fail(exc) from None

    def restart(self) -> None:
        """Drop what was written so far (before a retry)."""
        self.file.seek(0)
        self.file.truncate()

    def commit(self, final: Path) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.path, 0o666 & ~_umask())  # mkstemp made it private; give it a normal file's mode
            os.replace(self.path, final)
        except OSError as exc:
            raise self._fail(exc) from None
        self._done = True

    def __enter__(self) -> PartFile:
        return self

    def __exit__(self, *exc) -> None:
        if not self._done:
            self.file.close()
            self.path.unlink(missing_ok=True)


def _output_error(path: Path, what: str) -> Callable[[OSError], OutputError]:
    return lambda exc: OutputError(f"cannot write {path}: {exc.strerror or exc}; choose a writable {what}")


@contextmanager
def atomic_write(path: str | os.PathLike, what: str) -> Iterator[BinaryIO]:
    """Yield a binary file handle whose content replaces ``path`` atomically on success.

    ``what`` names the option that chose the path, for the error message (e.g. ``"--save path"``).
    Raises :class:`OutputError` (one line: the path, the reason, the fix) when it cannot be written.
    """
    path = Path(path)
    fail = _output_error(path, what)
    with PartFile(path.parent, path.name, fail) as part:
        try:
            yield part.file
        except OSError as exc:
            raise fail(exc) from None
        part.commit(path)


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Fail now, before any long work, if ``path`` cannot be written: it is a directory, or its
    folder is missing or read-only. Probes by creating (and removing) a temporary file beside it."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; choose a file path for {what}")
    with PartFile(path.parent, path.name, _output_error(path, what)):
        pass  # creating a file is the real test (missing folder, read-only mount, ACLs)


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

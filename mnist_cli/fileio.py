"""Writing output files (models, metrics, plots) so that a failure never leaves a partial file.

    >>> with atomic_write(Path("model.npz"), "--save path") as fh:   # doctest: +SKIP
    ...     np.savez(fh, W=W)

The content goes to a temporary file beside the target, which is renamed over it only when the
``with`` block ends without an error; on any error or Ctrl-C the temporary file is removed and the
target is left as it was. (The dataset download has its own, richer variant in ``store.PartFile``.)
"""

from __future__ import annotations

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

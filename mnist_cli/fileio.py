"""Writing output files (models, metrics, plots): strict JSON, checked paths, and no partial files.

    with atomic_write(Path("model.npz"), "{save} path") as fh:
        np.savez(fh, W=W)

The content goes to a temporary file beside the target, which is renamed over it only when the
``with`` block ends without an error; on any error, Ctrl-C or SIGTERM the temporary file is removed
(even when the disk is full and closing it fails again) and the target is left as it was. The dataset
download uses the same :class:`PartFile` (streaming, restart on retry), with errors that name the
data directory.

Output targets are written, never swapped for something else: a symlink is written through (its
target is replaced atomically, the link stays), and a device, FIFO or anything under ``/dev`` or
``/proc`` (``/dev/stdout``, ``/dev/null``) is written in place (:func:`output_target`).

Temporary files are named ``.NAME.mnist-softmax-PID-XXXXXXXX.part``; :func:`sweep` removes those whose
process is gone (a killed run's leftovers) and nothing else.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mnist_cli.errors import OutputError, SettingsError, placeholders

#: Suffix of the temporary files: a run that crashed may leave ``.NAME.mnist-softmax-PID-XXXX.part`` behind.
PART_SUFFIX = ".part"
_PART_TAG = "mnist-softmax"
# mkstemp's random part is 8 characters of [a-z0-9_]; the pid tells a live writer's file from a leftover.
_PART_NAME = re.compile(rf"^\.(?P<name>.+)\.{_PART_TAG}-(?P<pid>\d+)-[a-z0-9_]{{8}}{re.escape(PART_SUFFIX)}$")
_STEM_MAX = 200  # 255 - ".", ".mnist-softmax-", a pid of up to 10 digits, "-", 8 random, ".part" = 215
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def reason(exc: OSError) -> str:
    """Why ``exc`` happened, for a one-line message: the OS's words (plus a hint for a full disk)."""
    text = exc.strerror or type(exc).__name__
    return f"{text} (free some space)" if exc.errno in _NO_SPACE else text


def _stem(name: str) -> str:
    """The part of a target's name its temporary file carries: all of it, or its first :data:`_STEM_MAX`
    characters, so that a legal name of up to 255 bytes still leaves room for the tag, pid and suffix."""
    return name[:_STEM_MAX]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running (when unsure: yes, so its file is kept)."""
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill would terminate the process
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def sweep(directory: Path, name: str | None = None) -> None:
    """Remove this tool's temporary files in ``directory`` (for target ``name`` only, if given) whose
    writing process is no longer running. A file not named by :class:`PartFile` is never touched."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _PART_NAME.match(entry.name)
        if match is None or (name is not None and match["name"] != _stem(name)) or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        except OSError:
            pass  # gone already, or not ours to remove: the next sweep tries again


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
            fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{_stem(name)}.{_PART_TAG}-{os.getpid()}-",
                                       suffix=PART_SUFFIX)
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
            try:
                self.file.close()  # flushes: on a full disk this fails again, and must not keep the file
            except OSError:
                pass
            finally:
                try:
                    self.path.unlink(missing_ok=True)
                except OSError:
                    pass  # a later sweep removes it (its pid is then gone)


def _output_error(path: Path, what: str) -> Callable[[OSError], OutputError]:
    return lambda exc: OutputError(f"cannot write {path}: {reason(exc)}; choose a writable {what}", placeholders(what))


def _through_streams(path: Path) -> bool:
    """Whether ``path`` or a symlink it leads through lies under ``/dev`` or ``/proc`` (streams, devices,
    another process's descriptors): such targets are written in place, never replaced."""
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on symlink hops
        if current.startswith(("/dev/", "/proc/")):
            return True
        if not os.path.islink(current):
            return False
        current = os.path.abspath(os.path.join(os.path.dirname(current), os.readlink(current)))
    return False  # a loop: writing it fails with ELOOP, which names the path


def output_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where writing ``path`` goes, and whether it is written in place instead of replaced atomically.

    In place: an existing target that is not a regular file (a device, a FIFO, a socket, or a terminal
    or pipe behind ``/dev/stdout``), or anything reached through ``/dev`` or ``/proc``. Otherwise the
    target is ``path`` with every symlink resolved, so the link survives and its target is replaced.
    Raises ``OSError`` (ELOOP) for a symlink loop, which no write may replace.
    """
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks: what the path really names
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise
        st = None
    if (st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)) or _through_streams(path):
        return path, True
    return Path(os.path.realpath(path)), False


def _checked_target(path: Path, fail: Callable[[OSError], OutputError]) -> tuple[Path, bool]:
    """:func:`output_target`, its ``OSError`` (a symlink loop) worded by ``fail``."""
    try:
        return output_target(path)
    except OSError as exc:
        raise fail(exc) from None


@contextmanager
def atomic_write(path: str | os.PathLike, what: str) -> Iterator[BinaryIO]:
    """Yield a binary file handle whose content replaces ``path`` atomically on success.

    ``what`` names the setting that chose the path, for the error message (e.g. ``"{save} path"``: the
    :class:`OutputError` refers to the setting as ``{save}``, which the CLI spells as its flag).
    Raises :class:`OutputError` (one line: the path, the reason, the fix) when it cannot be written.
    A symlink is written through; a device, FIFO or ``/dev/stdout`` is written in place (appended to,
    so ``/dev/stdout`` redirected to a file keeps what was printed before): see :func:`output_target`.
    """
    path = Path(path)
    fail = _output_error(path, what)
    if is_stdout(path):  # /dev/stdout, or the very file stdout is redirected to: write through our own stdout
        yield _StdoutWriter()
        return
    target, in_place = _checked_target(path, fail)
    if in_place:
        try:
            fh = _open_in_place(path)  # opened apart so that only its own OSError is worded as such
        except OSError as exc:
            raise fail(exc) from None
        try:
            with fh:
                yield fh
        except OSError as exc:
            raise fail(exc) from None
        return
    sweep(target.parent, target.name)  # leftovers of a killed run writing the same file
    with PartFile(target.parent, target.name, fail) as part:
        try:
            yield part.file
        except OSError as exc:
            raise fail(exc) from None
        part.commit(target)


def is_stdout(path: str | os.PathLike) -> bool:
    """Whether ``path`` names the file this process's stdout writes to (``/dev/stdout``, ``/proc/self/fd/1``,
    or ``out.txt`` in ``... > out.txt``). Re-opening it would write from its own offset over what stdout
    wrote (or replace the file stdout is writing to), so :func:`atomic_write` writes through stdout instead."""
    try:
        here, out = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no such file, or stdout is no file (a test's capture)
        return False
    return (here.st_dev, here.st_ino) == (out.st_dev, out.st_ino)


class _StdoutWriter:
    """The binary side of ``sys.stdout`` as :func:`atomic_write`'s handle: what was printed is flushed
    first and the bytes follow it, in order; closing it leaves stdout open."""

    def __init__(self):
        sys.stdout.flush()
        self._out = sys.stdout.buffer

    def write(self, data: bytes) -> int:
        n = self._out.write(data)
        self._out.flush()
        return n

    def __getattr__(self, name):  # seek, tell, ... as the stream has them (a pipe has none: savefig copes)
        return getattr(self._out, name)


def _identity(path: str | os.PathLike):
    """What a path names, for telling two outputs apart: the file (device, inode) if it exists, else where
    it would be created."""
    try:
        st = os.stat(path)
    except OSError:
        return "path", os.path.realpath(path)
    return "file", st.st_dev, st.st_ino


def is_devnull(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the null device, which any number of outputs may share (nothing is kept)."""
    try:
        return os.path.samefile(path, os.devnull)
    except OSError:
        return False


def check_distinct(outputs: dict[str, str | os.PathLike | None]) -> None:
    """:class:`SettingsError` when two outputs (setting name -> path; None = not asked for) name the same
    file, through any spelling, symlink or hard link: the second write would replace the first. The null
    device may take them all."""
    seen: dict = {}
    for setting, path in outputs.items():
        if path is None or is_devnull(path):
            continue
        key = _identity(path)
        if key in seen:
            raise SettingsError((seen[key], setting), f"both name {path}: the second would replace the first; "
                                "give each its own file")
        seen[key] = setting


def _open_in_place(path: Path) -> BinaryIO:
    """``open(path, "ab")`` for a device, a FIFO or ``/dev/stdout``. A FIFO is opened without waiting first: with
    a reader at the other end that is the handle written to (opening and closing a probe would hand the
    reader an end of file); with none yet, a notice on the ``mnist_cli`` logger (stderr at the command
    line) says so before the open that waits for one, not a silent hang."""
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        fifo = False
    if fifo:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only with a reader at the other end
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            logging.getLogger("mnist_cli").warning(f"waiting for a reader on {path} (a FIFO): open it for reading, "
                                                "or press Ctrl-C")
        else:
            os.set_blocking(fd, True)
            return os.fdopen(fd, "ab")
    return open(path, "ab")


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Fail now, before any long work, if ``path`` cannot be written: it is a directory, or its
    folder is missing or read-only. Probes by creating (and removing) a temporary file beside it
    (beside a symlink's target); a target written in place is checked for write permission only."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; choose a file path for {what}", placeholders(what))
    target, in_place = _checked_target(path, _output_error(path, what))
    if in_place:
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: permission denied; choose a writable {what}", placeholders(what))
        return
    with PartFile(target.parent, target.name, _output_error(path, what)):
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

"""The local data directory: where it is, which of its files are verified, and how to write into it safely.

This module is shared by :mod:`mnist_cli.download` (which fills the directory) and
:mod:`mnist_cli.data` (which loads from it) and imports neither ``requests`` nor ``tqdm``, so that
loading data already present costs no network-stack start-up.

Layout of a data directory::

    train-images-idx3-ubyte.gz ...      the four files (or their decompressed names)
    .mnist-softmax/stamps.json          size, mtime, inode and SHA-256 of each verified file
    .mnist-softmax/lock                 held while files are fetched (other processes wait)
    .mnist-softmax/cache/*.npy          decoded arrays, named by the SHA-256 of their source content

A file whose size, mtime and inode still match its stamp is trusted without hashing it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mnist_cli.datasets import FileSpec
from mnist_cli import fileio
from mnist_cli.errors import ChecksumError, ConfigError, DataDirError
from mnist_cli.fileio import PART_SUFFIX
from mnist_cli.idx import Decoder

try:  # POSIX advisory locks; elsewhere concurrent runs stay safe (atomic renames) but may fetch twice
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

DATA_DIR_ENV = "MNIST_SOFTMAX_DATA_DIR"
STATE_DIR = ".mnist-softmax"
_STAMPS_VERSION = 1


def resolve_data_dir(data_dir=None) -> Path:
    """``data_dir`` if given, else ``$MNIST_SOFTMAX_DATA_DIR``, else the platform's user cache directory."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        from platformdirs import user_cache_path  # imported only when needed: start-up time counts

        return user_cache_path("mnist-softmax", appauthor=False) / "mnist"
    return expand_home(Path(chosen), f"give a full path with --data-dir or {DATA_DIR_ENV}").absolute()


def expand_home(path: Path, fix: str) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; :class:`ConfigError` ending in ``fix`` when
    that home directory cannot be found (no such user, or no ``$HOME``)."""
    try:
        return path.expanduser()
    except RuntimeError:
        raise ConfigError(f"Cannot find the home directory of {path.parts[0]!r} in {str(path)!r}; {fix}.") from None


def find_file(root: Path, spec: FileSpec) -> Path | None:
    """The file holding ``spec`` in ``root``: the ``.gz`` name first, then the decompressed name."""
    for name in (spec.name, spec.raw_name):
        path = root / name
        if path.is_file():
            return path
    return None


def unwritable(root: Path, exc: OSError) -> DataDirError:
    """The error for a data directory that cannot be created or written."""
    reason = exc.strerror or type(exc).__name__
    return DataDirError(
        f"Cannot write to the data directory {root} ({reason}); "
        f"choose another with --data-dir or {DATA_DIR_ENV}."
    )


@dataclass(frozen=True)
class Digest:
    """What a pass over a file found: its own bytes and the content they decode to."""

    compressed: bool  # gzip on disk / on the wire
    file_size: int
    file_sha256: str
    size: int  # decompressed bytes
    sha256: str  # SHA-256 of the decompressed bytes


class Verifier:
    """Checks a file against its :class:`FileSpec` as its bytes stream past, in bounded memory.

    Fails early on an HTML page, on a body larger than any genuine copy, and on content growing past the
    pinned size (a gzip bomb); :meth:`finish` checks the pinned size and SHA-256.
    """

    def __init__(self, spec: FileSpec, name: str | None = None):
        self.spec, self.name = spec, name or spec.name
        self._file_hash = hashlib.sha256()
        self._content_hash = hashlib.sha256()
        self._file_size = 0
        self._decoder = Decoder(self._content, limit=spec.size, name=self.name)
        self._sniffing = True  # until the first non-blank content byte has been seen

    def update(self, chunk: bytes) -> None:
        self._file_size += len(chunk)
        if self._file_size > self.spec.max_download:
            raise ChecksumError(
                f"{self.name}: more than {self.spec.max_download} bytes, larger than any genuine copy."
            )
        self._file_hash.update(chunk)
        self._decoder.feed(chunk)

    def _content(self, piece: bytes) -> None:
        if self._sniffing and (first := piece.lstrip()[:1]):
            self._sniffing = False
            if first == b"<" and not self._decoder.compressed:
                raise ChecksumError(f"{self.name}: got an HTML page, not the file.")
        self._content_hash.update(piece)

    def finish(self) -> Digest:
        self._decoder.close()
        digest = Digest(
            compressed=bool(self._decoder.compressed),
            file_size=self._file_size,
            file_sha256=self._file_hash.hexdigest(),
            size=self._decoder.size,
            sha256=self._content_hash.hexdigest(),
        )
        if digest.size != self.spec.size or digest.sha256 != self.spec.sha256:
            raise ChecksumError(
                f"{self.name}: wrong content ({digest.size} bytes, SHA-256 {digest.sha256[:16]}...; "
                f"expected {self.spec.size} bytes, {self.spec.sha256[:16]}...)."
            )
        return digest


def verify_file(path: Path, spec: FileSpec) -> Digest:
    """Hash ``path`` (gzip or plain) against ``spec``; :class:`MnistError` if it is not genuine."""
    verifier = Verifier(spec, name=str(path))
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            verifier.update(chunk)
    return verifier.finish()


class Stamps:
    """``.mnist-softmax/stamps.json``: per file name, the stat facts and hash it had when last verified."""

    def __init__(self, root: Path):
        self.path = root / STATE_DIR / "stamps.json"
        self.entries = self._read()
        self._changed: dict[str, dict | None] = {}

    def _read(self) -> dict:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        ok = isinstance(doc, dict) and doc.get("version") == _STAMPS_VERSION and isinstance(doc.get("files"), dict)
        return doc["files"] if ok else {}

    @staticmethod
    def _facts(path: Path) -> dict:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}

    def get(self, name: str) -> dict | None:
        return self.entries.get(name)

    def fresh(self, path: Path) -> dict | None:
        """The stamp of ``path`` if the file has not changed since it was stamped, else None."""
        entry = self.entries.get(path.name)
        if not isinstance(entry, dict):
            return None
        try:
            facts = self._facts(path)
        except OSError:
            return None
        return entry if all(entry.get(k) == v for k, v in facts.items()) else None

    def record(self, path: Path, **facts) -> None:
        entry = self._facts(path) | facts
        self.entries[path.name] = self._changed[path.name] = entry

    def forget(self, name: str) -> None:
        self.entries.pop(name, None)
        self._changed[name] = None

    def save(self) -> bool:
        """Merge this process's changes into the file on disk, atomically; False if it cannot be written."""
        if not self._changed:
            return True
        merged = self._read()
        for name, entry in self._changed.items():
            if entry is None:
                merged.pop(name, None)
            else:
                merged[name] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"version": _STAMPS_VERSION, "files": merged}, indent=1).encode())
        except (OSError, DataDirError):
            return False  # a read-only data directory still works; files are just re-verified next time
        self.entries, self._changed = merged, {}
        return True


class PartFile(fileio.PartFile):
    """A :class:`mnist_cli.fileio.PartFile` in a data directory: failures name ``--data-dir``."""

    def __init__(self, root: Path, name: str):
        super().__init__(root, name, lambda exc: unwritable(root, exc))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with PartFile(path.parent, path.name) as part:
        part.file.write(data)
        part.commit(path)


def prepare(root: Path) -> Path:
    """Create ``root`` and its state directory; :class:`DataDirError` if that is impossible."""
    state = root / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(root, exc) from None
    with PartFile(root, "probe"):  # creating a file is the real test (read-only mounts, ACLs)
        pass
    return state


@contextmanager
def locked(root: Path):
    """Hold the data directory's lock; remove temporary files that crashed runs left behind."""
    state = prepare(root)
    with open(state / "lock", "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
            for stale in root.glob(f".*{PART_SUFFIX}"):  # every live writer holds this lock
                stale.unlink(missing_ok=True)
        yield

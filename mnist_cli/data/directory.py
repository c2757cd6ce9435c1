"""The local data directory: where it is, which of its files are verified, and how to write into it safely.

This module is shared by :mod:`mnist_cli.data.download` and :mod:`mnist_cli.data.fetch` (which fill
the directory) and :mod:`mnist_cli.data.load` (which loads from it) and imports neither ``requests``
nor ``tqdm``, so that loading data already present costs no network-stack start-up.

Layout of a data directory::

    train-images-idx3-ubyte.gz ...      the four files (or their decompressed names)
    .mnist-softmax/stamps.json          size, mtime, inode and SHA-256 of each verified file and cache file
    .mnist-softmax/lock                 held while files are fetched (others wait, then give up); holds its pid
    .mnist-softmax/cache/*.npy          decoded arrays, named by the SHA-256 of their source content

A file whose size, mtime and inode still match its stamp is trusted without hashing it again; so is a
cache file, whose stamp also names the content it was decoded from. ``download`` re-hashes both.
Temporary files (``.NAME.mnist-softmax-PID-XXXXXXXX.part``) of processes that are gone are swept from
all three directories. Notices (a lock wait, a cache rebuilt) go to the ``mnist_cli`` logger, which
the command line prints on stderr.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mnist_cli import fileio
from mnist_cli.data.datasets import MNIST_SPEC, DatasetSpec, FileSpec
from mnist_cli.data.idx import Decoder
from mnist_cli.errors import ChecksumError, ConfigError, DataDirError, LockTimeoutError, SettingsError
from mnist_cli.fileio import reason, sweep
from mnist_cli.settings import DATA_DIR_ENV, LOCK_TIMEOUT_ENV

try:  # POSIX advisory locks; elsewhere concurrent runs stay safe (atomic renames) but may fetch twice
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

STATE_DIR = ".mnist-softmax"
CACHE_DIR = "cache"  # inside STATE_DIR
_STAMPS_VERSION = 1
LOCK_NOTICE_AFTER = 1.0  # seconds of waiting for the lock before saying who holds it
_LOCK_POLL = 0.1  # seconds between attempts to take the lock

#: One-line notices for the user (a lock wait, a cache rebuilt); the command line prints them on stderr.
notices = logging.getLogger("mnist_cli")


def resolve_data_dir(data_dir=None, dataset: str = "mnist") -> Path:
    """``data_dir`` if given, else ``$MNIST_SOFTMAX_DATA_DIR``, else the platform's user cache directory's
    folder for ``dataset`` (``.../mnist-softmax/mnist``, ``.../mnist-softmax/fashion-mnist``)."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        from platformdirs import user_cache_path  # imported only when needed: start-up time counts

        return user_cache_path("mnist-softmax", appauthor=False) / dataset
    home = expand_home(Path(chosen), f"give a full path with {{data_dir}} or {DATA_DIR_ENV}")
    return Path(os.path.normpath(home.absolute()))  # /a/./b/../c -> /a/c (symlinks kept)


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


def refuse_data_files(root: Path, outputs: dict, spec: DatasetSpec = MNIST_SPEC) -> None:
    """:class:`SettingsError` when an output (setting name -> path; None = not asked for) would replace a
    file of the data directory ``root``: one of the dataset's files (either name) or anything in its
    state directory (stamps, lock, caches), by its name or where its symlinks lead; other files may be written."""
    base = Path(os.path.realpath(root))
    names = {n for f in spec.files for n in (f.name, f.raw_name)}
    for setting, path in outputs.items():
        if path is None:
            continue
        path = Path(path)
        for target in (Path(os.path.realpath(path.parent)) / path.name, Path(os.path.realpath(path))):
            if (target.parent == base and target.name in names) or target.is_relative_to(base / STATE_DIR):
                raise SettingsError((setting, "data_dir"), f"{path} is the data directory's own {target.name}: "
                                    f"writing {{{setting}}} there would replace it; choose another path")


def read_only(root: Path) -> bool:
    """Whether ``root`` was made read-only on purpose: it exists and its mode grants nobody write permission.

    The tool then writes nothing there (no state directory, stamps or cache), even as root, whom the kernel
    lets write anyway: a shared, read-only copy of the data (a CI's ``../shared``) stays as it was given.
    """
    try:
        return root.is_dir() and root.stat().st_mode & 0o222 == 0
    except OSError:
        return False


def unwritable(root: Path, exc: OSError) -> DataDirError:
    """The error for a data directory that cannot be created or written."""
    return DataDirError(
        f"Cannot write to the data directory {root} ({reason(exc)}); "
        f"choose another with {{data_dir}} or {DATA_DIR_ENV}."
    )


def printable(text: str) -> str:
    """``text`` with every control or format character (escape sequences, NUL, bidi overrides, newlines)
    shown as a Python escape: what a server or a file supplies is printed through this."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ascii(ch)[1:-1] if unicodedata.category(ch)[0] == "C" else ch for ch in text)


def redact(url: str) -> str:
    """``url`` with the password (or a lone token) of its user-info replaced by ``***``."""
    return re.sub(r"//([^/@]*)@", lambda m: "//" + (m[1].split(":")[0] + ":***" if ":" in m[1] else "***") + "@", url)


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


_FACTS = ("size", "mtime_ns", "ino")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _valid_entry(entry) -> bool:
    """Whether a stamp read from disk has the types this module relies on (anything else is dropped,
    and its file simply verified again)."""
    if not isinstance(entry, dict):
        return False
    facts_ok = all(k not in entry or (type(entry[k]) is int) for k in (*_FACTS, "crc32"))
    sha_ok = all(k not in entry or (isinstance(entry[k], str) and _HEX64.fullmatch(entry[k]))
                 for k in ("sha256", "source_sha256"))
    return facts_ok and sha_ok and isinstance(entry.get("pinned", False), bool)


def file_facts(path) -> dict:
    """What vouches for a file's content without reading it: its size, mtime (ns) and inode. A file the tool
    writes is replaced by a rename (a new inode), never rewritten in place."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


class Stamps:
    """``.mnist-softmax/stamps.json``: per file (its path relative to the data directory: a data file's
    name, ``.mnist-softmax/cache/NAME.npy`` for a cache), the stat facts and hash it had when last verified.

    A damaged file, or an entry of the wrong shape, is dropped: its file is verified and stamped again.
    """

    def __init__(self, root: Path):
        self.root = root
        self.path = root / STATE_DIR / "stamps.json"
        self.entries = self._read()
        self._changed: dict[str, dict | None] = {}

    def _read(self) -> dict:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            return {}
        ok = isinstance(doc, dict) and doc.get("version") == _STAMPS_VERSION and isinstance(doc.get("files"), dict)
        return {k: v for k, v in doc["files"].items() if _valid_entry(v)} if ok else {}


    def key(self, path: Path) -> str:
        """The entry name of ``path``: relative to the data directory (a data file's own name)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def get(self, name: str) -> dict | None:
        return self.entries.get(name)

    def fresh(self, path: Path) -> dict | None:
        """The stamp of ``path`` if the file has not changed since it was stamped, else None."""
        entry = self.entries.get(self.key(path))
        if entry is None:
            return None
        try:
            facts = file_facts(path)
        except OSError:
            return None
        return entry if all(entry.get(k) == v for k, v in facts.items()) else None

    def record(self, path: Path, **facts) -> None:
        entry = file_facts(path) | facts
        key = self.key(path)
        self.entries[key] = self._changed[key] = entry

    def distrust(self, path: Path) -> None:
        """Keep what is known of ``path`` (e.g. that it was once verified) but never trust it unhashed again."""
        key = self.key(path)
        if key in self.entries:
            entry = {k: v for k, v in self.entries[key].items() if k not in _FACTS}
            self.entries[key] = self._changed[key] = entry

    def forget(self, name: str) -> None:
        self.entries.pop(name, None)
        self._changed[name] = None

    def save(self) -> bool:
        """Merge this process's changes into the file on disk, atomically; False if it cannot be written."""
        if not self._changed:
            return True
        if read_only(self.root):
            return False
        merged = self._read()
        for name, entry in self._changed.items():
            if entry is None:
                merged.pop(name, None)
            else:
                merged[name] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_in_data_dir(self.path, json.dumps({"version": _STAMPS_VERSION, "files": merged}, indent=1).encode())
        except (OSError, DataDirError):
            return False  # a read-only data directory still works; files are just re-verified next time
        self.entries, self._changed = merged, {}
        return True


class DataDirPart(fileio.PartFile):
    """A :class:`mnist_cli.fileio.PartFile` in a data directory: failures name the data directory setting."""

    def __init__(self, root: Path, name: str):
        super().__init__(root, name, lambda exc: unwritable(root, exc))


def write_in_data_dir(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with DataDirPart(path.parent, path.name) as part:
        part.file.write(data)
        part.commit(path)


def prepare(root: Path) -> Path:
    """Create ``root`` and its state directory; :class:`DataDirError` if that is impossible."""
    state = root / STATE_DIR
    if read_only(root):
        raise unwritable(root, PermissionError(errno.EACCES, "its mode grants no write permission"))
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(root, exc) from None
    with DataDirPart(root, "probe"):  # creating a file is the real test (read-only mounts, ACLs)
        pass
    return state


def sweep_temps(root: Path) -> None:
    """Remove the temporary files of processes that are gone, wherever this tool writes in ``root``."""
    for directory in (root, root / STATE_DIR, root / STATE_DIR / CACHE_DIR):
        sweep(directory)


@contextmanager
def locked(root: Path, timeout: float = 600.0):
    """Hold the data directory's lock (waiting at most ``timeout`` seconds); sweep stale temporary files.

    After :data:`LOCK_NOTICE_AFTER` seconds of waiting, a notice names the process holding it;
    :class:`LockTimeoutError` when it is still held after ``timeout``.
    """
    state = prepare(root)
    with open(state / "lock", "a+b") as handle:
        if fcntl is not None:
            _acquire(handle, root, timeout)
            handle.truncate(0)  # who holds it, for those who wait
            handle.write(f"{os.getpid()}\n".encode())
            handle.flush()
        sweep_temps(root)
        yield


def _acquire(handle, root: Path, timeout: float) -> None:
    started, told = time.monotonic(), False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - started
        if waited >= timeout:
            raise LockTimeoutError(
                f"Gave up after {timeout:g} s waiting for {root}: {_holder(handle)} holds its lock (another "
                f"mnist-softmax fetching files, perhaps stopped with Ctrl-Z). Let it finish or end it, set "
                f"{LOCK_TIMEOUT_ENV} to wait longer, or choose another {{data_dir}}."
            )
        if not told and waited >= LOCK_NOTICE_AFTER:
            notices.warning(f"Waiting for {root}: {_holder(handle)} holds its lock; giving up after {timeout:g} s "
                            f"({LOCK_TIMEOUT_ENV}).")
            told = True
        time.sleep(min(_LOCK_POLL, max(0.0, timeout - waited)))


def _holder(handle) -> str:
    """'process PID' as the holder of the lock wrote it, or a vaguer phrase."""
    try:
        handle.seek(0)
        text = handle.read(32).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


# The decoded-array cache ----------------------------------------------------------------------------


def cache_path(root: Path, f: FileSpec, sha256: str) -> Path:
    """Where the decoded array of ``f`` with content ``sha256`` is cached."""
    return root / STATE_DIR / CACHE_DIR / f"{f.raw_name}.{sha256[:16]}.npy"


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cache_problem(stamps: Stamps, path: Path, source_sha256: str | None = None, *, rehash: bool = False) -> str | None:
    """Why the cache file ``path`` cannot be used, or None if it is the one stamped when it was written
    (from ``source_sha256``, if given). Unchanged stat facts are trusted unless ``rehash``; changed ones
    (a copied or touched file) are checked by SHA-256 and stamped again if the bytes are the same."""
    entry = stamps.get(stamps.key(path))
    if entry is None:
        return "no record of it being written from a verified file"
    if source_sha256 is not None and entry.get("source_sha256") != source_sha256:
        return "it was written from other content"
    if not rehash and stamps.fresh(path) is not None:
        return None
    try:
        same = hash_file(path) == entry.get("sha256")
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if not same:
        return "its content changed since it was written"
    if stamps.fresh(path) is None:
        stamps.record(path, **{k: v for k, v in entry.items() if k not in _FACTS})
    return None


def check_caches(root: Path, stamps: Stamps, *, clear: bool = False) -> list[str]:
    """Hash every cache file against its stamp; remove those that fail (all of them if ``clear``).

    Returns a notice per file that failed (none for ``clear``); a load rebuilds what was removed.
    """
    directory = root / STATE_DIR / CACHE_DIR
    told = []
    for path in sorted(directory.glob("*.npy")) if directory.is_dir() else []:
        if not clear:
            problem = cache_problem(stamps, path, rehash=True)
            if problem is None:
                continue
            told.append(f"cache {path.name} failed its check ({problem}): removed; the next load rebuilds it.")
        stamps.forget(stamps.key(path))
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
    for key in [k for k in stamps.entries if k.startswith(f"{STATE_DIR}/{CACHE_DIR}/")]:
        if not (root / key).is_file():
            stamps.forget(key)  # a record of a file that is gone
    return told

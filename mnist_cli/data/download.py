"""Fetch the files of a dataset into the data directory: verified, atomic, resilient to bad mirrors.

    from mnist_cli.data.download import ensure_mnist
    report = ensure_mnist(mirrors=["../shared/datasets/mnist"])
    print(report.summary())

For each file not already present and verified, the mirrors are tried in order (the caller's, then
``$MNIST_SOFTMAX_MIRRORS``, then the built-in ones). A mirror is an http(s) base URL or a local
directory. A download streams into a temporary file beside its target while its decompressed
content is hashed; only a file matching the pinned size and SHA-256 is renamed into place. Any
failure of a mirror (HTTP error, connection error, stall, deadline, truncation, wrong content, an
HTML page) moves on to the next one; connection errors, 429 and 5xx are retried with back-off first.
The per-file deadline is enforced by a watchdog that shuts the connection down, so it bounds the
connection, the status line and headers (and endless ``1xx``), redirects and the body together. A
mirror that proved unreachable or silent is skipped for the remaining files. What a server says (a
reason phrase, an error text) is printed with its control characters escaped, and a mirror's
password never appears in a message. This module knows nothing of training.
"""

from __future__ import annotations

import email.utils
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
import urllib3

from mnist_cli import __version__
from mnist_cli.data import datasets
from mnist_cli.data.datasets import DatasetSpec, FileSpec
from mnist_cli.data.directory import (
    DATA_DIR_ENV,
    DataDirPart,
    Digest,
    Stamps,
    Verifier,
    check_caches,
    find_file,
    locked,
    notices,
    printable,
    redact,
    resolve_data_dir,
    sweep_temps,
    verify_file,
)
from mnist_cli.data.idx import check_idx
from mnist_cli.data.mirrors import FetchSettings, Mirror, offline_from_env, resolve_mirrors
from mnist_cli.errors import DATA_FIX, DataDirError, DataNotFoundError, DownloadError, FormatError, MnistError
from mnist_cli.progress import bars_enabled, make_bar
from mnist_cli.report.text import describe_data, plural
from mnist_cli.settings import MIRRORS_ENV, OFFLINE_ENV

__all__ = ["DownloadReport", "FileReport", "ensure_mnist"]

USER_AGENT = f"mnist-softmax/{__version__}"


@dataclass
class FileReport:
    """What happened to one file."""

    name: str
    status: str  # "present" (already verified), "downloaded", or "foreign" (not MNIST, kept as the user's data)
    #              (_inspect also says "corrupt": once verified, no longer matching, to be fetched again)
    path: str | None = None  # absolute and normalised
    file_size: int | None = None  # bytes of the file on disk (the .gz when compressed)
    file_sha256: str | None = None  # SHA-256 of the file on disk, when known
    content_size: int | None = None  # bytes of the decompressed content, when verified
    content_sha256: str | None = None  # SHA-256 of the decompressed content (what is pinned), when verified
    compressed: bool | None = None
    byte_identical: bool | None = None  # the .gz equals the one the public mirrors serve (None: unknown)
    source: str | None = None  # the mirror a download came from
    bytes_fetched: int = 0
    notes: list[str] = field(default_factory=list)  # failed mirrors before success, a replaced corrupt file

    @property
    def verified(self) -> bool:
        return self.status in ("present", "downloaded")


@dataclass
class DownloadReport:
    """The outcome of :func:`ensure_mnist`: one :class:`FileReport` per file."""

    dataset: str
    data_dir: Path
    files: list[FileReport]
    notices: list[str] = field(default_factory=list)  # what the check of the decoded-array cache found

    @property
    def verified(self) -> bool:
        return all(f.verified for f in self.files)

    @property
    def downloaded(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "downloaded"]

    @property
    def bytes_fetched(self) -> int:
        return sum(f.bytes_fetched for f in self.files)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "data_dir": str(self.data_dir),
            "verified": self.verified,
            "downloaded": len(self.downloaded),
            "bytes_fetched": self.bytes_fetched,
            "files": [asdict(f) for f in self.files],
            "notices": list(self.notices),
        }

    def summary(self) -> str:
        n = len(self.files)
        if not self.downloaded and self.verified:
            head = f"{self.dataset.upper()} in {self.data_dir}: all {n} files present and verified; nothing downloaded."
        else:
            head = (
                f"{self.dataset.upper()} in {self.data_dir}: {sum(f.verified for f in self.files)} of {n} files "
                f"verified, {len(self.downloaded)} downloaded ({_mb(self.bytes_fetched)} fetched)."
            )
        lines = [head]
        for f in self.files:
            what = {
                "present": "verified, already present",
                "downloaded": f"verified, downloaded from {printable(f.source)}",
                "foreign": f"NOT {self.dataset.upper()}: kept as your own data "
                "(checked for IDX structure when loaded; a forced download replaces it)",
            }[f.status]
            lines.append(f"  {f.name:<28} {_mb(f.file_size or 0):>9}  {what}")
            lines += [f"    note: {printable(note)}" for note in f.notes]
        lines += [f"  note: {printable(note)}" for note in self.notices]
        lines.append(describe_data(self.data_dir, self.verified))
        return "\n".join(lines)

    __str__ = summary


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def manual_fix(spec: DatasetSpec) -> str:
    """How to supply the files by hand: names, decompressed sizes and SHA-256, and a mirror directory
    (``{mirror}``: the error that carries this text spells it)."""
    lines = [
        "Fix: copy the files (.gz or decompressed) from any copy of the dataset into a directory and pass "
        f"{{mirror}} DIR (or set {MIRRORS_ENV}=DIR). Their decompressed content must be:"
    ]
    lines += [f"  {f.name:<28} {f.size:>9} bytes  sha256 {f.sha256}" for f in spec.files]
    return "\n".join(lines)


def ensure_mnist(
    data_dir=None,
    *,
    mirrors=(),
    offline: bool = False,
    force: bool = False,
    progress: bool = False,
    rehash: bool = False,
    spec: DatasetSpec | None = None,
    settings: FetchSettings | None = None,
) -> DownloadReport:
    """Make sure every file of ``spec`` (MNIST by default) is in the data directory, verified.

    Files whose stamp still matches are trusted (``rehash=True`` hashes them anyway, and the cache files
    too, removing those that fail); a file this tool once verified that no longer matches is corrupt and
    fetched again; a file that never matched the pinned checksums is the user's own data and is left
    alone (``force=True`` replaces everything and clears the cache). Another process fetching into the
    same directory is waited for, at most ``settings.lock_timeout`` seconds (:class:`LockTimeoutError`).
    ``offline`` (or ``$MNIST_SOFTMAX_OFFLINE``) allows local-directory mirrors only. ``progress`` draws a
    bar per download on stderr, only when stderr is a terminal (:func:`mnist_cli.progress.bars_enabled`).
    """
    spec = spec or datasets.MNIST_SPEC
    root = resolve_data_dir(data_dir)
    sources = resolve_mirrors(mirrors, spec)
    offline = offline or offline_from_env()
    settings = settings or FetchSettings.from_env()
    if root.exists() and not root.is_dir():
        raise DataDirError(f"The data directory {root} is not a directory; "
                           f"choose another with {{data_dir}} or {DATA_DIR_ENV}.")
    sweep_temps(root)  # what killed runs left (their processes are gone); never anyone else's files
    stamps = Stamps(root)
    plan = _Plan.of(root, spec, stamps, force=force, rehash=rehash)
    found = check_caches(root, stamps, clear=force) if rehash or force else []
    if plan.todo:
        usable = plan.usable(sources, offline)
        stamps.save()  # a corrupt file stays distrusted
        with locked(root, settings.lock_timeout), requests.Session() as session:
            session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            skipped = {str(m): "skipped: offline mode" for m in sources if m not in usable}
            if progress and not bars_enabled(quiet=False):  # no bar on a log: one line says what happens
                notices.warning(_fetching(spec, plan.todo, root, usable))
            plan.fetch(_Fetcher(root, spec, usable, skipped, session, settings, progress), force)
    plan.stamps.save()
    return DownloadReport(spec.name, root, [plan.reports[f.name] for f in spec.files], found)


def _fetching(spec: DatasetSpec, todo: list[FileSpec], root: Path, mirrors: list[Mirror]) -> str:
    """The one line an automatic download prints where no progress bar can be drawn."""
    size = sum(f.gz_size or f.size for f in todo)
    others = len(mirrors) - 1
    more = f" (then {plural(others, 'other mirror')} if it fails)" if others else ""
    return (f"Downloading {spec.name.upper()} ({len(todo)} file{'s' if len(todo) != 1 else ''}, {_mb(size)}) into "
            f"{root} from {printable(str(mirrors[0]))}{more}.")


@dataclass
class _Plan:
    """What a data directory holds of a dataset and what must be fetched: one inspection of each file."""

    root: Path
    spec: DatasetSpec
    stamps: Stamps
    reports: dict[str, FileReport]  # the files that can stay, by name
    todo: list[FileSpec]  # the files to fetch (missing or corrupt)
    notes: dict[str, list[str]]  # why each of them is fetched again
    corrupt: set[str]  # those that were there but no longer match their verification

    @classmethod
    def of(cls, root: Path, spec: DatasetSpec, stamps: Stamps, *, force: bool, rehash: bool) -> _Plan:
        reports, todo, notes = {}, [], {}
        for f in spec.files:
            report = None if force else _inspect(root, f, stamps, rehash)
            if report is None or report.status == "corrupt":
                todo.append(f)
                notes[f.name] = report.notes if report is not None else []
            else:
                reports[f.name] = report
        plan = cls(root, spec, stamps, reports, todo, notes, {f.name for f in todo if notes[f.name]})
        plan._refuse_a_mixed_directory()
        return plan

    def _refuse_a_mixed_directory(self) -> None:
        foreign = [r.name for r in self.reports.values() if r.status == "foreign"]
        if self.todo and foreign:
            raise DataNotFoundError(
                f"{self.root} holds files that are not {self.spec.name.upper()} ({', '.join(foreign)}) but lacks "
                f"{', '.join(f.name for f in self.todo)}: add the missing files of your dataset, or choose another "
                "directory with {data_dir}."
            )

    def usable(self, sources: list[Mirror], offline: bool) -> list[Mirror]:
        """The mirrors that may be asked (offline: local directories only); DataNotFoundError if none."""
        usable = [m for m in sources if m.directory is not None or not offline]
        if not usable:
            self.stamps.save()  # a corrupt file stays distrusted
            raise DataNotFoundError(f"{_unavailable(self.spec, self.root, self.todo, self.corrupt)}\n"
                                    f"{manual_fix(self.spec)}")
        return usable

    def fetch(self, fetcher: _Fetcher, force: bool) -> None:
        """Fetch what is to fetch, under the lock: first see what other processes did meanwhile."""
        self.stamps = Stamps(self.root)  # what other processes recorded while this one waited for the lock
        for f in self.todo:
            # A corrupt file is hashed again: its unchanged stat facts prove nothing (bit rot keeps them).
            again = None if force else _inspect(self.root, f, self.stamps, rehash=f.name in self.corrupt)
            if again is not None and again.status == "present":  # another process fetched it meanwhile
                self.reports[f.name] = again
                continue
            self.reports[f.name] = fetcher.fetch(f, self.stamps, self.notes[f.name])
            self.stamps.save()


def _unavailable(spec: DatasetSpec, root: Path, todo: list[FileSpec], corrupt: set[str]) -> str:
    """Why offline mode cannot help: which files are missing, which are corrupt (each said as it is)."""
    name = spec.name.upper()
    missing = [f.name for f in todo if f.name not in corrupt]
    damaged = [f.name for f in todo if f.name in corrupt]
    what = []
    if missing:
        what.append(f"{name} is missing from {root} ({', '.join(missing)})")
    if damaged:
        what.append(f"{root} holds corrupt copies of {', '.join(damaged)} (no longer the {name} files verified "
                    "there earlier; fix: `mnist-softmax download` without {offline}, or remove them and supply "
                    "the files with {mirror} DIR)")
    return f"{' and '.join(what)}, and offline mode ({{offline}} or {OFFLINE_ENV}) forbids downloading."


def _inspect(root: Path, f: FileSpec, stamps: Stamps, rehash: bool) -> FileReport | None:
    """The state of ``f`` on disk: None if missing; else present, corrupt (ours, to replace) or foreign."""
    path = find_file(root, f)
    if path is None:
        return None
    entry = None if rehash else stamps.fresh(path)
    if entry is not None and entry.get("pinned") and entry.get("sha256") == f.sha256:
        return _present(f, path, entry)
    try:
        digest = verify_file(path, f)
    except MnistError as exc:
        earlier = stamps.get(path.name)
        if earlier is not None and earlier.get("pinned"):
            stamps.distrust(path)  # until it is replaced, no load may trust its stat facts
            return FileReport(f.name, "corrupt", str(path), notes=[f"replaced a corrupt file: {exc}"])
        _check_foreign(path, root)
        return FileReport(f.name, "foreign", str(path), file_size=path.stat().st_size)
    except OSError as exc:
        raise DataDirError(f"Cannot read {path} ({exc.strerror}); fix its permissions or delete it.") from None
    earlier = stamps.get(path.name) or {}
    entry = _stamp(stamps, path, digest, f, origin=earlier.get("origin", "found"), source=earlier.get("source"))
    return _present(f, path, entry)


def _check_foreign(path: Path, root: Path) -> None:
    """A file that is not the pinned one may be the user's own dataset, but only if it is valid IDX:
    anything else (garbage, a truncated gzip) is refused now, with the fix, not kept to fail at load."""
    try:
        check_idx(path)
    except FormatError as exc:
        raise FormatError(f"{exc} It is neither the MNIST file nor a valid IDX file of your own. " + DATA_FIX,
                          ("force", "data_dir")) from None


def _stamp(stamps: Stamps, path: Path, digest: Digest, f: FileSpec, *, origin: str, source) -> dict:
    stamps.record(
        path,
        pinned=True,
        sha256=digest.sha256,
        file_sha256=digest.file_sha256,
        compressed=digest.compressed,
        origin=origin,
        source=source,
    )
    return stamps.get(path.name)


def _present(f: FileSpec, path: Path, entry: dict) -> FileReport:
    return FileReport(
        f.name,
        "present",
        str(path),
        file_size=entry["size"],
        file_sha256=entry.get("file_sha256"),
        content_size=f.size,
        content_sha256=entry["sha256"],
        compressed=entry.get("compressed"),
        byte_identical=_identical(f, entry.get("file_sha256"), entry.get("compressed")),
        source=entry.get("source"),
    )


def _identical(f: FileSpec, file_sha256: str | None, compressed: bool | None) -> bool | None:
    if not compressed or f.gz_sha256 is None or file_sha256 is None:
        return None
    return file_sha256 == f.gz_sha256


class _MirrorFailed(Exception):
    """One mirror failed for one file; ``reason`` is a short phrase for the error message."""

    def __init__(self, reason: str, *, retry: bool = False, retry_after: float | None = None, down: bool = False):
        reason = printable(reason)  # it may quote the server: no escape sequence reaches the terminal
        super().__init__(reason)
        self.reason, self.retry, self.retry_after, self.down = reason, retry, retry_after, down


class _Watchdog:
    """Shuts down the connections of one download when its total deadline passes.

    Every connection the session opens is registered (:class:`_WatchedAdapter`); from the deadline on,
    their sockets are shut down (again every 0.1 s, for one still connecting), which ends any blocking
    read at once: of the status line, the headers, an endless run of ``100 Continue``, a redirect or
    the body. ``fired`` tells the caller that this, not the server, ended the request.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._conns: list = []
        self._done = threading.Event()
        self.fired = False

    def watch(self, conn) -> None:
        with self._lock:
            self._conns.append(conn)

    @contextmanager
    def armed(self, seconds: float):
        self.fired = False
        self._done = done = threading.Event()
        thread = threading.Thread(target=self._run, args=(seconds, done), name="mnist-softmax-deadline", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
            with self._lock:
                self._conns = []

    def _run(self, seconds: float, done: threading.Event) -> None:
        if done.wait(seconds):
            return
        self.fired = True
        while True:
            with self._lock:
                socks = [getattr(c, "sock", None) for c in self._conns]
            for sock in socks:
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:  # closed already
                        pass
            if done.wait(0.1):
                return


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with every new connection (direct or through a proxy) given to a watchdog."""

    def __init__(self, watchdog: _Watchdog):
        self.watchdog = watchdog  # before super().__init__, which builds the pool manager
        super().__init__()

    def _watched(self, manager):
        watchdog = self.watchdog

        def pool_class(base):
            class Pool(base):
                def _new_conn(self):
                    conn = super()._new_conn()
                    watchdog.watch(conn)
                    return conn

            return Pool

        if not getattr(manager, "_watched", False):
            manager.pool_classes_by_scheme = {k: pool_class(v) for k, v in manager.pool_classes_by_scheme.items()}
            manager._watched = True
        return manager

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self._watched(self.poolmanager)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        return self._watched(super().proxy_manager_for(proxy, **proxy_kwargs))


class _Fetcher:
    """Fetches single files, trying each mirror in turn; remembers mirrors that proved unreachable or silent."""

    def __init__(self, root, spec, mirrors, skipped, session, settings, progress):
        self.root, self.spec, self.mirrors, self.session, self.settings = root, spec, mirrors, session, settings
        self.skipped = dict(skipped)  # mirror -> why it is not tried (offline, unreachable or silent earlier)
        self.progress = bars_enabled(quiet=not progress)  # on stderr, only when it is a terminal
        self.watchdog = _Watchdog()
        adapter = _WatchedAdapter(self.watchdog)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._received: int | None = None  # body bytes of the current attempt; None before its headers

    def fetch(self, f: FileSpec, stamps: Stamps, notes: list[str]) -> FileReport:
        failures = dict(self.skipped)
        for mirror in self.mirrors:
            if str(mirror) in self.skipped:
                continue
            try:
                with DataDirPart(self.root, f.name) as part:
                    digest, fetched = self._from(mirror, f, part)
                    final = self.root / (f.name if digest.compressed else f.raw_name)
                    part.commit(final)
            except _MirrorFailed as exc:
                failures[str(mirror)] = exc.reason
                if exc.down:
                    self.skipped[str(mirror)] = f"skipped: failed for an earlier file ({exc.reason})"
                continue
            except DataDirError:
                raise
            except MnistError as exc:  # wrong content: checksum, HTML, gzip bomb, corrupt gzip
                failures[str(mirror)] = printable(str(exc))
                continue
            stale = self.root / (f.raw_name if digest.compressed else f.name)
            stale.unlink(missing_ok=True)  # the other spelling could shadow or contradict the new file
            entry = _stamp(stamps, final, digest, f, origin="download", source=str(mirror))
            failed = [f"{m}: {why}" for m, why in failures.items() if not why.startswith("skipped")]
            report = _present(f, final, entry)
            report.status, report.bytes_fetched, report.notes = "downloaded", fetched, [*notes, *failed]
            return report
        listing = "\n".join(f"  {m}: {why}" for m, why in failures.items())
        replacing = f" to replace the corrupt copy in {self.root}" if notes else ""
        raise DownloadError(
            f"Could not download {f.name}{replacing}: every mirror failed.\n{listing}\n{manual_fix(self.spec)}"
        )

    def _from(self, mirror: Mirror, f: FileSpec, part: DataDirPart) -> tuple[Digest, int]:
        if mirror.directory is not None:
            return _copy_local(mirror.directory, f, part)
        return self._download(mirror.location + f.name, f, part)

    def _download(self, url: str, f: FileSpec, part: DataDirPart) -> tuple[Digest, int]:
        """GET ``url`` with retries, back-off and Retry-After, all within the per-file deadline."""
        with self.watchdog.armed(self.settings.deadline):
            try:
                return self._retrying(url, f, part)
            except (_MirrorFailed, MnistError):
                if self.watchdog.fired:  # the watchdog cut the connection: that is the real reason
                    raise self._past_deadline() from None
                raise

    def _past_deadline(self) -> _MirrorFailed:
        s = self.settings
        if self._received is None:
            return _MirrorFailed(
                f"no complete response (status line and headers) within {s.deadline:g} s "
                "(total deadline, MNIST_SOFTMAX_DEADLINE)",
                down=True,
            )
        return _MirrorFailed(
            f"too slow: {self._received} bytes in {s.deadline:g} s (total deadline, MNIST_SOFTMAX_DEADLINE)")

    def _retrying(self, url: str, f: FileSpec, part: DataDirPart) -> tuple[Digest, int]:
        s = self.settings
        deadline = time.monotonic() + s.deadline
        attempt = 0
        while True:
            part.restart()
            try:
                return self._attempt(url, f, part, deadline)
            except _MirrorFailed as exc:
                attempt += 1
                if not exc.retry or self.watchdog.fired:
                    raise
                if attempt > s.retries:
                    raise _MirrorFailed(f"{exc.reason}; gave up after {attempt} attempts", down=exc.down) from None
                wait = exc.retry_after if exc.retry_after is not None else min(s.backoff * 2 ** (attempt - 1), s.backoff_max)
                if wait > s.backoff_max or time.monotonic() + wait > deadline:
                    raise _MirrorFailed(f"{exc.reason}; retry in {wait:g} s would pass the deadline") from None
                time.sleep(wait)

    def _attempt(self, url: str, f: FileSpec, part: DataDirPart, deadline: float) -> tuple[Digest, int]:
        s = self.settings
        self._received = None
        connect = min(s.connect_timeout, max(deadline - time.monotonic(), 0.01))
        try:
            response = self.session.get(url, stream=True, timeout=(connect, s.read_timeout))
        except requests.exceptions.ConnectTimeout:
            raise _MirrorFailed(f"no connection within {connect:g} s", retry=True, down=True) from None
        except requests.exceptions.ReadTimeout:  # it accepted the connection and said nothing: silent
            raise _MirrorFailed(f"no response within {s.read_timeout:g} s (read timeout)", retry=True, down=True) from None
        except requests.exceptions.ConnectionError as exc:
            raise _MirrorFailed(f"connection failed ({_why(exc)})", retry=True, down=True) from None
        except requests.RequestException as exc:
            raise _MirrorFailed(f"request failed ({_why(exc)})") from None
        with response:
            if self.watchdog.fired:  # a head cut short by the watchdog can parse as a complete response
                raise _MirrorFailed("the deadline passed before the response was complete")
            code = response.status_code
            if code == 429 or code >= 500:
                after = _retry_after(response.headers.get("Retry-After"))
                raise _MirrorFailed(f"HTTP {code} {response.reason}", retry=True, retry_after=after)
            if code != 200:
                raise _MirrorFailed(f"HTTP {code} {response.reason}")
            length = _content_length(response, f)
            received = self._received = 0
            verifier = Verifier(f)
            bar = make_bar(length, f.name, "B", self.progress, unit_scale=True, unit_divisor=1024)
            try:
                while chunk := self._read(response, received, length, deadline):
                    received += len(chunk)
                    self._received = received
                    verifier.update(chunk)
                    part.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if length is not None and received != length:
            raise _MirrorFailed(f"body ended after {received} of {length} bytes (truncated)", retry=True)
        return verifier.finish(), received

    def _read(self, response, received: int, length: int | None, deadline: float) -> bytes:
        """The next piece of the body (b"" at its end), whatever has arrived: a slow drip still ends on time."""
        s = self.settings
        if time.monotonic() > deadline:
            raise _MirrorFailed(
                f"too slow: {received} bytes in {s.deadline:g} s (total deadline, MNIST_SOFTMAX_DEADLINE)"
            )
        try:
            return response.raw.read1(64 * 1024, decode_content=True)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise _MirrorFailed(
                f"stalled: no data for {s.read_timeout:g} s (read timeout, MNIST_SOFTMAX_READ_TIMEOUT)", retry=True,
                down=True,
            ) from None
        except urllib3.exceptions.DecodeError as exc:  # the same bytes would fail the same way: no retry
            encoding = response.headers.get("Content-Encoding", "")
            raise _MirrorFailed(f"cannot decode the body (Content-Encoding: {encoding}; {_why(exc)})") from None
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            of = f" of {length}" if length is not None else ""
            raise _MirrorFailed(f"connection broken after {received}{of} bytes ({_why(exc)})", retry=True) from None


def _copy_local(directory: Path, f: FileSpec, part: DataDirPart) -> tuple[Digest, int]:
    source = find_file(directory, f)
    if source is None:
        raise _MirrorFailed(f"neither {f.name} nor {f.raw_name} is there")
    verifier = Verifier(f, name=str(source))
    copied = 0
    try:
        with open(source, "rb") as src:
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                verifier.update(chunk)
                part.write(chunk)
    except OSError as exc:
        raise _MirrorFailed(f"cannot read {source} ({exc.strerror})") from None
    return verifier.finish(), copied


def _content_length(response, f: FileSpec) -> int | None:
    """The announced body size, if it can be compared with the bytes read (no Content-Encoding)."""
    text = response.headers.get("Content-Length")
    if text is None or not text.strip().isdigit():
        return None
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return None  # urllib3 checks the encoded length itself; we count decoded bytes
    length = int(text)
    if length > f.max_download:
        raise _MirrorFailed(f"announces {length} bytes, larger than any genuine copy of {f.name}")
    return length


def _retry_after(text: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay in seconds or an HTTP date); None if absent or bad."""
    if not text:
        return None
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _why(exc: BaseException) -> str:
    """A short reason from the nested exceptions requests and urllib3 raise (e.g. 'Connection refused')."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        if isinstance(e, urllib3.exceptions.IncompleteRead):
            return "the server closed the connection early"
        linked = (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__)
        todo += [a for a in linked if isinstance(a, BaseException)]
    return redact(re.sub(r"<[^>]*>: ", "", str(exc))[:200])


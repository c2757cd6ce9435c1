"""Fill the data directory with a dataset's files, verified and atomically: what is there, what to fetch, the report.

    from mnist_cli.data.download import ensure_mnist
    report = ensure_mnist(mirrors=["../shared/datasets/mnist"])
    report.verified, len(report.downloaded)
    # -> (True, 4)

For each file not already present and verified, the mirrors are tried in order (the caller's, then
``$MNIST_SOFTMAX_MIRRORS``, then the built-in ones; :mod:`mnist_cli.data.mirrors`). A mirror is an
http(s) base URL or a local directory; :mod:`mnist_cli.data.fetch` makes each attempt. A download
streams into a temporary file beside its target while its decompressed content is hashed; only a
file matching the pinned size and SHA-256 is renamed into place. Any failure of a mirror (HTTP error,
connection error, stall, deadline, truncation, wrong content, an HTML page) moves on to the next one;
a mirror that proved unreachable or silent is skipped for the remaining files. The outcome is a
:class:`DownloadReport`, whose :meth:`~DownloadReport.to_dict` is what ``mnist-softmax download --json``
prints and what :func:`mnist_cli.report.download.format_download` words. This module knows nothing
of training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnist_cli.data import datasets
from mnist_cli.data.datasets import DatasetSpec, FileSpec
from mnist_cli.data.directory import (
    DATA_DIR_ENV,
    DataDirPart,
    Digest,
    Stamps,
    check_caches,
    find_file,
    locked,
    notices,
    printable,
    resolve_data_dir,
    sweep_temps,
    verify_file,
)
from mnist_cli.data.fetch import Fetcher, MirrorFailed
from mnist_cli.data.idx import check_idx
from mnist_cli.data.mirrors import FetchSettings, Mirror, offline_from_env, resolve_mirrors
from mnist_cli.errors import DATA_FIX, DataDirError, DataNotFoundError, DownloadError, FormatError, MnistError
from mnist_cli.progress import bars_enabled
from mnist_cli.settings import MIRRORS_ENV, OFFLINE_ENV

__all__ = ["VERIFIED", "DownloadReport", "FileReport", "ensure_mnist", "size_text"]

VERIFIED = ("present", "downloaded")  # the statuses of a file that matched the pinned checksums


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
        return self.status in VERIFIED


@dataclass
class DownloadReport:
    """The outcome of :func:`ensure_mnist`: one :class:`FileReport` per file."""

    dataset: str
    data_dir: Path
    files: list[FileReport]
    notices: list[str] = field(default_factory=list)  # what the check of the decoded-array cache found
    title: str = ""  # the dataset's name in reports (DatasetSpec.title)

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
        """The JSON-able document: what ``download --json`` prints and :mod:`mnist_cli.report.download` words."""
        return {
            "dataset": self.dataset,
            "title": self.title,
            "data_dir": str(self.data_dir),
            "verified": self.verified,
            "downloaded": len(self.downloaded),
            "bytes_fetched": self.bytes_fetched,
            "files": [asdict(f) for f in self.files],
            "notices": list(self.notices),
        }


def size_text(n: int) -> str:
    """A size in bytes as the download report and notice say it: ``9.7 MB``, ``28.9 kB``."""
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
    root = resolve_data_dir(data_dir, spec.name)
    candidates = resolve_mirrors(mirrors, spec)
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
        usable = plan.usable(candidates, offline)
        stamps.save()  # a corrupt file stays distrusted
        with locked(root, settings.lock_timeout), Fetcher(settings, progress) as fetcher:
            skipped = {str(m): "skipped: offline mode" for m in candidates if m not in usable}
            if progress and not bars_enabled(quiet=False):  # no bar on a log: one line says what happens
                notices.warning(_fetching(spec, plan.todo, root, usable))
            plan.fetch(_Failover(root, spec, usable, skipped, fetcher), force)
    plan.stamps.save()
    return DownloadReport(spec.name, root, [plan.reports[f.name] for f in spec.files], found, spec.title)


def _fetching(spec: DatasetSpec, todo: list[FileSpec], root: Path, mirrors: list[Mirror]) -> str:
    """The one line an automatic download prints where no progress bar can be drawn."""
    size = sum(f.gz_size or f.size for f in todo)
    others = len(mirrors) - 1
    more = f" (then {others} other mirror{'s' if others != 1 else ''} if it fails)" if others else ""
    return (f"Downloading {spec.label} ({len(todo)} file{'s' if len(todo) != 1 else ''}, {size_text(size)}) into "
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
                f"{self.root} holds files that are not {self.spec.label} ({', '.join(foreign)}) but lacks "
                f"{', '.join(f.name for f in self.todo)}: add the missing files of your dataset, or choose another "
                "directory with {data_dir}."
            )

    def usable(self, candidates: list[Mirror], offline: bool) -> list[Mirror]:
        """The mirrors that may be asked (offline: local directories only); DataNotFoundError if none."""
        usable = [m for m in candidates if m.directory is not None or not offline]
        if not usable:
            self.stamps.save()  # a corrupt file stays distrusted
            raise DataNotFoundError(f"{_unavailable(self.spec, self.root, self.todo, self.corrupt)}\n"
                                    f"{manual_fix(self.spec)}")
        return usable

    def fetch(self, fetcher: _Failover, force: bool) -> None:
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
    name = spec.label
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


class _Failover:
    """Fetches single files, trying each mirror in turn; remembers mirrors that proved unreachable or silent."""

    def __init__(self, root: Path, spec: DatasetSpec, mirrors: list[Mirror], skipped: dict[str, str], fetcher: Fetcher):
        self.root, self.spec, self.mirrors, self.fetcher = root, spec, mirrors, fetcher
        self.skipped = dict(skipped)  # mirror -> why it is not tried (offline, unreachable or silent earlier)

    def fetch(self, f: FileSpec, stamps: Stamps, notes: list[str]) -> FileReport:
        """``f`` from the first mirror that serves it genuine, committed, stamped and reported; else DownloadError."""
        failures = dict(self.skipped)
        for mirror in self.mirrors:
            if str(mirror) in self.skipped:
                continue
            try:
                with DataDirPart(self.root, f.name) as part:
                    digest, fetched = self.fetcher.fetch(mirror, f, part)
                    final = self.root / (f.name if digest.compressed else f.raw_name)
                    part.commit(final)
            except MirrorFailed as exc:
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

"""Load MNIST (or a user's data in MNIST's layout) into arrays, in tens of milliseconds once cached.

    from mnist_cli.data import load_mnist
    mnist = load_mnist()
    mnist.train_images.shape, mnist.verified
    # -> ((60000, 784), True)

The fast path reads the data directory's stamps (size, mtime and inode of each verified file), and
loads the decoded arrays from ``.mnist-softmax/cache/*.npy``, named by the SHA-256 of their source
content. Each cache file is stamped when written (its own size, mtime, inode and SHA-256, and the
content it was decoded from, hashed as it is decoded: a file that rotted behind its stamp is verified
and repaired instead of cached); one that no longer matches its stamp is rebuilt, with a notice. Only
when a file is missing or changed does it import :mod:`mnist_cli.data.download` (and with it
``requests``) to fetch, verify or repair the files. Files that do not match MNIST's pinned checksums
are the user's own dataset: they are checked structurally instead (IDX, 28x28 uint8 images, labels
0-9, as many labels as images: the headers first, before anything is decoded) and reported with
``verified=False``. :func:`describe_data` words that (the ``data:`` line of every report, which
:mod:`mnist_cli.report` takes from here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_cli.data import datasets
from mnist_cli.data.datasets import FileSpec
from mnist_cli.data.directory import (
    DataDirPart,
    Stamps,
    cache_path,
    cache_problem,
    find_file,
    notices,
    read_only,
    resolve_data_dir,
)
from mnist_cli.data.idx import MAX_IDX_BYTES, read_header, read_idx
from mnist_cli.errors import ChecksumError, DataDirError, FormatError

IMAGE_SHAPE = (28, 28)
N_CLASSES = 10


def describe_data(data_dir, verified: bool, title: str = "MNIST") -> str:
    """The line every readable report carries: where the data is and whether it is the verified dataset
    (``title``: MNIST, Fashion-MNIST)."""
    return f"data: {data_dir} ({f'verified {title}' if verified else f'your own files, NOT verified {title}'})"


@dataclass(frozen=True)
class MNIST:
    """The four arrays of an MNIST-format dataset and where they came from. Arrays are read-only."""

    train_images: np.ndarray  # (n_train, 784) uint8, C-contiguous
    train_labels: np.ndarray  # (n_train,) uint8
    test_images: np.ndarray  # (n_test, 784) uint8
    test_labels: np.ndarray  # (n_test,) uint8
    data_dir: Path
    verified: bool  # True: matched pinned checksums; False: user's own MNIST-format data validated structurally
    checksums: dict  # file name -> sha256 hex of decompressed content (for model metadata)
    dataset: str = "mnist"  # the declared dataset it was checked against (mnist_cli.data.datasets.dataset_spec)
    title: str = "MNIST"  # its name in reports

    @property
    def provenance(self) -> str:
        """One line for reports: the data directory and whether this is the verified dataset."""
        return describe_data(self.data_dir, self.verified, self.title)

    @property
    def where(self) -> dict:
        """What a report says of the data: ``dir``, ``verified``, ``dataset``, its ``title`` and ``classes``."""
        return {"dir": str(self.data_dir), "verified": self.verified, "dataset": self.dataset, "title": self.title,
                "classes": list(datasets.dataset_spec(self.dataset).classes)}


@dataclass(frozen=True)
class _Source:
    path: Path
    sha256: str | None  # of the decompressed content; None until a foreign file has been read
    pinned: bool  # matched the pinned checksum


def load_mnist(data_dir=None, *, mirrors=(), offline: bool = False, progress: bool = False,
               dataset: str = "mnist") -> MNIST:
    """Load ``dataset`` (MNIST, or Fashion-MNIST: :func:`mnist_cli.data.datasets.dataset_spec`) from
    ``data_dir`` (see :func:`resolve_data_dir`), fetching missing files first."""
    spec = datasets.dataset_spec(dataset)
    if mirrors:  # checked even when no file is fetched: a bad --mirror is refused as download refuses it
        from mnist_cli.data.mirrors import resolve_mirrors

        resolve_mirrors(mirrors, dataclasses.replace(spec, mirrors=()), environ={})
    root = resolve_data_dir(data_dir, spec.name)
    stamps = Stamps(root)
    sources = _stamped_sources(root, spec, stamps)
    for attempt in range(2):
        try:
            return _load(root, spec, stamps, sources, mirrors=mirrors, offline=offline, progress=progress,
                         dataset=dataset)
        except FormatError as exc:  # the user's own file, not the MNIST one: say how to get MNIST back
            raise exc.with_fix() from None
        except _Rotten as exc:  # trusted by its stamp, but its content changed (bit rot): verify and repair
            if attempt:
                raise ChecksumError(f"{exc.path} changed while it was being read; run the command again.") from None
            stamps.distrust(exc.path)
            stamps.save()
            stamps, sources = Stamps(root), None


class _Rotten(Exception):
    """A file its stamp vouched for decoded to other content than the pinned one."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def _load(root: Path, spec, stamps: Stamps, sources, *, mirrors, offline: bool, progress: bool,
          dataset: str = "mnist") -> MNIST:
    if sources is None:
        from mnist_cli.data.download import ensure_mnist  # only now: requests and tqdm cost start-up time

        report = ensure_mnist(root, mirrors=mirrors, offline=offline, progress=progress, spec=spec)
        stamps = Stamps(root)
        sources = {
            f.role: _Source(Path(r.path), r.content_sha256, r.verified) for f, r in zip(spec.files, report.files)
        }
    if not all(s.pinned for s in sources.values()):
        _check_headers(sources)  # before decoding: a lying header must not cost memory or a cache file
    arrays = {f.role: _load_array(root, f, sources, stamps) for f in spec.files}
    for split in ("train", "test"):
        _check_counts(sources, split, len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"]))
    stamps.save()
    for array in arrays.values():
        array.flags.writeable = False  # shared by every user of this object
    return MNIST(
        **arrays,
        data_dir=root,
        verified=all(s.pinned for s in sources.values()),
        checksums={f.name: sources[f.role].sha256 for f in spec.files},
        dataset=dataset,
        title=spec.title or "MNIST",  # a stand-in for MNIST (tests) is named as MNIST
    )


def _stamped_sources(root: Path, spec, stamps: Stamps) -> dict[str, _Source] | None:
    """Every file's source if all are present and unchanged since verified, else None."""
    sources = {}
    for f in spec.files:
        path = find_file(root, f)
        entry = stamps.fresh(path) if path is not None else None
        if entry is None or (entry.get("pinned") and entry.get("sha256") != f.sha256):
            return None
        sources[f.role] = _Source(path, entry.get("sha256"), bool(entry.get("pinned")))
    return sources


def _check_counts(sources: dict[str, _Source], split: str, n_images: int, n_labels: int) -> None:
    if n_images != n_labels:
        raise FormatError(
            f"{sources[f'{split}_labels'].path}: {n_labels} labels but "
            f"{sources[f'{split}_images'].path.name} holds {n_images} images; the two files must match."
        )


def _check_headers(sources: dict[str, _Source]) -> None:
    """Each file's IDX header against MNIST's layout, the counts against each other, and the declared
    size against what the file can hold, reading only the headers."""
    dims = {}
    for role, src in sources.items():
        dtype, dims[role], _ = read_header(src.path)
        _check_layout(dtype.newbyteorder("="), dims[role], role, src.path)
    for split in ("train", "test"):
        _check_counts(sources, split, dims[f"{split}_images"][0], dims[f"{split}_labels"][0])


def _load_array(root: Path, f: FileSpec, sources: dict[str, _Source], stamps: Stamps) -> np.ndarray:
    """One file's array: from the .npy cache if it passes its check, else decoded (and validated, and cached)."""
    src = sources[f.role]
    if src.sha256 is not None:
        path = cache_path(root, f, src.sha256)
        if path.is_file():
            problem = cache_problem(stamps, path, src.sha256)
            cached = _read_cache(path, f.role) if problem is None else None
            if cached is not None:
                problem = _crc_problem(stamps, path, cached)
                if problem is None:
                    return cached
            notices.warning(f"cache {path} failed its check ({problem or 'not an array of the right shape'}): "
                            f"rebuilding it from {src.path.name}.")
    hasher = hashlib.sha256()  # a cache must hold the verified content, not what a stamp vouched for
    try:
        raw = read_idx(src.path, max_bytes=f.size if src.pinned else MAX_IDX_BYTES, hasher=hasher)
    except FormatError:
        if not src.pinned:
            raise
        raise _Rotten(src.path) from None  # it was verified once: damaged since, not the user's own data
    if src.pinned and hasher.hexdigest() != f.sha256:
        raise _Rotten(src.path)
    array = _validate(raw, f.role, src.path)
    if not src.pinned:
        src = sources[f.role] = _Source(src.path, hasher.hexdigest(), False)
        stamps.record(src.path, pinned=False, sha256=src.sha256)
    _write_cache(stamps, cache_path(root, f, src.sha256), array, src.sha256)
    return array


def _check_layout(dtype: np.dtype, shape: tuple[int, ...], role: str, path: Path) -> None:
    kind = "images" if role.endswith("images") else "labels"
    want = "an IDX ubyte array of shape (n, 28, 28)" if kind == "images" else "an IDX ubyte array of shape (n,)"
    shape_ok = len(shape) == 3 and shape[1:] == IMAGE_SHAPE if kind == "images" else len(shape) == 1
    if dtype != np.uint8 or not shape_ok or shape[0] == 0:
        raise FormatError(
            f"{path}: {kind} must be {want} with n >= 1, got {dtype} of shape {shape}; "
            "supply MNIST-format files or choose another {data_dir}."
        )


def _validate(raw: np.ndarray, role: str, path: Path) -> np.ndarray:
    """Check one decoded IDX array against MNIST's layout; images come back as (n, 784)."""
    kind = "images" if role.endswith("images") else "labels"
    _check_layout(raw.dtype, raw.shape, role, path)
    if kind == "labels" and raw.max() >= N_CLASSES:
        bad = int(np.argmax(raw >= N_CLASSES))
        raise FormatError(f"{path}: label {raw[bad]} at index {bad} is outside 0-9; labels must be the digits 0-9.")
    return raw.reshape(len(raw), -1) if kind == "images" else raw


def content_crc(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes, stamped beside a cache file's SHA-256 and checked at every load, where
    the stat facts alone would vouch for it (zlib's: 20-30 ms for all 55 MB of MNIST on a 2-core EPYC;
    scripts/bench_cache_crc.py)."""
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def _crc_problem(stamps: Stamps, path: Path, array: np.ndarray) -> str | None:
    """Why the cached ``array`` read from ``path`` is not what was stamped, or None. A file edited in place
    with its size, mtime and inode kept passes the stat facts, not this. A stamp from before CRCs were
    kept is checked once by SHA-256 and then given its CRC."""
    entry = stamps.get(stamps.key(path)) or {}
    if "crc32" not in entry:
        problem = cache_problem(stamps, path, rehash=True)
        if problem is None:
            stamps.record(path, **{k: v for k, v in entry.items() if k not in ("size", "mtime_ns", "ino")},
                          crc32=content_crc(array))
        return problem
    if entry["crc32"] != content_crc(array):
        return "its content changed behind an unchanged size, mtime and inode (CRC-32)"
    return None


def _read_cache(path: Path, role: str) -> np.ndarray | None:
    """The cached array, memory-mapped read-only: a fresh process maps the page cache instead of faulting in
    and copying 55 MB (8-150 ms measured on a 2-core EPYC VM, against about 1 ms mapped); the CRC check
    then reads it once. The cache is only ever replaced by a rename, never rewritten in place, so a mapped
    file's content stays what was checked."""
    try:
        array = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
    except (OSError, ValueError, EOFError):
        return None
    ok_shape = array.ndim == 2 and array.shape[1] == IMAGE_SHAPE[0] * IMAGE_SHAPE[1] if "images" in role else array.ndim == 1
    return array if array.dtype == np.uint8 and ok_shape and array.flags.c_contiguous else None


class _HashingWriter:
    """A write-only file object that hashes what passes through it (np.save writes in pieces)."""

    def __init__(self, file):
        self.file, self.hash = file, hashlib.sha256()

    def write(self, data) -> int:
        self.hash.update(data)
        return self.file.write(data)


def _write_cache(stamps: Stamps, path: Path, array: np.ndarray, source_sha256: str) -> None:
    """Save ``array`` for the next load, stamped with its own SHA-256 and its source's; a cache that
    cannot be written only costs speed (and a read-only data directory is left as it is)."""
    if read_only(stamps.root):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with DataDirPart(path.parent, path.name) as part:
            writer = _HashingWriter(part.file)
            np.save(writer, array, allow_pickle=False)
            part.commit(path)
        stamps.record(path, sha256=writer.hash.hexdigest(), source_sha256=source_sha256, crc32=content_crc(array))
        for old in path.parent.glob(f"{path.name.split('.')[0]}.*.npy"):
            if old != path:
                old.unlink(missing_ok=True)
                stamps.forget(stamps.key(old))
    except (OSError, DataDirError):
        pass

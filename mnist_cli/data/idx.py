"""IDX files (the format of MNIST), plain or gzip-compressed, read strictly and with bounded memory.

    >>> import numpy as np
    >>> from mnist_cli.data.idx import encode_idx, parse_idx
    >>> parse_idx(encode_idx(np.arange(6, dtype=np.uint8).reshape(2, 3))).shape
    (2, 3)

An IDX file is a 4-byte magic number (two zero bytes, a data type code, the number of dimensions),
one big-endian uint32 per dimension, then exactly prod(dims) big-endian items. Anything else —
an unknown type code, a short header, missing or trailing payload bytes — is a :class:`FormatError`
naming the file. Gzip input is decompressed in bounded pieces: a file is never allowed to grow
past the size its header (or the caller) allows, so a gzip bomb cannot fill memory.
"""

from __future__ import annotations

import os
import struct
import zlib
from math import prod
from pathlib import Path

import numpy as np

from mnist_cli.errors import FormatError

GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_BYTES = 2**31  # default cap on a file's decompressed size (EMNIST's largest file is 0.55 GB)
_READ_CHUNK = 1 << 20  # bytes read from disk at a time
_OUT_CHUNK = 1 << 20  # most bytes one decompression step may produce
#: Deflate cannot expand a byte into more than ~1032 (258-byte matches in 2-bit codes); gzip headers and
#: extra members only lower the ratio. A header declaring more than this for its file is a lie.
MAX_GZIP_RATIO = 1032

# IDX data type code -> dtype (big-endian on disk).
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}


class Decoder:
    """Turns a file's bytes (gzip or plain, told apart by the gzip magic) into its content, in pieces.

    Feed the file's bytes in any chunking with :meth:`feed`; each decoded piece (at most 1 MiB) goes to
    ``sink``. More than ``limit`` content bytes, corrupt gzip data, bytes after the gzip stream other
    than zero padding or another gzip member, and a gzip stream that ends early are :class:`FormatError`.
    Call :meth:`close` at the end of the file.
    """

    def __init__(self, sink, *, limit: int, name: str):
        self.sink, self.limit, self.name = sink, limit, name
        self.compressed: bool | None = None  # None until two bytes have been seen
        self.size = 0  # content bytes produced so far
        self._pending = b""  # bytes held back until a gzip magic can be checked
        self._z = None  # decompressor of the current gzip member, None between members
        self._members = 0

    def feed(self, data: bytes) -> None:
        if self.compressed is None:
            data, self._pending = self._pending + data, b""
            if len(data) < 2:
                self._pending = data
                return
            self.compressed = data[:2] == GZIP_MAGIC
        if not self.compressed:
            self._emit(data)
            return
        while data:
            if self._z is None and not (data := self._start_member(data)):
                return
            data = self._inflate(data)

    def close(self) -> None:
        """Check the file ended cleanly (a complete gzip stream, or any plain content)."""
        if self.compressed is None:  # 0 or 1 bytes: plain content
            self._emit(self._pending)
        elif self._z is not None:
            raise FormatError(f"{self.name}: the gzip stream ends early (truncated file).")
        elif self._pending:
            raise FormatError(f"{self.name}: unexpected bytes after the end of the gzip stream.")

    def _start_member(self, data: bytes) -> bytes:
        if self._members and not self._pending:
            data = data.lstrip(b"\0")  # zero padding may follow a member, as gzip(1) allows
        data, self._pending = self._pending + data, b""
        if len(data) < 2:
            self._pending = data
            return b""
        if data[:2] != GZIP_MAGIC:
            raise FormatError(f"{self.name}: unexpected bytes after the end of the gzip stream.")
        self._z = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        return data

    def _inflate(self, data: bytes) -> bytes:
        z = self._z
        try:
            out = z.decompress(data, _OUT_CHUNK)
            self._emit(out)
            # Drain what the output cap held back: the unconsumed input, or output still buffered.
            while not z.eof and (z.unconsumed_tail or len(out) == _OUT_CHUNK):
                out = z.decompress(z.unconsumed_tail, _OUT_CHUNK)
                self._emit(out)
        except zlib.error as exc:
            raise FormatError(f"{self.name}: corrupt gzip data ({exc}).") from None
        if not z.eof:
            return b""
        self._z, self._members = None, self._members + 1
        return z.unused_data

    def _emit(self, out: bytes) -> None:
        if not out:
            return
        self.size += len(out)
        if self.size > self.limit:
            raise FormatError(
                f"{self.name}: content exceeds {self.limit} bytes (a gzip bomb or the wrong file); "
                "replace the file."
            )
        self.sink(out)


def decode_file(path: Path, sink, *, limit: int, name: str | None = None) -> Decoder:
    """Stream the content of ``path`` (gzip or plain) into ``sink``; return the finished decoder."""
    decoder = Decoder(sink, limit=limit, name=name or str(path))
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            decoder.feed(chunk)
    decoder.close()
    return decoder


def parse_header(buf, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate an IDX header at the start of ``buf``: return (dtype, dims, header length)."""
    if len(buf) < 4:
        raise FormatError(f"{name}: {len(buf)} bytes is too short for an IDX header (4 bytes at least).")
    if buf[0] != 0 or buf[1] != 0:
        raise FormatError(
            f"{name}: not an IDX file (magic number 0x{bytes(buf[:4]).hex()} does not start with two zero bytes)."
        )
    code, ndim = buf[2], buf[3]
    if code not in IDX_TYPES:
        raise FormatError(f"{name}: unknown IDX data type code 0x{code:02x} (known: 08, 09, 0b, 0c, 0d, 0e).")
    if ndim == 0:
        raise FormatError(f"{name}: the IDX header declares 0 dimensions.")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise FormatError(f"{name}: truncated IDX header ({ndim} dimensions need {header} bytes, got {len(buf)}).")
    dims = struct.unpack(f">{ndim}I", bytes(buf[4:header]))
    return IDX_TYPES[code], dims, header


class _HeaderComplete(Exception):
    """Raised by :func:`read_header`'s sink to stop decoding once the header has arrived."""


def read_header(path, name: str | None = None) -> tuple[np.dtype, tuple[int, ...], int]:
    """The (dtype, dims, header length) of an IDX file, decoding only its first bytes.

    Also checks that the file can hold what the header declares, before anyone allocates it: a plain
    file must be exactly that long, a gzip file at most :data:`MAX_GZIP_RATIO` times shorter.
    """
    name = name or str(path)
    head = bytearray()

    def sink(piece: bytes) -> None:
        head.extend(piece)
        if len(head) >= 4 and len(head) >= 4 + 4 * head[3]:
            raise _HeaderComplete

    decoder = Decoder(sink, limit=MAX_IDX_BYTES, name=name)
    size = os.stat(path).st_size
    try:
        with open(path, "rb") as f:
            while chunk := f.read(64 * 1024):
                decoder.feed(chunk)
        decoder.close()
    except _HeaderComplete:
        pass
    dtype, dims, header = parse_header(head, name)
    payload = prod(dims) * dtype.itemsize
    if decoder.compressed:
        if header + payload > size * MAX_GZIP_RATIO:
            raise FormatError(
                f"{name}: the IDX header declares shape {dims} ({header + payload} bytes), more than a {size}-byte "
                "gzip file can hold; the file is damaged or not an IDX file."
            )
    elif size - header < payload:
        raise FormatError(
            f"{name}: truncated: the header declares shape {dims} ({payload} data bytes) but {size - header} follow."
        )
    elif size - header > payload:
        raise FormatError(f"{name}: {size - header - payload} trailing bytes after the data of shape {dims}.")
    return dtype, dims, header


def check_idx(path, name: str | None = None) -> tuple[np.dtype, tuple[int, ...]]:
    """:class:`FormatError` unless ``path`` (gzip or plain) is a complete IDX file: a valid header and
    exactly the data it declares, streamed in bounded memory (nothing is kept). Returns (dtype, dims)."""
    name = name or str(path)
    dtype, dims, header = read_header(path, name)
    expected = header + prod(dims) * dtype.itemsize
    seen = [0]

    def count(piece: bytes) -> None:
        seen[0] += len(piece)
        if seen[0] > expected:
            raise FormatError(f"{name}: {seen[0] - expected} or more trailing bytes after the IDX data.")

    size = decode_file(Path(path), count, limit=MAX_IDX_BYTES, name=name).size
    if size < expected:
        raise FormatError(f"{name}: truncated: the header declares shape {dims} ({expected - header} data bytes) "
                          f"but {size - header} follow.")
    return dtype, dims


def parse_idx(buf, name: str = "<bytes>") -> np.ndarray:
    """Decode a complete IDX content ``buf`` into an array of native byte order.

    For one-byte types the result is a view of ``buf`` (writable if ``buf`` is a bytearray).
    """
    dtype, dims, header = parse_header(buf, name)
    expected = prod(dims) * dtype.itemsize
    actual = len(buf) - header
    if actual < expected:
        raise FormatError(
            f"{name}: truncated: the header declares shape {dims} ({expected} data bytes) but {actual} follow."
        )
    if actual > expected:
        raise FormatError(f"{name}: {actual - expected} trailing bytes after the data of shape {dims}.")
    array = np.frombuffer(buf, dtype=dtype, count=prod(dims), offset=header).reshape(dims)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def read_idx(path, *, max_bytes: int = MAX_IDX_BYTES, hasher=None, name: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip or plain) strictly; ``hasher.update`` also receives its decoded content.

    Memory stays within the size the header declares (plus one decode step), and no file may
    declare more than ``max_bytes``.
    """
    name = name or str(path)
    content = bytearray()
    limit = [max_bytes]  # tightened to the exact declared size once the header is known

    def sink(piece: bytes) -> None:
        if hasher is not None:
            hasher.update(piece)
        content.extend(piece)
        if limit[0] == max_bytes and len(content) >= 4 and len(content) >= 4 + 4 * content[3]:
            dtype, dims, header = parse_header(content, name)
            limit[0] = header + prod(dims) * dtype.itemsize
            if limit[0] > max_bytes:
                raise FormatError(f"{name}: the IDX header declares shape {dims}, more than {max_bytes} bytes.")
        if len(content) > limit[0]:
            raise FormatError(f"{name}: {len(content) - limit[0]} or more trailing bytes after the IDX data.")

    decode_file(Path(path), sink, limit=max_bytes, name=name)
    return parse_idx(content, name)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (any of the IDX dtypes, at least one dimension)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES or array.ndim == 0 or array.ndim > 255:
        raise FormatError(f"cannot write a {array.dtype} array of {array.ndim} dimensions as IDX.")
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, _CODES[native], array.ndim, *array.shape)
    return header + array.astype(IDX_TYPES[_CODES[native]], copy=False).tobytes()


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    data = encode_idx(array)
    if str(path).endswith(".gz"):
        import gzip  # only writing compresses (reading inflates with zlib)

        data = gzip.compress(data, mtime=0)
    Path(path).write_bytes(data)

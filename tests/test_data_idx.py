"""The IDX reader/writer and the bounded gzip decoder: round trips, every malformation, fuzzing."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnist_cli.data.idx import GZIP_MAGIC, IDX_TYPES, Decoder, encode_idx, parse_idx, read_idx, write_idx
from mnist_cli.errors import FormatError

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def header(code: int, *dims: int) -> bytes:
    return struct.pack(f">BBBB{len(dims)}I", 0, 0, code, len(dims), *dims)


def decode(data: bytes, limit: int = 10**9, pieces: int = 1) -> bytes:
    out = bytearray()
    decoder = Decoder(out.extend, limit=limit, name="f.gz")
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        decoder.feed(data[i : i + step])
    decoder.close()
    return bytes(out)


@pytest.mark.parametrize("dtype", IDX_DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_round_trip(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_header_layout_matches_the_mnist_format():
    data = encode_idx(np.zeros((3, 28, 28), np.uint8))
    assert data[:16] == bytes.fromhex("00000803 00000003 0000001c 0000001c".replace(" ", ""))
    assert encode_idx(np.array([1, 2], np.int32))[4:] == bytes.fromhex("00000002 00000001 00000002".replace(" ", ""))


def test_big_endian_payload_is_decoded_to_native():
    data = header(0x0B, 2) + struct.pack(">hh", -2, 300)
    np.testing.assert_array_equal(parse_idx(data), [-2, 300])


def test_uint8_result_is_a_writable_view_of_a_bytearray():
    array = parse_idx(bytearray(encode_idx(np.arange(4, dtype=np.uint8))))
    assert array.flags.writeable and array.flags.c_contiguous


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short for an IDX header"),
        (b"\x00\x00\x08", "too short for an IDX header"),
        (b"\x1f\x8b\x08\x01" + bytes(8), "not an IDX file (magic number 0x1f8b0801"),
        (b"\x00\x01\x08\x01" + bytes(8), "not an IDX file"),
        (header(0x0A, 1) + b"x", "unknown IDX data type code 0x0a"),
        (b"\x00\x00\x08\x00", "declares 0 dimensions"),
        (b"\x00\x00\x08\x03" + bytes(8), "truncated IDX header (3 dimensions need 16 bytes, got 12)"),
        (header(0x08, 2, 3) + bytes(5), "truncated: the header declares shape (2, 3) (6 data bytes) but 5 follow"),
        (header(0x08, 2, 3) + bytes(7), "1 trailing bytes after the data of shape (2, 3)"),
        (header(0x0C, 2) + bytes(7), "truncated"),
    ],
)
def test_malformed_idx_is_a_format_error_naming_the_file(data, message):
    with pytest.raises(FormatError, match="^images.idx: ") as info:
        parse_idx(data, "images.idx")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: b"\x00\x00\x09" + d[3:], None),  # int8 instead of uint8: still valid IDX
        (lambda d: d[:4] + struct.pack(">I", 0xFFFFFFFF) + d[8:], "more than"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rejects_mangled_files(tmp_path, mangle, message, compress):
    data = mangle(encode_idx(np.ones((4, 5, 5), np.uint8)))
    path = tmp_path / ("x.gz" if compress else "x")
    path.write_bytes(gzip.compress(data) if compress else data)
    if message is None:
        assert read_idx(path).dtype == np.int8
        return
    with pytest.raises(FormatError, match=str(path)) as info:
        read_idx(path, max_bytes=10**6)
    assert message in str(info.value)


def test_read_idx_stops_at_the_declared_size_of_a_gzip_bomb(tmp_path):
    # 64 MB of zeros after a header declaring 10 bytes: must fail after the first decode step,
    # never holding more than the declared size plus one step.
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(header(0x08, 10) + bytes(64 * 2**20), compresslevel=1))
    with pytest.raises(FormatError, match="trailing bytes after the IDX data"):
        read_idx(path)


def test_read_idx_refuses_a_header_declaring_more_than_the_cap(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(header(0x08, 1000, 1000))
    with pytest.raises(FormatError, match=r"declares shape \(1000, 1000\), more than 1000 bytes"):
        read_idx(path, max_bytes=1000)


def test_read_idx_feeds_the_hasher_with_the_decompressed_content(tmp_path):
    import hashlib

    data = encode_idx(np.arange(100, dtype=np.uint8))
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(data))
    hasher = hashlib.sha256()
    read_idx(path, hasher=hasher)
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


# The gzip layer -------------------------------------------------------------------------------


def test_decoder_passes_plain_bytes_through():
    assert decode(b"plain content", pieces=5) == b"plain content"
    assert decode(b"x") == b"x" and decode(b"") == b""


def test_decoder_accepts_several_members_and_zero_padding_like_gzip():
    data = gzip.compress(b"abc") + gzip.compress(b"def") + bytes(10)
    assert decode(data, pieces=7) == gzip.decompress(data) == b"abcdef"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # mtime=0: the bytes, and so the test ids, are the same in every process (pytest-xdist's workers compare them)
        (gzip.compress(b"x" * 1000, mtime=0)[:-3], "ends early (truncated file)"),
        (gzip.compress(b"abc", mtime=0) + b"junk", "unexpected bytes after the end of the gzip stream"),
        (gzip.compress(b"abc", mtime=0) + b"\x00\x00j", "unexpected bytes after the end of the gzip stream"),
        (b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff\xff\xff\xff", "corrupt gzip data"),
        (b"\x1f\x8b", "ends early"),
    ],
)
def test_decoder_rejects_broken_gzip(data, message):
    with pytest.raises(FormatError, match="^f.gz: ") as info:
        decode(data)
    assert message in str(info.value)


def test_decoder_limit_stops_a_bomb_within_one_step():
    seen = []
    decoder = Decoder(lambda piece: seen.append(len(piece)), limit=5000, name="bomb.gz")
    with pytest.raises(FormatError, match="content exceeds 5000 bytes"):
        decoder.feed(gzip.compress(bytes(20 * 2**20), compresslevel=1))
    assert sum(seen) <= 5000  # the sink never received more than the limit


# Property-based ---------------------------------------------------------------------------------

arrays = st.sampled_from(IDX_DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
)


@given(arrays)
def test_any_array_round_trips(array):
    back = parse_idx(encode_idx(array))
    assert back.shape == array.shape
    np.testing.assert_array_equal(back.view(np.uint8), array.astype(back.dtype).view(np.uint8))


@given(st.binary(max_size=200))
def test_random_bytes_parse_or_raise_format_error(data):
    try:
        array = parse_idx(data)
    except FormatError:
        return
    assert data[:2] == b"\0\0" and data[2] in IDX_TYPES  # only a well-formed file gets through
    assert len(encode_idx(array)) == len(data)


@given(arrays, st.data())
def test_any_cut_or_extension_of_a_valid_file_is_refused(array, data):
    valid = encode_idx(array)
    cut = data.draw(st.integers(0, len(valid) - 1))
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(FormatError):
        parse_idx(valid[:cut])
    with pytest.raises(FormatError):
        parse_idx(valid + extra)


@settings(max_examples=50)
@given(st.binary(max_size=300), st.integers(1, 50), st.booleans())
def test_decoder_output_does_not_depend_on_chunking(content, pieces, compress):
    assume(compress or not content.startswith(GZIP_MAGIC))  # plain bytes that look like gzip are gzip
    data = gzip.compress(content) if compress else content
    assert decode(data, pieces=pieces) == decode(data) == content


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=300), st.integers(0, 299), st.integers(0, 255))
def test_corrupted_gzip_never_escapes_as_another_error(content, position, byte):
    data = bytearray(gzip.compress(content))
    data[position % len(data)] = byte
    try:
        decode(bytes(data), limit=10**6)
    except FormatError:
        pass

"""IDX through files, against the format's own table (issue 23's mutants): each type code's bytes written by
hand as LeCun's page defines them, decoded from plain and gzip files; what encode_idx writes checked byte
by byte (not only by a round trip); a header of 0 dimensions from a file is a one-line FormatError."""

import gzip
import struct

import numpy as np
import pytest

from mnist_cli.data.idx import check_idx, encode_idx, read_header, read_idx, write_idx
from mnist_cli.errors import FormatError

# The IDX page: 0x08 unsigned byte, 0x09 signed byte, 0x0B short (2 bytes), 0x0C int (4), 0x0D float (4),
# 0x0E double (8); the data big-endian (MSB first), the dimensions as 4-byte big-endian integers.
SPEC = [(0x08, "B", np.uint8), (0x09, "b", np.int8), (0x0B, "h", np.int16), (0x0C, "i", np.int32),
        (0x0D, "f", np.float32), (0x0E, "d", np.float64)]
VALUES = [1, 2, 3, 4, 5, 6]  # shape (2, 3)


def _by_hand(code: int, fmt: str) -> bytes:
    return bytes([0, 0, code, 2]) + struct.pack(">II", 2, 3) + struct.pack(f">6{fmt}", *VALUES)


@pytest.mark.parametrize("code, fmt, dtype", SPEC)
@pytest.mark.parametrize("gz", [False, True])
def test_each_type_code_decodes_from_a_file_written_by_hand(tmp_path, code, fmt, dtype, gz):
    data = _by_hand(code, fmt)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    a = read_idx(path)
    assert a.dtype == np.dtype(dtype) and a.shape == (2, 3)
    np.testing.assert_array_equal(a, np.array(VALUES, dtype).reshape(2, 3))
    assert check_idx(path)[1] == (2, 3)
    assert read_header(path)[1:] == ((2, 3), 12)


@pytest.mark.parametrize("code, fmt, dtype", SPEC)
def test_encode_idx_writes_the_formats_bytes(tmp_path, code, fmt, dtype):
    array = np.array(VALUES, dtype).reshape(2, 3)
    assert encode_idx(array) == _by_hand(code, fmt)
    assert encode_idx(array.astype(np.dtype(dtype).newbyteorder(">"))) == _by_hand(code, fmt)
    write_idx(tmp_path / "x.idx.gz", array)
    assert gzip.decompress((tmp_path / "x.idx.gz").read_bytes()) == _by_hand(code, fmt)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("reader", [read_idx, check_idx, read_header])
def test_a_file_declaring_zero_dimensions_is_a_format_error(tmp_path, reader, gz):
    data = bytes([0, 0, 0x08, 0]) + b"\x01\x02\x03\x04"
    path = tmp_path / ("zero.gz" if gz else "zero")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(FormatError) as info:
        reader(path)
    assert str(info.value) == f"{path}: the IDX header declares 0 dimensions."


@pytest.mark.parametrize("data, problem", [
    (bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 0]), "unknown IDX data type code 0x0a (known: 08, 09, 0b, 0c, 0d, 0e)."),
    *[(b"\0" * size, f"{size} bytes is too short for an IDX header (4 bytes at least).") for size in range(4)],
])
@pytest.mark.parametrize("reader", [read_idx, check_idx, read_header])
def test_a_file_with_a_bad_header_is_a_format_error(tmp_path, reader, data, problem):
    path = tmp_path / "x"
    path.write_bytes(data)
    with pytest.raises(FormatError) as info:
        reader(path)
    assert str(info.value) == f"{path}: {problem}"


def _header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("reader", [read_idx, check_idx, read_header])
def test_a_plain_file_truncated_or_with_trailing_bytes(tmp_path, reader):
    path = tmp_path / "x"
    path.write_bytes(_header(0x08, 2, 3) + b"\1" * 5)
    with pytest.raises(FormatError, match=r"truncated: the header declares shape \(2, 3\) \(6 data bytes\) but 5 follow"):
        reader(path)
    path.write_bytes(_header(0x08, 2, 3) + b"\1" * 9)
    with pytest.raises(FormatError, match=r"^" + str(path) + r": 3 (or more )?trailing bytes after the"):
        reader(path)


def test_check_idx_counts_the_trailing_bytes_of_a_gzip_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_header(0x08, 2, 3) + b"\1" * 9))
    with pytest.raises(FormatError) as info:
        check_idx(path)
    assert str(info.value) == f"{path}: 3 or more trailing bytes after the IDX data."


def test_a_gzip_file_declaring_more_than_it_can_hold_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(_header(0x08, 1000, 1000, 1000) + b"\0" * 100))
    size = path.stat().st_size
    with pytest.raises(FormatError) as info:
        read_header(path)
    assert str(info.value) == (f"{path}: the IDX header declares shape (1000, 1000, 1000) ({16 + 10**9} bytes), more "
                               f"than a {size}-byte gzip file can hold; the file is damaged or not an IDX file.")


def test_the_default_cap_is_two_gib_of_content(tmp_path):
    # header and data of 2**31 bytes pass the cap (the file is then merely truncated); one byte more does not
    path = tmp_path / "x"
    path.write_bytes(_header(0x08, 2**31 - 8) + b"\0" * 8)
    with pytest.raises(FormatError, match="truncated"):
        read_idx(path)
    path.write_bytes(_header(0x08, 2**31 - 7) + b"\0" * 8)
    with pytest.raises(FormatError) as info:
        read_idx(path)
    assert str(info.value) == f"{path}: the IDX header declares shape ({2**31 - 7},), more than {2**31} bytes."

"""Pictures and arrays that declare a huge size are refused from their header, in one line (issue 21, 13)."""

import struct
import warnings
import zlib

import numpy as np
import pytest


def _png_header(path, width: int, height: int) -> None:
    """A PNG that declares ``width`` x ``height`` grey pixels and holds almost none: decoding it would cost
    width * height bytes, reading its header costs nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def model(cli, tmp_path):
    path = tmp_path / "m.npz"
    assert cli("train", "--steps", "5", "--train-limit", "500", "--save", path).exit_code == 0
    return path


@pytest.mark.parametrize("side", [30000, 12000])
def test_a_huge_picture_is_refused_before_it_is_decoded(cli, model, tmp_path, side):
    pytest.importorskip("PIL")
    picture = tmp_path / "big.png"
    _png_header(picture, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's raw DecompressionBombWarning must not reach the user
        result = cli("predict", model, "--images", picture, data_dir=None)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    message = result.output.strip()
    assert message.startswith(f"Error: {picture}:") and "\n" not in message
    assert "Warning" not in result.output and "DecompressionBomb" not in result.output


def test_a_npy_declaring_a_huge_shape_is_refused_before_numpy_allocates_it(cli, model, tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:  # the header of a (100000000, 28, 28) float64 array, and 10 bytes of body
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (100_000_000, 28, 28)})
        fh.write(b"\0" * 10)
    result = cli("predict", model, "--images", path, data_dir=None)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "declares shape (100000000, 28, 28)" in result.output and "evaluate" in result.output
    short = tmp_path / "short.npy"
    with open(short, "wb") as fh:  # a legal count, more bytes declared than the file holds
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": (90_000, 28, 28)})
    result = cli("predict", model, "--images", short, data_dir=None)
    assert result.exit_code == 1 and "the file holds 0" in result.output, result.output

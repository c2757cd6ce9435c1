"""A decoded cache edited in place with its size, mtime and inode kept is caught by its CRC-32 at load
(issue 21, item 15); a stamp from before CRCs were kept is checked once and then given one."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from test_data_trust import cache_file, change_in_place, fill

from mnist_cli.data import load_mnist
from mnist_cli.data.directory import STATE_DIR

pytestmark = pytest.mark.usefixtures("download_env")


def test_a_cache_edited_in_place_behind_its_stamp_is_rebuilt(tmp_path, shared_mnist_dir, caplog):
    data_dir = fill(tmp_path / "data", shared_mnist_dir)
    good = load_mnist(data_dir, offline=True).test_labels.copy()
    cached = cache_file(data_dir, "t10k-labels")
    before = cached.stat()
    change_in_place(cached, cached.stat().st_size - 100, bytes((good[-100] + 1) % 10 for _ in range(1)))
    after = cached.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    with caplog.at_level(logging.WARNING, logger="mnist_cli"):
        data = load_mnist(data_dir, offline=True)
    assert [r.getMessage() for r in caplog.records] == [
        f"cache {cached} failed its check (its content changed behind an unchanged size, mtime and inode "
        "(CRC-32)): rebuilding it from t10k-labels-idx1-ubyte."]
    np.testing.assert_array_equal(data.test_labels, good)
    caplog.clear()
    load_mnist(data_dir, offline=True)
    assert caplog.records == []


def test_a_stamp_without_a_crc_is_checked_once_and_given_one(tmp_path, shared_mnist_dir, caplog):
    data_dir = fill(tmp_path / "data", shared_mnist_dir)
    stamps = data_dir / STATE_DIR / "stamps.json"
    doc = json.loads(stamps.read_text())
    for entry in doc["files"].values() if "files" in doc else doc.values():
        if isinstance(entry, dict):
            entry.pop("crc32", None)
    stamps.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="mnist_cli"):
        assert load_mnist(data_dir, offline=True).verified
    assert caplog.records == []
    assert '"crc32"' in stamps.read_text()

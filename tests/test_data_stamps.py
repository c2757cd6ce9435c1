"""The data directory's stamps and caches through the files themselves (issue 23's mutants): a cache whose
bytes changed is refused and removed, a stamps.json of the wrong shape (valid JSON) is dropped without a
crash, entries of the wrong types are dropped one by one, and a forgotten stamp leaves the file on disk."""

import json
import os

import pytest

from mnist_cli.data.directory import CACHE_DIR, STATE_DIR, Stamps, cache_problem, check_caches, hash_file

GOOD = {"size": 3, "mtime_ns": 1, "ino": 2, "sha256": "0" * 64}


def _stamps_file(root):
    return root / STATE_DIR / "stamps.json"


def _write_stamps(root, doc):
    _stamps_file(root).parent.mkdir(parents=True, exist_ok=True)
    _stamps_file(root).write_text(json.dumps(doc))


def _cache(root, name="train-images.0123456789abcdef.npy", data=b"\x93NUMPY cache bytes"):
    path = root / STATE_DIR / CACHE_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _stamped_cache(root, **kw):
    path = _cache(root, **kw)
    stamps = Stamps(root)
    stamps.record(path, sha256=hash_file(path), source_sha256="a" * 64)
    assert stamps.save()
    return path


@pytest.mark.parametrize("doc", [
    [], "stamps", 3, None,
    {"version": 1}, {"files": {"x": GOOD}}, {"version": 2, "files": {"x": GOOD}},
    {"version": 1, "files": []}, {"version": 1, "files": 3}, {"version": 1, "files": "x"},
])
def test_a_stamps_file_of_the_wrong_shape_is_dropped(tmp_path, doc):
    _write_stamps(tmp_path, doc)
    stamps = Stamps(tmp_path)
    assert stamps.entries == {}
    path = _cache(tmp_path)
    assert cache_problem(stamps, path) == "no record of it being written from a verified file"


def test_a_damaged_stamps_file_is_dropped(tmp_path):
    _stamps_file(tmp_path).parent.mkdir(parents=True)
    _stamps_file(tmp_path).write_text('{"version": 1, "files": {"x": ')
    assert Stamps(tmp_path).entries == {}


def test_entries_of_the_wrong_types_are_dropped_one_by_one(tmp_path):
    files = {"good": GOOD, "bare": {}, "pinned": {**GOOD, "pinned": True},
             "size-str": {**GOOD, "size": "3"}, "size-bool": {**GOOD, "size": True}, "ino-float": {**GOOD, "ino": 2.0},
             "sha-upper": {**GOOD, "sha256": "A" * 64}, "sha-short": {**GOOD, "sha256": "0" * 63},
             "sha-int": {**GOOD, "sha256": 0}, "source-bad": {**GOOD, "source_sha256": "z" * 64},
             "pinned-str": {**GOOD, "pinned": "yes"}, "list": [GOOD], "null": None}
    _write_stamps(tmp_path, {"version": 1, "files": files})
    assert sorted(Stamps(tmp_path).entries) == ["bare", "good", "pinned"]


def test_an_unchanged_cache_is_accepted_and_a_changed_one_refused(tmp_path):
    path = _stamped_cache(tmp_path)
    stamps = Stamps(tmp_path)
    assert cache_problem(stamps, path, "a" * 64) is None
    assert cache_problem(stamps, path, "a" * 64, rehash=True) is None
    assert cache_problem(stamps, path, "b" * 64) == "it was written from other content"
    st = os.stat(path)
    path.write_bytes(b"\x93NUMPY cache BYTES")  # same size, other bytes
    assert cache_problem(Stamps(tmp_path), path, "a" * 64) == "its content changed since it was written"
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its old mtime: hashed when asked to
    assert cache_problem(Stamps(tmp_path), path, rehash=True) == "its content changed since it was written"


def test_a_touched_cache_with_the_same_bytes_is_accepted_and_stamped_again(tmp_path):
    path = _stamped_cache(tmp_path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    stamps = Stamps(tmp_path)
    assert stamps.fresh(path) is None
    assert cache_problem(stamps, path, "a" * 64) is None
    assert stamps.fresh(path) is not None and stamps.fresh(path)["source_sha256"] == "a" * 64


def test_check_caches_removes_a_changed_cache_with_a_notice(tmp_path):
    kept = _stamped_cache(tmp_path, name="a.0000000000000000.npy")
    changed = _stamped_cache(tmp_path, name="b.0000000000000000.npy")
    st = os.stat(changed)
    changed.write_bytes(b"\x93NUMPY cache BYTES")  # same size, inode and (below) mtime: only a hash tells
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    stamps = Stamps(tmp_path)
    told = check_caches(tmp_path, stamps)
    assert told == [f"cache {changed.name} failed its check (its content changed since it was written): removed; "
                    "the next load rebuilds it."]
    assert kept.exists() and not changed.exists()
    assert stamps.save()
    assert sorted(Stamps(tmp_path).entries) == [f"{STATE_DIR}/{CACHE_DIR}/{kept.name}"]


def test_the_stamp_of_a_cache_that_is_gone_is_forgotten_on_disk(tmp_path):
    gone = _stamped_cache(tmp_path, name="gone.0000000000000000.npy")
    kept = _stamped_cache(tmp_path, name="kept.0000000000000000.npy")
    gone.unlink()
    stamps = Stamps(tmp_path)
    assert check_caches(tmp_path, stamps) == []
    assert stamps.save()
    on_disk = json.loads(_stamps_file(tmp_path).read_text())
    assert sorted(on_disk["files"]) == [f"{STATE_DIR}/{CACHE_DIR}/{kept.name}"]


def test_clear_removes_every_cache_and_its_stamp(tmp_path):
    a = _stamped_cache(tmp_path, name="a.0000000000000000.npy")
    stamps = Stamps(tmp_path)
    assert check_caches(tmp_path, stamps, clear=True) == []
    assert not a.exists()
    assert stamps.save() and Stamps(tmp_path).entries == {}


def test_forget_and_distrust_reach_the_file_on_disk(tmp_path):
    data = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data.write_bytes(b"labels")
    stamps = Stamps(tmp_path)
    stamps.record(data, sha256="1" * 64, pinned=True)
    assert stamps.save()
    again = Stamps(tmp_path)
    assert again.fresh(data)["pinned"] is True
    again.distrust(data)
    assert again.save()
    third = Stamps(tmp_path)
    assert third.get(data.name) == {"sha256": "1" * 64, "pinned": True} and third.fresh(data) is None
    third.forget(data.name)
    assert third.save()
    assert json.loads(_stamps_file(tmp_path).read_text()) == {"version": 1, "files": {}}


def test_save_merges_with_what_another_process_wrote(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    first, second = Stamps(tmp_path), Stamps(tmp_path)
    first.record(a, sha256="a" * 64)
    second.record(b, sha256="b" * 64)
    assert first.save() and second.save()
    assert sorted(Stamps(tmp_path).entries) == ["a", "b"]

"""compare across worker processes: the same numbers for any number of workers, and no worker outlives it."""

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_cli.compare import CompareConfig, run_compare, train_group
from mnist_cli.compare_workers import SharedArrays, WorkerError, group_cost, run_groups, train_groups, worker_count

#: healthy (tutorial, f64), broken (raw pixels, lr 5 raw), chaotic (lr 5) cells, a half-precision one, two seeds
CONFIG = dict(scenarios=("tutorial", "raw-pixels", "lr-5", "f64", "f16"), seeds=(0, 1), steps=60, train_limit=1500)


def _numbers(result) -> str:
    """Everything a run computed, bit for bit (times left out), as text: NaN compares equal to NaN there."""
    out = []
    for run in result.runs:
        r = run.result
        out.append((run.cell.label, run.loss, r.losses.tobytes(), r.model.W.tobytes(), r.model.b.tobytes(),
                    r.nan.to_dict(), r.order_digest, r.init_digest, run.evaluation, run.explanation, run.records))
    return repr(out)


@pytest.fixture(scope="module")
def alone(mnist):
    config = CompareConfig(**CONFIG, workers=1)
    return run_compare(mnist.train_images, mnist.train_labels, mnist.test_images[:2000], mnist.test_labels[:2000], config)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3])
def test_any_number_of_workers_gives_the_same_numbers(mnist, alone, workers):
    config = CompareConfig(**CONFIG, workers=workers)
    result = run_compare(mnist.train_images, mnist.train_labels, mnist.test_images[:2000], mnist.test_labels[:2000],
                         config)
    assert _numbers(result) == _numbers(alone)
    assert {r.result.nan.any_nonfinite for r in alone.runs} == {True, False}  # broken and healthy runs both compared
    assert multiprocessing.active_children() == []


def test_groups_are_the_stacks_float32_float64_and_half():
    config = CompareConfig(**CONFIG)
    jobs = [(cell, loss) for cell in config.cells() for loss in config.losses]
    groups = run_groups(config, jobs)
    assert sorted(p for g in groups for p in g) == list(range(len(jobs)))
    half = [g for g in groups if jobs[g[0]][0].dtype == "float16"]
    assert all(len(g) == 2 for g in half) and len(half) == 2  # a stack per seed of f16's 2 losses
    assert len(groups) == len(half) + 2 * 2  # and per (seed, float32/float64)
    assert worker_count("auto", 3, 10**7) == min(3, len(os.sched_getaffinity(0))) and worker_count(8, 2) == 2
    assert worker_count("auto", 3, 10**5) == 1  # too little work to win back a worker's start


def test_the_lanes_take_the_costliest_groups_first():
    """Longest processing time first: a half-precision stack before a float64 one of as many runs, that before a
    float32 one; the cost grows with the runs, the steps and the batch (the order changes no number: above)."""
    config = CompareConfig(scenarios=("tutorial", "f64", "f16", "bf16-lr-5"), seeds=(0,))
    jobs = [(cell, loss) for cell in config.cells() for loss in config.losses]
    cost = {jobs[g[0]][0].label: group_cost(config, jobs, g) for g in run_groups(config, jobs)}
    assert cost["f16"] == cost["bf16-lr-5"] > cost["f64"] > cost["tutorial"] > 0
    longer = CompareConfig(scenarios=("tutorial",), seeds=(0,), steps=2 * config.steps)
    assert group_cost(longer, jobs[:2], [0, 1]) == 2 * cost["tutorial"] == 2 * group_cost(config, jobs, [0, 1])
    assert group_cost(config, jobs, [0]) == cost["tutorial"] / 2


def _die(*args):
    if multiprocessing.parent_process() is None:  # the parent's own lane trains as usual
        return train_group(*args)
    os._exit(9)  # a worker killed mid-group (SIGKILL, the OOM killer)


def test_a_worker_that_dies_is_a_one_line_error_naming_its_group(mnist, monkeypatch):
    config = CompareConfig(**CONFIG, workers=2)
    jobs = [(cell, loss) for cell in config.cells() for loss in config.losses]
    arrays = {"train_images": mnist.train_images[:200].copy(), "train_labels": mnist.train_labels[:200].copy(),
              "test_images": mnist.test_images[:10].copy(), "test_labels": mnist.test_labels[:10].copy()}  # in shm
    made = []  # the shared blocks this call creates (other tests may make their own meanwhile)
    real_init = SharedArrays.__init__

    def recording_init(self, arrays):
        real_init(self, arrays)
        made.extend(shm.name for shm in self.blocks)

    monkeypatch.setattr(SharedArrays, "__init__", recording_init)
    with pytest.raises(WorkerError) as err:
        train_groups(arrays, config, jobs, run_groups(config, jobs), 2, _die)
    assert "died while training" in str(err.value) and " / " in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).endswith("run again with fewer --workers")
    assert multiprocessing.active_children() == []
    assert made and not [name for name in made if _shm_exists(name)]  # the shared arrays are freed


def test_a_cached_array_reaches_the_workers_by_its_file_and_a_replaced_cache_is_an_error(tmp_path):
    cache = tmp_path / "images.npy"
    np.save(cache, np.arange(6000, dtype=np.uint8).reshape(60, 100))
    mapped = np.load(cache, mmap_mode="r")
    parts = {"whole": np.asarray(mapped), "rows": mapped[10:20], "columns": mapped[:, 50:]}
    shared = SharedArrays(parts)
    try:  # a contiguous part of the map by the file, at its own offset; the columns (not contiguous) copied
        assert [spec[0] for spec in shared.specs.values()] == ["file", "file", "shm"] and len(shared.blocks) == 1
        arrays, blocks = SharedArrays.attach(shared.specs)
        assert all(np.array_equal(arrays[name], a) for name, a in parts.items())
        del arrays, blocks
        np.save(tmp_path / "new.npy", np.zeros((60, 100), np.uint8))
        os.replace(tmp_path / "new.npy", cache)  # how a cache is rebuilt (another process, meanwhile)
        with pytest.raises(WorkerError, match=r"data cache .* was replaced while compare ran: run it again"):
            SharedArrays.attach(shared.specs)
    finally:
        shared.close()


def test_the_cli_takes_workers(cli):
    r = cli("compare", "--scenarios", "tutorial", "--seeds", "0,1", "--steps", "5", "--train-limit", "500",
            "--workers", "2", "--json")
    assert r.exit_code == 0, r.output
    r = cli("compare", "--workers", "0")
    assert r.exit_code == 2 and "--workers" in r.output


def _shm_exists(name: str) -> bool:
    """Whether the shared-memory block ``name`` is still there (Linux: a file in /dev/shm)."""
    return (Path("/dev/shm") / name.lstrip("/")).exists()


def _maps(pid: int) -> list[str]:
    """The memory mappings of ``pid`` (none if it has ended)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: Linux, as CI is)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc (Linux)")
@pytest.mark.parametrize("sig, code, message", [(signal.SIGINT, 130, "Interrupted."), (signal.SIGTERM, 143, "Terminated.")],
                         ids=["Ctrl-C", "SIGTERM"])
def test_a_signal_mid_compare_stops_every_worker_and_says_what_finished(mnist_data_dir, sig, code, message):
    cmd = [sys.executable, "-m", "mnist_cli", "compare", "--scenarios", "tutorial,f16", "--seeds", "0,1,2",
           "--steps", "1000000", "--workers", "2", "--data-dir", str(mnist_data_dir), "--offline"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2:  # the worker and multiprocessing's resource tracker
        assert time.monotonic() < deadline and proc.poll() is None, "no worker started"
        time.sleep(0.05)
    kids = _children(proc.pid)
    time.sleep(1.0)  # the workers are training
    blocks = {line.split()[-1] for kid in kids for line in _maps(kid) if "/psm_" in line}  # the shared arrays
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)  # not after the groups under way (minutes)
    finally:
        if proc.poll() is None:
            for pid in [proc.pid, *kids]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == code and message in lines, lines[-3:]
    assert lines[-1].startswith("Done before the interrupt: ") and " of 12 runs" in lines[-1]
    deadline = time.monotonic() + 10  # a group of 10**6 steps takes minutes: the workers were stopped
    while any(Path(f"/proc/{k}").exists() and "Z" not in Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1][:3]
              for k in kids):
        assert time.monotonic() < deadline, "a worker outlived compare"
        time.sleep(0.05)
    assert not [b for b in blocks if Path(b).exists()]  # the shared arrays are freed

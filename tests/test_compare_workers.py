"""compare across worker processes: the same numbers for any number of workers, and no worker outlives it."""

import multiprocessing
import os

import pytest

from mnist_cli.compare import CompareConfig, run_compare
from mnist_cli.compare_workers import WorkerError, run_groups, train_groups, worker_count

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
    assert worker_count("auto", 3) == min(3, len(os.sched_getaffinity(0))) and worker_count(8, 2) == 2


def _die(*args):
    os._exit(9)  # a worker killed mid-group (SIGKILL, the OOM killer)


def test_a_worker_that_dies_is_a_one_line_error_naming_its_group(mnist):
    config = CompareConfig(**CONFIG, workers=2)
    jobs = [(cell, loss) for cell in config.cells() for loss in config.losses]
    arrays = {"train_images": mnist.train_images[:200], "train_labels": mnist.train_labels[:200],
              "test_images": mnist.test_images[:10], "test_labels": mnist.test_labels[:10]}
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    with pytest.raises(WorkerError) as err:
        train_groups(arrays, config, jobs, run_groups(config, jobs), 2, _die)
    assert "died while training" in str(err.value) and " / " in str(err.value) and "\n" not in str(err.value)
    assert multiprocessing.active_children() == []
    if before or os.path.isdir("/dev/shm"):
        assert set(os.listdir("/dev/shm")) <= before  # the shared arrays are freed


def test_the_cli_takes_workers(cli):
    r = cli("compare", "--scenarios", "tutorial", "--seeds", "0,1", "--steps", "5", "--train-limit", "500",
            "--workers", "2", "--json")
    assert r.exit_code == 0, r.output
    r = cli("compare", "--workers", "0")
    assert r.exit_code == 2 and "--workers" in r.output

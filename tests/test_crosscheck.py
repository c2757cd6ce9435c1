"""scripts/crosscheck.py's training level: the harness feeds torch what the trainer consumed, and checks itself.

The cross-check proper runs in CI (``make crosscheck``); these tests pin the parts a wrong harness would
silently weaken: the grid, the batch order and init fed to torch, the within-batch reorderings that set the
accuracy limits, the step-1 measure, and (with torch installed) one stable cell end to end.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "crosscheck.py"


@pytest.fixture(scope="module")
def cc():
    spec = importlib.util.spec_from_file_location("crosscheck", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["crosscheck"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("crosscheck", None)


def test_grid_is_every_combination_once(cc):
    cells = cc.train_grid()
    base = [c for c in cells if c.framework == "numpy"]
    assert len(base) == len(set(base)) == (len(cc.TRAIN_MODES) * len(cc.TRAIN_LRS) * len(cc.TRAIN_SCALES)
                                           * len(cc.TRAIN_SEEDS) * len(cc.TRAIN_LOSSES)) == 144
    assert len(cells) == len(set(cells)) == 144 + sum(len(m[5]) * len(m[6]) * len(m[7]) * len(m[8])
                                                      for m in cc.PROFILE_MODES)
    assert cc.train_grid(("torch",)) == [c for c in cells if c.reference == "torch"]
    from mnist_cli.engine.base import with_policy

    for cell in cells:
        assert cell.steps * cell.batch <= 60000  # the reorderings need every index in at most one batch
        cell.config().validate()
        with_policy(cell.config())  # the policy is the profile's and the dtype's
    stable = [c for c in cells if c.effective_step <= cc.STABLE_STEP]
    assert {(c.lr, c.input_scale) for c in stable} == {(0.5, 1.0)}
    # the issue-19 grid: fixed loss scales, batch sizes 32 and 500, both autocast policies, Keras's mixed policy
    assert {"1024", "1048576"} <= {c.loss_scale for c in cells} and {32, 500} <= {c.batch for c in cells}
    assert {"autocast-cpu", "autocast-cuda", "mixed_float16"} <= {c.policy for c in cells}
    assert {c.reference for c in cells if c.policy == "mixed_float16"} == {"tensorflow"}


def test_within_batch_order_keeps_each_batch_and_matches_torchs(cc):
    rng = np.random.default_rng(0)
    batches = [b for b in rng.permutation(1000)[:900].reshape(9, 100)]
    order, reorder = cc.within_batch_order(batches, np.random.default_rng(1), 1000)
    assert sorted(order) == list(range(1000))
    for idx in batches:
        assert sorted(order[idx]) == sorted(idx)  # the trainer draws idx and reads images[order][idx]
        np.testing.assert_array_equal(reorder(idx), order[idx])  # torch reads the same examples, same order
    assert any((order[idx] != idx).any() for idx in batches)


@pytest.mark.parametrize("mode", [("float16", "mixed", 1), ("bfloat16", "pure", 1), ("float32", "pure", 0)])
def test_torch_is_fed_the_trainers_init_and_batches(cc, mnist, mode):
    """The init (float32 masters in mixed precision, the half dtype in pure) and the batches the harness
    gives torch are what the trainer consumed: its own digests say so."""
    cell = next(c for c in cc.train_grid() if (c.dtype, c.precision, c.seed) == mode and c.loss == "fused")
    d = cc.Data(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels, None, None)
    m0, batches = cc.init_and_batches(cell, len(mnist.train_labels))
    run, params, r = cc.run_ours(cell, d, keep=True)
    assert cc.fed_as_trained(r, m0, batches, mnist.train_labels)
    assert not cc.fed_as_trained(r, m0, batches[::-1], mnist.train_labels)
    assert len(params) == cc.TRAIN_STEPS and run.counted() == run.figures()


def test_step1_units(cc):
    cell = cc.train_grid()[0]
    m0 = type("M", (), {"W": np.zeros((784, 10), np.float32), "b": np.zeros(10, np.float32)})()
    P1 = np.full(7850, 0.5, np.float32)

    def run(p):
        return cc.Run([], None, None, None, p)

    assert cc.step1_units(cell, m0, run(P1), run(P1.copy())) == (0.0, "")
    moved = P1.copy()
    moved[0] += 2 * cell.eps * (0.5 * math.sqrt(7850))  # ||dP|| = 2 eps ||P1 - P0||
    units, why = cc.step1_units(cell, m0, run(P1), run(moved))
    assert why == "" and units == pytest.approx(2.0, rel=1e-3)
    nan = P1.copy()
    nan[3] = np.nan
    assert cc.step1_units(cell, m0, run(P1), run(nan))[0] == math.inf
    assert cc.step1_units(cell, m0, run(np.zeros(7850, np.float32)), run(P1))[0] == math.inf


@pytest.mark.slow
@pytest.mark.torch
def test_a_stable_cell_agrees_with_torch(cc, mnist):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    data = cc.data_of(torch, mnist)
    cell = next(c for c in cc.train_grid() if c.dtype == "float32" and c.loss == "fused" and c.effective_step <= 0.5)
    row = cc.check_cell({"torch": torch}, cell, data)
    assert row.stable and (row.events_verdict, row.step1_verdict) == ("OK", "OK")
    assert row.ours == row.ref and row.step1 <= cc.STEP1_UNITS
    assert row.acc_verdict in ("OK", "EXPLAINED") and row.correct[0] is not None


@pytest.mark.slow
@pytest.mark.torch
def test_a_stable_keras_mixed_cell_agrees_with_tensorflow(cc, mnist):
    """One Keras mixed_float16 cell with the real LossScaleOptimizer end to end (``make crosscheck`` installs TF)."""
    torch = pytest.importorskip("torch")
    ref = cc.load_framework("tensorflow")
    if ref is None:
        pytest.skip("tensorflow not installed (make crosscheck installs tensorflow-cpu==2.21.0)")
    data = cc.data_of(torch, mnist)
    cell = next(c for c in cc.train_grid(("tensorflow",)) if c.policy == "mixed_float16" and c.loss == "fused"
                and c.loss_scale == "dynamic" and c.effective_step <= 0.5 and c.batch == 100)
    row = cc.check_cell({"torch": torch, "tensorflow": ref.tf}, cell, data)
    assert row.stable and row.events_verdict == "OK" and row.ours == row.ref
    assert row.ours["loss_scale"] == row.ref["loss_scale"] == 2.0**15  # Keras's initial scale, never halved
    assert row.acc_verdict in ("OK", "EXPLAINED")

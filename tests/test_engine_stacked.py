"""The stacked engine (mnist_cli.engine.stacked): a run's numbers do not depend on the runs stacked with it
(bit for bit), and equal those of ``train`` (FastSGD and the plain loop) to rounding.

Exact, by construction: every block has the same shape whatever the number of runs, and no arithmetic
mixes two slots, so a run trained alone (a stack of one) and the same run among others, in another
slot, moved by a compaction, give identical losses, parameters, NaN reports and snapshots; on healthy,
broken and chaotic runs alike (a chaotic run amplifies any difference, so it is the sharpest check).
Against ``train``, whose products have other shapes, the equality is to rounding, checked as
``tests/test_engine_fast.py`` checks FastSGD against the plain loop.
"""

from dataclasses import replace

import numpy as np
import pytest
from test_engine_fast import NAN_STORY, assert_same_numbers, assert_same_story

from mnist_cli.engine import TrainConfig, train
from mnist_cli.engine import stacked as stack
from mnist_cli.engine.fast import class_rows
from mnist_cli.engine.stacked import log_records, train_stack
from mnist_cli.losses import LOSSES
from mnist_cli.scoring import evaluate_model, evaluate_stack
from mnist_cli.threads import blas_kernel

STEPS = 300


def cfg(**kw):
    return TrainConfig(**{"steps": STEPS, **kw})


# the runs one stack holds (seed 0, float32), laid out so that every kind of run sits somewhere that
# could go wrong. Blocks hold the runs sorted by loss: SLOTS + 2 naive runs fill the first block and
# start the second, where the fused runs follow; the last fused runs (among them the tutorial) and the
# clipped one open a third block. Four naive runs break at steps 2-3 and retire, so compactions move
# every survivor to another slot, across blocks too, and the blocks share out the losses again
NAMED = [cfg(loss="naive", input_scale=255), cfg(loss="naive", lr=5.0), cfg(loss="naive", lr=5.0, input_scale=255),
         cfg(loss="naive")]
FILL = ([cfg(loss="naive", lr=0.02 * (j + 1)) for j in range(stack.SLOTS - 3)]
        + [cfg(loss="fused", lr=0.02 * (j + 1)) for j in range(stack.SLOTS - 5)])
NAMED2 = [cfg(loss="fused", lr=5.0, input_scale=255), cfg(loss="fused", input_scale=255), cfg(loss="fused", lr=5.0),
          cfg(loss="fused"), cfg(loss="fused", lr=0.1, input_scale=16), cfg(loss="clipped", input_scale=255),
          cfg(loss="naive", lr=0.1, input_scale=16)]
STACK32 = NAMED + FILL + NAMED2
STACK64 = [replace(c, dtype="float64") for c in STACK32]
_AT = len(NAMED) + len(FILL)  # where NAMED2 starts
KIND = {  # position in STACK32/STACK64 -> what the run is (in float32)
    0: "broken", 1: "broken", 3: "healthy", len(NAMED): "filler", _AT: "chaotic", _AT + 1: "chaotic",
    _AT + 3: "healthy", _AT + 4: "underflowing", _AT + 5: "chaotic", _AT + 6: "broken",
}


def assert_identical(a, b):
    """Bit for bit: losses, parameters, NaN report, snapshot, digests."""
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.model.W, b.model.W)
    np.testing.assert_array_equal(a.model.b, b.model.b)
    assert a.nan.to_dict() == b.nan.to_dict()
    assert a.order_digest == b.order_digest and a.init_digest == b.init_digest
    np.testing.assert_array_equal(a.extras["accounting"].bad_grad, b.extras["accounting"].bad_grad)
    assert (a.snapshot is None) == (b.snapshot is None)
    if a.snapshot is not None:
        assert a.snapshot.step == b.snapshot.step
        np.testing.assert_array_equal(a.snapshot.logits, b.snapshot.logits)
        np.testing.assert_array_equal(a.snapshot.indices, b.snapshot.indices)


@pytest.fixture(scope="module")
def stacked(mnist):
    compactions = []
    real = stack._Stack._compact

    def spy(self):
        before = len(self.blocks)
        real(self)
        compactions.append(before - len(self.blocks))

    stack._Stack._compact = spy
    try:
        both = train_stack(mnist.train_images, mnist.train_labels, STACK32 + STACK64)
    finally:
        stack._Stack._compact = real
    assert any(compactions)  # the test does move runs between blocks and slots
    return both[: len(STACK32)], both[len(STACK32):]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pos", sorted(KIND), ids=[f"{KIND[p]}-{p}" for p in sorted(KIND)])
def test_a_run_alone_equals_the_same_run_in_a_stack_bit_for_bit(mnist, stacked, dtype, pos):
    runs = stacked[dtype == "float64"]
    config = (STACK32 if dtype == "float32" else STACK64)[pos]
    alone, = train_stack(mnist.train_images, mnist.train_labels, [config])
    assert alone.extras["stack"] == 1 and runs[pos].extras["stack"] == len(STACK32)
    assert_identical(alone, runs[pos])
    if KIND[pos] == "broken" and (dtype == "float32" or pos != 1):  # float64 survives lr 5
        assert runs[pos].nan.first_nonfinite_step in (2, 3) and not runs[pos].model.finite


@pytest.mark.slow
def test_wide_products_give_the_runs_one_product_per_run_gives(mnist, stacked, monkeypatch):
    """Where the probe lets a block take one product for all its runs' rows, every run is bit-identical
    to the same run computed with one product per run (the fallback, and a stack of one); where it does
    not (another BLAS kernel), the engine took one product per run and the two are the same computation."""
    real, taken = stack.slot_products, []
    monkeypatch.setattr(stack, "slot_products", lambda A, M, out, n, wide: (taken.append(wide), real(A, M, out, n, wide)))
    monkeypatch.setattr(stack, "wide_is_exact", lambda *key: False)
    both = train_stack(mnist.train_images, mnist.train_labels, STACK32 + STACK64)
    assert taken and not any(taken)  # the probe said no: one product per run, everywhere
    for ours, one_each in zip(stacked[0] + stacked[1], both):
        assert_identical(ours, one_each)


def _probe(dtype, n, kernel):
    r = class_rows(10, np.dtype(dtype), blas_kernel())
    return stack.wide_is_exact(kernel, dtype, (stack.SLOTS, r, 784, 100), n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_probe_sees_a_run_whose_rows_are_summed_in_another_order(dtype, monkeypatch):
    """The probe compares every slot bit for bit on random operands: a wide product that adds one run's
    terms in another order (its inner dimension in two halves) is refused for every block it would
    change; one that is exactly the per-run products is accepted."""
    real = stack.slot_products

    def regrouped(A, M, out, n, wide):
        real(A, M, out, n, wide)
        if wide and n > 1:  # the last run's rows: the same sums, grouped differently
            h = A.shape[2] // 2
            out[n - 1] = A[n - 1, :, :h] @ M[:h] + A[n - 1, :, h:] @ M[h:]

    monkeypatch.setattr(stack, "slot_products", regrouped)
    assert [_probe(dtype, n, "test: regrouped") for n in (1, 2, stack.SLOTS)] == [True, False, False]
    monkeypatch.setattr(stack, "slot_products", lambda A, M, out, n, wide: real(A, M, out, n, False))
    assert all(_probe(dtype, n, "test: one product per run") for n in range(1, stack.SLOTS + 1))


def test_a_stack_of_one_run_in_another_order_is_the_same_stack(mnist):
    """The order of the configs (so the slots) changes nothing."""
    configs = [cfg(loss="naive", input_scale=255, steps=40), cfg(loss="fused", lr=2.0, steps=40),
               cfg(loss="fused", steps=40), cfg(loss="naive", steps=40), cfg(loss="fused", lr=0.3, input_scale=7, steps=40)]
    one = train_stack(mnist.train_images, mnist.train_labels, configs)
    other = train_stack(mnist.train_images, mnist.train_labels, configs[::-1])[::-1]
    for a, b in zip(one, other):
        assert_identical(a, b)


def test_retiring_a_nan_run_changes_nothing(mnist, monkeypatch):
    """A run whose parameters are all NaN is accounted in closed form from then on; stepping it to the
    end instead gives the same report and losses, bit for bit."""
    configs = [cfg(loss="naive", input_scale=255, steps=60), cfg(loss="naive", lr=5.0, steps=60),
               cfg(loss="naive", steps=60), cfg(loss="clipped", input_scale=255, lr=5.0, steps=60)]
    retired = train_stack(mnist.train_images, mnist.train_labels, configs)
    monkeypatch.setattr(stack._Stack, "_retire", lambda self, block, i, step: None)
    stepped = train_stack(mnist.train_images, mnist.train_labels, configs)
    assert retired[0].nan.steps_nan_loss == 59 and retired[0].nan.first_nan_loss_step == 2
    for a, b in zip(retired, stepped):
        assert_identical(a, b)
    records = log_records(retired[0], 20)
    assert [r["step"] for r in records] == [20, 40, 60] and all(r["loss"] != r["loss"] for r in records)
    assert all(r["nan_loss"] and r["nonfinite_grad"] and not r["inf_loss"] for r in records)


HEALTHY = {"tutorial fused": dict(loss="fused"), "tutorial naive": dict(loss="naive"),
           "clipped": dict(loss="clipped"), "float64 fused": dict(loss="fused", dtype="float64"),
           "odd scale, lr 0.05": dict(input_scale=3.7, lr=0.05), "normal init, seed 3": dict(init="normal", seed=3)}
BROKEN = {"naive raw pixels": (dict(loss="naive", input_scale=255), 2), "naive lr 5": (dict(loss="naive", lr=5.0), 3),
          "naive raw pixels float64": (dict(loss="naive", input_scale=255, dtype="float64"), 2)}


@pytest.mark.parametrize("kw", HEALTHY.values(), ids=HEALTHY.keys())
def test_stack_equals_train_to_rounding_on_healthy_runs(mnist, kw):
    config = cfg(**kw)
    ours, = train_stack(mnist.train_images, mnist.train_labels, [config, replace(config, lr=config.lr * 2)])[:1]
    for engine in (True, False):  # FastSGD and the plain loop
        theirs = train(mnist.train_images, mnist.train_labels, replace(config, fast=engine))
        assert not theirs.nan.any_nonfinite
        assert_same_story(ours, theirs)
        assert_same_numbers(ours, theirs)


@pytest.mark.parametrize("kw, first", BROKEN.values(), ids=BROKEN.keys())
def test_stack_equals_train_when_naive_breaks(mnist, kw, first):
    ours = train_stack(mnist.train_images, mnist.train_labels, [cfg(**kw), cfg(**{**kw, "loss": "fused"})])[0]
    theirs = train(mnist.train_images, mnist.train_labels, cfg(**kw, fast=False))
    assert theirs.nan.first_nan_loss_step == first
    assert_same_story(ours, theirs)
    assert_same_numbers(ours, theirs)
    assert not ours.model.finite and ours.snapshot.step == first


@pytest.mark.parametrize("kw", [dict(loss="fused", input_scale=255), dict(loss="naive", lr=5.0, dtype="float64")],
                         ids=["fused raw pixels", "naive lr 5 float64"])
def test_stack_keeps_the_nan_story_of_chaotic_runs(mnist, kw):
    """Chaotic runs part from any other engine's trajectory (see test_engine_fast); their NaN story holds."""
    ours, = train_stack(mnist.train_images, mnist.train_labels, [cfg(**kw)])
    theirs = train(mnist.train_images, mnist.train_labels, cfg(**kw))
    f, p = ours.nan.to_dict(), theirs.nan.to_dict()
    assert {k: f[k] for k in NAN_STORY} == {k: p[k] for k in NAN_STORY} and not p["any_nonfinite"]
    np.testing.assert_allclose(ours.losses[:5], theirs.losses[:5], rtol=1e-5)  # zeros init: the first steps agree


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_stacked_losses_equal_the_reference_slot_by_slot(name, dtype):
    """Each slot of a stacked loss is the LOSSES reference on that run's logits: to rounding where
    finite, with the same NaN and inf pattern (extreme logits make the naive loss break)."""
    rng = np.random.default_rng(7)
    S, k, B = 3, 10, 50
    z = (rng.standard_normal((S, k, B)) * np.array([1.0, 30.0, 3000.0])[:, None, None]).astype(dtype)
    y = rng.integers(0, k, B)
    Y = (np.arange(k)[:, None] == y).astype(dtype)
    with np.errstate(all="ignore"):
        loss, dz, p = LOSSES[name].stacked(z - np.max(z, axis=1, keepdims=True), (slice(None), y, np.arange(B)), Y)
        for s in range(S):
            ref_loss, ref_dz = LOSSES[name](np.ascontiguousarray(z[s].T), y)
            rtol = 1e-5 if dtype == np.float32 else 1e-12
            assert loss[s] == pytest.approx(ref_loss, rel=rtol, nan_ok=True)
            np.testing.assert_allclose(dz[s].T, ref_dz, rtol=rtol, atol=rtol / B, equal_nan=True)
            np.testing.assert_array_equal(np.isnan(dz[s].T), np.isnan(ref_dz))
    assert dz.dtype == dtype and loss.shape == (S,)
    if name == "naive":
        assert np.isfinite(loss[0]) and np.isnan(loss[2])  # the spread of 3000 breaks it


def test_evaluate_stack_equals_evaluate_model(mnist):
    configs = [cfg(steps=50), cfg(steps=50, input_scale=255, loss="naive"), cfg(steps=50, lr=2.0),
               cfg(steps=50, dtype="float64"), cfg(steps=50, lr=0.1, input_scale=16), cfg(steps=50, loss="clipped")]
    results = train_stack(mnist.train_images, mnist.train_labels, configs)
    images, labels = mnist.test_images[:3000], mnist.test_labels[:3000]
    models, scales = [r.model for r in results], [c.input_scale for c in configs]
    stacked = evaluate_stack(models, scales, images, labels)
    for r, ev in zip(results, stacked):
        ref = evaluate_model(r.model, images, labels, r.config.input_scale)
        assert set(ev) == set(ref) and ev["nonfinite_params"] == ref["nonfinite_params"]
        assert abs(ev["accuracy"] - ref["accuracy"]) <= 2 / len(labels)  # logits to rounding: a tie may flip
        alone, = evaluate_stack([r.model], [r.config.input_scale], images, labels)
        assert alone == ev  # bit for bit whatever else is evaluated with it


def test_settings_the_stack_does_not_implement_are_refused(mnist):
    from mnist_cli.errors import SettingsError

    for kw in (dict(weight_decay=1e-3), dict(average=True), dict(stop_on_nan=True), dict(lr_decay=0.5)):
        with pytest.raises(SettingsError):
            train_stack(mnist.train_images, mnist.train_labels, [cfg(**kw)])


def test_a_stack_shares_its_time_among_its_runs(mnist):
    """Each run's ``seconds`` (its report's and ``--json``'s training time) is its share of the stack's: the
    shares add up to no more than the stack took."""
    import time

    configs = [TrainConfig(steps=20, lr=lr) for lr in (0.1, 0.5, 1.0)]
    t0 = time.perf_counter()
    runs = train_stack(mnist.train_images, mnist.train_labels, configs)
    took = time.perf_counter() - t0
    assert all(r.seconds > 0 for r in runs) and sum(r.seconds for r in runs) <= took


def test_a_batch_larger_than_the_training_examples_is_refused(mnist):
    from mnist_cli.errors import SettingsError

    with pytest.raises(SettingsError, match="larger than the 50 training examples"):
        train_stack(mnist.train_images, mnist.train_labels, [TrainConfig(steps=5, train_limit=50, batch_size=100)])

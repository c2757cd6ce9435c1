"""The fast SGD step (mnist_cli.engine.fast) against the plain loop (``TrainConfig(fast=False)``) on real MNIST.

"Equal to rounding" is checked as: the same examples consumed and initial parameters (digests), the
same NaN report (counts and first steps), losses and parameters within a few float ulps accumulated
over the run. Three stress runs are chaotic: there the plain loop itself, given a hyper-parameter
changed by one ulp, drifts from its own trajectory, so those are compared exactly on their NaN story
and on their losses only over the first half of the steps in which the plain loop agrees with its
nudged copy, to a tolerance derived from that copy's spread (never a number fitted on one machine).
"""

from dataclasses import replace

import numpy as np
import pytest

from mnist_cli.engine import TrainConfig, scale_pixels, train
from mnist_cli.engine import fast as fastpath
from mnist_cli.engine import schedule as train_mod
from mnist_cli.engine.fast import MAX_SUB_ROWS, row_groups
from mnist_cli.losses import FusedKernel, fused
from mnist_cli.scoring import predict_logits

FLOAT_RTOL = {"float32": 2e-5, "float64": 1e-12}


def pair(mnist, **kw):
    """(fast, plain) results of the same configuration."""
    config = TrainConfig(**kw)
    fast = train(mnist.train_images, mnist.train_labels, config)
    plain = train(mnist.train_images, mnist.train_labels, replace(config, fast=False))
    return fast, plain


def assert_same_story(fast, plain, *, underflow_rtol=0.0, gap_rtol=1e-4):
    """Same batches, same init, same NaN report (max gap and underflow counts to rounding)."""
    assert fast.order_digest == plain.order_digest and fast.init_digest == plain.init_digest
    assert fast.steps == plain.steps and fast.stopped_early == plain.stopped_early
    f, p = fast.nan.to_dict(), plain.nan.to_dict()
    assert f.pop("max_logit_gap") == pytest.approx(p.pop("max_logit_gap"), rel=gap_rtol, nan_ok=True)
    assert f.pop("underflow_probs") == pytest.approx(p.pop("underflow_probs"), rel=underflow_rtol)
    assert f == p
    assert (fast.snapshot is None) == (plain.snapshot is None)
    if plain.snapshot is not None:
        s, t = fast.snapshot, plain.snapshot
        assert s.step == t.step
        np.testing.assert_array_equal(s.indices, t.indices)
        np.testing.assert_array_equal(s.labels, t.labels)
        np.testing.assert_allclose(s.logits, t.logits, rtol=1e-4, atol=1e-4 * np.nanmax(np.abs(t.logits)))


def assert_same_numbers(fast, plain, steps=None):
    """Losses and final parameters equal to rounding (NaN where the plain loop has NaN)."""
    rtol = FLOAT_RTOL[fast.config.dtype]
    np.testing.assert_allclose(fast.losses[:steps], plain.losses[:steps], rtol=rtol, equal_nan=True)
    if steps is None:
        W, Wp = fast.model.W, plain.model.W
        assert W.dtype == Wp.dtype and W.shape == Wp.shape and W.flags.c_contiguous
        scale = np.nanmax(np.abs(Wp)) if np.isfinite(Wp).any() else 1.0
        np.testing.assert_allclose(W, Wp, rtol=0, atol=rtol * scale, equal_nan=True)
        np.testing.assert_allclose(fast.model.b, plain.model.b, rtol=0, atol=rtol * 10, equal_nan=True)
        np.testing.assert_array_equal(np.isnan(W), np.isnan(Wp))


HEALTHY = {
    "tutorial fused": dict(loss="fused"),
    "tutorial naive": dict(loss="naive"),
    "tutorial clipped": dict(loss="clipped"),
    "float64 fused": dict(loss="fused", dtype="float64", steps=300),
    "float64 clipped": dict(loss="clipped", dtype="float64", steps=300),
    "weight decay, normal init": dict(weight_decay=1e-3, init="normal", seed=3, steps=400),
    "epochs, lr decay, averaging": dict(train_limit=20000, epochs=3, lr_decay=0.7, average=True, average_epochs=2),
    "odd input scale": dict(input_scale=3.7, lr=0.05, steps=200),
    "batch 1300 in row groups": dict(batch_size=1300, steps=20, train_limit=30000),
    "batch 200: one group of two products": dict(batch_size=200, steps=30),
    "batch 250: a remainder group": dict(batch_size=250, steps=30, loss="clipped"),
    "full batch": dict(full_batch=True, steps=4, train_limit=10000, lr=2.0),
    "full batch float64": dict(full_batch=True, steps=3, train_limit=5000, dtype="float64", weight_decay=1e-4),
    # batch == n: a full batch that fits one product (<= MAX_SUB_ROWS rows), every loss, and one just past it
    "B == n == 100, one product": dict(batch_size=100, train_limit=100, steps=50),
    "B == n == 120 naive, full batch": dict(loss="naive", full_batch=True, train_limit=120, steps=50),
    "B == n == 120 clipped, full batch": dict(loss="clipped", full_batch=True, train_limit=120, steps=50),
    "B == n == 37 float64, weight decay": dict(batch_size=37, train_limit=37, steps=30, dtype="float64", weight_decay=1e-3),
    "B == n == 121: two groups": dict(full_batch=True, train_limit=121, steps=30),
    "B == n == 121 naive": dict(loss="naive", full_batch=True, train_limit=121, steps=30),
    # n not a multiple of B: the remainder of each epoch is skipped
    "n = 250, B = 100": dict(batch_size=100, train_limit=250, steps=30),
    "n = 250, B = 120 naive": dict(loss="naive", batch_size=120, train_limit=250, steps=30),
    "n = 300, B = 130 in two groups": dict(batch_size=130, train_limit=300, steps=30),
}


@pytest.mark.parametrize("kw", HEALTHY.values(), ids=HEALTHY.keys())
def test_fast_equals_plain_on_healthy_runs(mnist, kw):
    fast, plain = pair(mnist, **kw)
    assert not plain.nan.any_nonfinite
    assert_same_story(fast, plain)
    assert_same_numbers(fast, plain)


BROKEN = {  # the NaN story of issue 3: naive breaks on raw pixels (step 2) and at lr 5 (step 3)
    "naive raw pixels": (dict(loss="naive", input_scale=255), 2),
    "naive lr 5": (dict(loss="naive", lr=5.0), 3),
    "naive raw pixels, stop on nan": (dict(loss="naive", input_scale=255, stop_on_nan=True), 2),
    "naive raw pixels, float64": (dict(loss="naive", input_scale=255, dtype="float64", steps=50), 2),
    "naive raw pixels, full batch": (dict(loss="naive", input_scale=255, full_batch=True, steps=3, train_limit=3000), 2),
    "naive raw pixels, batch 1300": (dict(loss="naive", input_scale=255, batch_size=1300, steps=5, train_limit=20000), 2),
    "naive raw pixels, full batch, stop on nan": (dict(loss="naive", input_scale=255, full_batch=True, steps=3,
                                                        train_limit=3000, stop_on_nan=True), 2),
    "naive raw pixels, B == n == 100": (dict(loss="naive", input_scale=255, batch_size=100, train_limit=100, steps=5), 2),
    "naive raw pixels, B == n == 121": (dict(loss="naive", input_scale=255, full_batch=True, train_limit=121, steps=5), 2),
}


@pytest.mark.parametrize("kw, first", BROKEN.values(), ids=BROKEN.keys())
def test_fast_equals_plain_when_naive_breaks(mnist, kw, first):
    fast, plain = pair(mnist, **kw)
    assert plain.nan.first_nan_loss_step == first
    assert_same_story(fast, plain)
    assert_same_numbers(fast, plain)
    assert fast.model.finite == plain.model.finite == bool(kw.get("stop_on_nan"))  # stopped before the NaN update


CHAOTIC = {  # configs whose trajectories part after rounding-level differences (raw pixels; lr 5 in float64)
    "fused raw pixels": dict(loss="fused", input_scale=255),
    "clipped raw pixels": dict(loss="clipped", input_scale=255),
    "naive lr 5 float64": dict(loss="naive", lr=5.0, dtype="float64"),
}

NAN_STORY = ("steps_nan_loss", "steps_inf_loss", "steps_nonfinite_grad", "first_nan_loss_step",
             "first_inf_loss_step", "first_nonfinite_grad_step", "params_nonfinite", "first_nonfinite_params_step",
             "first_underflow_step")


def _rows_reversed(monkeypatch):
    """Make every batch hold its examples in reverse order: the same steps, sums in another order."""
    epochs = train_mod._epochs

    def reversed_epochs(n, B, steps, rng):
        for perm, count in epochs(n, B, steps, rng):
            perm = perm.copy()
            perm[: count * B] = perm[: count * B].reshape(count, B)[:, ::-1].reshape(-1)
            yield perm, count

    monkeypatch.setattr(train_mod, "_epochs", reversed_epochs)


def _spread_of_the_plain_loop(mnist, config, monkeypatch):
    """The plain loop's own rounding-level spread: copies with lr one ulp up and half an ulp down, and one
    whose batches hold their rows in reverse order (what the fast step does to a sum, rounding-wise)."""
    eps = float(np.finfo(config.dtype).eps)
    plain = replace(config, fast=False)
    copies = [train(mnist.train_images, mnist.train_labels, replace(plain, lr=config.lr * f))
              for f in (1 + eps, 1 - eps / 2)]
    with monkeypatch.context() as m:
        _rows_reversed(m)
        copies.append(train(mnist.train_images, mnist.train_labels, plain))
    return copies


@pytest.mark.slow
@pytest.mark.parametrize("kw", CHAOTIC.values(), ids=CHAOTIC.keys())
def test_fast_equals_plain_on_chaotic_runs(mnist, kw, monkeypatch):
    """Chaotic runs: rounding differences grow until the trajectories part, for the plain loop perturbed
    at the rounding level as much as for the fast step. So: the NaN story must be identical over the
    whole run (here: never a non-finite value), and the losses equal only over the first half of the
    steps in which every perturbed copy of the plain loop still agrees with it, to 100x the copies'
    own spread. Chaotic statistics (underflow counts, the largest gap, accuracy) are not compared:
    their spread is the machine's, not the engine's."""
    config = TrainConfig(**kw)
    fast = train(mnist.train_images, mnist.train_labels, config)
    plain = train(mnist.train_images, mnist.train_labels, replace(config, fast=False))
    assert fast.order_digest == plain.order_digest and fast.init_digest == plain.init_digest
    f, p = fast.nan.to_dict(), plain.nan.to_dict()
    assert {k: f[k] for k in NAN_STORY} == {k: p[k] for k in NAN_STORY}
    assert not p["any_nonfinite"]  # fused, clipped and float64 at lr 5 never break, on any machine
    rel = lambda a: np.abs(a.losses - plain.losses) / np.abs(plain.losses)
    spread = np.max([rel(c) for c in _spread_of_the_plain_loop(mnist, config, monkeypatch)], axis=0)
    parted = np.flatnonzero(spread > 1e-3)  # where a perturbed copy has visibly left the trajectory
    prefix = (int(parted[0]) if parted.size else len(spread)) // 2
    assert prefix >= 5  # the runs start alike (zeros init: the first steps are exact)
    envelope = np.maximum(FLOAT_RTOL[config.dtype], 100 * np.maximum.accumulate(spread[:prefix]))
    worst = int(np.argmax(rel(fast)[:prefix] / envelope))
    assert rel(fast)[worst] <= envelope[worst], f"step {worst + 1}: fast {fast.losses[worst]} plain {plain.losses[worst]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spread", [1.0, 12.0])
def test_fused_kernel_equals_fused(dtype, spread):
    rng = np.random.default_rng(5)
    k, w, coef = 10, 37, 0.25
    z = (rng.standard_normal((w, k)) * spread).astype(dtype)  # (w, k)
    y = rng.integers(0, k, w)
    kernel = FusedKernel(k, dtype, healthy_gap=80.0)
    gap, loss_sum, G = kernel(np.ascontiguousarray(z.T)[None], y * w + np.arange(w), dtype(coef))
    loss, dz = fused(z, y)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert gap == pytest.approx(float(np.max(z.max(axis=1) - z.min(axis=1))), rel=rtol)
    assert loss_sum / w == pytest.approx(loss, rel=rtol)
    np.testing.assert_allclose(G[0].T, coef * w * dz, rtol=rtol, atol=rtol * coef)
    assert G.dtype == dtype


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 200.0])
def test_fused_kernel_refuses_steps_it_cannot_prove_healthy(bad):
    """Non-finite logits or a gap past the underflow limit go to the reference loss (None)."""
    z = np.zeros((1, 10, 4), np.float32)
    z[0, 3, 2] = bad
    with np.errstate(invalid="ignore"):
        gap, loss_sum, _ = FusedKernel(10, np.float32, healthy_gap=100.0)(z, np.arange(4), np.float32(0.1))
    assert loss_sum is None and not gap <= 100.0


@pytest.mark.parametrize("B", [1, 100, 120, 121, 250, 1300, 60000])
def test_row_groups_cover_the_batch_once(B):
    groups = row_groups(B)
    covered = np.concatenate([np.arange(start, start + m * w) for start, m, w in groups])
    np.testing.assert_array_equal(covered, np.arange(B))
    assert all(w <= MAX_SUB_ROWS for _, _, w in groups)


@pytest.mark.parametrize("kw", [dict(full_batch=True, steps=3, train_limit=12000, lr=2.0),
                                dict(full_batch=True, steps=4, train_limit=12000, input_scale=255)],
                         ids=["healthy", "raw pixels: kernel and reference steps"])
def test_threads_do_not_change_a_bit(mnist, monkeypatch, kw):
    """A full batch shared out over 1, 2 or 3 threads (13 row groups: room for 3 lanes) gives bit-identical
    losses, parameters and NaN report: each group's partial sum is added in group order."""
    lanes = []
    close = fastpath.GroupedSGD.close
    monkeypatch.setattr(fastpath.GroupedSGD, "close", lambda self: (lanes.append(len(self.lanes)), close(self))[1])
    one, two, three = (train(mnist.train_images, mnist.train_labels, TrainConfig(threads=t, **kw)) for t in (1, 2, 3))
    assert lanes == [1, 2, 3]
    for other in (two, three):
        np.testing.assert_array_equal(other.losses, one.losses)
        np.testing.assert_array_equal(other.model.W, one.model.W)
        np.testing.assert_array_equal(other.model.b, one.model.b)
        assert other.nan.to_dict() == one.nan.to_dict() and other.order_digest == one.order_digest


def test_predict_logits_equals_the_formula(mnist):
    result = train(mnist.train_images, mnist.train_labels, TrainConfig(steps=50, init="normal"))
    images = mnist.test_images[:3000]
    for scale in (1.0, 255.0):
        expected = scale_pixels(images, scale, np.float32) @ result.model.W + result.model.b
        got = predict_logits(result.model, images, scale, block=1024)  # blocks of 1024 and a remainder
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def _buggy(monkeypatch, what):
    """Make FastSGD build its batches wrong, as the fast path once did for batch == n <= 120 (rows
    gathered in the drawn order, targets built from the labels in storage order)."""
    begin = fastpath.FastSGD.begin_epoch

    def begin_epoch(self, perm, count):
        begin(self, perm, count)
        if what == "labels":  # targets from the labels in storage order
            self.t = self.labels[: count * self.B].reshape(count, self.B) * self.width + self.offset
        else:  # rows one batch off: the right labels, the wrong images
            self.batches = np.roll(self.batches, 1, axis=0)

    monkeypatch.setattr(fastpath.FastSGD, "begin_epoch", begin_epoch)


@pytest.mark.parametrize("what", ["labels", "rows"])
def test_digests_catch_an_engine_that_consumes_the_wrong_examples(mnist, monkeypatch, what):
    """The order digest is what each engine consumed, not a value computed before it ran: an engine that
    gathers the wrong rows or targets the wrong labels gets a digest of its own."""
    kw = dict(batch_size=100, train_limit=100 if what == "labels" else 1000, steps=20)
    plain = train(mnist.train_images, mnist.train_labels, TrainConfig(fast=False, **kw))
    right = train(mnist.train_images, mnist.train_labels, TrainConfig(**kw))
    assert right.order_digest == plain.order_digest
    _buggy(monkeypatch, what)
    wrong = train(mnist.train_images, mnist.train_labels, TrainConfig(**kw))
    assert wrong.order_digest != plain.order_digest
    assert wrong.init_digest == plain.init_digest  # the init was right: only the batches differ


@pytest.mark.parametrize("setting", [dict(steps=50), dict(full_batch=True, steps=3, train_limit=3000)],
                         ids=["mini-batch", "full batch"])
def test_per_step_losses_are_computed_in_the_runs_dtype(mnist, setting):
    """The fast engine's per-step fused loss is a float32 value, as the plain loop's mean is (its sum was
    divided in float64 before)."""
    r = train(mnist.train_images, mnist.train_labels, TrainConfig(**setting))
    assert np.array_equal(r.losses.astype(np.float32).astype(np.float64), r.losses)

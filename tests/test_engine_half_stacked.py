"""Half-precision runs stacked (mnist_cli.engine.stacked, :class:`mnist_cli.engine.half.LowPrecisionSGD` with many
runs): every run of a stack is bit-identical to the same run trained alone by ``train``.

Exact by construction (the engine's docstring): each run's products are its own BLAS calls of the shapes of a
run alone, and every other operation is element-wise or reduces one run's own numbers in the order of a run
alone. Checked here on healthy, broken and chaotic runs (a chaotic run amplifies any difference), pure and mixed,
dynamic, fixed and no loss scaling, both half dtypes and the three profiles: losses, parameters, NaN report
(counts, first steps, skipped steps, final scale), per-step records (loss scale trajectory), snapshot, digests.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
from test_engine_stacked import assert_identical

from mnist_cli.engine import TrainConfig, train
from mnist_cli.engine.stacked import log_records, stack_key, stackable, train_stack

STEPS = 120


def cfg(**kw):
    return TrainConfig(**{"steps": STEPS, **kw})


#: (lr, input scale) of the runs of each stack: the tutorial (float16: naive breaks), raw pixels (broken at once,
#: float16 logits overflow), lr 5 raw (chaotic where it survives), a mild one (healthy), and input scale 16
SETTINGS = [(0.5, 1.0), (0.5, 255.0), (5.0, 255.0), (0.05, 1.0), (1.0, 16.0)]
PURE = {dtype: [cfg(dtype=dtype, loss=loss, lr=lr, input_scale=s) for lr, s in SETTINGS
                for loss in ("naive", "fused", "clipped")] for dtype in ("float16", "bfloat16")}
MIXED = {dtype: [cfg(dtype=dtype, precision="mixed", loss=loss, lr=lr, input_scale=s, loss_scale=ls)
                 for lr, s in SETTINGS for loss in ("naive", "fused") for ls in ("dynamic", "1024", "none")]
         for dtype in ("float16", "bfloat16")}


def assert_same_run(alone, stacked, records):
    """Bit for bit: losses, parameters, NaN report, digests, snapshot (with its loss scale), and the per-step
    records of ``train(on_log=...)`` (loss, NaN flags, non-finite gradient, loss scale, skipped)."""
    np.testing.assert_array_equal(alone.losses, stacked.losses)
    assert alone.model.W.dtype == stacked.model.W.dtype
    for a, b in ((alone.model.W, stacked.model.W), (alone.model.b, stacked.model.b)):  # exactly, via float32:
        np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))  # np.testing sees no NaN in bfloat16
    assert alone.nan.to_dict() == stacked.nan.to_dict()
    assert alone.order_digest == stacked.order_digest and alone.init_digest == stacked.init_digest
    assert (alone.snapshot is None) == (stacked.snapshot is None)
    if alone.snapshot is not None:
        a, b = alone.snapshot, stacked.snapshot
        assert a.step == b.step and a.loss_scale == b.loss_scale
        for name in ("logits", "indices", "labels"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert json.dumps(log_records(stacked, 1)) == json.dumps(records)  # NaN losses compare equal as text


def _alone(mnist, config):
    records = []
    result = train(mnist.train_images, mnist.train_labels, config, on_log=lambda step, rec: records.append(rec),
                   log_every=1)
    return result, records


def _check_stack(mnist, configs):
    runs = train_stack(mnist.train_images, mnist.train_labels, configs)
    assert len({stack_key(c) for c in configs}) == 1 and all(r.extras["stack"] == len(configs) for r in runs)
    stories = set()
    for config, stacked in zip(configs, runs):
        alone, records = _alone(mnist, config)
        assert_same_run(alone, stacked, records)
        stories.add(alone.nan.first_nonfinite_step is None)
    return runs, stories


def test_half_runs_are_stackable_and_keyed_by_precision_and_profile():
    f16 = TrainConfig(dtype="float16")
    assert stackable(f16) and stackable(replace(f16, framework="torch")) and stackable(TrainConfig())
    assert not stackable(TrainConfig(framework="tensorflow"))  # float32 of another profile: the plain loop
    keys = {stack_key(c) for c in (f16, replace(f16, precision="mixed"), replace(f16, framework="torch"),
                                   replace(f16, dtype="bfloat16"), replace(f16, lr=5.0, input_scale=255.0))}
    assert len(keys) == 4  # lr and input scale share a stack; dtype, precision and profile do not


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_pure_runs_stacked_equal_each_run_alone(mnist, dtype):
    runs, stories = _check_stack(mnist, PURE[dtype])
    assert stories == {True, False}  # healthy and broken runs among them


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_runs_stacked_equal_each_run_alone(mnist, dtype):
    runs, stories = _check_stack(mnist, MIXED[dtype])
    assert any(r.nan.steps_skipped for r in runs)  # the scalers skipped steps, each its own
    assert len({r.nan.loss_scale for r in runs}) > 1


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("precision", ["pure", "mixed"])
def test_other_profiles_stacked_equal_each_run_alone(mnist, framework, precision):
    configs = [replace(c, framework=framework) for c in (PURE if precision == "pure" else MIXED)["float16"]]
    _check_stack(mnist, configs)


def test_one_loss_stack_takes_the_same_numbers(mnist):
    """A stack of one loss (one call of the loss for all runs) against the same runs with another loss between them."""
    configs = [c for c in PURE["float16"] if c.loss == "fused"]
    for a, b in zip(train_stack(mnist.train_images, mnist.train_labels, configs),
                    train_stack(mnist.train_images, mnist.train_labels, configs[::-1])[::-1]):
        assert_identical(a, b)


@pytest.mark.parametrize("framework", ["numpy", "torch", "tensorflow"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", ["fused", "naive", "clipped"])
def test_the_logits_facet_on_a_stack_view_is_each_runs_reference(name, dtype, framework):
    """``Loss.logits`` on runs' logits (runs, k, B) seen through a (runs, B, k) array (the half stack's layout):
    each run's loss and gradient bit for bit the reference's on its (B, k) logits, with one grad scale per run.
    (float32 is the sharp case: a (runs, k, B) array in its own memory order sums the classes in another order
    and changes ~1 in 10 gradient entries.) Logits spread over the dtype's useful range, with ties and gaps
    past the underflow limits, so that zeros, NaN and inf appear."""
    from mnist_cli.losses import LOSSES
    from mnist_cli.rounding import DTYPES

    rng = np.random.default_rng(7)
    dt = DTYPES[dtype]
    runs, B, k = 5, 100, 10
    spread = np.array([1.0, 4.0, 20.0, 120.0, 3000.0])[:, None, None]  # healthy ... past every limit
    z = (rng.standard_normal((runs, B, k)) * spread).astype(dt)
    z[:, ::7, 3] = z[:, ::7, 5]  # ties
    y = rng.integers(0, k, B)
    scale = np.array([1.0, 2.0**16, 1024.0, 1.0, 0.5], np.float32)[:, None, None]
    t = (slice(None), y, np.arange(B))
    Y = (y[:, None] == np.arange(k)).astype(dt).T
    rec = LOSSES[name]
    fw = None if framework == "numpy" else framework
    with np.errstate(all="ignore"):
        loss, dzt, _ = rec.logits(z.transpose(0, 2, 1), t, Y, scale if dtype == "float32" else 1.0, fw)
        for r in range(runs):
            s = float(scale[r, 0, 0]) if dtype == "float32" else 1.0
            ref_loss, ref_grad = rec(z[r], y, s, fw)
            assert np.asarray(loss[r]).tobytes() == np.asarray(ref_loss, dt).tobytes()
            assert dzt[r].T.tobytes() == np.ascontiguousarray(ref_grad).tobytes()


def test_compare_of_half_runs_stacked_equals_one_by_one(mnist):
    """``compare`` of the default's half-precision scenarios (short runs): every run's numbers, NaN report, records
    and evaluation (its half-precision ``rounding`` report included) equal with the stack and one by one."""
    from mnist_cli.compare import CompareConfig, run_compare

    config = CompareConfig(scenarios=("f16", "f16-raw-pixels", "f16-mixed", "bf16-lr-5"), steps=60, train_limit=3000,
                           log_every=5)
    args = (mnist.train_images, mnist.train_labels, mnist.test_images[:2000], mnist.test_labels[:2000])
    stacked, alone = run_compare(*args, config), run_compare(*args, replace(config, engine="alone"))
    assert any(r.result.extras.get("stack", 1) > 1 for r in stacked.runs)
    for s, a in zip(stacked.runs, alone.runs):
        np.testing.assert_array_equal(s.result.losses, a.result.losses)
        np.testing.assert_array_equal(s.result.model.W.astype(np.float32), a.result.model.W.astype(np.float32))
        assert s.result.nan.to_dict() == a.result.nan.to_dict()
        assert json.dumps(s.records) == json.dumps(a.records)
        assert json.dumps(s.evaluation, sort_keys=True) == json.dumps(a.evaluation, sort_keys=True)
        assert "rounding" in s.evaluation


def test_mixed_policies_stack_apart_and_each_run_equals_itself_alone(mnist):
    """A policy decides where each loss computes (torch's CPU autocast: naive in float16, fused in float32), so
    runs of two policies never share a stack, and a stack of one policy whose losses compute in different dtypes
    (float32 logits for fused, float16 for naive) still gives each run its numbers alone."""
    cpu = [cfg(dtype="float16", precision="mixed", framework="torch", mixed_policy="autocast-cpu", loss=loss, lr=lr)
           for lr in (0.5, 5.0) for loss in ("naive", "fused")]
    cuda = [replace(c, mixed_policy="autocast-cuda") for c in cpu]
    assert stack_key(cpu[0]) != stack_key(cuda[0])
    _, stories = _check_stack(mnist, cpu)
    assert stories == {True, False}  # a healthy run and a broken one among them

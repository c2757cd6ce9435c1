"""The NaN accounting step by step on hand-made logits, with the exact report each step must leave (issue 23's
mutants): infinite losses counted, the first underflow step kept, nothing counted by default, the per-step
records' flags, and the dynamic loss scaler's growth after exactly 2,000 finite steps."""

import math

import numpy as np
import pytest

from mnist_cli.engine.base import Accounting, NanReport, step_record
from mnist_cli.engine.half import LossScaler
from mnist_cli.settings import LossScale

K = 10
CALM = np.zeros((2, K), np.float32)  # gap 0: healthy, nothing to count
FINITE_GB = np.zeros(K, np.float32)


def _row(*pairs) -> np.ndarray:
    """A float32 row of K zeros with ``{index: value}`` set."""
    z = np.zeros(K, np.float32)
    for i, v in pairs:
        z[i] = v
    return z


def test_a_fresh_report_counts_nothing():
    assert NanReport().to_dict() == {
        "steps_nan_loss": 0, "steps_inf_loss": 0, "steps_nonfinite_grad": 0, "first_nan_loss_step": None,
        "first_inf_loss_step": None, "first_nonfinite_grad_step": None, "params_nonfinite": False,
        "first_nonfinite_params_step": None, "underflow_probs": 0, "steps_with_underflow": 0,
        "first_underflow_step": None, "max_logit_gap": 0.0, "overflow_logits": 0, "first_overflow_step": None,
        "steps_skipped": 0, "first_skipped_step": None, "loss_scale": None, "any_nonfinite": False,
        "first_nonfinite_step": None}


def _run() -> Accounting:
    """Six steps whose every count is known by hand."""
    acct = Accounting("float32", K, steps=6)
    idx, y = np.array([0, 1]), np.array([0, 1])
    # 1: calm
    assert acct.record(1, 0.5, CALM, FINITE_GB, idx, y) is False
    # 2: an infinite loss, gradient finite
    assert acct.record(2, math.inf, CALM, FINITE_GB, idx, y) is True
    # 3: exp(-200) underflows in float32 (below 1.4e-45): one probability exactly 0, gap 200
    z3 = np.stack([_row((1, -200.0)), _row()])
    assert acct.record(3, 1.0, z3, FINITE_GB, idx, y) is False
    # 4: a -inf logit: its probability is 0 and it is an overflowed logit; gap inf; gradient NaN
    z4 = np.stack([_row((2, -np.inf)), _row((0, -200.0), (5, -200.0))])
    gb4 = FINITE_GB.copy()
    gb4[3] = np.nan
    assert acct.record(4, 2.0, z4, gb4, idx, y) is True
    # 5: a NaN loss
    assert acct.record(5, math.nan, CALM, FINITE_GB, idx, y) is True
    # 6: the engine says the gradient overflowed although gb is finite
    assert acct.record(6, 0.25, CALM, FINITE_GB, idx, y, grad_finite=False) is True
    return acct


def test_the_report_of_six_hand_made_steps():
    acct = _run()
    assert acct.nan.to_dict() == {
        "steps_nan_loss": 1, "steps_inf_loss": 1, "steps_nonfinite_grad": 2, "first_nan_loss_step": 5,
        "first_inf_loss_step": 2, "first_nonfinite_grad_step": 4, "params_nonfinite": False,
        "first_nonfinite_params_step": None, "underflow_probs": 1 + 3, "steps_with_underflow": 2,
        "first_underflow_step": 3, "max_logit_gap": math.inf, "overflow_logits": 1, "first_overflow_step": 4,
        "steps_skipped": 0, "first_skipped_step": None, "loss_scale": None, "any_nonfinite": True,
        "first_nonfinite_step": 2}
    assert acct.nonfinite_steps == 4
    assert acct.snapshot.step == 2 and acct.snapshot.loss_scale is None
    assert list(acct.bad_grad) == [False, False, False, True, False, True]


def test_the_per_step_records_flags():
    acct = _run()
    losses = [0.5, math.inf, 1.0, 2.0, math.nan, 0.25]
    records = [step_record(s, loss, acct) for s, loss in enumerate(losses, 1)]
    flags = [(r["step"], r["nan_loss"], r["inf_loss"], r["nonfinite_grad"]) for r in records]
    assert flags == [(1, False, False, False), (2, False, True, False), (3, False, False, False),
                     (4, False, False, True), (5, True, False, False), (6, False, False, True)]
    assert all(set(r) == {"step", "loss", "nan_loss", "inf_loss", "nonfinite_grad"} for r in records)
    assert step_record(2, -math.inf, acct)["inf_loss"] is True


def test_records_carry_the_loss_scale_and_the_skip_with_a_scaler():
    acct = Accounting("float32", K, steps=3)
    scaler = LossScaler(LossScale("dynamic"))
    assert acct.skip(1, scaler, True) is False
    assert step_record(1, 0.5, acct) == {"step": 1, "loss": 0.5, "nan_loss": False, "inf_loss": False,
                                               "nonfinite_grad": False, "loss_scale": 65536.0, "skipped": False}
    assert acct.skip(2, scaler, False) is True
    assert step_record(2, 0.5, acct)["loss_scale"] == 32768.0 and step_record(2, 0.5, acct)["skipped"] is True
    assert (acct.nan.steps_skipped, acct.nan.first_skipped_step) == (1, 2)
    assert acct.skip(3, scaler, False) is True
    assert (acct.nan.steps_skipped, acct.nan.first_skipped_step, acct.nan.loss_scale) == (2, 2, 16384.0)


def test_the_first_underflow_step_is_the_first_one():
    acct = Accounting("float32", K, steps=3)
    z = np.stack([_row((1, -200.0))])
    for step in (2, 3):
        acct.record(step, 1.0, z, FINITE_GB, np.array([0]), np.array([0]))
    assert (acct.nan.first_underflow_step, acct.nan.steps_with_underflow, acct.nan.underflow_probs) == (2, 2, 2)


def test_retire_accounts_every_later_step_as_nan():
    acct = Accounting("float32", K, steps=5)
    acct.check_params(2, False)
    acct.check_params(3, False)
    acct.retire(2)
    nan = acct.nan
    assert (nan.steps_nan_loss, nan.first_nan_loss_step, nan.steps_nonfinite_grad, nan.first_nonfinite_grad_step) == \
        (3, 3, 3, 3)
    assert (nan.params_nonfinite, nan.first_nonfinite_params_step) == (True, 2)
    assert list(acct.bad_grad) == [False, False, True, True, True]


def test_halts_only_with_stop_on_nan():
    assert Accounting("float32", K, 1, stop_on_nan=True).halts(True) is True
    assert Accounting("float32", K, 1, stop_on_nan=True).halts(False) is False
    assert Accounting("float32", K, 1).halts(True) is False


def test_a_fresh_dynamic_scaler_grows_after_exactly_2000_finite_steps():
    scaler = LossScaler(LossScale("dynamic"))
    assert scaler.scale == 2.0**16
    for _ in range(1999):
        assert scaler.update(True) is False
    assert scaler.scale == 2.0**16
    scaler.update(True)
    assert scaler.scale == 2.0**17
    for _ in range(1999):
        scaler.update(True)
    assert scaler.scale == 2.0**17
    assert scaler.update(False) is True and scaler.scale == 2.0**16  # a back-off restarts the count
    for _ in range(1999):
        scaler.update(True)
    assert scaler.scale == 2.0**16
    scaler.update(True)
    assert scaler.scale == 2.0**17


def test_fifteen_back_offs_from_2_16_reach_2():
    scaler = LossScaler(LossScale("dynamic"))
    for _ in range(15):
        assert scaler.update(False) is True
    assert scaler.scale == 2.0 and scaler.scale.dtype == np.float32


@pytest.mark.parametrize("how, scale, active", [(LossScale("fixed", 1024), 1024.0, True),
                                                (LossScale("none"), 1.0, False)])
def test_fixed_and_no_scaling(how, scale, active):
    scaler = LossScaler(how)
    assert scaler.active is active
    for _ in range(2001):
        scaler.update(True)
    assert scaler.update(False) is active  # a fixed scale skips the step, no scaling skips nothing
    assert scaler.scale == scale


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_half_engines_block_accounting_is_record_run_by_run(dtype):
    """``LowPrecisionSGD`` accounts a stack's step at once (``_account``: gaps found in float32 and rounded to the
    dtype, zero probabilities counted in all rows of a run past the healthy gap); each run's report and snapshot
    must be what :meth:`Accounting.record` gives on the logits as the run's loss saw them, step by step. Logits
    whose float32 gap and its rounding to the dtype lie on either side of the healthy gap, zero probabilities, inf
    and NaN logits; a pure stack, and a mixed one whose naive run computes in the dtype and fused run in float32."""
    from mnist_cli.engine.base import run_accounting
    from mnist_cli.engine.half import LowPrecisionSGD
    from mnist_cli.losses import softmax
    from mnist_cli.model import Model
    from mnist_cli.rounding import DTYPES, round_to
    from mnist_cli.settings import TrainConfig

    low = DTYPES[dtype]
    cpu = dict(dtype=dtype, precision="mixed", framework="torch", mixed_policy="autocast-cpu")
    blocks = [[TrainConfig(dtype=dtype, loss="naive"), TrainConfig(dtype=dtype, loss="clipped")],  # a stack each
              [TrainConfig(**cpu, loss="naive"), TrainConfig(**cpu, loss="fused")]]  # naive in the dtype, fused not
    d, k, B, steps = 3, 10, 8, 4
    rng = np.random.default_rng(5)
    for stack in blocks:
        accts = [run_accounting(c, steps, k) for c in stack]
        refs = [run_accounting(c, steps, k) for c in stack]
        model = Model(np.zeros((d, k), np.float32), np.zeros(k, np.float32))
        engine = LowPrecisionSGD(np.zeros((B, d), np.uint8), np.zeros(B, np.intp), model, stack, accts)
        H = max(a.healthy_gap for a in accts)
        for step in range(1, steps + 1):
            z = round_to(rng.uniform(-1, 1, (len(stack), B, k)).astype(np.float32) * np.float32(2 * H), low)
            if step == 1:  # every gap 0 but one, max - min, whose rounding to the dtype crosses the healthy gap
                z[:] = 0
                h0 = float(low.type(H))  # the dtype's nearest to H, and its spacing there
                half_ulp = float(np.spacing(np.float32(h0))) * 2.0 ** (24 - (11 if dtype == "float16" else 8)) / 2
                z[:, 0, 1] = -h0
                z[:, 0, 2] = low.type(abs(H - h0 - half_ulp) / 2 + min(H - h0, half_ulp))  # max - min: exact in
                # float32, on one side of H, rounded to the dtype on the other
            if step == 2:
                z[:, 1, 2], z[-1, 3, 4] = np.inf, np.nan
            seen = [engine._as_seen(z[r], engine.run_low[r]) for r in range(len(stack))]
            p = np.stack([softmax(s, None if c.framework == "numpy" else c.framework).astype(z.dtype)
                          for s, c in zip(seen, stack)])
            loss = np.array([np.nan if step == 3 else 1.0] * len(stack), np.float32)
            grad_ok = np.array([step != 4] * len(stack))
            idx, y = np.arange(B), rng.integers(0, k, B)
            with np.errstate(all="ignore"):  # as the engines run: inf and NaN are results here
                bad = engine._account(step, z, loss, p, grad_ok, idx, y)
                wants = [ref.record(step, float(loss[r]), seen[r], np.zeros(k), idx, y, grad_finite=bool(grad_ok[r]),
                                    p=p[r]) for r, ref in enumerate(refs)]
            for r, (ref, want) in enumerate(zip(refs, wants)):
                assert bool(bad[r]) == want
                assert accts[r].nan.to_dict() == ref.nan.to_dict()
        for got, want in zip(accts, refs):
            assert got.nan.to_dict() == want.nan.to_dict()
            assert got.nan.underflow_probs > 0 and got.nan.overflow_logits > 0
            assert got.snapshot.step == want.snapshot.step == 3  # the first NaN loss
            np.testing.assert_array_equal(got.snapshot.logits.astype(np.float32), want.snapshot.logits.astype(np.float32))
            assert got.snapshot.logits.dtype == want.snapshot.logits.dtype

"""The words about a first non-finite step (:mod:`mnist_cli.report.explain`): each loss has its own,
an unknown loss has none (a KeyError, never another loss's words), and the sentences follow the numbers."""

import numpy as np
import pytest

from mnist_cli.engine import Snapshot
from mnist_cli.forensics import explain
from mnist_cli.report.explain import LOSS_PROSE, chain_text, format_explanation, half_backward_text, summary_text
from mnist_cli.settings import LOSS_NAMES


def zero_probability_batch() -> Snapshot:
    """Two examples; in the first, label 2 leads by 150 (> float32's 104): nine probabilities are exactly 0."""
    row = [0.0] * 10
    row[2], row[7] = 150.0, -5.0
    return Snapshot(step=3, indices=np.array([10, 11]), labels=np.array([2, 4]),
                    logits=np.array([row, [0.0] * 10], np.float32))


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_has_its_prose(loss):
    assert loss in LOSS_PROSE, f"mnist_cli.report.explain.LOSS_PROSE has no entry for the loss {loss!r}"
    e = explain(zero_probability_batch(), "float32", loss)
    prose = LOSS_PROSE[loss]
    assert e["summary"].endswith(f", {prose.turned(e)}.")
    assert set(e["chain"]) == {"loss", "gradient"} and all(e["chain"].values())
    text = format_explanation(e)
    assert ("  fix: " in text) == (prose.fix is not None)


def test_each_loss_words_the_same_batch_its_own_way():
    e = {loss: explain(zero_probability_batch(), "float32", loss) for loss in LOSS_NAMES}
    assert len({x["chain"]["loss"] for x in e.values()}) == len(LOSS_NAMES)
    assert len({x["chain"]["gradient"] for x in e.values()}) == len(LOSS_NAMES)
    assert "0 * -inf = NaN" in e["naive"]["chain"]["loss"] and "and log() turned each 0" in e["naive"]["summary"]
    assert "never logged" in e["fused"]["chain"]["loss"] and "never takes log(p)" in e["fused"]["summary"]
    assert "biased" in e["clipped"]["chain"]["loss"] and "clip() hid them" in e["clipped"]["summary"]


def test_an_unknown_loss_has_no_words():
    e = explain(zero_probability_batch(), "float32", "naive")
    with pytest.raises(KeyError):
        chain_text({**e["culprits"][0], "logits_finite": True}, "hinge")
    with pytest.raises(KeyError):  # non-finite logits read the same for every loss, but only for a known one
        chain_text({"logits_finite": False}, "hinge")
    with pytest.raises(KeyError):
        summary_text({**e, "loss": "hinge"})
    with pytest.raises(KeyError):
        format_explanation({**e, "loss": "hinge"})


@pytest.mark.parametrize("setting, scale, after", [
    ("dynamic", 65536.0, "the loss scaler skipped this update and halved the scale: this is how dynamic loss scaling "
                         "finds a scale that fits."),
    ("1024", 1024.0, "the loss scaler skipped this update (a fixed scale never changes)."),
    ("none", None, "with no loss scaler the non-finite gradient reached the weights."),
])
def test_half_backward_sentence_names_the_product_and_the_scaler(setting, scale, after):
    """Every number chosen here: the sentence of a mixed-precision step whose half backward product overflowed."""
    h = {"loss_scale": scale, "dtype": "float16", "dtype_max": 65504.0}
    scaled = f" scaled by the loss scale {scale:.1f}" if scale else ""
    assert half_backward_text({"step": 4, "loss": "naive"}, h, setting) == (
        "At step 4 (naive loss, float16 mixed precision) every example's loss and dL/dz were finite in float32, but "
        f"the backward product dL/dW = x.T @ dL/dz{scaled}, computed in float16, passed the largest float16 (65504) "
        f"and rounded to infinity (overflow in the half-precision product, not underflow): {after}")

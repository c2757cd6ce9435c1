"""``evaluate --framework`` and ``predict --framework`` (issue 19): a saved model scored as a framework computes,
and the report says which profile computed."""

import json

import numpy as np
import pytest

from mnist_cli.errors import ConfigError
from mnist_cli.evaluate import evaluate_file
from mnist_cli.losses import softmax
from mnist_cli.model import Model


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory, mnist):
    """A model whose test logits have gaps between TF's float32 underflow limit (87.3) and IEEE's (104):
    a trained model's weights times 6."""
    from mnist_cli.engine import train
    from mnist_cli.settings import TrainConfig

    r = train(mnist.train_images, mnist.train_labels, TrainConfig(steps=200, train_limit=20000))
    path = tmp_path_factory.mktemp("wide") / "wide.npz"
    Model(r.model.W * 6, r.model.b * 6, dict(r.model.meta)).save(path)
    return path


def test_evaluate_as_tensorflow_flushes_probabilities_ieee_keeps(cli, wide_model):
    docs = {}
    for fw in ("numpy", "tensorflow", "torch"):
        r = cli("evaluate", wide_model, "--framework", fw, "--json")
        assert r.exit_code == 0, r.output
        docs[fw] = json.loads(r.output)
        assert docs[fw]["evaluated_as"]["framework"] == docs[fw]["framework"]["framework"] == fw
    zeros = {fw: d["argmax"]["zero_probs"] for fw, d in docs.items()}
    assert zeros["tensorflow"] > zeros["numpy"] == zeros["torch"] > 0  # float32: torch does not flush
    assert docs["tensorflow"]["accuracy"] == docs["numpy"]["accuracy"]  # argmax(logits): no subnormal logit here
    default = json.loads(cli("evaluate", wide_model, "--json").output)
    assert default["evaluated_as"]["framework"] == "numpy" and default["loss"] == docs["numpy"]["loss"]
    text = cli("evaluate", wide_model, "--framework", "tensorflow").output
    assert "computed as                        tensorflow (tensorflow-cpu 2.21.0" in text


def test_a_model_is_evaluated_and_predicted_as_its_own_framework_by_default(cli, wide_model, tmp_path):
    """A model trained under TensorFlow's profile is scored as TensorFlow computes unless --framework says
    otherwise: what train reported of it, not the plain IEEE numbers."""
    m = Model.load(wide_model)
    meta = json.loads(json.dumps(m.meta))
    meta["config"]["framework"] = "tensorflow"
    tf_model = tmp_path / "tf.npz"
    Model(m.W, m.b, meta).save(tf_model)
    doc = json.loads(cli("evaluate", tf_model, "--json").output)
    as_tf = json.loads(cli("evaluate", wide_model, "--framework", "tensorflow", "--json").output)
    assert doc["evaluated_as"]["framework"] == "tensorflow"
    assert doc["argmax"] == as_tf["argmax"] and doc["loss"] == as_tf["loss"]
    as_numpy = json.loads(cli("evaluate", tf_model, "--framework", "numpy", "--json").output)
    assert as_numpy["argmax"]["zero_probs"] < doc["argmax"]["zero_probs"]  # the flushed probabilities
    r = cli("predict", tf_model, "--index", "0", "--json")
    assert json.loads(r.output)["computed_as"]["framework"] == "tensorflow"


def test_the_flushed_zeros_are_the_probabilities_below_the_smallest_normal(mnist, wide_model):
    """TF's extra zeros are exactly the probabilities that IEEE float32 keeps as subnormals: ``p = e / s`` with
    ``s >= 1``, so a normal p has a normal e (never flushed) and a subnormal p is flushed."""
    m = Model.load(wide_model)
    z = m.logits(mnist.test_images, 1.0)
    with np.errstate(all="ignore"):
        p32 = softmax(z)  # the plain IEEE softmax
    report = evaluate_file(wide_model, lambda: mnist, framework="tensorflow")
    sub = int(np.count_nonzero((p32 > 0) & (p32 < np.finfo(np.float32).smallest_normal)))
    assert sub > 0 and report["argmax"]["zero_probs"] == int(np.count_nonzero(p32 == 0)) + sub


def test_an_unknown_framework_is_refused_before_the_model_is_read(tmp_path):
    with pytest.raises(ConfigError):
        evaluate_file(tmp_path / "missing.npz", lambda: None, framework="jax")


def test_predict_names_the_framework(cli, wide_model):
    r = cli("predict", wide_model, "--index", "0,1", "--framework", "tensorflow", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["computed_as"]["framework"] == "tensorflow"
    assert ", as tensorflow):" in cli("predict", wide_model, "--index", "0", "--framework", "tensorflow").output


def test_a_float16_model_scored_as_tensorflow_rounds_its_dense_layer_twice(mnist, tmp_path):
    """TensorFlow's float16 ``Dense`` rounds ``x @ W`` and then ``+ b`` (its training does: ``Rules.linear``), so its
    evaluation must too; the other profiles round ``x @ W + b`` once. The two differ on some logits here."""
    from mnist_cli.rounding import Inputs, linear
    from mnist_cli.scoring import logits_and_evaluation, predict_logits
    from mnist_cli.threads import blas_pinned

    rng = np.random.default_rng(0)
    m = Model(rng.normal(0, 0.05, (784, 10)).astype(np.float16), rng.normal(0, 3, 10).astype(np.float16),
              {"config": {"dtype": "float16"}})
    images = mnist.test_images[:2000]
    x = Inputs(1.0, "float16", len(images), 784)(images)
    W, b = m.W.astype(np.float32), m.b.astype(np.float32)
    with blas_pinned():  # as scoring computes the product (a threaded sgemm may sum in another order)
        twice, once = [linear(x, W, b, "float16", bias_after=after).astype(np.float16) for after in (True, False)]
    assert np.count_nonzero(twice != once) > 0  # the test can tell them apart
    np.testing.assert_array_equal(predict_logits(m, images, 1.0, framework="tensorflow"), twice)
    for fw in (None, "numpy", "torch"):
        np.testing.assert_array_equal(predict_logits(m, images, 1.0, framework=fw), once)
    z, _ = logits_and_evaluation(m, images, mnist.test_labels[:2000], 1.0, 1, "tensorflow")
    np.testing.assert_array_equal(z, twice)

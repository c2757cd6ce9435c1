"""Threads never change a number: BLAS pinned to one thread, ``--threads`` bit-identical, provenance recorded.

The subprocess tests set ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` in a child's environment only,
to show that what a user has set there changes nothing; the suite itself never sets them.
"""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mnist_cli.compare import CompareConfig, run_compare
from mnist_cli.compare_document import to_document
from mnist_cli.engine import TrainConfig, train
from mnist_cli.scoring import predict_logits
from mnist_cli.threads import blas_pinned, provenance

ROOT = Path(__file__).resolve().parents[1]


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_blas_runs_on_one_thread_inside_training_and_is_restored_after(mnist):
    before = _blas_threads()
    seen = []
    train(mnist.train_images, mnist.train_labels, TrainConfig(steps=20),
          progress=lambda step, loss, bad: seen.append(_blas_threads()), progress_every=10)
    assert seen and all(threads and set(threads) == {1} for threads in seen)
    assert _blas_threads() == before  # the caller's setting is given back


def test_blas_pinning_nests():
    before = _blas_threads()
    with blas_pinned():
        with blas_pinned():
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}  # the inner exit does not restore early
    assert _blas_threads() == before


MINI_BATCH = {  # the chaotic raw-pixel run is where BLAS threads changed the accuracy (0.8863 vs 0.8768)
    "fused raw pixels": dict(loss="fused", input_scale=255, steps=400),
    "naive breaks": dict(loss="naive", input_scale=255, steps=20),
    "batch 1300 in row groups": dict(batch_size=1300, steps=10, train_limit=20000),
}


@pytest.mark.parametrize("kw", MINI_BATCH.values(), ids=MINI_BATCH.keys())
def test_every_number_is_the_same_for_any_thread_count(mnist, kw):
    runs = [train(mnist.train_images, mnist.train_labels, TrainConfig(threads=t, **kw)) for t in (1, 2, 3)]
    first = runs[0]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.losses, first.losses)
        np.testing.assert_array_equal(other.model.W, first.model.W)
        np.testing.assert_array_equal(other.model.b, first.model.b)
        assert other.nan.to_dict() == first.nan.to_dict()
        assert (other.order_digest, other.init_digest) == (first.order_digest, first.init_digest)
        assert other.model.meta["provenance"]["threads"] != first.model.meta["provenance"]["threads"]


def test_predict_logits_is_bit_identical_for_any_thread_count(mnist):
    model = train(mnist.train_images, mnist.train_labels, TrainConfig(steps=50, init="normal")).model
    one = predict_logits(model, mnist.test_images, 255.0, block=1000, threads=1)
    for threads in (2, 3, 16):  # 16 > the 10 blocks: one block per thread
        np.testing.assert_array_equal(predict_logits(model, mnist.test_images, 255.0, block=1000, threads=threads), one)


def test_compare_documents_agree_for_any_thread_count(mnist):
    config = CompareConfig(lrs=(0.5, 5.0), input_scales=(1.0, 255.0), steps=60, train_limit=3000)
    docs = []
    for threads in (1, 3):
        result = run_compare(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels,
                             replace(config, threads=threads))
        doc = to_document(result)
        assert doc["provenance"]["threads"] == doc["settings"]["threads"] == threads
        for key in ("seconds", "provenance", "settings"):
            doc.pop(key)
        for s in doc["scenarios"]:
            for run in s["runs"].values():
                run.pop("seconds")
        docs.append(json.dumps(doc, default=str, sort_keys=True))
    assert docs[0] == docs[1]


_CHILD = """
import hashlib, json, sys
from mnist_cli.data import load_mnist
from mnist_cli.engine import TrainConfig, train
d = load_mnist(sys.argv[1], offline=True)
out = {}
for name, cfg in {"mini": TrainConfig(input_scale=255, steps=300),
                  "full": TrainConfig(full_batch=True, steps=3, train_limit=12000, threads=int(sys.argv[2]))}.items():
    r = train(d.train_images, d.train_labels, cfg)
    h = hashlib.sha256(r.model.W.tobytes() + r.model.b.tobytes() + r.losses.tobytes()).hexdigest()
    out[name] = [h, r.order_digest, r.nan.to_dict()]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_blas_environment_variables_change_nothing(mnist_data_dir):
    """What a user set for BLAS (threads via OpenBLAS or OpenMP variables) gives the same bits."""
    outputs = []
    for env_extra, threads in (({}, 1), ({"OPENBLAS_NUM_THREADS": "2"}, 2), ({"OMP_NUM_THREADS": "3"}, 3),
                               ({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}, 2)):
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(mnist_data_dir), str(threads)],
                              env={**env, **env_extra}, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(json.loads(proc.stdout))
    assert all(o == outputs[0] for o in outputs[1:])


def test_provenance_names_threads_blas_numpy_and_cpu():
    p = provenance(2)
    assert p["threads"] == 2 and p["blas_threads"] == 1
    assert p["numpy"] == np.__version__ and p["cpu"] and p["python"]
    assert p["blas"] and all(b["library"] and b["version"] for b in p["blas"])


def test_train_records_provenance_in_json_metrics_and_model_and_evaluate_shows_it(cli, tmp_path):
    model, metrics = tmp_path / "m.npz", tmp_path / "m.jsonl"
    r = cli("train", "--steps", "30", "--threads", "2", "--save", str(model), "--metrics-out", str(metrics), "--json")
    assert r.exit_code == 0, r.output
    prov = json.loads(r.output)["provenance"]
    assert prov["threads"] == 2 and prov["blas_threads"] == 1 and prov["numpy"] == np.__version__
    assert json.loads(metrics.read_text().splitlines()[-1])["provenance"] == prov
    r = cli("evaluate", str(model), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["training_provenance"] == prov and report["provenance"]["threads"] == 1
    r = cli("evaluate", str(model))
    kernel = prov["blas"][0]["kernel"] or prov["blas"][0]["library"]
    assert "model trained with   2 threads (BLAS 1)" in r.output and kernel in r.output
    assert f"numpy {np.__version__}" in r.output


def test_threads_flag_and_environment_variable(cli):
    r = cli("train", "--steps", "5", "--json", env={"MNIST_SOFTMAX_THREADS": "3"})
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["provenance"]["threads"] == 3
    r = cli("train", "--steps", "5", "--threads", "0")
    assert r.exit_code == 2 and "--threads" in r.output
    r = cli("compare", "--smoke", "--threads", "2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["settings"]["threads"] == 2


def test_saved_models_are_bit_identical_for_any_thread_count(cli, tmp_path):
    digests = set()
    for threads in ("1", "2"):
        path = tmp_path / f"t{threads}.npz"
        r = cli("train", "--full-batch", "--steps", "2", "--train-limit", "12000", "--threads", threads,
                "--save", str(path))
        assert r.exit_code == 0, r.output
        with np.load(path) as npz:
            digests.add(hashlib.sha256(npz["W"].tobytes() + npz["b"].tobytes()).hexdigest())
    assert len(digests) == 1

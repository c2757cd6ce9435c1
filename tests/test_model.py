"""Model files: round trip, and every malformed or malicious file refused with a clear error."""

import json
import pickle
import re
import zipfile

import numpy as np
import pytest
from conftest import as_the_cli_says

from mnist_cli.errors import ModelFileError, OutputError
from mnist_cli.model import MAX_MODEL_BYTES, Model


def make_model(dtype=np.float32):
    rng = np.random.default_rng(0)
    return Model(rng.standard_normal((784, 10)).astype(dtype), rng.standard_normal(10).astype(dtype),
                 {"config": {"loss": "fused", "input_scale": 1.0}, "steps": 5})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(tmp_path, dtype):
    m = make_model(dtype)
    path = m.save(tmp_path / "m.npz")
    back = Model.load(path)
    np.testing.assert_array_equal(back.W, m.W)
    np.testing.assert_array_equal(back.b, m.b)
    assert back.W.dtype == dtype and back.meta == m.meta
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temp file left behind


def test_nan_weights_round_trip(tmp_path):
    m = make_model()
    m.W[3, 4] = np.nan
    back = Model.load(m.save(tmp_path / "nan.npz"))
    assert np.isnan(back.W[3, 4]) and not back.finite


def test_save_writes_exactly_the_name_given(tmp_path):
    """Issue 14: `--save model` writes `model`, not `model.npz` (NumPy's habit): the path a user gave."""
    saved = make_model().save(tmp_path / "model")
    assert saved == tmp_path / "model" and saved.is_file() and not (tmp_path / "model.npz").exists()
    assert Model.load(saved).W.shape == (784, 10)


class Boom:
    def __reduce__(self):
        return (open, (str(Boom.marker), "w"))


def test_pickle_payload_never_executes(tmp_path):
    Boom.marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, W=np.zeros((784, 10), np.float32), b=np.zeros(10, np.float32),
             meta=np.array([Boom()], dtype=object))
    with pytest.raises(ModelFileError, match="pickled"):
        Model.load(path)
    assert not Boom.marker.exists()


def test_raw_pickle_file_refused(tmp_path):
    Boom.marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelFileError):
        Model.load(path)
    assert not Boom.marker.exists()


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"W": np.zeros((784, 10)), "b": np.zeros(10)}, "expected"),  # no meta
        ({"W": np.zeros((784, 10)), "b": np.zeros(10), "meta": np.array("{}"), "x": np.zeros(1)}, "expected"),
        ({"W": np.zeros((10, 784)), "b": np.zeros(10), "meta": np.array("{}")}, r"W\(10, 784\)"),
        ({"W": np.zeros((784, 10)), "b": np.zeros(11), "meta": np.array("{}")}, "expected W"),
        ({"W": np.zeros((784, 10), np.int32), "b": np.zeros(10, np.int32), "meta": np.array("{}")}, "dtypes"),
        ({"W": np.zeros((784, 10), np.float32), "b": np.zeros(10), "meta": np.array("{}")}, "dtypes"),
        ({"W": np.zeros((784, 10)), "b": np.zeros(10), "meta": np.array("not json")}, "JSON"),
        ({"W": np.zeros((784, 10)), "b": np.zeros(10), "meta": np.array("[1, 2]")}, "JSON object"),
        ({"W": np.zeros((784, 10)), "b": np.zeros(10), "meta": np.zeros(3)}, "metadata"),
    ],
)
def test_misshapen_models_refused(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match=match):
        Model.load(path)


def test_not_a_zip_and_missing_and_too_large(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(ModelFileError, match="not a valid"):
        Model.load(junk)
    with pytest.raises(ModelFileError, match="cannot read model"):
        Model.load(tmp_path / "missing.npz")
    big = tmp_path / "big.npz"
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("W.npy", b"\0" * (MAX_MODEL_BYTES + 1))
    with pytest.raises(ModelFileError, match="cap"):
        Model.load(big)


def test_save_to_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as err:
        make_model().save(blocker / "m.npz")  # a directory that is a regular file: fails even for root
    assert re.match(r"cannot write .*choose a writable --save path", as_the_cli_says(err.value))


def test_meta_is_strict_json(tmp_path):
    m = make_model()
    m.meta["nan"] = {"max_logit_gap": float("nan"), "gap": float("inf")}
    path = m.save(tmp_path / "m.npz")
    with np.load(path) as npz:
        text = str(npz["meta"])
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    back = Model.load(path)
    assert back.meta["config"] == m.meta["config"]
    assert back.meta["nan"] == {"max_logit_gap": "NaN", "gap": "Infinity"}  # float() reads them back


@pytest.mark.slow
def test_decompression_bomb_refused_before_reading(tmp_path):
    import tracemalloc

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, W=np.zeros((10000, 10000), np.float32), b=np.zeros(10, np.float32),
                        meta=np.array("{}"))
    assert path.stat().st_size < MAX_MODEL_BYTES  # small on disk: only the unpacked size gives it away
    tracemalloc.start()
    with pytest.raises(ModelFileError, match="unpacks to .* over the"):
        Model.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20


def test_header_shape_checked_before_the_array_is_read(tmp_path):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, W=np.zeros((784, 1000), np.float32), b=np.zeros(10, np.float32), meta=np.array("{}"))
    with pytest.raises(ModelFileError, match=r"W\(784, 1000\)"):
        Model.load(path)


def test_unusual_compression_refused(tmp_path):
    good = make_model().save(tmp_path / "good.npz")
    odd = tmp_path / "odd.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(odd, "w", compression=zipfile.ZIP_LZMA) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    with pytest.raises(ModelFileError, match="compressed"):
        Model.load(odd)


@pytest.mark.parametrize("config", [[1], {"input_scale": "abc"}, {"input_scale": None}, {"input_scale": 0},
                                    {"input_scale": -255}, {"input_scale": True}])
def test_bad_input_scale_in_metadata_refused(tmp_path, config):
    m = make_model()
    m.meta["config"] = config
    with pytest.raises(ModelFileError, match="input_scale"):
        Model.load(m.save(tmp_path / "m.npz"))


def test_input_scale_read_from_metadata(tmp_path):
    m = make_model()
    m.meta["config"]["input_scale"] = 255
    assert Model.load(m.save(tmp_path / "m.npz")).input_scale == 255.0


@pytest.mark.parametrize("meta, reason", [
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "metadata that is not a JSON object"),  # RecursionError in json
    ("[" * 100_000 + "]" * 100_000, "metadata that is not a JSON object"),
    ('{"config": {"input_scale": ' + "9" * 400 + "}}", "without a valid config.input_scale"),  # OverflowError
])
def test_hostile_metadata_is_a_one_line_error(tmp_path, meta, reason):
    from click.testing import CliRunner

    from mnist_cli.cli import main

    m = make_model()
    path = tmp_path / "m.npz"
    np.savez(path, W=m.W, b=m.b, meta=np.array(meta))
    with pytest.raises(ModelFileError, match=reason):
        Model.load(path)
    result = CliRunner().invoke(main, ["evaluate", str(path), "--data-dir", str(tmp_path / "none"), "--offline"])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1 and reason in result.output, result.output


def test_save_onto_a_fifo_writes_into_it_and_keeps_the_fifo(tmp_path):
    import os
    import stat
    import threading

    fifo = tmp_path / "model-pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    m = make_model()
    assert m.save(fifo) == fifo  # no .npz added to a FIFO's name
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    copy = tmp_path / "copy.npz"
    copy.write_bytes(received[0])
    np.testing.assert_array_equal(Model.load(copy).W, m.W)


# --- the compute form: a field, saved and loaded ------------------------------------------------------


@pytest.mark.parametrize("form", [("float32", "pure"), ("float64", "pure"), ("float16", "mixed"), ("bfloat16", "mixed"),
                                  ("float16", "pure")])
def test_the_compute_form_is_saved_and_loaded(tmp_path, form):
    dtype, precision = form
    m = make_model().as_dtype(dtype, precision)
    assert m.form == form and m.meta == make_model().meta  # the metadata says how it was trained: untouched
    back = Model.load(m.save(tmp_path / "m.npz"))
    assert back.form == form and "compute" not in back.meta
    np.testing.assert_array_equal(back.logits(np.full((2, 784), 255, np.uint8), 1.0),
                                  m.logits(np.full((2, 784), 255, np.uint8), 1.0))


def test_the_form_is_not_read_from_the_training_settings(tmp_path):
    """A float32 model whose metadata claims a float16 mixed run computes as its saved form says."""
    m = make_model()
    m.meta["config"].update(dtype="float16", precision="mixed")
    back = Model.load(m.save(tmp_path / "m.npz"))
    assert back.form == ("float32", "pure")


def test_a_model_saved_without_a_form_computes_as_its_config_says(tmp_path):
    """Files from before the form had a key of its own: a mixed-precision model's config names it."""
    m = make_model()
    m.meta["config"].update(dtype="float16", precision="mixed")
    path = m.save(tmp_path / "old.npz")
    with np.load(path) as npz:
        meta = json.loads(str(npz["meta"]))
        del meta["compute"]
        np.savez(path, W=npz["W"], b=npz["b"], meta=np.array(json.dumps(meta)))
    assert Model.load(path).form == ("float16", "mixed")


@pytest.mark.parametrize("form", [{"dtype": "float16", "precision": "pure"}, {"dtype": "int8", "precision": "pure"},
                                  {"dtype": "float64", "precision": "mixed"}, "float16"])
def test_a_malformed_form_is_refused(tmp_path, form):
    path = make_model().save(tmp_path / "m.npz")
    with np.load(path) as npz:
        meta = json.loads(str(npz["meta"]))
        meta["compute"] = form
        np.savez(path, W=npz["W"], b=npz["b"], meta=np.array(json.dumps(meta)))
    with pytest.raises(ModelFileError, match="compute form"):
        Model.load(path)


def test_an_impossible_form_is_refused_at_construction():
    with pytest.raises(ValueError, match="mixed precision"):
        Model(np.zeros((784, 10), np.float64), np.zeros(10), compute_dtype="float16", precision="mixed")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_models_scored_together_get_each_ones_own_logits(mnist, dtype):
    """logits_of rounds each distinct input scale's inputs once per block and shares them among the models of
    that scale: every model's logits are bit for bit those it gets alone (2100 rows: two blocks)."""
    from mnist_cli.model import logits_of

    rng = np.random.default_rng(3)
    models = [Model(rng.normal(0, 0.05, (784, 10)).astype(np.float32), rng.normal(0, 1, 10).astype(np.float32),
                    {}).as_dtype(dtype) for _ in range(4)]
    scales, images = [1.0, 255.0, 1.0, 16.0], mnist.test_images[:2100]
    together = logits_of(models, scales, images)
    for m, s, z in zip(models, scales, together):
        alone, = logits_of([m], [s], images)
        assert z.dtype == alone.dtype and z.tobytes() == alone.tobytes()
    assert together[0].tobytes() != together[2].tobytes()  # the models differ, so a mix-up would show

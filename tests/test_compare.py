"""`compare` on the real MNIST: identical batches and init across losses, the measured NaN story,
the documented JSON shape, the stability map, plots, per-run curves and exit codes."""

import dataclasses
import json
import math
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import compare_document  # the documented JSON shape, stated once (tests/conftest.py)

import mnist_cli.compare as compare_mod
from mnist_cli.compare import CompareConfig, run_compare
from mnist_cli.compare_document import stability_map, to_document
from mnist_cli.errors import OutputError, SettingsError
from mnist_cli.fileio import jsonable
from mnist_cli.losses import underflow_limit
from mnist_cli.report.compare import conclusion, format_report
from mnist_cli.report.text import number_text, sparkline
from mnist_cli.scenarios import SCENARIOS

# --- the default comparison on the real data, run once ---------------------------------------------


@pytest.fixture(scope="module")
def default(mnist):
    result = run_compare(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels,
                         CompareConfig())
    return result, to_document(result)


def scenario(doc, name):
    return next(s for s in doc["scenarios"] if s["name"] == name)


@pytest.mark.slow
def test_default_runs_the_scenario_table_with_both_losses(default):
    result, doc = default
    assert [s["name"] for s in doc["scenarios"]] == [s.name for s in SCENARIOS]
    assert len(result.runs) == 2 * len(SCENARIOS)
    assert all(list(s["runs"]) == ["naive", "fused"] for s in doc["scenarios"])
    assert doc["data"]["n_train"] == 60000 and doc["data"]["n_test"] == 10000


@pytest.mark.slow
def test_every_loss_starts_from_the_same_init_on_the_same_batches(default):
    result, doc = default
    for s in doc["scenarios"]:
        runs = list(s["runs"].values())
        assert s["same_init"] and s["same_batches"]
        assert len({r["init_digest"] for r in runs}) == 1 and len({r["order_digest"] for r in runs}) == 1
    # independent evidence: on the tutorial, naive and fused gradients agree to rounding, so their
    # per-step losses can only track each other if the batches are the same ones
    naive, fused = (r.result.losses for r in result.runs if r.cell.scenario.name == "tutorial")
    np.testing.assert_allclose(naive[:200], fused[:200], rtol=1e-4)
    assert np.ptp(naive[:200]) > 0.5  # ... and the losses do vary from batch to batch


def test_digests_change_with_the_seed_but_not_with_the_loss(mnist):
    cfg = CompareConfig(lrs=(0.5,), seeds=(0, 1), steps=20, train_limit=1000)
    doc = to_document(run_compare(mnist.train_images, mnist.train_labels, mnist.test_images[:500],
                                  mnist.test_labels[:500], cfg))
    s0, s1 = doc["scenarios"]
    assert (s0["seed"], s1["seed"]) == (0, 1) and s0["label"] == "tutorial seed=0"
    assert s0["same_batches"] and s1["same_batches"]
    assert s0["runs"]["naive"]["order_digest"] != s1["runs"]["naive"]["order_digest"]


HALF_RAW = ("f16-raw-pixels", "f16-mixed-raw")  # the scenarios where even fused breaks: float16 logits overflow


@pytest.mark.slow
def test_default_reproduces_the_measured_nan_story(default):
    _, doc = default
    raw = scenario(doc, "raw-pixels")["runs"]
    assert raw["naive"]["first_nonfinite_step"] in (2, 3)
    assert raw["naive"]["nan"]["first_nan_loss_step"] in (2, 3) and not raw["naive"]["weights_finite"]
    assert scenario(doc, "lr-5")["runs"]["naive"]["first_nonfinite_step"] is not None
    assert scenario(doc, "f64-lr-5")["runs"]["naive"]["first_nonfinite_step"] is None  # 745 > the gaps at lr 5
    for s in doc["scenarios"]:  # fused breaks only where float16 logits overflow (raw pixels), pure or mixed
        fused = s["runs"]["fused"]
        assert (fused["first_nonfinite_step"] is None) == (s["label"] not in HALF_RAW), s["label"]
    assert 2 <= scenario(doc, "f16")["runs"]["naive"]["first_nonfinite_step"] <= 100  # past a gap of 17.3
    assert scenario(doc, "f16-mixed")["runs"]["naive"]["first_nonfinite_step"] is None  # softmax in float32
    mixed_raw = scenario(doc, "f16-mixed-raw")["runs"]["fused"]["nan"]
    assert mixed_raw["first_skipped_step"] == 1 and mixed_raw["overflow_logits"] > 0  # skipped, then overflowed
    assert scenario(doc, "bf16-lr-5")["runs"]["naive"]["first_nonfinite_step"] is not None
    tut = scenario(doc, "tutorial")["runs"]
    assert tut["naive"]["first_nonfinite_step"] is None
    assert tut["naive"]["test_accuracy"] >= 0.917 and tut["fused"]["test_accuracy"] >= 0.917
    assert abs(tut["naive"]["test_accuracy"] - tut["fused"]["test_accuracy"]) <= 0.001
    assert tut["fused"]["argmax"]["differ"] == 0
    assert doc["ok"] and all(c["ok"] for c in doc["checks"])


@pytest.mark.slow
def test_stability_map_matches_the_runs(default):
    _, doc = default
    m = doc["stability_map"]
    assert m["axes"] == ["dtype", "precision", "lr", "input_scale"] and m["losses"] == ["naive", "fused"]
    for cell, s in zip(m["cells"], doc["scenarios"]):
        assert cell["first_nonfinite"] == {k: r["first_nonfinite_step"] for k, r in s["runs"].items()}
    text = format_report(doc)
    block = text[text.index("Stability map"):text.index("Forensics")]
    assert "x1  x255" in block and "float64" in block
    raw_row = next(line for line in block.splitlines() if line.split()[:3] == ["float32", "pure", "0.5"])
    assert "mixed" not in block.split("float16")[0]  # no float32/float64 "mixed" rows: the grid has none
    assert raw_row.split()[3:] == ["-", str(scenario(doc, "raw-pixels")["runs"]["naive"]["first_nonfinite_step"]),
                                   "-", "-"]


@pytest.mark.slow
def test_forensics_name_a_sample_past_the_float32_limit(default):
    _, doc = default
    f = next(f for f in doc["forensics"] if f["scenario"] == "raw-pixels")
    assert f["loss"] == "naive" and f["step"] in (2, 3) and f["dtype"] == "float32"
    c = f["culprits"][0]
    assert c["gap_max_minus_min"] > underflow_limit(np.float32) and c["underflowed_class"] in c["zero_prob_classes"]
    assert " = 0 * -inf = NaN" in c["chain"]["loss"] and "0/0" in c["chain"]["gradient"]
    fused = {f["scenario"] for f in doc["forensics"] if f["loss"] == "fused"}
    assert fused == set(HALF_RAW)  # fused needed explaining only where float16 logits overflowed
    text = format_report(doc)
    assert f"#{c['index']}" in text and "fix: the fused loss" in text


def _run(first=None, acc=0.9, differ=0, ties=0, finite=None):
    return {"first_nonfinite_step": first, "weights_finite": first is None if finite is None else finite,
            "test_accuracy": acc, "argmax": {"differ": differ, "ties_in_probs": ties}}


def _doc(scenarios, forensics=()):
    """A compare document with only what the conclusion reads, every number chosen here."""
    return {"settings": {"losses": ["naive", "fused"]}, "data": {"n_test": 10000}, "forensics": list(forensics),
            "scenarios": [{"label": label, "same_init": True, "same_batches": True, "runs": runs}
                          for label, runs in scenarios]}


def test_conclusion_is_computed_from_the_results():
    """The paragraph on a synthetic document whose every number the test chose."""
    why = {"loss": "naive", "rows_with_zero_prob": 3, "max_gap_max_minus_min": 812.5, "underflow_limit": 104.0,
           "dtype": "float32"}
    doc = _doc([("tutorial", {"naive": _run(acc=0.9187), "fused": _run(acc=0.9200)}),
                ("raw-pixels", {"naive": _run(first=2, acc=0.098), "fused": _run(acc=0.88)}),
                ("f64", {"naive": _run(acc=0.9150), "fused": _run(acc=0.9210)})], [why])
    text = conclusion(doc)
    assert "The naive loss went non-finite in 1 of 3 settings: raw-pixels (step 2)" in text
    assert "logit gaps up to 812, past the limit of 104 in float32" in text
    assert "the weights ended non-finite in 1 of them (test accuracy n/a" in text and "0.0980" not in text
    assert "The fused loss stayed finite in all 3 settings." in text
    assert "Where every loss stayed finite (2 settings), test accuracies were within 0.0060 of each other." in text
    assert "For all 5 finite models, argmax(logits) and argmax(softmax(logits)) agreed on every one of the 10000" in text
    # change a result, and the paragraph changes with it
    doc["scenarios"][0]["runs"]["naive"] = _run(acc=0.9200, differ=3, ties=3)
    doc["scenarios"][2]["runs"]["naive"] = _run(acc=0.9210)
    doc["scenarios"][1]["runs"]["naive"]["weights_finite"] = True
    other = conclusion(doc)
    assert "test accuracies were identical" in other and "differed on 3 test predictions (3 floating-point ties" in other
    assert "the weights ended non-finite" not in other
    doc["scenarios"][2]["same_batches"] = False
    assert "did not see identical init and batches in f64" in conclusion(doc)


@pytest.mark.slow
def test_conclusion_of_the_real_default_run_names_every_failure(default):
    _, doc = default
    text = doc["conclusion"]
    failed = [s["label"] for s in doc["scenarios"] if s["runs"]["naive"]["first_nonfinite_step"]]
    assert f"The naive loss went non-finite in {len(failed)} of {len(doc['scenarios'])} settings" in text
    assert all(label in text for label in failed)
    # 15 settings: the 13 of issue 18 and the two framework scenarios (issue 19)
    assert "The fused loss went non-finite in 2 of 15 settings: f16-raw-pixels (step 2), f16-mixed-raw" in text


@pytest.mark.slow
def test_document_matches_the_documented_shape(default):
    _, doc = default
    where = {"dir": "d", "verified": True, "dataset": "mnist", "title": "MNIST", "classes": list("0123456789")}
    doc = compare_document(json.dumps(jsonable({**doc, "data": {**doc["data"], **where}}), allow_nan=False))
    broken = json.loads(json.dumps(doc))
    del broken["scenarios"][0]["runs"]["naive"]["nan"]["steps_nan_loss"]
    with pytest.raises(AssertionError):  # the validator does catch a missing key
        compare_document(json.dumps(broken))


@pytest.mark.slow
def test_text_report_fits_and_holds_every_section(default):
    _, doc = default
    text = format_report(doc)
    for heading in ("tutorial (lr 0.5, input x1, float32, seed 0)", "Stability map", "Forensics", "Conclusion:",
                    # 26 + lr-2-torch's fused, lr-2-tensorflow's two (issue 19)
                    "Expectations (measured on MNIST): 29 of 29 hold."):
        assert heading in text
    long = [line for line in text.splitlines() if len(line) > 100]
    assert not long, long


def test_config_cells_and_validation():
    cells = CompareConfig(lrs=(0.5, 5), input_scales=(1, 255), seeds=(3,)).cells()
    assert [c.label for c in cells] == ["tutorial", "raw-pixels", "lr-5", "lr-5-raw"]
    assert {c.seed for c in cells} == {3}
    cell = CompareConfig(lrs=(2,)).cells()[0]
    assert cell.label == "lr=2 x1 float32" and cell.scenario is None
    for bad in (dict(losses=("hinge",)), dict(losses=()), dict(seeds=()), dict(lrs=(1, 1)), dict(lrs=(-1,)),
                dict(dtypes=("float8",)), dict(steps=0)):
        with pytest.raises(ValueError):
            CompareConfig(**bad).validate()


def test_close_sweep_values_get_distinct_labels():
    cells = CompareConfig(lrs=(0.1, 0.1000001), input_scales=(1, 1.0000001)).cells()
    assert [c.label for c in cells] == ["lr=0.1 x1 float32", "lr=0.1 x1.0000001 float32",
                                        "lr=0.1000001 x1 float32", "lr=0.1000001 x1.0000001 float32"]
    assert number_text(2.0) == "2" and number_text(1e-05) == "1e-05"
    assert number_text(1 / 3) == repr(1 / 3)


def test_cli_close_sweep_values_keep_their_own_rows_and_files(cli, tmp_path):
    out = tmp_path / "mo"
    r = cli("compare", "--lr", "0.1,0.1000001", "--steps", "5", "--train-limit", "500", "--metrics-out", str(out))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "lr=0.1000001_x1_float32-fused.jsonl", "lr=0.1000001_x1_float32-naive.jsonl",
        "lr=0.1_x1_float32-fused.jsonl", "lr=0.1_x1_float32-naive.jsonl"]
    block = r.output[r.output.index("Stability map"):r.output.index("Conclusion")]
    assert block.splitlines()[2].split() == ["0.1", "0.1000001"] * 2  # one column per lr, per loss


def test_write_metrics_refuses_two_runs_for_one_file(mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(compare_mod, "number_text", lambda x: f"{x:g}")  # the old labels: 0.1 and 0.1000001 collide
    cfg = CompareConfig(lrs=(0.1, 0.1000001), losses=("fused",), steps=2, train_limit=200, log_every=1)
    result = run_compare(mnist.train_images, mnist.train_labels, mnist.test_images[:100], mnist.test_labels[:100], cfg)
    with pytest.raises(OutputError, match="runs lr=0.1 x1 float32 / fused and lr=0.1 x1 float32 / fused would both"):
        compare_mod.write_metrics(result, tmp_path / "mo")
    assert not (tmp_path / "mo").exists()


def test_sparkline():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"  # min -> lowest bar, max -> highest, midpoint -> 4th of 8
    assert sparkline([1.0, 1.0]) == "▁▁"
    assert sparkline([float("nan")] * 3) == "×××"
    line = sparkline(list(range(100)), width=10)
    assert len(line) == 10 and line[0] == "▁" and line[-1] == "█"
    assert sparkline([1.0] * 50 + [float("inf")] * 50, width=4)[2:] == "××"


# --- the command line --------------------------------------------------------------------------------


def test_cli_smoke_passes_prints_every_section_and_writes_curves(cli, tmp_path):
    out = tmp_path / "curves"
    r = cli("compare", "--smoke", "--metrics-out", str(out), "--log-every", "10")
    assert r.exit_code == 0, r.output
    for needle in ("tutorial", "raw-pixels", "Stability map", "Forensics", "Conclusion:",
                   "Expectations (measured on MNIST): 26 of 26",
                   "= 0 * -inf = NaN", f"Wrote per-run curves: {out}"):
        assert needle in r.output
    assert "2000 training" in r.output and "200 SGD steps" in r.output
    # --metrics-out: one JSONL per run, a record every 10 steps, then the final record
    assert len(sorted(out.glob("*.jsonl"))) == 26
    lines = [json.loads(x) for x in (out / "raw-pixels-naive.jsonl").read_text().splitlines()]
    steps, final = lines[:-1], lines[-1]
    assert [x["step"] for x in steps] == list(range(10, 201, 10))
    assert all(x["nan_loss"] and x["loss"] == "NaN" for x in steps) and final["final"] is True
    assert final["first_nonfinite_step"] in (2, 3)
    tut = [json.loads(x) for x in (out / "tutorial-fused.jsonl").read_text().splitlines()]
    assert all(isinstance(x["loss"], float) and math.isfinite(x["loss"]) for x in tut[:-1])


def test_cli_smoke_json_validates(cli):
    r = cli("compare", "--smoke", "--json")
    assert r.exit_code == 0, r.output
    doc = compare_document(r.output, ["naive", "fused"])
    assert doc["ok"] and doc["settings"]["train_limit"] == 2000 and doc["data"]["verified"] is True


def test_cli_smoke_exits_4_when_an_expectation_fails(cli, monkeypatch):
    wrong = tuple(dataclasses.replace(s, naive="fails", by_step=3) if s.name == "tutorial" else s for s in SCENARIOS)
    monkeypatch.setattr(compare_mod, "SCENARIOS", wrong)
    r = cli("compare", "--smoke", "--losses", "naive")
    assert r.exit_code == 4, r.output
    assert "FAILED tutorial / naive: expected non-finite by step 3, observed finite at every step" in r.output


@pytest.mark.parametrize("args", [["--smoke", "--losses", "clipped"], ["--check", "--lr", "2", "--losses", "naive"],
                                  ["--check", "--smoke", "--losses", "clipped,naive", "--dtype", "float64,float32",
                                   "--lr", "0.7"]])
def test_cli_check_that_checks_nothing_exits_4_before_any_run(cli, args, tmp_path):
    # this data dir does not exist and --offline forbids fetching: touching the data would exit 1
    r = cli("compare", *args, data_dir=tmp_path / "none")
    assert r.exit_code == 4, r.output
    flag = "--smoke" if "--smoke" in args else "--check"
    losses = args[args.index("--losses") + 1]
    assert r.output == (f"Error: {flag} would check nothing: no expectation covers --losses {losses} in these "
                        "settings (fused is checked in every setting, naive in the named scenarios); add fused "
                        "to --losses.\n")


def test_each_dataset_gets_the_expectations_measured_on_it():
    from mnist_cli.scenarios import expectations

    cells = {c.scenario.name: c for c in CompareConfig(scenarios=("tutorial", "f64-lr-5", "lr-2-torch")).cells()}
    said = {d: {n: expectations(c, ("naive", "fused"), 1000, d) for n, c in cells.items()}
            for d in ("mnist", "fashion-mnist", "never-measured")}
    assert said["mnist"]["tutorial"] == said["fashion-mnist"]["tutorial"]  # no `differs`: the same everywhere
    assert said["mnist"]["f64-lr-5"]["naive"] == {"nonfinite": False, "by_step": None}
    assert "naive" not in said["fashion-mnist"]["f64-lr-5"] and "naive" not in said["mnist"]["lr-2-torch"]
    assert said["fashion-mnist"]["lr-2-torch"]["naive"]["nonfinite"]
    fused = {"fused": {"nonfinite": False, "by_step": None}}
    assert all(e == fused for e in said["never-measured"].values())  # only the loss's own promise
    f64_lr5 = cells["f64-lr-5"].scenario
    assert f64_lr5.on("mnist") is f64_lr5 and f64_lr5.on("fashion-mnist").about != f64_lr5.about
    assert (f64_lr5.on("fashion-mnist").lr, f64_lr5.on("fashion-mnist").dtype) == (5, "float64")  # the same cell
    with pytest.raises(SettingsError, match="dataset"):
        CompareConfig(dataset="kmnist").validate()


def test_planned_checks_match_the_document(mnist):
    assert compare_mod.planned_checks(CompareConfig()) == 29  # 26 + the lr-2-torch/-tensorflow cells (issue 19)
    assert compare_mod.planned_checks(compare_mod.compare_config(smoke=True)) == 26  # those two are not in SMOKE
    assert compare_mod.planned_checks(CompareConfig(losses=("naive",), lrs=(0.5, 2))) == 1  # the tutorial cell
    assert compare_mod.planned_checks(CompareConfig(losses=("clipped",))) == 0
    cfg = CompareConfig(losses=("clipped",), lrs=(0.5,), steps=2, train_limit=200)
    doc = to_document(run_compare(mnist.train_images, mnist.train_labels, mnist.test_images[:100],
                                  mnist.test_labels[:100], cfg))
    assert doc["checks"] == []
    assert "Expectations: none apply here" in format_report(doc)


def test_cli_sweep_with_three_losses(cli):
    r = cli("compare", "--losses", "naive,fused,clipped", "--lr", "0.5,5", "--steps", "30", "--train-limit", "1000",
            "--json")
    assert r.exit_code == 0, r.output
    doc = compare_document(r.output, ["naive", "fused", "clipped"])
    assert [s["label"] for s in doc["scenarios"]] == ["tutorial", "lr-5"]
    assert doc["stability_map"]["axes"] == ["lr"]
    lr5 = doc["scenarios"][1]["runs"]
    assert lr5["naive"]["first_nonfinite_step"] is not None and lr5["clipped"]["first_nonfinite_step"] is None


@pytest.mark.slow
def test_cli_plot_writes_a_png_of_sane_size(cli, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "cmp.png"
    r = cli("compare", "--lr", "0.5,5", "--input-scale", "1,255", "--steps", "50", "--train-limit", "1000", "--plot", path)
    assert r.exit_code == 0, r.output
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert 800 <= width <= 4000 and 600 <= height <= 4000
    assert 30_000 < len(data) < 5_000_000
    assert f"Wrote plot: {path}" in r.output


def test_cli_plot_without_matplotlib_gives_the_install_hint(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    # the hint must come before any data is touched: this data dir does not exist
    r = cli("compare", "--plot", tmp_path / "x.png", data_dir=tmp_path / "none")
    assert r.exit_code == 1
    assert "pip install 'mnist-softmax[plot]'" in r.output
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("option, target, reason", [
    ("--plot", "missing/x.png", "No such file or directory"),
    ("--plot", "file/x.png", "Not a directory"),
    ("--metrics-out", "file/curves", None),
    ("--metrics-out", "curves", "it is a directory"),
])
def test_cli_unwritable_outputs_fail_before_any_data_or_run(cli, option, target, reason, tmp_path):
    if option == "--plot":
        pytest.importorskip("matplotlib")
    (tmp_path / "file").write_text("a regular file")  # tests run as root: a path below a file is what fails
    (tmp_path / "curves" / "tutorial-naive.jsonl").mkdir(parents=True)  # a directory where a run's file goes
    path = tmp_path / target
    # this data dir does not exist and --offline forbids fetching: touching the data would be another error
    r = cli("compare", "--smoke", option, path, data_dir=tmp_path / "none")
    assert r.exit_code == 1, r.output
    if option == "--plot":
        want = f"Error: cannot write {path}: {reason}; choose a writable --plot path\n"
    elif reason is None:
        want = f"Error: cannot create {path}: Not a directory; choose a writable --metrics-out\n"
    else:
        want = (f"Error: cannot write {path / 'tutorial-naive.jsonl'}: it is a directory; "
                "choose another --metrics-out directory\n")
    assert r.output == want


def test_probe_outputs_leaves_nothing_behind(tmp_path):
    compare_mod.probe_outputs(CompareConfig(), metrics_out=tmp_path / "a" / "b", plot=tmp_path / "p.png")
    assert [p.name for p in tmp_path.rglob("*")] == ["a", "b"]  # the --metrics-out directory, empty


@pytest.mark.parametrize("args", [["--lr", "0,5"], ["--lr", "a"], ["--losses", "naive,hinge"], ["--dtype", "float8"],
                                  ["--seeds", "-1"], ["--input-scale", "1,1"], ["--steps", "0"]])
def test_cli_bad_flags_exit_2(cli, args, tmp_path):
    r = cli("compare", *args, data_dir=tmp_path)
    assert r.exit_code == 2, r.output


def test_matplotlib_and_tqdm_are_imported_lazily():
    code = ("import sys, mnist_cli.cli, mnist_cli.compare, mnist_cli.report.plots; "
            "assert 'matplotlib' not in sys.modules and 'tqdm' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- ranges, widths, formats, dense sweeps -----------------------------------------------------------


@pytest.mark.parametrize("spec, values", [("0.1:10:log3", (0.1, 1.0, 10.0)), ("1:2:3", (1.0, 1.5, 2.0)),
                                          ("0.5,1:255:log3", (0.5, 1.0, 15.97, 255.0))])
def test_cli_ranges_expand(cli, spec, values, monkeypatch):
    seen = {}
    monkeypatch.setattr(compare_mod, "compare_config", lambda **kw: seen.update(kw) or (_ for _ in ()).throw(SystemExit(0)))
    cli("compare", "--lr", spec, data_dir=None)
    assert seen["lrs"] == values


@pytest.mark.parametrize("spec, words", [("0.1:10:log0", "N >= 2"), ("0.1:10", "not a range"), ("0:10:3", "positive"),
                                         ("1:1:2", "twice"), ("1:2:x", "whole number")])
def test_cli_bad_ranges_exit_2_naming_the_fix(cli, spec, words, tmp_path):
    r = cli("compare", "--input-scale", spec, data_dir=tmp_path)
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output


def _dense_doc(mnist, **kw):
    cfg = CompareConfig(lrs=(0.5, 5.0), input_scales=(1, 255), dtypes=("float32", "float64"), seeds=(0, 1, 2), steps=6,
                        train_limit=1000, **kw)
    return to_document(run_compare(mnist.train_images, mnist.train_labels, mnist.test_images[:200],
                                   mnist.test_labels[:200], cfg))


def test_dense_sweep_report_fits_80_columns_and_shows_seed_agreement(mnist):
    doc = _dense_doc(mnist)
    assert len(doc["scenarios"]) == 24
    text = format_report(doc, width=80)
    assert all(len(line) <= 80 for line in text.splitlines()), max(text.splitlines(), key=len)
    assert "the per-run table is left out" in text and "  naive  " not in text
    raw = sum(s["runs"]["naive"]["first_nonfinite_step"] is not None for s in doc["scenarios"]
              if s["dtype"] == "float32" and s["lr"] == 0.5 and s["input_scale"] == 255)
    row = next(line for line in text.splitlines() if line.startswith("lr 0.5"))
    assert row.split()[3] == f"{raw}/3"  # naive x255 at lr 0.5, float32: broke in raw of 3 seeds
    full = format_report(doc, width=80, all_runs=True)
    assert full.count("  naive  ") == 24 and all(len(line) <= 80 for line in full.splitlines())
    narrow = format_report(doc, width=60, all_runs=True)
    assert "Not shown at this width: time" in narrow and "  acc  final loss" in narrow  # whole headers, never split


def test_the_map_document_rebuilds_the_grid_from_its_axes(mnist):
    """A reader that knows only the map's axes, values and points (as a notebook reads the JSON) rebuilds
    the whole grid: every point names a value of every axis, each combination of values is exactly one
    point, and the grid rebuilt from the coordinates holds each run's own first non-finite step."""
    doc = json.loads(json.dumps(jsonable(_dense_doc(mnist))))
    m = doc["stability_map"]
    assert m["grid_axes"] == ["dtype", "precision", "lr", "input_scale", "seed", "loss"]
    assert m["values"] == {"dtype": ["float32", "float64"], "precision": ["pure"], "lr": [0.5, 5.0],
                           "input_scale": [1, 255], "seed": [0, 1, 2], "loss": ["naive", "fused"]}
    assert m["axes"] == [a for a in m["grid_axes"][:-1] if len(m["values"][a]) > 1]
    grid = np.full([len(m["values"][a]) for a in m["grid_axes"]], -1)  # -1: no point yet
    for p in m["points"]:
        at = tuple(m["values"][a].index(p[a]) for a in m["grid_axes"])
        assert grid[at] == -1
        grid[at] = p["first_nonfinite_step"] or 0
    assert (grid >= 0).all() and len(m["points"]) == grid.size
    for s in doc["scenarios"]:
        for loss, run in s["runs"].items():
            at = tuple(m["values"][a].index(loss if a == "loss" else s[a]) for a in m["grid_axes"])
            assert grid[at] == (run["first_nonfinite_step"] or 0)
    assert grid.any() and not grid.all()  # some runs broke, some never did: the grid is not trivially filled
    cell = {"label": "c", "dtype": "float32", "lr": 0.5, "input_scale": 1, "seed": 0,
            "runs": {"fused": {"first_nonfinite_step": None}}}
    assert stability_map([cell], ("fused",))["grid_axes"] == ["dtype", "lr", "input_scale", "seed", "loss"]


def test_table_formats_list_every_run(mnist):
    from mnist_cli.report.compare import format_table

    doc = _dense_doc(mnist)
    csv_text = format_table(doc, "csv").splitlines()
    assert csv_text[0].startswith("label,lr,input_scale,dtype,seed,loss,acc") and len(csv_text) == 1 + 48
    md = format_table(doc, "markdown").splitlines()
    assert md[0].startswith("| label | lr |") and md[1].startswith("|---|") and len(md) == 2 + 48


def test_report_width_follows_the_terminal(mnist, monkeypatch):
    doc = _dense_doc(mnist)
    monkeypatch.setenv("COLUMNS", "80")
    assert max(len(line) for line in format_report(doc, all_runs=True).splitlines()) <= 80


def test_precision_sweep_cells_and_half_runs_beside_the_stack(mnist):
    """Mixed precision is a cell of the half dtypes only; half runs train one by one beside the stacked
    float32 runs, in the grid's order, with the same numbers as the alone engine."""
    config = CompareConfig(dtypes=("float16", "float32"), precisions=("pure", "mixed"), lrs=(0.5, 5), steps=30,
                           train_limit=600, loss_scale="dynamic")
    cells = config.cells()
    assert [(c.dtype, c.precision) for c in cells] == [("float16", "pure")] * 2 + [("float16", "mixed")] * 2 + [
        ("float32", "pure")] * 2
    assert [c.label for c in cells][2:4] == ["f16-mixed", "lr=5 x1 float16 mixed"]  # a named scenario keeps its name
    assert config.train_config(cells[2], "naive").loss_scale == "dynamic"
    assert config.train_config(cells[0], "naive").loss_scale == "none"
    args = (mnist.train_images, mnist.train_labels, mnist.test_images[:500], mnist.test_labels[:500])
    stacked = run_compare(*args, config)
    alone = run_compare(*args, dataclasses.replace(config, engine="alone"))
    assert [(r.cell, r.loss) for r in stacked.runs] == [(r.cell, r.loss) for r in alone.runs]
    for s, a in zip(stacked.runs, alone.runs):
        if s.cell.dtype == "float16":
            np.testing.assert_array_equal(s.result.losses, a.result.losses)
            assert s.result.nan.to_dict() == a.result.nan.to_dict()
    doc = to_document(stacked)
    assert doc["stability_map"]["values"]["precision"] == ["pure", "mixed"]
    assert {(c["dtype"], c["precision"]) for c in doc["stability_map"]["cells"]} == {
        ("float16", "pure"), ("float16", "mixed"), ("float32", "pure")}
    checked = {(c["scenario"], c["loss"]) for c in doc["checks"]}
    for s in doc["scenarios"]:  # fused is promised finite in float32 and where a named scenario says so only
        assert ((s["label"], "fused") in checked) == (s["dtype"] == "float32" or s["name"] is not None)
    with pytest.raises(SettingsError, match="half dtypes"):
        CompareConfig(dtypes=("float32",), precisions=("mixed",)).validate()

"""scripts/measure_scenarios.py: what it says holds on every seed, and which stated expectations it finds broken."""

from __future__ import annotations

import json
import runpy
import types
from pathlib import Path

import pytest

from mnist_cli.scenarios import SCENARIO_NAMES

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "measure_scenarios.py"


@pytest.fixture(scope="module")
def ms():
    """The script's functions, as ``python scripts/measure_scenarios.py`` defines them (not run as __main__)."""
    return types.SimpleNamespace(**runpy.run_path(str(_PATH), run_name="measure_scenarios"))


def _runs(*firsts):
    return [{"seed": seed, "first": first, "weights_finite": first is None, "gap": None if first is None else 800.0}
            for seed, first in enumerate(firsts)]


def test_what_holds_on_every_seed(ms):
    assert ms.holds_on_every_seed(_runs(None, None)) == "finite"
    assert ms.holds_on_every_seed(_runs(2, 5, 3)) == "fails by 5"
    assert ms.holds_on_every_seed(_runs(3, None)) == "seed-dependent"
    nan_weights = [{"seed": 0, "first": None, "weights_finite": False, "gap": None}]
    assert ms.holds_on_every_seed(nan_weights) == "seed-dependent"  # finite losses, NaN weights: not "finite"


def test_the_report_holds_each_dataset_to_its_own_table(ms, tmp_path, capsys):
    table = {"steps": 1000, "scenarios": {"f64-lr-5": {"naive": _runs(3, None), "fused": _runs(None, None)},
                                          "raw-pixels": {"naive": _runs(2, 9), "fused": _runs(None, None)}}}
    lines, failed = ms.report({"fashion-mnist": {"full": table}})
    assert failed == 1  # raw-pixels' "by step 3" on seed 1; f64-lr-5's naive has no statement on Fashion-MNIST
    assert any("raw-pixels" in line and "FAILS on seeds 1" in line for line in lines)
    lines, failed = ms.report({"mnist": {"full": table}})
    assert failed == 2  # and on MNIST f64-lr-5's naive is stated finite: seed 0 breaks it
    smoke = {"steps": 200, "scenarios": {"lr-2-tensorflow": {"naive": _runs(None), "fused": _runs(None)}}}
    assert ms.report({"mnist": {"smoke": smoke}})[1] == 0  # not a smoke scenario: not held to it there
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"mnist": {"full": table}}))
    assert ms.main(["--from", str(path)]) == 1 and "2 stated expectation(s) failed" in capsys.readouterr().out


@pytest.mark.slow
def test_a_measurement_on_real_mnist_finds_the_table_true(ms, mnist_data_dir):
    measured = ms.measure("mnist", str(mnist_data_dir), [0], ["smoke"], 1)
    assert set(measured["smoke"]["scenarios"]) == set(SCENARIO_NAMES)
    assert ms.report({"mnist": measured})[1] == 0

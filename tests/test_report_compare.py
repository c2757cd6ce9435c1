"""The compare report (:mod:`mnist_cli.report.compare`) on documents of real runs: the seed agreement
of the stability map keeps each dtype and precision apart, and counts seeds."""

import re

import pytest

from mnist_cli.compare import CompareConfig, run_compare, to_document
from mnist_cli.report.compare import format_report


@pytest.fixture(scope="module")
def precisions_doc(mnist):
    """float16 pure and mixed, pixels x1 and x255, three seeds: raw pixels break both precisions."""
    cfg = CompareConfig(dtypes=("float16",), precisions=("pure", "mixed"), input_scales=(1, 255), seeds=(0, 1, 2),
                        steps=6, train_limit=500, loss_scale="dynamic")
    result = run_compare(mnist.train_images, mnist.train_labels, mnist.test_images[:200], mnist.test_labels[:200], cfg)
    return to_document(result)


def _expected(doc: dict, precision: str, loss: str, scale: float) -> str:
    """``k/n sS`` from the document's runs of one cell, over its seeds."""
    steps = [s["runs"][loss]["first_nonfinite_step"] for s in doc["scenarios"]
             if (s["precision"], s["lr"], s["input_scale"]) == (precision, 0.5, scale)]
    broke = [t for t in steps if t is not None]
    return f"{len(broke)}/{len(steps)} s{min(broke)}" if broke else "-"


def test_seed_agreement_has_a_table_per_precision_counting_seeds(precisions_doc):
    doc = precisions_doc
    lines = format_report(doc, width=100).splitlines()
    heads = [line.split("  ")[0] for line in lines if line.startswith("float16")]
    assert heads == ["float16", "float16 mixed"], heads  # one table each, in the grid's order
    assert any("of 3 seeds per cell" in line for line in lines)
    for precision, head in (("pure", "float16"), ("mixed", "float16 mixed")):
        at = next(i for i, line in enumerate(lines) if line.split("  ")[0] == head)
        assert lines[at + 1].startswith("lr 0.5")
        cells = re.findall(r"\d+/\d+ s\d+|(?<!\S)-(?!\S)", lines[at + 1][len("lr 0.5"):])
        assert cells == [_expected(doc, precision, loss, scale) for loss in ("naive", "fused") for scale in (1, 255)]
        assert all(c == "-" or c.split()[0].endswith("/3") for c in cells), cells
    assert _expected(doc, "pure", "naive", 255) != "-" and _expected(doc, "mixed", "naive", 255) != "-"

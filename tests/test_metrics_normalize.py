"""`normalize_confusion`: scikit-learn's `confusion_matrix(normalize=...)`, checked on tables worked out by hand
(a class with no examples, a class never predicted: 0/0 is 0, as scikit-learn's nan_to_num) and, with
scikit-learn installed (`pytest -m sklearn`, run by `make crosscheck`), against scikit-learn itself."""

import numpy as np
import pytest

from mnist_cli.metrics import confusion_matrix, normalize_confusion
from mnist_cli.settings import NORMALIZE_NAMES

# C[true, pred]: class 1 has no examples (an empty row); 12 examples in all
COUNTS = [[3, 1, 0],
          [0, 0, 0],
          [2, 2, 4]]
BY_HAND = {
    "true": [[3 / 4, 1 / 4, 0], [0, 0, 0], [2 / 8, 2 / 8, 4 / 8]],  # row sums 4, 0, 8
    "pred": [[3 / 5, 1 / 3, 0], [0, 0, 0], [2 / 5, 2 / 3, 4 / 4]],  # column sums 5, 3, 4
    "all": [[3 / 12, 1 / 12, 0], [0, 0, 0], [2 / 12, 2 / 12, 4 / 12]],
}
# class 1 is never predicted (an empty column)
NEVER_PREDICTED = [[2, 0], [1, 0]]
NEVER_BY_HAND = {"true": [[1, 0], [1, 0]], "pred": [[2 / 3, 0], [1 / 3, 0]], "all": [[2 / 3, 0], [1 / 3, 0]]}


@pytest.mark.parametrize("how", NORMALIZE_NAMES)
def test_tables_worked_out_by_hand(how):
    np.testing.assert_allclose(normalize_confusion(np.array(COUNTS), how), BY_HAND[how], rtol=1e-15, atol=0)
    np.testing.assert_allclose(normalize_confusion(np.array(NEVER_PREDICTED), how), NEVER_BY_HAND[how], rtol=1e-15,
                               atol=0)


def test_what_each_normalization_sums_to():
    rng = np.random.default_rng(0)
    cm = confusion_matrix(rng.integers(0, 10, 500), rng.integers(0, 10, 500))
    np.testing.assert_allclose(normalize_confusion(cm, "true").sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(normalize_confusion(cm, "pred").sum(axis=0), 1.0, rtol=1e-12)
    assert normalize_confusion(cm, "all").sum() == pytest.approx(1.0, rel=1e-12)
    assert normalize_confusion(np.zeros((3, 3), dtype=np.int64), "all").tolist() == [[0.0] * 3] * 3  # no NaN


def _sklearn_matrices(request, y, p) -> dict:
    """scikit-learn's normalized matrices of ``y``, ``p``, computed in a child process (scikit-learn loads scipy's own
    BLAS, which would change what tests/test_threads.py sees in this one). Under ``-m sklearn`` (make crosscheck)
    a missing scikit-learn fails the test; in another selection it is skipped, with the reason in the summary."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from sklearn.metrics import confusion_matrix as cm; y, p = json.load(sys.stdin); "
            "print(json.dumps({h: cm(y, p, labels=list(range(10)), normalize=h).tolist() for h in sys.argv[1:]}))")
    run = subprocess.run([sys.executable, "-c", code, *NORMALIZE_NAMES], input=json.dumps([y.tolist(), p.tolist()]),
                         capture_output=True, text=True, timeout=120)
    if run.returncode != 0 and "No module named 'sklearn'" in run.stderr and request.config.getoption("markexpr") != \
            "sklearn":
        pytest.skip("scikit-learn is not installed (make crosscheck installs it and runs pytest -m sklearn)")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.sklearn
def test_agrees_with_scikit_learn(request):
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 9, 300), rng.integers(1, 10, 300)  # class 9 has no examples, class 0 is never predicted
    theirs = _sklearn_matrices(request, y, p)
    for how in NORMALIZE_NAMES:
        ours = normalize_confusion(confusion_matrix(y, p), how)
        np.testing.assert_allclose(ours, theirs[how], rtol=1e-15, atol=0, err_msg=how)

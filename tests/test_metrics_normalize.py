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


@pytest.mark.sklearn
@pytest.mark.parametrize("how", NORMALIZE_NAMES)
def test_agrees_with_scikit_learn(how):
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix  # selected with -m sklearn: must be there

    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 9, 300), rng.integers(1, 10, 300)  # class 9 has no examples, class 0 is never predicted
    ours = normalize_confusion(confusion_matrix(y, p), how)
    np.testing.assert_allclose(ours, sk_confusion_matrix(y, p, labels=range(10), normalize=how), rtol=1e-15, atol=0)

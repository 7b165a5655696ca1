"""Metrics against numbers worked out by hand, and against scikit-learn on a random case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from fusent.metrics import (
    classification_metrics,
    confusion_matrix,
    format_metrics,
    format_regression_metrics,
    pearson_corr,
    regression_metrics,
)

LABELS = ["negative", "neutral", "positive"]
#            0  1  2  3  4  5  6  7  8  9
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
Y_PRED = [0, 2, 0, 2, 2, 2, 2, 0, 2, 2]  # class 1 (neutral) is never predicted


def test_confusion_matrix_by_hand():
    # true 0 -> predicted 0,2,0       : row 0 = [2, 0, 1]
    # true 1 -> predicted 2,2         : row 1 = [0, 0, 2]
    # true 2 -> predicted 2,2,0,2,2   : row 2 = [1, 0, 4]
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[2, 0, 1], [0, 0, 2], [1, 0, 4]]
    assert cm.dtype == np.int64
    # a class absent from both lists still gets its row and column
    assert confusion_matrix([0, 1], [1, 1], 4).tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_classification_metrics_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    # tp = [2, 0, 4]; support (row sums) = [3, 2, 5]; predicted (column sums) = [3, 0, 7]
    # precision: 2/3, 0 (never predicted -> 0, not NaN), 4/7
    # recall:    2/3, 0/2 = 0, 4/5
    # f1 neg = 2/3; f1 neu = 0; f1 pos = 2*(4/7)*(4/5)/(4/7+4/5) = (32/35)/(48/35) = 2/3
    p = [2 / 3, 0.0, 4 / 7]
    r = [2 / 3, 0.0, 4 / 5]
    f = [2 / 3, 0.0, 2 / 3]
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(6 / 10)  # (2 + 0 + 4) / 10
    assert m["precision_macro"] == pytest.approx(sum(p) / 3)  # (2/3 + 0 + 4/7) / 3 = 26/63
    assert m["precision_macro"] == pytest.approx(26 / 63)
    assert m["recall_macro"] == pytest.approx(sum(r) / 3)  # (2/3 + 0 + 4/5) / 3 = 22/45
    assert m["recall_macro"] == pytest.approx(22 / 45)
    assert m["f1_macro"] == pytest.approx(4 / 9)  # (2/3 + 0 + 2/3) / 3
    # weighted by support 3, 2, 5 out of 10
    assert m["precision_weighted"] == pytest.approx(0.3 * 2 / 3 + 0.5 * 4 / 7)  # = 0.2 + 2/7
    assert m["recall_weighted"] == pytest.approx(0.3 * 2 / 3 + 0.5 * 4 / 5)  # = 0.6 = accuracy
    assert m["recall_weighted"] == pytest.approx(m["accuracy"])
    assert m["f1_weighted"] == pytest.approx(0.3 * 2 / 3 + 0.5 * 2 / 3)  # = 8/15
    for i, label in enumerate(LABELS):
        c = m["per_class"][label]
        assert c["precision"] == pytest.approx(p[i])
        assert c["recall"] == pytest.approx(r[i])
        assert c["f1"] == pytest.approx(f[i])
    assert [m["per_class"][label]["support"] for label in LABELS] == [3, 2, 5]
    assert m["confusion_matrix"] == [[2, 0, 1], [0, 0, 2], [1, 0, 4]]
    assert m["labels"] == LABELS


def test_perfect_and_empty_predictions():
    m = classification_metrics([0, 1, 2, 2], [0, 1, 2, 2], LABELS)
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0 and m["f1_weighted"] == 1.0
    empty = classification_metrics([], [], LABELS)
    assert empty["n"] == 0 and empty["accuracy"] == 0.0 and empty["f1_macro"] == 0.0
    assert empty["confusion_matrix"] == [[0] * 3] * 3


def test_constant_predictor_macro_f1():
    # all "positive" on 6 pos / 3 neg / 1 neu: precision_pos = 6/10, recall_pos = 1 -> f1_pos = 1.2/1.6 = 0.75
    # the other two classes score 0, so macro-F1 = 0.75 / 3 = 0.25 (the baseline test_real_mvsa compares to)
    y_true = [2] * 6 + [0] * 3 + [1]
    m = classification_metrics(y_true, [2] * 10, LABELS)
    assert m["f1_macro"] == pytest.approx(0.25)
    assert m["accuracy"] == pytest.approx(0.6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed: int):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where((rng.random(200) < 0.5) & (y_true < 3), y_true, rng.integers(0, 3, 200))  # never 3
    labels = ["a", "b", "c", "d"]
    m = classification_metrics(y_true.tolist(), y_pred.tolist(), labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=[0, 1, 2, 3], average=average, zero_division=0
        )
        assert m[f"precision_{average}"] == pytest.approx(p)
        assert m[f"recall_{average}"] == pytest.approx(r)
        assert m[f"f1_{average}"] == pytest.approx(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
    for i, label in enumerate(labels):
        c = m["per_class"][label]
        assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert c["support"] == s[i]
    assert m["per_class"]["d"]["precision"] == 0.0  # class 3 is never predicted


def test_format_metrics_lists_labels_and_matrix():
    labels = ["negative", "neutral", "a_rather_long_label"]
    m = classification_metrics(Y_TRUE, Y_PRED, labels)
    text = format_metrics(m, "val")
    lines = text.splitlines()
    assert lines[0] == "val"
    assert "accuracy 0.6000" in text and "n=10" in text
    assert f"{4 / 9:.4f}" in lines[1]  # macro-F1 in the headline
    for label in labels:
        assert any(line.startswith(label) for line in lines)
    matrix_at = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix"))
    rows = [line.split()[-3:] for line in lines[matrix_at + 2 :]]
    assert rows == [["2", "0", "1"], ["0", "0", "2"], ["1", "0", "4"]]
    assert lines[matrix_at + 2].startswith("negative")


# ------------------------------------------------------------------------------------------ regression metrics

# y_true / y_pred of a hand-worked example (paper 001 §4.2 metrics; every number below is computed in comments).
R_TRUE = [-2.6, -1.0, 0.0, 0.4, 1.5, 3.0]
R_PRED = [-2.0, 0.5, -0.2, 0.4, 2.5, 3.6]


def test_regression_metrics_hand_computed():
    m = regression_metrics(R_TRUE, R_PRED)
    assert m["n"] == 6
    # |errors| = 0.6, 1.5, 0.2, 0.0, 1.0, 0.6 -> sum 3.9 -> MAE 3.9 / 6 = 0.65
    assert m["mae"] == pytest.approx(0.65)
    # Acc-7: true rounds to -3, -1, 0, 0, 2 (1.5 -> 2), 3; pred to -2, 0 (0.5 -> 0, half to even), 0, 0,
    # 2 (2.5 -> 2, half to even), 3 (3.6 clipped to 3) -> matches at positions 3, 4, 5, 6 -> 4 / 6
    assert m["acc7"] == pytest.approx(4 / 6)
    # has-0: true >= 0 is F F T T T T, pred >= 0 is F T F T T T -> right at 1, 4, 5, 6 -> 4 / 6.
    # negative: 2 true, 2 predicted, 1 right -> P = R = 1/2, F1 = 1/2; non-negative: 4 true, 4 predicted,
    # 3 right -> F1 = 3/4; support-weighted F1 = (2 * 1/2 + 4 * 3/4) / 6 = 4 / 6
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    assert m["f1_has0"] == pytest.approx(4 / 6)
    # non-0: the true 0.0 (position 3) is left out -> 5 samples; true > 0 is F F T T T, pred > 0 is F T T T T
    # -> right at 1, 3, 4, 5 -> 4 / 5. negative: 2 true, 1 predicted, 1 right -> P 1, R 1/2, F1 2/3;
    # positive: 3 true, 4 predicted, 3 right -> P 3/4, R 1, F1 6/7; weighted = (2 * 2/3 + 3 * 6/7) / 5 = 82/105
    assert m["n_non0"] == 5
    assert m["acc2_non0"] == pytest.approx(4 / 5)
    assert m["f1_non0"] == pytest.approx(82 / 105)


def test_pearson_corr_hand_computed():
    # deviations from the means (2 and 2): true -1 0 1, pred -1 1 0 -> covariance sum 1, squared sums 2 and 2
    # -> r = 1 / sqrt(2 * 2) = 0.5
    assert pearson_corr([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.5)
    # a scaled and shifted copy correlates perfectly; a reversed one perfectly negatively
    assert pearson_corr([1.0, 2.0, 4.0], [-1.0, 1.0, 5.0]) == pytest.approx(1.0)
    assert pearson_corr([1.0, 2.0, 4.0], [4.0, 3.0, 1.0]) == pytest.approx(-1.0)
    # a constant prediction (an untrained head) has no correlation: NaN, not a number that looks like one
    assert math.isnan(pearson_corr([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]))
    assert math.isnan(regression_metrics([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])["corr"])


def test_regression_metrics_conventions_differ_only_through_zero_labels():
    # no true 0 and no prediction exactly 0: both conventions agree on every sample
    m = regression_metrics([-1.2, 0.7, 2.0], [-0.3, 0.2, -1.0])
    assert m["acc2_has0"] == m["acc2_non0"] == pytest.approx(2 / 3) and m["n_non0"] == 3
    # a true 0 predicted as 0.3: right under has-0 (both non-negative), and not counted under non-0
    m = regression_metrics([0.0, 1.0], [0.3, 1.0])
    assert m["acc2_has0"] == 1.0 and m["n_non0"] == 1 and m["acc2_non0"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        regression_metrics([1.0, 2.0], [1.0])


def test_format_regression_metrics_names_both_conventions():
    text = format_regression_metrics(regression_metrics(R_TRUE, R_PRED), "title")
    assert text.splitlines()[0] == "title"
    assert "MAE 0.6500" in text and "Acc-7 0.6667" in text
    assert "Acc-2 has-0 (negative <0 vs non-negative >=0)" in text and "0.6667" in text
    assert "Acc-2 non-0 (negative <0 vs positive >0, 0 left out) 0.8000" in text and "n=5" in text

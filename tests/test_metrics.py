"""utils/metrics.classification_metrics against hand-computed values, with classes missing from
the targets and from the predictions (the cases where macro averages go wrong)."""
from __future__ import annotations

import pytest

from utils.metrics import classification_metrics

# Four classes. Class 3 never occurs in the targets but is predicted once; class 2 occurs twice
# and is never predicted.
TARGETS = [0, 0, 0, 1, 1, 2, 2]
PREDICTIONS = [0, 0, 1, 1, 3, 0, 0]


def test_hand_computed_metrics_with_a_class_absent_from_targets_and_one_never_predicted():
    m = classification_metrics(TARGETS, PREDICTIONS, num_classes=4)
    assert m["num_samples"] == 7
    assert m["overall_acc"] == pytest.approx(3 / 7)  # samples 0, 1 and 3 are right
    # Recalls: class 0 2/3, class 1 1/2, class 2 0/2; class 3 has no samples (reported as 0).
    assert m["per_class_acc"] == pytest.approx([2 / 3, 1 / 2, 0.0, 0.0])
    # Mean class accuracy over the three classes present: (2/3 + 1/2 + 0) / 3 = 7/18, not the
    # overall 3/7 and not divided by 4.
    assert m["mean_acc"] == pytest.approx(7 / 18)
    # F1: class 0 precision 2/4, recall 2/3 -> 4/7; class 1 precision 1/2, recall 1/2 -> 1/2;
    # class 2 -> 0. Macro over the present classes: (4/7 + 1/2 + 0) / 3 = 5/14 (with the absent
    # class 3 counted it would be 15/56).
    assert m["macro_f1"] == pytest.approx(5 / 14)
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 0, 1], [2, 0, 0, 0], [0, 0, 0, 0]]


def test_perfect_predictions_and_a_single_class_test_set():
    m = classification_metrics([2, 2, 2], [2, 2, 2], num_classes=3)
    assert (m["overall_acc"], m["mean_acc"], m["macro_f1"]) == (1.0, 1.0, 1.0)
    assert m["per_class_acc"] == [0.0, 0.0, 1.0]
    # One wrong prediction into a class the targets lack: recall 2/3, precision 1, F1 0.8.
    m = classification_metrics([2, 2, 2], [2, 2, 0], num_classes=3)
    assert m["mean_acc"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(0.8)


def test_empty_test_set_gives_zeros_not_an_error():
    m = classification_metrics([], [], num_classes=3)
    assert (m["overall_acc"], m["mean_acc"], m["macro_f1"], m["num_samples"]) == (0.0, 0.0, 0.0, 0)
    assert m["confusion_matrix"] == [[0] * 3] * 3


# ---- distribution metrics ------------------------------------------------------------------
import math  # noqa: E402

import numpy as np  # noqa: E402

from utils.metrics import expected_calibration_error, vote_metrics  # noqa: E402


def test_vote_kl_and_nll_hand_computed():
    # Votes 6/4 and 10/0 over two classes; predictions (0.5, 0.5) and (0.8, 0.2).
    votes = np.array([[6, 4], [10, 0]])
    probs = np.array([[0.5, 0.5], [0.8, 0.2]])
    nll = [-(0.6 * math.log(0.5) + 0.4 * math.log(0.5)), -math.log(0.8)]
    entropy = [-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)), 0.0]  # 0 log 0 = 0
    m = vote_metrics(probs, votes)
    assert m["vote_nll"] == pytest.approx(sum(nll) / 2, rel=1e-12)
    assert m["vote_kl"] == pytest.approx((nll[0] - entropy[0] + nll[1]) / 2, rel=1e-12)
    # A model that predicts the vote distribution itself has KL 0 and NLL equal to the votes' entropy.
    exact = vote_metrics(np.array([[0.6, 0.4], [1.0, 0.0]]), votes)
    assert exact["vote_kl"] == pytest.approx(0.0, abs=1e-12)
    assert exact["vote_nll"] == pytest.approx(sum(entropy) / 2, rel=1e-12)


def test_vote_metrics_refuse_mismatched_shapes_and_voteless_samples():
    with pytest.raises(ValueError, match="differ"):
        vote_metrics(np.ones((2, 3)) / 3, np.ones((2, 2)))
    with pytest.raises(ValueError, match="at least one vote"):
        vote_metrics(np.ones((1, 2)) / 2, np.zeros((1, 2)))


def test_ece_hand_computed_with_15_bins():
    # Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.35 (wrong).
    probs = np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.6, 0.4, 0.0], [0.35, 0.3, 0.35]])
    targets = [0, 0, 0, 1]
    # Bins of width 1/15: 0.9 -> bin 13 (0.8667, 0.9333]; 0.6 -> bin 8 (0.5333, 0.6]; 0.35 -> bin 5.
    # bin 13: acc 1/2, conf 0.9 -> 2/4 * 0.4; bin 8: 1/4 * |1 - 0.6|; bin 5: 1/4 * |0 - 0.35|.
    expected = 0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.35
    assert expected_calibration_error(probs, targets) == pytest.approx(expected, rel=1e-12)
    # Perfectly calibrated: confidence 1 and right.
    assert expected_calibration_error(np.eye(3), [0, 1, 2]) == 0.0
    # A confidence of exactly 0.6 = 9/15 closes bin 8, so it shares no bin with 0.61 (bin 9).
    two = np.array([[0.6, 0.4], [0.61, 0.39]])
    assert expected_calibration_error(two, [0, 1]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.61, rel=1e-12)


def test_ece_uses_15_bins_by_default():
    # Confidences 0.62 (right) and 0.68 (wrong): bins 9 (0.6, 0.6667] and 10 (0.6667, 0.7333] of
    # 15, so 1/2 |1 - 0.62| + 1/2 |0 - 0.68| = 0.53. Ten bins would put both in (0.6, 0.7]:
    # |1/2 - 0.65| = 0.15.
    probs = np.array([[0.62, 0.38], [0.68, 0.32]])
    assert expected_calibration_error(probs, [0, 1]) == pytest.approx(0.53, rel=1e-12)
    assert expected_calibration_error(probs, [0, 1], bins=10) == pytest.approx(0.15, rel=1e-12)
    from utils.metrics import evaluation_metrics

    assert evaluation_metrics([0, 1], [0, 0], probs, num_classes=2)["ece"] == pytest.approx(0.53, rel=1e-12)


def test_evaluation_metrics_add_ece_always_and_vote_metrics_with_votes():
    from utils.metrics import evaluation_metrics

    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    m = evaluation_metrics([0, 0], [0, 1], probs, num_classes=2)
    assert m["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.8) and "vote_kl" not in m
    m = evaluation_metrics([0, 0], [0, 1], probs, num_classes=2, votes=np.array([[10, 0], [5, 5]]))
    assert m["vote_nll"] == pytest.approx((-math.log(0.9) - 0.5 * math.log(0.2) - 0.5 * math.log(0.8)) / 2)

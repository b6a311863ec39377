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

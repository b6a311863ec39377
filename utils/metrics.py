"""Classification metrics for imbalanced FER, from scikit-learn.

- overall_acc: fraction of test samples classified correctly.
- mean_acc: unweighted mean of per-class recalls (the "mean class accuracy" of FER papers).
- per_class_acc: recall of each class; macro_f1: unweighted mean of per-class F1.
All are fractions in [0, 1].
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score


def classification_metrics(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> dict:
    """Metrics of ``predictions`` against ``targets``; classes absent from targets are left out of mean_acc."""
    targets = np.asarray(targets, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if len(targets) == 0:  # scikit-learn refuses empty inputs; an empty split scores zeros
        return {"overall_acc": 0.0, "mean_acc": 0.0, "per_class_acc": [0.0] * num_classes, "macro_f1": 0.0,
                "confusion_matrix": [[0] * num_classes for _ in range(num_classes)], "num_samples": 0}
    labels = list(range(num_classes))
    matrix = confusion_matrix(targets, predictions, labels=labels)
    present = matrix.sum(axis=1) > 0
    per_class = recall_score(targets, predictions, labels=labels, average=None, zero_division=0)
    return {
        "overall_acc": float((targets == predictions).mean()),
        "mean_acc": float(per_class[present].mean()),
        "per_class_acc": [float(x) for x in per_class],
        "macro_f1": float(f1_score(targets, predictions, labels=[l for l in labels if present[l]], average="macro",
                                   zero_division=0)),
        "confusion_matrix": matrix.tolist(),
        "num_samples": int(len(targets)),
    }

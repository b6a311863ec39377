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


ECE_BINS = 15  # Guo et al., "On Calibration of Modern Neural Networks", ICML 2017


def expected_calibration_error(probs: np.ndarray, targets: Sequence[int], bins: int = ECE_BINS) -> float:
    """ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)| over ``bins`` equal-width bins of the top
    probability (bin b holds confidences in (b/bins, (b+1)/bins]; Guo et al., ICML 2017)."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    # ceil(conf * bins) - 1 puts a confidence of exactly b/bins into bin b-1, i.e. right-closed bins.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def vote_metrics(probs: np.ndarray, votes: np.ndarray) -> dict:
    """How far the predicted distributions ``probs`` (N, K) are from the annotators' ``votes``
    (N, K vote counts or distributions over the same K classes, e.g. FERPlus's 10 votes):

    - vote_kl: mean_i KL(q_i || p_i) = sum_k q_ik (log q_ik - log p_ik), with 0 log 0 = 0;
    - vote_nll: mean_i -sum_k q_ik log p_ik, the negative log-likelihood of one vote drawn from q_i
      (= vote_kl + the votes' own entropy, which no model can remove);

    where q_i = votes_i / sum_k votes_ik. Probabilities are clamped at 1e-12 before the log.
    """
    probs = np.asarray(probs, dtype=np.float64)
    votes = np.asarray(votes, dtype=np.float64)
    if probs.shape != votes.shape:
        raise ValueError(f"probabilities of shape {probs.shape} and votes of shape {votes.shape} differ")
    if len(votes) == 0:
        return {"vote_kl": 0.0, "vote_nll": 0.0}
    totals = votes.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError("every sample needs at least one vote among the classes")
    q = votes / totals
    log_p = np.log(np.clip(probs, 1e-12, None))
    nll = -(q * log_p).sum(axis=1)
    entropy = -(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)).sum(axis=1)
    return {"vote_kl": float((nll - entropy).mean()), "vote_nll": float(nll.mean())}


def evaluation_metrics(targets: Sequence[int], predictions: Sequence[int], probs: np.ndarray, num_classes: int,
                       votes: np.ndarray | None = None) -> dict:
    """``classification_metrics`` plus ``ece`` (on the labels) and, where the annotators' votes
    of each sample are known (FERPlus), ``vote_kl`` and ``vote_nll`` (``vote_metrics``)."""
    metrics = classification_metrics(targets, predictions, num_classes)
    probs = np.asarray(probs, dtype=np.float64)
    metrics["ece"] = expected_calibration_error(probs, targets) if len(probs) else 0.0
    if votes is not None and len(probs):
        metrics.update(vote_metrics(probs, votes))
    return metrics

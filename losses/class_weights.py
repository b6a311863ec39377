"""Re-balancing class weights from training-label counts.

    w_k = (N / (10 * n_k)) ** power

N is the number of training samples and n_k the count of class k. With power 1 and
RAF-DB's counts this reproduces the constants of the MEK paper's code. ``power`` in
(0, 1) tempers the weights for datasets whose imbalance is stronger than RAF-DB's.
"""
from __future__ import annotations

from typing import Sequence

import torch


def class_weights_from_counts(counts: Sequence[int], power: float = 1.0) -> torch.Tensor:
    """Return the (K,) float tensor of re-balancing weights for per-class ``counts``."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.float64)
    if counts_t.ndim != 1 or counts_t.numel() == 0:
        raise ValueError("class counts must be a non-empty 1-D sequence")
    if (counts_t <= 0).any():
        empty = [i for i, c in enumerate(counts_t.tolist()) if c <= 0]
        raise ValueError(f"classes {empty} have no training samples; their weight would be infinite")
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"class-weight power must be in [0, 1], got {power}")
    weights = counts_t.sum() / (10.0 * counts_t)
    return (weights**power).float()

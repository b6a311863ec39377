"""Losses on target distributions: the FERPlus paper's "crossentropy" and "multi_target" modes.

Barsoum et al., ICMI 2016 (official microsoft/FERPlus src/train.py, ``cost_func``):

    soft CE:       L = -sum_k q_k log p_k                 (q: the image's vote distribution)
    multi-target:  L = -log max_k t_k p_k                 (t: 1 - eps on emotions with votes, eps elsewhere)

with p = softmax(z), averaged over the batch. A one-hot q gives plain cross-entropy, and so does a
one-hot t up to eps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of -sum_k q_k log softmax(z)_k over the batch; ``targets`` (B, K) rows sum to 1."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def multi_target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of -log max_k t_k p_k: only the best-predicted of the accepted emotions is pushed up."""
    # log(t_k p_k) = log t_k + log p_k, maximised over k: stable in log space.
    log_scores = torch.log(targets.float()) + F.log_softmax(logits.float(), dim=1)
    return -log_scores.max(dim=1).values.mean()

"""Label-distribution-aware margin loss (Cao et al., "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019; official code: kaidic/LDAM-DRW, losses.py).

    LDAM(z, y) = CE(s * (z - m_y e_y), y)

The true class's logit is lowered by its margin m_y (proportional to n_y^(-1/4), largest 0.5;
``ClassPrior.ldam_margins``) and all logits are scaled by s (30 in the official code, meant for
the cosine logits of a normalised-linear head). Deferred re-weighting (DRW) passes
class-balanced ``class_weights`` from a chosen epoch on; the batch mean is then torch's weighted
mean, sum_i w_{y_i} l_i / sum_i w_{y_i}, as in the official ``F.cross_entropy(..., weight=)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def margin_logits(logits: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, scale: float) -> torch.Tensor:
    """s * (z - m_y on the true class only)."""
    shift = margins.to(logits.device, logits.dtype)[labels]
    adjusted = logits - F.one_hot(labels, logits.shape[1]).to(logits.dtype) * shift[:, None]
    return scale * adjusted


def ldam_loss(logits: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, scale: float = 30.0,
              class_weights: torch.Tensor | None = None) -> torch.Tensor:
    weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    return F.cross_entropy(margin_logits(logits.float(), labels, margins, scale), labels, weight=weight)

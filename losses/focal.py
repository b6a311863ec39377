"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    FL(z, y) = -a_y (1 - p_y)^gamma log p_y,    p = softmax(z)

averaged over the batch. gamma = 0 is cross-entropy. With per-class weights a (for example
class-balanced weights, Cui et al. CVPR 2019) each sample is weighted by its class's weight
and the batch mean is a plain mean over samples, as in Cui et al.'s official
class_balanced_loss.py (not torch's weighted mean, which divides by the sum of weights).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float,
               class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean focal loss of (B, K) ``logits`` against (B,) integer ``labels``."""
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
    loss = -((1.0 - log_p.exp()).pow(gamma) if gamma > 0 else 1.0) * log_p
    if class_weights is not None:
        loss = loss * class_weights.to(loss.device, loss.dtype)[labels]
    return loss.mean()

"""Balanced softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
NeurIPS 2020).

    BS(z, y) = CE(z + log n, y)

Training through the prior-shifted softmax makes the plain logits z estimate the balanced
(test-time uniform-prior) posterior, so evaluation uses argmax z unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_softmax_loss(logits: torch.Tensor, labels: torch.Tensor, log_counts: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float() + log_counts.to(logits.device, torch.float32), labels)

"""Re-balanced smooth labels (RSL).

Soft target for a sample of class y with K classes and class weights w:

    t_y = 1 - eps
    t_j = eps * w_j / sum_{i != y} w_i      for j != y

and the loss is the cross-entropy -sum_j t_j * log softmax(z)_j, averaged over the batch.
eps = 0 gives plain cross-entropy. Minor classes (large w) get more of the smoothing mass,
so every sample also teaches the model about them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rebalanced_smooth_targets(labels: torch.Tensor, class_weights: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) integer labels -> (B, K) soft targets as defined above."""
    num_classes = class_weights.numel()
    weights = class_weights.to(dtype=torch.float32, device=labels.device).expand(labels.numel(), num_classes)
    true_class = F.one_hot(labels, num_classes).bool()
    others = weights.masked_fill(true_class, 0.0)
    others = others / others.sum(dim=1, keepdim=True)
    return torch.where(true_class, torch.full_like(others, 1.0 - eps), eps * others)


class RebalancedSmoothLabelLoss(nn.Module):
    """Cross-entropy against re-balanced smooth labels (see module docstring)."""

    def __init__(self, class_weights: torch.Tensor, eps: float = 0.3) -> None:
        super().__init__()
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"RSL epsilon must be in [0, 1), got {eps}")
        self.register_buffer("class_weights", class_weights.float().clone())
        self.eps = eps

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.eps == 0.0:
            return F.cross_entropy(logits.float(), labels)
        # cross_entropy with probability targets: -sum_j t_j log softmax(z)_j, batch mean.
        return F.cross_entropy(logits.float(), rebalanced_smooth_targets(labels, self.class_weights, self.eps))


def target_mass_per_class(counts: list[int], class_weights: torch.Tensor, eps: float) -> list[float]:
    """Share of all RSL target mass each class receives over a training set with ``counts``.

    For class j: (n_j (1 - eps) + sum_{y != j} n_y eps w_j / sum_{i != y} w_i) / N. Where a
    minor class gets more mass than the largest class (FER2013's disgust does at eps 0.3), the
    smoothing distorts the class prior the head learns.
    """
    w = class_weights.double().tolist()
    total_w, n = sum(w), sum(counts)
    mass = []
    for j, n_j in enumerate(counts):
        spread = sum(n_y * eps * w[j] / (total_w - w[y]) for y, n_y in enumerate(counts) if y != j)
        mass.append((n_j * (1 - eps) + spread) / n)
    return mass

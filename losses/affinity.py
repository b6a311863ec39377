"""DAN's affinity loss (Wen et al., "Distract Your Attention: Multi-head Cross Attention Network
for Facial Expression Recognition", Biomimetics 2023 / arXiv 2109.07270; official code yaoing/DAN,
``rafdb.py`` / ``affectnet.py`` ``AffinityLoss``).

A centre-loss variant: the pooled backbone feature x_i (B, D) is pulled towards a learned centre
c_{y_i} of its class, normalised by how spread the centres are:

    L_af = (1/B) sum_i ||x_i - c_{y_i}||^2 / sum_d Var_k(c_{k,d})

Var_k is the unbiased variance over the K centres, per feature dimension (``centers.var(dim=0)``).
The official code clamps each entry of the masked distance matrix to [1e-12, 1e12], which adds
(K - 1) * 1e-12 per sample for the masked-out classes; that constant is dropped here (it has no
gradient). Each sample's own distance is clamped too, but in another order: the official code
clamps after dividing by the variance sum (clamp(d_i / V)), this code before (clamp(d_i) / V); the
two differ only when d_i or d_i / V leaves [1e-12, 1e12], a negligible difference.

The centres belong to the method (``methods/dan.py``), one per class of the dataset. The official
scripts build 8 centres for 7-class RAF-DB (``AffinityLoss(device)`` with its default
``num_class=8``): the spare centre never attracts a sample but enters the variance; not here.
"""
from __future__ import annotations

import torch


def affinity_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """L_af for ``features`` (B, D), ``labels`` (B,) in [0, K) and ``centers`` (K, D)."""
    if features.ndim != 2 or centers.ndim != 2 or features.shape[1] != centers.shape[1]:
        raise ValueError(f"expected features (B, D) and centers (K, D), got {tuple(features.shape)} and "
                         f"{tuple(centers.shape)}")
    own = centers[labels]
    distance = (features - own).pow(2).sum(dim=1).clamp(min=1e-12, max=1e12)
    return distance.sum() / features.shape[0] / centers.var(dim=0).sum()

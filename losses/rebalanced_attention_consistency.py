"""Re-balanced attention consistency (RAC).

With M = attention maps of an image (B, K, H, W) and M' those of its horizontal mirror,
mirrored back so positions line up:

    RAC = mean_b sum_k w_k * mean_{h,w} (M[b,k,h,w] - flip_w(M')[b,k,h,w])^2

The maps of every class, not only the labelled one, must agree under flipping, and the
minor classes (large w) count more.
"""
from __future__ import annotations

import torch


def rebalanced_attention_consistency(
    maps: torch.Tensor, flipped_maps: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """RAC for maps of the images and maps of their mirrors, both (B, K, H, W)."""
    aligned = torch.flip(flipped_maps, dims=[3])
    per_class = (maps.float() - aligned.float()).pow(2).mean(dim=(2, 3))  # (B, K)
    weights = class_weights.to(device=per_class.device, dtype=per_class.dtype)
    return (per_class * weights).sum(dim=1).mean()


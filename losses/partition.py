"""DAN's partition loss (Wen et al., "Distract Your Attention", Biomimetics 2023 / arXiv 2109.07270;
official code yaoing/DAN, ``rafdb.py`` ``PartitionLoss``).

Pushes the n attention heads apart so each attends to a different facial region. With H (B, n, C)
the heads' outputs (after the log-softmax over heads that the DAN head applies):

    L_pt = log(1 + n / mean_{b,c} Var_i(H_{b,i,c}))

Var_i is the unbiased variance over the heads. A single head gives 0 (as officially).
"""
from __future__ import annotations

import torch


def partition_loss(heads: torch.Tensor) -> torch.Tensor:
    """L_pt for the heads' outputs ``heads`` (B, n, C)."""
    if heads.ndim != 3:
        raise ValueError(f"expected head outputs (B, heads, C), got {tuple(heads.shape)}")
    num_heads = heads.shape[1]
    if num_heads <= 1:
        return heads.new_zeros(())
    return torch.log1p(num_heads / heads.var(dim=1).mean())

"""The MEK objective: re-balanced smooth labels plus re-balanced attention consistency.

    L = RSL(z(x), y; eps) + lambda * RAC(M(x), M(flip x))

eps = 0 and lambda = 0 is plain cross-entropy; each term is switched by its own weight so
every ablation row (baseline, RAC only, RSL only, both) is one command.
"""
from __future__ import annotations

import torch
from torch import nn

from .rebalanced_attention_consistency import rebalanced_attention_consistency
from .rebalanced_smooth_labels import RebalancedSmoothLabelLoss


class MEKLoss(nn.Module):
    """RSL on the first view's logits plus ``rac_weight`` times RAC over both views' maps."""

    def __init__(self, class_weights: torch.Tensor, rsl_eps: float = 0.3, rac_weight: float = 0.1) -> None:
        super().__init__()
        if rac_weight < 0:
            raise ValueError(f"--rac-weight must be >= 0, got {rac_weight}")
        self.rsl = RebalancedSmoothLabelLoss(class_weights, eps=rsl_eps)
        self.register_buffer("class_weights", class_weights.float().clone())
        self.rac_weight = rac_weight

    @property
    def needs_flipped_view(self) -> bool:
        """Whether the mirrored images must be run through the model at all."""
        return self.rac_weight > 0

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        maps: torch.Tensor | None = None,
        flipped_maps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return the total ``loss`` and each term (``rsl``, ``rac``) for logging."""
        rsl = self.rsl(logits, labels)
        terms = {"rsl": rsl}
        loss = rsl
        if self.needs_flipped_view:
            if maps is None or flipped_maps is None:
                raise ValueError("RAC needs the attention maps of the images and of their mirrors")
            rac = rebalanced_attention_consistency(maps, flipped_maps, self.class_weights)
            terms["rac"] = rac
            loss = loss + self.rac_weight * rac
        terms["loss"] = loss
        return terms

"""The MEK objective: re-balanced smooth labels plus re-balanced attention consistency.

    L = RSL(z(x), y; eps) + lambda * RAC(M(x), M(flip x))

eps = 0 and lambda = 0 is plain cross-entropy; each term is switched by its own weight so
every ablation row (baseline, RAC only, RSL only, both) is one command.

Deferred start: before step ``start_step`` both re-balanced terms are off (plain
cross-entropy, no mirrored pass), then eps and lambda ramp linearly to their values over
``ramp_steps``. The paper's setting is start 0, ramp 0 (on from the first step).
"""
from __future__ import annotations

import torch
from torch import nn

from .rebalanced_attention_consistency import rebalanced_attention_consistency
from .rebalanced_smooth_labels import RebalancedSmoothLabelLoss


class MEKLoss(nn.Module):
    """RSL on the first view's logits plus ``rac_weight`` times RAC over both views' maps."""

    def __init__(
        self,
        class_weights: torch.Tensor,
        rsl_eps: float = 0.3,
        rac_weight: float = 0.1,
        start_step: int = 0,
        ramp_steps: int = 0,
        rac_class_weights: torch.Tensor | None = None,
    ) -> None:
        """``class_weights`` serve both terms unless RAC gets its own ``rac_class_weights``."""
        super().__init__()
        if rac_weight < 0:
            raise ValueError(f"--rac-weight must be >= 0, got {rac_weight}")
        self.rsl = RebalancedSmoothLabelLoss(class_weights, eps=rsl_eps)
        rac_class_weights = class_weights if rac_class_weights is None else rac_class_weights
        if rac_class_weights.shape != class_weights.shape:
            raise ValueError(f"RAC's class weights have shape {tuple(rac_class_weights.shape)}, "
                             f"RSL's {tuple(class_weights.shape)}")
        self.register_buffer("rac_class_weights", rac_class_weights.float().clone())
        self.full_rsl_eps = rsl_eps
        self.full_rac_weight = rac_weight
        self.rac_weight = rac_weight
        self.start_step = start_step
        self.ramp_steps = ramp_steps
        self.set_step(0)

    def set_step(self, step: int) -> None:
        """Scale eps and lambda for the deferred start (a no-op with the paper's defaults)."""
        if step < self.start_step:
            factor = 0.0
        elif self.ramp_steps > 0:
            factor = min(1.0, (step - self.start_step + 1) / self.ramp_steps)
        else:
            factor = 1.0
        self.rsl.eps = self.full_rsl_eps * factor
        self.rac_weight = self.full_rac_weight * factor

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
        if self.full_rac_weight > 0 and not self.needs_flipped_view:
            terms["rac"] = torch.zeros((), device=logits.device)  # keeps the logged terms stable
        if self.needs_flipped_view:
            if maps is None or flipped_maps is None:
                raise ValueError("RAC needs the attention maps of the images and of their mirrors")
            rac = rebalanced_attention_consistency(maps, flipped_maps, self.rac_class_weights)
            terms["rac"] = rac
            loss = loss + self.rac_weight * rac
        terms["loss"] = loss
        return terms

"""Losses: one per file, each with its formula and paper in the docstring."""
from .balanced_softmax import balanced_softmax_loss
from .class_prior import ClassPrior
from .class_weights import class_weights_from_counts
from .focal import focal_loss
from .ldam import ldam_loss, margin_logits
from .logit_adjusted import logit_adjusted_loss, posthoc_adjusted_logits
from .rebalanced_attention_consistency import rebalanced_attention_consistency
from .rebalanced_smooth_labels import RebalancedSmoothLabelLoss, rebalanced_smooth_targets, target_mass_per_class

__all__ = [
    "ClassPrior",
    "RebalancedSmoothLabelLoss",
    "balanced_softmax_loss",
    "class_weights_from_counts",
    "focal_loss",
    "ldam_loss",
    "logit_adjusted_loss",
    "margin_logits",
    "posthoc_adjusted_logits",
    "rebalanced_attention_consistency",
    "rebalanced_smooth_targets",
    "target_mass_per_class",
]

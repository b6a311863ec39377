"""Losses: one per file, each with its formula in the docstring."""
from .class_weights import class_weights_from_counts
from .mek import MEKLoss
from .rebalanced_attention_consistency import RebalancedAttentionConsistency, rebalanced_attention_consistency
from .rebalanced_smooth_labels import RebalancedSmoothLabelLoss, rebalanced_smooth_targets, target_mass_per_class

__all__ = [
    "MEKLoss",
    "RebalancedAttentionConsistency",
    "RebalancedSmoothLabelLoss",
    "class_weights_from_counts",
    "rebalanced_attention_consistency",
    "rebalanced_smooth_targets",
    "target_mass_per_class",
]

"""UDA consistency (Xie et al., "Unsupervised Data Augmentation for Consistency Training",
NeurIPS 2020), as Face2Exp's teacher uses it:

    q = softmax(z_T(weak x) / T)                  (no gradient; T = --temperature)
    L_u = mean_i [ m_i * sum_k -q_ik log softmax(z_T(strong x_i))_k ]
    m_i = 1[max_k q_ik >= tau]                    (tau = --threshold; m = 1 when it is not set)

The mean runs over the whole unlabelled batch (masked samples count as zeros), as in the
official code's masked term (``src/main.py``: ``torch.mean(-(soft * log_softmax).sum(-1) * mask)``).
That code computes the mask but trains on the unmasked term; here the mask is applied
whenever a threshold is given.
"""
from __future__ import annotations

import torch


def soft_pseudo_labels(weak_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The teacher's softened weak-view prediction, detached (the target of the consistency term)."""
    return torch.softmax(weak_logits.detach().float() / temperature, dim=-1)


def confidence_mask(soft_labels: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """1 where the soft label's top probability reaches ``threshold`` (all ones for None)."""
    if threshold is None:
        return torch.ones(soft_labels.shape[0], device=soft_labels.device)
    return soft_labels.max(dim=-1).values.ge(threshold).float()


def uda_consistency(soft_labels: torch.Tensor, strong_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked cross-entropy of the strong-view logits against the soft weak-view labels (batch mean)."""
    per_sample = -(soft_labels * torch.log_softmax(strong_logits.float(), dim=-1)).sum(dim=-1)
    return (per_sample * mask).mean()

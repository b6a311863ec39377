"""Logit adjustment (Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR 2021).

Loss form:   LA(z, y) = CE(z + tau * log pi, y)        (pi = training class prior)
Post-hoc:    predict argmax_k (z_k - tau * log pi_k)  for a model trained with plain CE.

tau = 1 is the paper's default. The loss form (like balanced softmax) leaves evaluation as
argmax z; the post-hoc form changes only the prediction rule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def logit_adjusted_loss(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    return F.cross_entropy(logits.float() + tau * log_prior.to(logits.device, torch.float32), labels)


def posthoc_adjusted_logits(logits: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    return logits - tau * log_prior.to(logits.device, logits.dtype)

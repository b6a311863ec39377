"""Relative uncertainty mixing and the add-up loss of RUL (Zhang et al., "Relative Uncertainty
Learning for Facial Expression Recognition", NeurIPS 2021; official code
zyh-uaiaaaa/Relative-Uncertainty-Learning, ``src/utils.py`` ``mixup_data`` / ``mixup_criterion``).

Each sample i is paired with a partner j = perm(i) (a random permutation of the batch). With u
the per-sample uncertainty (mean of exp(log-variance)) and mu the features:

    w_i      = u_i / (u_i + u_j)           w'_i = u_j / (u_i + u_j)        (w_i + w'_i = 1)
    mixed_i  = w_i mu_i + w'_i mu_j

so the sample with the LARGER uncertainty gets the LARGER weight in the mix (the official
``att1 = att / (att + att[index])`` multiplies ``x``), and the gradient flows into u through the
weights: to classify the mix as both labels, the network must learn how much each sample should
count. The add-up loss (``mixup_criterion``) scores the mix against both labels with equal weights:

    L = 1/2 CE(z(mixed), y_i) + 1/2 CE(z(mixed), y_j)

A sample paired with itself gives mixed_i = mu_i and L = CE(z(mu_i), y_i): plain cross-entropy.

``class_weights`` (not in RUL) makes each CE class-weighted as torch does it:
sum_i a_{y_i} CE_i / sum_i a_{y_i}; a self-paired batch then gives the class-weighted CE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def relative_uncertainty_mix(features: torch.Tensor, uncertainty: torch.Tensor, partner: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mixed features (B, D), own weight w (B,), partner weight w' (B,)).

    ``features`` (B, D), ``uncertainty`` (B,) positive, ``partner`` (B,) long: the index of each
    sample's partner.
    """
    if uncertainty.ndim == 2 and uncertainty.shape[1] == 1:
        uncertainty = uncertainty[:, 0]
    if features.ndim != 2 or uncertainty.shape != features.shape[:1] or partner.shape != features.shape[:1]:
        raise ValueError(f"expected features (B, D), uncertainty (B,) and partner (B,), got "
                         f"{tuple(features.shape)}, {tuple(uncertainty.shape)}, {tuple(partner.shape)}")
    other = uncertainty[partner]
    total = uncertainty + other
    own_weight, partner_weight = uncertainty / total, other / total
    mixed = own_weight[:, None] * features + partner_weight[:, None] * features[partner]
    return mixed, own_weight, partner_weight


def add_up_loss(logits: torch.Tensor, labels: torch.Tensor, partner_labels: torch.Tensor,
                class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, CE against the own labels, CE against the partners' labels); L = (CE_a + CE_b) / 2."""
    ce_a = F.cross_entropy(logits, labels, weight=class_weights)
    ce_b = F.cross_entropy(logits, partner_labels, weight=class_weights)
    return 0.5 * ce_a + 0.5 * ce_b, ce_a, ce_b


def random_partner(batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random permutation of the batch, as the official ``torch.randperm(batch_size)``, drawn on
    ``device`` by its generator: no host-to-device copy per step on a GPU. Seeding and exact
    resume cover it (checkpoints restore the CPU generator and the training GPU's)."""
    return torch.randperm(batch_size, device=device)

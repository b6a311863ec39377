"""Classifier with a class-activation-map (attention-map) head.

backbone -> feature map F (B, C, H, W) -> global average pool -> linear head (W, b) -> logits.
The attention maps are M[b, k, h, w] = sum_c W[k, c] * F[b, c, h, w] with W detached, so
RAC's gradient reaches the features but not the head. Because pooling is linear,
mean_{h,w} M[:, k] + b[k] equals logit k.

Maps are computed only when asked for (``model(x, with_maps=True)``): evaluation and the
methods that need no maps skip the (B, K, H, W) einsum.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .backbones import feature_map


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, K)
    attention_maps: torch.Tensor | None = None  # (B, K, H, W), only with with_maps=True
    features: torch.Tensor | None = None  # (B, C) pooled features


class CAMClassifier(nn.Module):
    """A feature-map backbone with a linear head that can also return class activation maps."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_classes)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor, with_maps: bool = False) -> ModelOutput:
        features = feature_map(self.backbone, images)
        pooled = features.mean(dim=(2, 3))
        logits = self.head(pooled)
        if not with_maps:
            return ModelOutput(logits, None, pooled)
        weight = self.head.weight.detach().to(features.dtype)
        attention_maps = torch.einsum("kc,bchw->bkhw", weight, features)
        return ModelOutput(logits, attention_maps, pooled)

"""Classification heads behind one registry, and the model that puts a head on a backbone.

Every head takes the backbone's last feature map F (B, C, H, W) and returns a
:class:`ModelOutput`: logits, the pooled features and, only when asked for
(``with_maps=True``), one attention map per class. Add a head with ``@register_head``.

- ``cam``: global average pooling and a linear layer (W, b). Its class activation maps are
  M[b, k, h, w] = sum_c W[k, c] F[b, c, h, w] with W detached, so an attention loss trains
  the features but not the head; since pooling is linear, mean_{h,w} M[:, k] + b[k] = logit k.
- ``norm-linear``: cosine logits cos(W_k, f) between the pooled feature f and each class
  weight (LDAM's normalised linear layer, Cao et al. 2019, ``NormedLinear`` in its
  official models/resnet_cifar.py); maps are the class weights' unit vectors applied to F,
  divided by ||f||, so their spatial mean is again the logit.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import feature_map


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, K)
    attention_maps: torch.Tensor | None = None  # (B, K, H, W), only with with_maps=True
    features: torch.Tensor | None = None  # (B, C) pooled features


HeadFactory = Callable[[int, int], nn.Module]
HEADS: dict[str, HeadFactory] = {}


def register_head(name: str) -> Callable[[HeadFactory], HeadFactory]:
    """Register ``factory(num_features, num_classes) -> head module`` under ``name``."""

    def decorator(factory: HeadFactory) -> HeadFactory:
        if name in HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        HEADS[name] = factory
        return factory

    return decorator


def build_head(name: str, num_features: int, num_classes: int) -> nn.Module:
    if name not in HEADS:
        raise ValueError(f"--head {name!r} is unknown; choose from {', '.join(sorted(HEADS))}")
    return HEADS[name](num_features, num_classes)


@register_head("cam")
class LinearCAMHead(nn.Linear):
    """Average pooling + linear layer; class activation maps on request (module docstring)."""

    gives_maps = True

    def forward(self, features: torch.Tensor, with_maps: bool = False) -> ModelOutput:  # type: ignore[override]
        pooled = features.mean(dim=(2, 3))
        logits = super().forward(pooled)
        if not with_maps:
            return ModelOutput(logits, None, pooled)
        weight = self.weight.detach().to(features.dtype)
        return ModelOutput(logits, torch.einsum("kc,bchw->bkhw", weight, features), pooled)


@register_head("norm-linear")
class NormalisedLinearHead(nn.Module):
    """Cosine logits between pooled features and class weights (LDAM's ``NormedLinear``)."""

    gives_maps = True

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        # LDAM's initialisation: uniform(-1, 1), columns renormed (scale is irrelevant after normalising).
        self.weight = nn.Parameter(torch.empty(num_classes, num_features).uniform_(-1, 1))

    def forward(self, features: torch.Tensor, with_maps: bool = False) -> ModelOutput:
        pooled = features.mean(dim=(2, 3))
        weight = F.normalize(self.weight, dim=1)
        norm = pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)
        logits = (pooled / norm) @ weight.t()
        if not with_maps:
            return ModelOutput(logits, None, pooled)
        maps = torch.einsum("kc,bchw->bkhw", weight.detach().to(features.dtype), features)
        return ModelOutput(logits, maps / norm.detach()[:, :, None, None].to(features.dtype), pooled)


class FERModel(nn.Module):
    """A feature-map backbone with a head from :data:`HEADS`.

    ``model(images)`` gives logits (and pooled features); ``model(images, with_maps=True)``
    also gives the class attention maps, for the methods that need them.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor, with_maps: bool = False) -> ModelOutput:
        return self.head(feature_map(self.backbone, images), with_maps=with_maps)

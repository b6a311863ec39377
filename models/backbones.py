"""Backbone registry: every backbone is a timm model that returns its last feature map.

A backbone factory takes ``img_size`` and returns a timm model built with
``num_classes=0, global_pool=''`` so that ``forward_features`` gives the final
feature map. Add a backbone by decorating a factory with ``@register_backbone``;
any other timm model name whose last stage is a spatial feature map also works.
"""
from __future__ import annotations

from typing import Callable

import timm
import torch
from torch import nn

from utils.registry import Registry

BackboneFactory = Callable[..., nn.Module]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Register ``factory(img_size: int, **kwargs) -> timm model`` under ``name``."""
    return BACKBONES.register(name)


def _timm_feature_model(timm_name: str, **kwargs) -> nn.Module:
    # num_classes=0 and global_pool='' keep the spatial map; the CAM head pools it.
    return timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="", **kwargs)


@register_backbone("resnet18")
def resnet18(img_size: int = 224, **kwargs) -> nn.Module:
    return _timm_feature_model("resnet18", **kwargs)


@register_backbone("resnet50")
def resnet50(img_size: int = 224, **kwargs) -> nn.Module:
    return _timm_feature_model("resnet50", **kwargs)


@register_backbone("swin_t")
def swin_t(img_size: int = 112, **kwargs) -> nn.Module:
    # MEK's Swin-T: patch size 2 so a 112 input still ends in a 7x7 grid with window 7.
    patch_size = kwargs.pop("patch_size", 2 if img_size <= 112 else 4)
    return _timm_feature_model(
        "swin_tiny_patch4_window7_224", img_size=img_size, patch_size=patch_size, **kwargs
    )


def create_backbone(name: str, img_size: int, **kwargs) -> nn.Module:
    """Build a registered backbone, or any timm model by name, as a feature-map extractor."""
    if name in BACKBONES:
        model = BACKBONES[name](img_size=img_size, **kwargs)
    elif timm.is_model(name):
        extra = {"img_size": img_size} if _accepts_img_size(name) else {}
        model = _timm_feature_model(name, **extra, **kwargs)
    else:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(
            f"--backbone {name!r} is neither a registered backbone ({known}) nor a timm model name"
        )
    return model


def _accepts_img_size(timm_name: str) -> bool:
    # Transformers take img_size; CNNs reject it.
    cfg = timm.models.get_pretrained_cfg(timm_name)
    arch = timm_name.split("_")[0]
    return arch in {"swin", "swinv2", "vit", "deit", "cait", "coat", "maxvit", "maxxvit", "coatnet"} or (
        cfg is not None and "fixed_input_size" in (cfg.to_dict() if hasattr(cfg, "to_dict") else {})
        and cfg.to_dict().get("fixed_input_size", False)
    )


def feature_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run ``backbone`` and return its last feature map as (B, C, H, W)."""
    features = backbone.forward_features(images)
    if features.ndim != 4:
        raise ValueError(
            f"backbone {type(backbone).__name__} returns features of shape {tuple(features.shape)}; "
            "the attention-map head needs a spatial feature map (B, C, H, W)"
        )
    if getattr(backbone, "output_fmt", "NCHW") == "NHWC":
        features = features.permute(0, 3, 1, 2)
    return features

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


def small_image_resnet18(stem_stride: int, base_width: int = 64, **kwargs) -> nn.Module:
    """ResNet-18 for 48-64 px faces: a 3x3 stem convolution of stride ``stem_stride`` and no max-pool.

    ImageNet's stem (7x7 stride 2, then a stride-2 max-pool) divides a 48 px face by 4 before the first
    block and leaves a 2x2 final map, too coarse for class activation maps. The CIFAR ResNets (He et
    al. 2016, section 4.2; Kuang Liu's pytorch-cifar ResNet18) keep the resolution with a 3x3 stride-1
    stem and no max-pool. ``stem_stride`` 1 is that network (final map = input / 8); 2 halves the stem's
    output (input / 16) for a quarter of the cost. ``base_width`` scales every stage (64 = ResNet-18's
    64-128-256-512; 32 = 32-64-128-256, a quarter of the multiply-adds and parameters).

    Measured (``torch.utils.flop_counter``, one image, backbone only; tests/test_models.py checks
    the maps and parameter counts):

    ========================  =====  =========  ===========  ==========
    name                      input  final map  multiply-adds  parameters
    ========================  =====  =========  ===========  ==========
    ``resnet18`` (ImageNet)   48     512x2x2    0.098 G      11.18 M
    ``resnet18_s1``           48     512x6x6    1.250 G      11.17 M
    ``resnet18_s2``           64     512x4x4    0.555 G      11.17 M
    ``resnet18_s1_w32``       48     256x6x6    0.313 G       2.80 M
    ``resnet18_s2_w32``       64     256x4x4    0.139 G       2.80 M
    ========================  =====  =========  ===========  ==========
    """
    from timm.models.resnet import BasicBlock, ResNet

    widths = tuple(base_width * 2**i for i in range(4))
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=0, global_pool="", channels=widths, **kwargs)
    model.conv1 = nn.Conv2d(3, base_width, kernel_size=3, stride=stem_stride, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if base_width != 64:  # timm's plain stem always has 64 channels: the stem and layer1's first block at base_width
        model.bn1 = nn.BatchNorm2d(base_width)
        model.layer1[0] = BasicBlock(base_width, base_width)
    model.init_weights(zero_init_last=True)  # timm's initialisation, the replaced modules included
    return model


@register_backbone("resnet18_s1")
def resnet18_s1(img_size: int = 48, **kwargs) -> nn.Module:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool (the CIFAR layout): final map = input / 8."""
    return small_image_resnet18(stem_stride=1, **kwargs)


@register_backbone("resnet18_s2")
def resnet18_s2(img_size: int = 64, **kwargs) -> nn.Module:
    """ResNet-18 with a 3x3 stride-2 stem and no max-pool: final map = input / 16 (4x4 at 64 px)."""
    return small_image_resnet18(stem_stride=2, **kwargs)


@register_backbone("resnet18_s1_w32")
def resnet18_s1_w32(img_size: int = 48, **kwargs) -> nn.Module:
    """``resnet18_s1`` at half width (32-64-128-256 channels)."""
    return small_image_resnet18(stem_stride=1, base_width=32, **kwargs)


@register_backbone("resnet18_s2_w32")
def resnet18_s2_w32(img_size: int = 64, **kwargs) -> nn.Module:
    """``resnet18_s2`` at half width (32-64-128-256 channels): final map 4x4 at 64 px."""
    return small_image_resnet18(stem_stride=2, base_width=32, **kwargs)


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

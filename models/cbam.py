"""ResNets with CBAM blocks: ``resnet18_cbam`` and ``resnet50_cbam`` (Woo et al., "CBAM:
Convolutional Block Attention Module", ECCV 2018; official code Jongchan/attention-module,
``MODELS/cbam.py`` and ``MODELS/model_resnet.py``).

In every residual block the output of the last BN of the residual branch is refined by channel
attention, then spatial attention, before the skip connection is added:

    M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))      MLP: C -> C/16 -> C (ReLU), shared, no bias
    F'     = M_c(F) * F
    M_s(F') = sigmoid(BN(conv7x7([mean_c F'; max_c F'])))    one 7x7 conv, 2 -> 1 channels, no bias
    F''    = M_s(F') * F'

(reduction 16 and the 7x7 kernel are the paper's; the official spatial gate is a conv + BN without
ReLU, as here). Built on timm's ResNet (``block_args=dict(attn_layer=CBAM)``; the module sits at
timm's ``se`` slot, i.e. ``layerX.Y.se.*``, exactly where the official code calls ``self.cbam``), so a
plain ResNet's pretrained weights (ImageNet, MS-Celeb-1M ``resnet18_msceleb.pth``) keep their names
and load with ``--pretrained``; the CBAM parameters are new: ``models/pretrained.py`` lists them as
new in its report and leaves them out of the coverage fraction (``pretrained_new_parameters``).
"""
from __future__ import annotations

import re

import timm
import torch
from torch import nn

from .backbones import register_backbone


class ChannelGate(nn.Module):
    """M_c: a shared bottleneck MLP (1x1 convs, no bias) on the average- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        def mlp(pooled: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(pooled)))

        return torch.sigmoid(mlp(x.mean(dim=(2, 3), keepdim=True)) + mlp(x.amax(dim=(2, 3), keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialGate(nn.Module):
    """M_s: a 7x7 conv (+ BN) over the channel-wise mean and max."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAM(nn.Module):
    """Channel attention then spatial attention (module docstring)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, **_) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


# Parameter names a plain ResNet's weights never have: the CBAM modules at timm's ``se`` slot.
CBAM_PARAMETER = re.compile(r"^layer\d+\.\d+\.se\.")


def _resnet_cbam(timm_name: str, **kwargs) -> nn.Module:
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="",
                              block_args=dict(attn_layer=CBAM), **kwargs)
    # Read by models/pretrained.py: these are new here, so a plain ResNet file still covers the backbone.
    model.pretrained_new_parameters = CBAM_PARAMETER
    model.pretrained_base = timm_name
    return model


@register_backbone("resnet18_cbam")
def resnet18_cbam(img_size: int = 224, **kwargs) -> nn.Module:
    return _resnet_cbam("resnet18", **kwargs)


@register_backbone("resnet50_cbam")
def resnet50_cbam(img_size: int = 224, **kwargs) -> nn.Module:
    return _resnet_cbam("resnet50", **kwargs)

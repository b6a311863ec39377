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

from utils.registry import Registry

from .backbones import feature_map


class ModelOutput(NamedTuple):
    """What every head returns. Outputs only one head has travel in ``extras`` (name -> tensor):
    the ``rul`` head's ``"uncertainty"`` (B,), training only; the ``dan`` head's
    ``"head_features"`` (B, heads, C), its attention heads (log-softmax over heads)."""

    logits: torch.Tensor  # (B, K)
    attention_maps: torch.Tensor | None = None  # (B, K, H, W), only with with_maps=True
    features: torch.Tensor | None = None  # (B, C) pooled features (RUL's head: the feature mu)
    extras: dict[str, torch.Tensor] | None = None  # head-specific outputs (docstring)

    def extra(self, name: str) -> torch.Tensor | None:
        """``extras[name]``, or None when the head gives no such output."""
        return (self.extras or {}).get(name)

    # Read-only names of two extras, for code written before ``extras``.
    @property
    def uncertainty(self) -> torch.Tensor | None:
        return self.extra("uncertainty")

    @property
    def head_features(self) -> torch.Tensor | None:
        return self.extra("head_features")


HeadFactory = Callable[[int, int], nn.Module]
HEADS: Registry[HeadFactory] = Registry("head")


def register_head(name: str) -> Callable[[HeadFactory], HeadFactory]:
    """Register ``factory(num_features, num_classes) -> head module`` under ``name``."""
    return HEADS.register(name)


def build_head(name: str, num_features: int, num_classes: int) -> nn.Module:
    return HEADS.lookup(name)(num_features, num_classes)


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


# --------------------------------------------------------------------------------------------
# Heads that go with a method of their own (methods/rul.py, methods/dan.py).


def _no_feature_map_error(head: str, features: torch.Tensor) -> ValueError:
    return ValueError(f"the {head} head needs a spatial feature map (B, C, H, W) from the backbone, "
                      f"got shape {tuple(features.shape)}")


@register_head("rul")
class RULHead(nn.Module):
    """Relative Uncertainty Learning's head (Zhang et al., "Relative Uncertainty Learning for
    Facial Expression Recognition", NeurIPS 2021; official code zyh-uaiaaaa/Relative-Uncertainty-
    Learning, ``src/rul.py`` ``res18feature`` and ``src/main.py``).

    Two parallel branches on the final feature map F (official layers, ``out_dim`` 64):

        mu(F)      = BN1d(Linear(flatten(Dropout_0.4(BN2d_noaffine(F)))))      (B, 64)
        logvar(F)  = the same layers, own weights                              (B, 64)
        u          = mean_d exp(logvar_d)                                      (B,)  uncertainty
        logits     = classifier(mu),  classifier = Linear(64, K)

    The official branches flatten a 7x7 map (ResNet-18 at 224 px: Linear(512*7*7, 64)); any other
    grid is average-pooled to 7x7 first (adaptive pooling; a no-op at 224 px), so the head works at
    every input size. BatchNorm eps 2e-5 as officially.

    Training: ``features`` = mu, ``uncertainty`` = u; the method (``methods/rul.py``) mixes mu with a
    partner's and calls ``classifier`` on the mix. ``logits`` = classifier(mu) are also given (the
    unmixed prediction). Evaluation: logits = classifier(mu) only (the official test phase); the
    log-variance branch is not run. No class attention maps (``gives_maps`` False).
    """

    gives_maps = False
    out_dim = 64
    grid = 7
    drop_rate = 0.4

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.mu = self._branch(num_features)
        self.log_var = self._branch(num_features)
        self.classifier = nn.Linear(self.out_dim, num_classes)

    def _branch(self, channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.BatchNorm2d(channels, eps=2e-5, affine=False),
            nn.Dropout(p=self.drop_rate),
            nn.Flatten(),
            nn.Linear(channels * self.grid * self.grid, self.out_dim),
            nn.BatchNorm1d(self.out_dim, eps=2e-5),
        )

    def forward(self, features: torch.Tensor, with_maps: bool = False) -> ModelOutput:
        if features.ndim != 4:
            raise _no_feature_map_error("rul", features)
        if tuple(features.shape[-2:]) != (self.grid, self.grid):
            features = F.adaptive_avg_pool2d(features, self.grid)
        mu = self.mu(features)
        logits = self.classifier(mu)
        if not self.training:
            return ModelOutput(logits, None, mu)
        uncertainty = self.log_var(features).float().exp().mean(dim=1)
        return ModelOutput(logits, None, mu, {"uncertainty": uncertainty})


class _DANSpatialAttention(nn.Module):
    """DAN's spatial attention unit (official ``SpatialAttention``): a 1x1 conv to C/2, then 3x3, 1x3
    and 3x1 convs back to C (each with BN), summed and ReLU'd, summed over channels into one map
    a (B, 1, H, W); the unit returns F * a."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels // 2
        self.conv1x1 = nn.Sequential(nn.Conv2d(channels, mid, 1), nn.BatchNorm2d(mid))
        self.conv_3x3 = nn.Sequential(nn.Conv2d(mid, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.conv_1x3 = nn.Sequential(nn.Conv2d(mid, channels, (1, 3), padding=(0, 1)), nn.BatchNorm2d(channels))
        self.conv_3x1 = nn.Sequential(nn.Conv2d(mid, channels, (3, 1), padding=(1, 0)), nn.BatchNorm2d(channels))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x)
        return torch.relu(self.conv_3x3(y) + self.conv_1x3(y) + self.conv_3x1(y)).sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class _DANChannelAttention(nn.Module):
    """DAN's channel attention unit (official ``ChannelAttention``): s = GAP(x) (B, C), then
    s * sigmoid(Linear(C/16, C)(ReLU(BN1d(Linear(C, C/16)(s)))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(channels // 16, 1)
        self.attention = nn.Sequential(nn.Linear(channels, mid), nn.BatchNorm1d(mid), nn.ReLU(inplace=True),
                                       nn.Linear(mid, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled * self.attention(pooled)


class _DANCrossAttentionHead(nn.Module):
    """One of DAN's attention heads: spatial then channel attention (official ``CrossAttentionHead``,
    with its initialisation: convs Kaiming-normal fan-out, BN 1/0, linears N(0, 0.001^2), biases 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.sa = _DANSpatialAttention(channels)
        self.ca = _DANChannelAttention(channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.sa(x))


@register_head("dan")
class DANHead(nn.Module):
    """Distract your Attention's head (Wen et al., "Distract Your Attention: Multi-head Cross
    Attention Network for Facial Expression Recognition", Biomimetics 2023 / arXiv 2109.07270;
    official code yaoing/DAN, ``networks/dan.py``).

    With F the backbone's feature map (B, C, H, W) and ``num_heads`` = 4 (official default):

        h_i    = CA_i(SA_i(F))                            (B, C)   each attention head
        H      = log_softmax_i([h_1 .. h_n])              (B, n, C) (only when n > 1)
        logits = BN1d_K(Linear(C, K)(sum_i H_i))

    SA: spatial attention (1x1 to C/2, 3x3 + 1x3 + 3x1 back to C, ReLU, channel sum, F * map);
    CA: channel attention (GAP, C -> C/16 -> C with BN1d and ReLU, sigmoid gate). Official C = 512
    (ResNet-18): 256 and 32 channels inside; other backbones scale these with C.

    Returns ``features`` = GAP(F) (the official affinity loss's input), ``head_features`` = H (the
    partition loss's input). No class attention maps: logits are not a spatial mean of per-class
    maps here (``gives_maps`` False).
    """

    gives_maps = False
    num_heads = 4

    def __init__(self, num_features: int, num_classes: int, num_heads: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads or self.num_heads
        self.heads = nn.ModuleList(_DANCrossAttentionHead(num_features) for _ in range(self.num_heads))
        self.fc = nn.Linear(num_features, num_classes)
        self.bn = nn.BatchNorm1d(num_classes)

    def forward(self, features: torch.Tensor, with_maps: bool = False) -> ModelOutput:
        if features.ndim != 4:
            raise _no_feature_map_error("dan", features)
        heads = torch.stack([head(features) for head in self.heads], dim=1)
        if heads.shape[1] > 1:
            heads = F.log_softmax(heads, dim=1)
        logits = self.bn(self.fc(heads.sum(dim=1)))
        return ModelOutput(logits, None, features.mean(dim=(2, 3)), {"head_features": heads})

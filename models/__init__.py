"""Models: backbones (timm), heads (a registry), and pretrained-weight loading."""
from __future__ import annotations

from torch import nn

from .backbones import BACKBONES, create_backbone, feature_map, register_backbone
from . import vggface2_resnet  # registers resnet50_vggface2
from . import cbam  # registers resnet18_cbam, resnet50_cbam
from . import dlib_resnet  # registers dlib_resnet, dlib_resnet_l0 .. _l3
from .heads import HEADS, FERModel, ModelOutput, build_head, register_head


def build_model(backbone: str, num_classes: int, img_size: int, drop_path_rate: float | None = None,
                head: str = "cam") -> FERModel:
    """Build ``backbone`` (registry name or timm name) with the head registered as ``head``.

    ``drop_path_rate`` None keeps the backbone's own default (timm: 0.1 for Swin, 0 for ResNets).
    """
    kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate is not None else {}
    body = create_backbone(backbone, img_size=img_size, **kwargs)
    return FERModel(body, build_head(head, body.num_features, num_classes), num_classes)


def build_model_from_config(model_config: dict) -> FERModel:
    """Rebuild the model a checkpoint's ``model_config`` describes (weights not loaded)."""
    return build_model(model_config["backbone"], num_classes=model_config["num_classes"],
                       img_size=model_config["img_size"], head=model_config.get("head", "cam"))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "BACKBONES",
    "FERModel",
    "HEADS",
    "ModelOutput",
    "build_head",
    "build_model",
    "build_model_from_config",
    "count_parameters",
    "create_backbone",
    "feature_map",
    "register_backbone",
    "register_head",
]

"""``resnet50_vggface2``: timm's ResNet-50 rearranged to compute what the VGGFace2 Caffe ResNet-50 computes.

The VGGFace2 authors (Cao et al., 2018) trained ResNet-50 in Caffe; the widely used PyTorch conversion
(``resnet50_ft_weight.pkl``, VGGFace2-pytorch, also used by EAC) keeps torchvision's parameter names but
the Caffe architecture, which differs from torchvision/timm ``resnet50`` in two ways that do not change
any parameter shape, so the weights load into either model and only this one reproduces the original:

1. In each downsampling bottleneck (first block of layer2/3/4) the stride 2 sits on the 1x1 ``conv1``
   (Caffe / original ResNet paper), not on the 3x3 ``conv2`` (torchvision "ResNet v1.5").
2. The stem max pool is 3x3 / stride 2 with *no* padding and ``ceil_mode=True`` (Caffe rounds up),
   instead of padding 1 with floor rounding. For even stem outputs (e.g. 112 or 224 inputs) the output
   size is the same, but the pooling windows are shifted by one pixel; for odd sizes it is one smaller.

BatchNorm matches already: the conversion uses PyTorch's default eps 1e-5 (timm's too), with Caffe's
separate Scale layers folded into the BN weight/bias. Input preprocessing is NOT handled here: the
original Caffe model expects BGR pixels in 0..255 minus the mean (91.4953, 103.8827, 131.0912) (BGR);
EAC fine-tunes it on RGB ImageNet-normalised inputs instead.
"""
from __future__ import annotations

from torch import nn

from models.backbones import BACKBONES, register_backbone

_DOWNSAMPLING_STAGES = ("layer2", "layer3", "layer4")


def make_caffe_style(resnet: nn.Module) -> nn.Module:
    """Move the downsampling stride of each bottleneck from conv2 to conv1 and use Caffe's max pool.

    Works in place on a timm (or torchvision) ResNet with bottleneck blocks; returns the same module.
    """
    for stage_name in _DOWNSAMPLING_STAGES:
        block = getattr(resnet, stage_name)[0]
        if tuple(block.conv2.stride) != (2, 2) or tuple(block.conv1.stride) != (1, 1):
            raise ValueError(
                f"{stage_name}.0 is not a torchvision-style downsampling bottleneck "
                f"(conv1 stride {block.conv1.stride}, conv2 stride {block.conv2.stride}); "
                "make_caffe_style expects a plain ResNet-50 with stride 2 on conv2"
            )
        if not isinstance(getattr(block, "aa", nn.Identity()), nn.Identity):
            raise ValueError(f"{stage_name}.0 uses anti-aliased downsampling, which the Caffe model does not have")
        block.conv1.stride = (2, 2)
        block.conv2.stride = (1, 1)
    resnet.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    return resnet


def has_caffe_strides(model: nn.Module) -> bool:
    """True if ``model`` is a bottleneck ResNet whose downsampling blocks stride in the 1x1 conv1 (Caffe).

    Basic-block ResNets (18/34) always stride in their 3x3 conv1 and are not Caffe-style in this sense.
    """
    try:
        block = model.layer2[0]
        is_bottleneck = hasattr(block, "conv3") and tuple(block.conv1.kernel_size) == (1, 1)
        return is_bottleneck and tuple(block.conv1.stride) == (2, 2)
    except (AttributeError, IndexError, TypeError):
        return False


@register_backbone("resnet50_vggface2")
def resnet50_vggface2(img_size: int = 224, **kwargs) -> nn.Module:
    """ResNet-50 feature extractor with the VGGFace2 Caffe layout; load ``resnet50_ft_weight.pkl`` into it."""
    return make_caffe_style(BACKBONES["resnet50"](img_size=img_size, **kwargs))

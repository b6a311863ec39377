import pytest
import torch

from models import build_model


@pytest.mark.parametrize("backbone,img_size,grid,channels", [("resnet18", 64, 2, 512), ("swin_t", 112, 7, 768)])
def test_attention_map_shapes_and_invariant(backbone, img_size, grid, channels):
    torch.manual_seed(0)
    model = build_model(backbone, num_classes=7, img_size=img_size).eval()
    assert model.backbone.num_features == channels
    with torch.no_grad():
        out = model(torch.randn(2, 3, img_size, img_size), with_maps=True)
    assert out.logits.shape == (2, 7)
    assert out.attention_maps.shape == (2, 7, grid, grid)
    # Spatial mean of the class map plus the bias is the logit (pooling and the head are linear).
    assert torch.allclose(out.attention_maps.mean(dim=(2, 3)) + model.head.bias, out.logits, atol=1e-4)


def test_attention_maps_do_not_train_the_head():
    model = build_model("resnet18", num_classes=3, img_size=32)
    out = model(torch.randn(2, 3, 32, 32), with_maps=True)
    out.attention_maps.pow(2).sum().backward()
    assert model.head.weight.grad is None or torch.count_nonzero(model.head.weight.grad) == 0
    assert model.backbone.conv1.weight.grad is not None and model.backbone.conv1.weight.grad.abs().sum() > 0


def test_any_timm_feature_map_model_and_unknown_name():
    model = build_model("resnet10t", num_classes=7, img_size=64)
    assert model(torch.randn(1, 3, 64, 64), with_maps=True).attention_maps.shape[:2] == (1, 7)
    with pytest.raises(ValueError, match="neither a registered backbone"):
        build_model("no_such_backbone", num_classes=7, img_size=64)


@pytest.mark.parametrize("backbone,img_size,grid,channels,parameters", [
    # The stem's stride and the three strided stages: 48 / 8 = 6, 64 / 16 = 4 (models/backbones.py).
    ("resnet18_s1", 48, 6, 512, 11_168_832),
    ("resnet18_s2", 64, 4, 512, 11_168_832),
    ("resnet18_s1_w32", 48, 6, 256, 2_795_040),
    ("resnet18_s2_w32", 64, 4, 256, 2_795_040),
])
def test_small_image_resnets_keep_a_cam_sized_map(backbone, img_size, grid, channels, parameters):
    torch.manual_seed(0)
    model = build_model(backbone, num_classes=8, img_size=img_size).eval()
    assert model.backbone.num_features == channels
    # Full width: ResNet-18's 11,176,512 backbone parameters less the 7x7 stem's 3*64*(49-9) = 7,680
    # (convolutions 11,159,232, BatchNorm 9,600). Half width: the convolutions after the stem have half
    # the inputs and outputs, a quarter of (11,159,232 - 1,728) = 2,789,376, the stem 3*32*9 = 864, and
    # BatchNorm half the channels, 4,800: 2,795,040.
    assert sum(p.numel() for p in model.backbone.parameters()) == parameters
    assert isinstance(model.backbone.maxpool, torch.nn.Identity)
    assert model.backbone.conv1.kernel_size == (3, 3)
    with torch.no_grad():
        out = model(torch.randn(2, 3, img_size, img_size), with_maps=True)
    assert out.attention_maps.shape == (2, 8, grid, grid)
    assert torch.allclose(out.attention_maps.mean(dim=(2, 3)) + model.head.bias, out.logits, atol=1e-4)

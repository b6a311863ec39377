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

"""resnet18_cbam / resnet50_cbam (models/cbam.py): the CBAM gates by hand, their place in every
residual block, and pretrained plain-ResNet weights loading with the CBAM tensors reported as new
(never tripping the partial-load refusal)."""
from __future__ import annotations

import timm
import torch

from models import create_backbone
from models.cbam import CBAM, ChannelGate, SpatialGate
from models.pretrained import load_pretrained_backbone


def test_channel_gate_by_hand():
    gate = ChannelGate(2, reduction=16)  # hidden = 1
    with torch.no_grad():
        gate.fc1.weight.copy_(torch.tensor([[1.0, 1.0]]).view(1, 2, 1, 1))
        gate.fc2.weight.copy_(torch.tensor([[1.0], [-1.0]]).view(2, 1, 1, 1))
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 2.0]]]])  # (1, 2, 1, 2)
    # avg (2, 1) -> relu(3) -> (3, -3); max (3, 2) -> relu(5) -> (5, -5); gate sigmoid(8), sigmoid(-8)
    expected = x * torch.sigmoid(torch.tensor([8.0, -8.0])).view(1, 2, 1, 1)
    assert torch.allclose(gate(x), expected)


def test_spatial_gate_uses_a_7x7_conv_over_channel_mean_and_max():
    gate = SpatialGate().eval()
    assert gate.conv.kernel_size == (7, 7) and gate.conv.in_channels == 2
    with torch.no_grad():
        gate.conv.weight.zero_()
        gate.conv.weight[0, 1, 3, 3] = 1.0  # the centre tap of the channel-max input
    x = torch.randn(2, 5, 4, 4)
    bn_scale = 1 / (1 + gate.bn.eps) ** 0.5  # eval-mode BN with fresh statistics
    assert torch.allclose(gate(x), x * torch.sigmoid(x.amax(dim=1, keepdim=True) * bn_scale), atol=1e-6)


def test_channel_then_spatial():
    module = CBAM(32).eval()
    x = torch.randn(2, 32, 5, 5)
    assert module.channel.fc1.out_channels == 2  # reduction 16
    assert torch.allclose(module(x), module.spatial(module.channel(x)))
    assert not torch.allclose(module(x), module.channel(module.spatial(x)))


def test_every_residual_block_has_cbam_before_the_skip_connection():
    backbone = create_backbone("resnet18_cbam", img_size=64)
    blocks = [m for name, m in backbone.named_modules() if name.count(".") == 1 and name.startswith("layer")]
    assert len(blocks) == 8 and all(isinstance(b.se, CBAM) for b in blocks)
    assert backbone.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, 512, 2, 2)


def test_plain_resnet_weights_load_with_cbam_reported_as_new(tmp_path):
    for name, plain in (("resnet18_cbam", "resnet18"), ("resnet50_cbam", "resnet50")):
        torch.manual_seed(0)
        weights = timm.create_model(plain).state_dict()
        path = tmp_path / f"{plain}.pth"
        torch.save({"state_dict": weights}, path)
        backbone = create_backbone(name, img_size=224)
        report = load_pretrained_backbone(backbone, path, name)  # no --allow-partial needed
        # resnet50's CBAM MLPs are ~10% of the parameters: counted in, they would trip the 95% refusal
        assert report.loaded_fraction == 1.0 and not report.missing and not report.unexpected
        assert report.new and all(".se." in k for k in report.new)
        assert "new in this backbone" in report.summary()
        assert torch.equal(backbone.state_dict()["layer1.0.conv1.weight"], weights["layer1.0.conv1.weight"])


def test_a_checkpoint_recording_the_plain_backbone_loads(tmp_path):
    weights = timm.create_model("resnet18").state_dict()
    path = tmp_path / "project.pth"
    torch.save({"model": {f"backbone.{k}": v for k, v in weights.items()}, "backbone": "resnet18"}, path)
    report = load_pretrained_backbone(create_backbone("resnet18_cbam", img_size=224), path, "resnet18_cbam")
    assert report.loaded_fraction == 1.0

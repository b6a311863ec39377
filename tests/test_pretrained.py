"""Tests for models/pretrained.py and models/vggface2_resnet.py with fake checkpoints of every format.

Every fake file holds random tensors with the real names and shapes; a load is checked by comparing the
backbone's tensors with the file's tensors after the documented conversion.
"""
from __future__ import annotations

import argparse
import copy
import functools
import pickle
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import resample_patch_embed

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # run from any directory
    sys.path.insert(0, ROOT)

import models.vggface2_resnet  # noqa: E402,F401  (registers resnet50_vggface2)
from models.backbones import create_backbone, feature_map  # noqa: E402
from models.pretrained import (  # noqa: E402
    FORMAT_PROJECT,
    FORMAT_STATE_DICT,
    FORMAT_SWIN_ORIGINAL,
    FORMAT_VGGFACE2,
    LoadReport,
    PretrainedLoadError,
    load_pretrained_backbone,
)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The test machines have 2 shared cores: one intra-op thread is much faster there (and fairer)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.lru_cache(maxsize=None)
def _template(name: str) -> torch.nn.Module:
    return create_backbone(name, 112)


def fresh_backbone(name: str) -> torch.nn.Module:
    """A newly initialised backbone at img 112; copies one cached build (Swin init is slow on 2 cores)."""
    return copy.deepcopy(_template(name))


@functools.lru_cache(maxsize=None)
def _imagenet_swin() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=1000)
    return model, randomized(model.state_dict(), seed=3)


def randomized(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names/shapes of ``state`` and sane scales (positive BN variances)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in state.items():
        if not value.is_floating_point():
            out[name] = value.clone()
        elif name.endswith("running_var"):
            out[name] = torch.rand(value.shape, generator=gen) + 0.5
        elif value.ndim == 4:
            out[name] = torch.randn(value.shape, generator=gen) * (2.0 / value[0].numel()) ** 0.5
        elif value.ndim == 1 and name.endswith("weight"):
            out[name] = torch.rand(value.shape, generator=gen) * 0.5 + 0.75
        else:
            out[name] = torch.randn(value.shape, generator=gen) * 0.1
    return out


def assert_backbone_holds(backbone: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    own = backbone.state_dict()
    for name, value in expected.items():
        assert torch.equal(own[name], value), name


def snapshot(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in backbone.state_dict().items()}


def torchvision_resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    return randomized(torchvision.models.resnet18().state_dict(), seed)


def without_fc(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def to_original_swin_layout(timm_state: dict[str, torch.Tensor], timm_model: torch.nn.Module) -> dict:
    """Inverse of timm's checkpoint_filter_fn: patch merging back to the END of the previous stage,
    head.fc -> head, plus the persistent buffers the original implementation saves."""
    out = {}
    for name, value in timm_state.items():
        merge = re.match(r"layers\.(\d+)\.downsample\.(.+)", name)
        if merge:
            name = f"layers.{int(merge.group(1)) - 1}.downsample.{merge.group(2)}"
        elif name.startswith("head.fc."):
            name = "head." + name[len("head.fc."):]
        out[name] = value
    for name, buffer in timm_model.named_buffers():
        if name.endswith(("relative_position_index", "attn_mask")):
            out[name] = buffer.clone()
    return out


def mek_feature_head() -> dict[str, torch.Tensor]:
    """MEK's unused face-embedding head: Linear(768,768), BN1d(768), Linear(768,512), BN1d(512)."""
    head = {"feature.0.weight": torch.randn(768, 768), "feature.2.weight": torch.randn(512, 768)}
    for index, width in ((1, 768), (3, 512)):
        head |= {
            f"feature.{index}.weight": torch.rand(width), f"feature.{index}.bias": torch.randn(width),
            f"feature.{index}.running_mean": torch.randn(width), f"feature.{index}.running_var": torch.rand(width),
            f"feature.{index}.num_batches_tracked": torch.tensor(100),
        }
    return head


def write_py2_numpy_pickle(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a dict of float32 arrays with the opcodes Python 2's cPickle (protocol 2) emits for numpy:
    byte-string keys and data, ``numpy.core.multiarray._reconstruct``; this is why it needs latin1."""

    def string(raw: bytes) -> bytes:
        return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw))) + raw

    def integer(n: int) -> bytes:
        return b"J" + struct.pack("<i", n)

    with path.open("wb") as f:
        f.write(b"\x80\x02}")
        for name, array in arrays.items():
            array = np.ascontiguousarray(array, dtype="<f4")
            f.write(string(name.encode()))
            f.write(b"cnumpy.core.multiarray\n_reconstruct\n")
            f.write(b"cnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b") + b"\x87R")
            f.write(b"(" + integer(1) + b"(" + b"".join(integer(d) for d in array.shape) + b"t")
            f.write(b"cnumpy\ndtype\n" + string(b"f4") + integer(0) + integer(1) + b"\x87R")
            f.write(b"(" + integer(3) + string(b"<") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb")
            f.write(b"\x89" + string(array.tobytes()) + b"tbs")
        f.write(b".")


# --------------------------------------------------------------------------- MS-Celeb-1M ResNet-18


def test_msceleb_resnet18_round_trip_drops_fc(tmp_path: Path) -> None:
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18_msceleb.pth"
    torch.save({"epoch": 40, "state_dict": state}, path)
    backbone = fresh_backbone("resnet18")

    report = load_pretrained_backbone(backbone, path, "resnet18")

    assert isinstance(report, LoadReport)
    assert report.format == FORMAT_STATE_DICT
    assert sorted(report.dropped_head) == ["fc.bias", "fc.weight"]
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    assert report.loaded_fraction == 1.0
    assert_backbone_holds(backbone, without_fc(state))
    assert "state_dict" in report.summary() and "fc.weight" in report.summary()


# --------------------------------------------------------------------------- wrappers and prefixes


def _project_checkpoint(state: dict, prefix: str = "") -> dict:
    model = {f"{prefix}backbone.{k}": v for k, v in without_fc(state).items()}
    model |= {f"{prefix}head.weight": torch.randn(7, 512), f"{prefix}head.bias": torch.randn(7)}
    model[f"{prefix}norm.weight"] = torch.randn(512)  # another part of a bigger model: never loaded
    return model


WRAPPINGS = {
    "plain": (lambda sd: sd, FORMAT_STATE_DICT, ["fc.weight", "fc.bias"]),
    "model": (lambda sd: {"model": sd}, FORMAT_STATE_DICT, ["fc.weight", "fc.bias"]),
    "ddp": (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, FORMAT_STATE_DICT,
            ["fc.weight", "fc.bias"]),
    "state_dict_backbone": (lambda sd: {"state_dict_backbone": sd}, FORMAT_STATE_DICT, ["fc.weight", "fc.bias"]),
    "project": (lambda sd: {"model": _project_checkpoint(sd), "epoch": 3}, FORMAT_PROJECT,
                ["head.weight", "head.bias", "norm.weight"]),
    "project_ddp": (lambda sd: {"state_dict": _project_checkpoint(sd, "module.")}, FORMAT_PROJECT,
                    ["head.weight", "head.bias", "norm.weight"]),
}


@pytest.mark.parametrize("legacy_format", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("wrapping", list(WRAPPINGS))
def test_wrappers_and_prefixes(tmp_path: Path, wrapping: str, legacy_format: bool) -> None:
    wrap, expected_format, expected_head = WRAPPINGS[wrapping]
    state = torchvision_resnet18_state(seed=1)
    path = tmp_path / "weights.pth"
    torch.save(wrap(state), path, _use_new_zipfile_serialization=not legacy_format)
    backbone = fresh_backbone("resnet18")

    report = load_pretrained_backbone(backbone, path, "resnet18")

    assert report.format == expected_format
    assert sorted(report.dropped_head) == sorted(expected_head)
    assert report.loaded_fraction == 1.0 and report.unexpected == []
    assert_backbone_holds(backbone, without_fc(state))


def test_non_tensor_objects_fall_back_to_full_unpickling(tmp_path: Path) -> None:
    state = torchvision_resnet18_state()
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": state, "args": argparse.Namespace(backbone="resnet18", lr=0.1)}, path)
    backbone = fresh_backbone("resnet18")

    report = load_pretrained_backbone(backbone, path, "resnet18")

    assert any("weights_only=False" in note for note in report.notes)
    assert_backbone_holds(backbone, without_fc(state))


def test_plain_numpy_pickle_of_torchvision_names(tmp_path: Path) -> None:
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18.pkl"
    with path.open("wb") as f:
        pickle.dump({k: v.numpy() for k, v in state.items() if v.is_floating_point()}, f)
    backbone = fresh_backbone("resnet18")

    report = load_pretrained_backbone(backbone, path, "resnet18")

    assert report.format == FORMAT_STATE_DICT
    assert_backbone_holds(backbone, {k: v for k, v in without_fc(state).items() if v.is_floating_point()})


# --------------------------------------------------------------------------- Swin


def test_mek_swin_original_layout_round_trip(tmp_path: Path) -> None:
    reference = _template("swin_t")  # patch 2, window 7: MEK's geometry
    timm_state = randomized(reference.state_dict(), seed=2)
    original = to_original_swin_layout(timm_state, reference) | mek_feature_head()
    assert "layers.0.downsample.reduction.weight" in original and "layers.3.downsample.norm.weight" not in original
    path = tmp_path / "start_0.pt"
    torch.save({"state_dict_backbone": original, "state_dict_softmax_fc": {"weight": torch.randn(10, 512)}}, path)
    backbone = fresh_backbone("swin_t")

    report = load_pretrained_backbone(backbone, path, "swin_t")

    assert report.format == FORMAT_SWIN_ORIGINAL
    assert report.loaded_fraction == 1.0
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    assert sorted(report.dropped_head) == sorted(k for k in original if k.startswith("feature."))
    assert any("non-learned buffers" in note for note in report.notes)
    assert_backbone_holds(backbone, timm_state)


@pytest.mark.parametrize("layout", ["timm", "original"])
def test_imagenet_swin_patch4_resampled_into_patch2(tmp_path: Path, layout: str) -> None:
    imagenet, timm_state = _imagenet_swin()
    saved = {"model": to_original_swin_layout(timm_state, imagenet)} if layout == "original" else timm_state
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save(saved, path)
    backbone = fresh_backbone("swin_t")

    report = load_pretrained_backbone(backbone, path, "swin_t")

    patch = backbone.state_dict()["patch_embed.proj.weight"]
    assert patch.shape == (96, 3, 2, 2)
    expected_patch = resample_patch_embed(timm_state["patch_embed.proj.weight"], [2, 2])
    torch.testing.assert_close(patch, expected_patch)
    assert any("resampled [4, 4] -> [2, 2]" in note for note in report.notes)
    assert sorted(report.dropped_head) == ["head.fc.bias", "head.fc.weight"]
    assert report.loaded_fraction == 1.0 and report.shape_mismatch == []
    head_or_patch = ("head.", "patch_embed.proj.weight")
    assert_backbone_holds(backbone, {k: v for k, v in timm_state.items() if not k.startswith(head_or_patch)})


# --------------------------------------------------------------------------- refusals


def test_refuses_below_min_fraction_and_allow_partial_loads(tmp_path: Path) -> None:
    state = {k: v for k, v in torchvision_resnet18_state().items() if not k.startswith("layer4.")}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    backbone = fresh_backbone("resnet18")
    before = snapshot(backbone)

    with pytest.raises(PretrainedLoadError, match="--allow-partial") as refusal:
        load_pretrained_backbone(backbone, path, "resnet18")
    assert "% of --backbone resnet18's parameters" in str(refusal.value)
    assert_backbone_holds(backbone, before)  # a refused load leaves the model untouched

    report = load_pretrained_backbone(backbone, path, "resnet18", allow_partial=True)
    assert 0.0 < report.loaded_fraction < 0.95
    assert report.missing and all(k.startswith("layer4.") for k in report.missing)
    assert "more)" in report.summary()  # long lists are truncated
    assert_backbone_holds(backbone, without_fc(state))


def test_small_gap_above_min_fraction_is_accepted_and_reported(tmp_path: Path) -> None:
    state = torchvision_resnet18_state()
    del state["conv1.weight"]
    path = tmp_path / "nearly.pth"
    torch.save(state, path)

    report = load_pretrained_backbone(fresh_backbone("resnet18"), path, "resnet18")

    assert report.missing == ["conv1.weight"]
    assert 0.99 < report.loaded_fraction < 1.0


def test_shape_mismatch_refused_and_never_loaded(tmp_path: Path) -> None:
    state = torchvision_resnet18_state()
    state["conv1.weight"] = torch.randn(64, 3, 5, 5)
    path = tmp_path / "mismatch.pth"
    torch.save(state, path)
    backbone = fresh_backbone("resnet18")
    conv1_before = backbone.conv1.weight.detach().clone()

    with pytest.raises(PretrainedLoadError, match=r"conv1\.weight file \[64, 3, 5, 5\] vs model \[64, 3, 7, 7\]"):
        load_pretrained_backbone(backbone, path, "resnet18")

    report = load_pretrained_backbone(backbone, path, "resnet18", allow_partial=True)
    assert report.shape_mismatch == ["conv1.weight"]
    assert torch.equal(backbone.conv1.weight, conv1_before)
    assert_backbone_holds(backbone, {k: v for k, v in without_fc(state).items() if k != "conv1.weight"})


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("resnet18", "resnet50", "use --backbone resnet18"),
        ("resnet18", "swin_t", "use --backbone resnet18"),
        ("swin_t", "resnet18", "use --backbone swin_t"),
        ("resnet34", "resnet18", "use --backbone resnet34"),  # every resnet18 tensor fits; extra blocks do not
    ],
)
def test_wrong_architecture_refused_with_suggestion(tmp_path: Path, source: str, target: str, expected: str) -> None:
    path = tmp_path / f"{source}.pth"
    torch.save({"state_dict": randomized(_template(source).state_dict())}, path)

    with pytest.raises(PretrainedLoadError, match="architectures differ") as refusal:
        load_pretrained_backbone(fresh_backbone(target), path, target)
    assert expected in str(refusal.value)


def test_missing_file_names_path_and_pretrained_dir(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "resnet18_msceleb.pth"
    with pytest.raises(PretrainedLoadError, match="not found") as refusal:
        load_pretrained_backbone(fresh_backbone("resnet18"), path, "resnet18")
    assert str(path) in str(refusal.value) and "pretrained/" in str(refusal.value)


def test_unreadable_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(PretrainedLoadError, match="cannot read"):
        load_pretrained_backbone(fresh_backbone("resnet18"), path, "resnet18")


# --------------------------------------------------------------------------- VGGFace2 Caffe ResNet-50


@pytest.fixture(scope="module")
def vggface2_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """Fake ``resnet50_ft_weight.pkl``: torchvision-named arrays, no num_batches_tracked, fc 8631x2048."""
    shapes = _template("resnet50").state_dict()
    weights = randomized({k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}, seed=4)
    path = tmp_path_factory.mktemp("vggface2") / "resnet50_ft_weight.pkl"
    arrays = {k: v.numpy() for k, v in weights.items()}
    arrays["fc.weight"] = np.zeros((8631, 2048), dtype=np.float32)
    arrays["fc.bias"] = np.zeros(8631, dtype=np.float32)
    write_py2_numpy_pickle(path, arrays)
    return path, weights


def caffe_resnet50_features(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Reference forward of the VGGFace2 Caffe ResNet-50 (as converted): stride on the bottleneck's 1x1
    conv1, max pool 3/2 without padding and with ceil_mode, BN eps 1e-5."""

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(t, w[f"{p}.running_mean"], w[f"{p}.running_var"], w[f"{p}.weight"], w[f"{p}.bias"],
                            training=False, eps=1e-5)

    x = F.relu(bn(F.conv2d(x, w["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for stage, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 2)), start=1):
        for b in range(blocks):
            p, s = f"layer{stage}.{b}", stride if b == 0 else 1
            out = F.relu(bn(F.conv2d(x, w[f"{p}.conv1.weight"], stride=s), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, w[f"{p}.conv2.weight"], padding=1), f"{p}.bn2"))
            out = bn(F.conv2d(out, w[f"{p}.conv3.weight"]), f"{p}.bn3")
            shortcut = bn(F.conv2d(x, w[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1") if b == 0 else x
            x = F.relu(out + shortcut)
    return x


def test_vggface2_into_plain_resnet50_refused(vggface2_file) -> None:
    path, _ = vggface2_file
    backbone = fresh_backbone("resnet50")
    before = snapshot(backbone)

    with pytest.raises(PretrainedLoadError, match="--backbone resnet50_vggface2") as refusal:
        load_pretrained_backbone(backbone, path, "resnet50")
    assert "different function" in str(refusal.value)
    assert_backbone_holds(backbone, before)


def test_vggface2_into_resnet50_vggface2_computes_the_caffe_model(vggface2_file) -> None:
    path, weights = vggface2_file
    backbone = fresh_backbone("resnet50_vggface2").eval()

    report = load_pretrained_backbone(backbone, path, "resnet50_vggface2")

    assert report.format == FORMAT_VGGFACE2
    assert sorted(report.dropped_head) == ["fc.bias", "fc.weight"]
    assert report.missing == [] and report.unexpected == [] and report.loaded_fraction == 1.0
    assert_backbone_holds(backbone, weights)
    for stage in ("layer2", "layer3", "layer4"):
        block = getattr(backbone, stage)[0]
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1), stage
    plain = fresh_backbone("resnet50").eval()
    with torch.no_grad():
        images = torch.randn(1, 3, 112, 112)
        assert feature_map(backbone, images).shape == feature_map(plain, images).shape == (1, 2048, 4, 4)
        for size in (64, 65):  # 65 gives an odd stem map (33), where ceil_mode and padding 0 matter
            images = torch.randn(1, 3, size, size)
            expected = caffe_resnet50_features(weights, images)
            got = feature_map(backbone, images)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        # Negative control: the same weights in plain resnet50 (torchvision strides) compute something else.
        plain.load_state_dict(weights, strict=False)
        images = torch.randn(1, 3, 64, 64)
        assert not torch.allclose(feature_map(plain, images), caffe_resnet50_features(weights, images), rtol=1e-2)


def test_torchvision_resnet50_into_caffe_backbone_refused(tmp_path: Path) -> None:
    state = randomized(_template("resnet50").state_dict())
    imagenet = tmp_path / "resnet50_imagenet.pth"
    torch.save(state | {"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}, imagenet)
    with pytest.raises(PretrainedLoadError, match="Use --backbone resnet50"):
        load_pretrained_backbone(fresh_backbone("resnet50_vggface2"), imagenet, "resnet50_vggface2")

    # A headless checkpoint cannot be told apart by its tensors; the backbone name it records can.
    own = tmp_path / "project_resnet50.pth"
    torch.save({"model": {f"backbone.{k}": v for k, v in state.items()}, "backbone": "resnet50"}, own)
    with pytest.raises(PretrainedLoadError, match="saved from --backbone resnet50"):
        load_pretrained_backbone(fresh_backbone("resnet50_vggface2"), own, "resnet50_vggface2")
    report = load_pretrained_backbone(fresh_backbone("resnet50_vggface2"), own, "resnet50_vggface2",
                                      allow_partial=True)
    assert report.loaded_fraction == 1.0

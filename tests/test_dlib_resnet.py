"""dlib's face-recognition ResNet in PyTorch (models/dlib_resnet.py) and its .dat loader.

Parity: the port's 128-D descriptor equals dlib's own ``face_recognition_model_v1`` on real face chips
(skimage's astronaut photograph: its face is at about x 177-272, y 66-161, see tests/test_predict.py).
It needs the PyPI packages dlib-bin and face-recognition-models (requirements.txt) and is skipped
without them. Everything else runs on synthetic .dat files written here in dlib's serialisation
(dlib/serialize.h, dlib/cuda/tensor.h, dlib/dnn/core.h and layers.h), so it needs neither.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import create_backbone
from models import dlib_resnet as dr
from models.pretrained import FORMAT_DLIB, PretrainedLoadError, load_pretrained_backbone

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- sizes


# Hand-computed with dlib's rules: out = 1 + (in + 2*pad - k) // stride, pad = 0 for every strided
# layer; a residual_down unit's output is the larger of its main path (3x3/2 then 3x3/1 pad 1) and
# its shortcut (2x2/2 average pool). 150: 1+(150-7)//2 = 72, 1+(72-3)//2 = 35, level3 main
# 1+(35-3)//2 = 17 / shortcut 1+(35-2)//2 = 17, level2 8/8, level1 main 3 / shortcut 4 -> 4,
# level0 main 1 / shortcut 2 -> 2. 112: 53, 26, level3 main 12 / shortcut 13 -> 13, level2 6/6,
# level1 main 2 / shortcut 3 -> 3, level0 1/1.
HAND_SIDES = {
    150: {"stem": 35, "level4": 35, "level3": 17, "level2": 8, "level1": 4, "level0": 2},
    112: {"stem": 26, "level4": 26, "level3": 13, "level2": 6, "level1": 3, "level0": 1},
    64: {"stem": 14, "level4": 14, "level3": 7, "level2": 3, "level1": 1, "level0": 0},
}


@pytest.mark.parametrize("img_size", sorted(HAND_SIDES))
def test_stage_shapes_match_hand_computed_sizes(img_size: int) -> None:
    shapes = dr.stage_shapes(img_size)
    assert {k: side for k, (_, side) in shapes.items()} == HAND_SIDES[img_size]
    assert [shapes[k][0] for k in dr.STAGE_NAMES] == [32, 32, 64, 128, 256, 256]


@pytest.mark.parametrize("img_size", [112, 150])
def test_forward_features_has_the_computed_size_at_every_stage(img_size: int) -> None:
    x = torch.randn(2, 3, img_size, img_size)
    for stage in dr.STAGE_NAMES:
        model = dr.DlibResNet(stage, img_size=img_size).eval()
        channels, side = dr.stage_shapes(img_size)[stage]
        with torch.no_grad():
            assert tuple(model.forward_features(x).shape) == (2, channels, side, side), stage
        assert model.num_features == channels


def test_main_path_and_shortcut_differ_where_expected() -> None:
    # At 150 px level1's first unit adds a 3x3 main path to a 4x4 shortcut, level0 1x1 to 2x2.
    model = dr.DlibResNet("level0").eval()
    seen = {}

    def hook(name):
        def record(module, inputs, output):
            seen[name] = (tuple(module.conv2(F.relu(module.affine1(module.conv1(inputs[0])))).shape[-2:]),
                          tuple(F.avg_pool2d(inputs[0], 2, 2).shape[-2:]), tuple(output.shape[-2:]))
        return record

    for name in ("level3", "level2", "level1", "level0"):
        getattr(model, name)[0].register_forward_hook(hook(name))
    with torch.no_grad():
        model.forward_features(torch.randn(1, 3, 150, 150))
    assert seen == {"level3": ((17, 17), (17, 17), (17, 17)), "level2": ((8, 8), (8, 8), (8, 8)),
                    "level1": ((3, 3), (4, 4), (4, 4)), "level0": ((1, 1), (2, 2), (2, 2))}


def test_too_small_input_is_refused_with_the_minimum() -> None:
    # 55: conv 25, pool 12, level3 max(5, 6) = 6, level2 max(2, 3) = 3, level1's 3x3/2 conv fits once;
    # at 54 level2 ends at 2x2, where dlib's (and torch's) unpadded 3x3 convolution cannot run.
    assert [dr.min_img_size(s) for s in dr.STAGE_NAMES] == [11, 11, 19, 31, 55, 103]
    assert dr.stage_shapes(55)["level1"][1] == 1 and dr.stage_shapes(54)["level1"][1] == 0
    with pytest.raises(ValueError, match="at least 55 px"):
        create_backbone("dlib_resnet_l1", img_size=48)
    with pytest.raises(ValueError, match="at least"):
        create_backbone("dlib_resnet_l0", img_size=64)
    assert create_backbone("dlib_resnet", img_size=48).num_features == 128  # level2 needs 31 px


def test_dlib_add_is_cpu_dlib_add_with_missing_elements_zero() -> None:
    # The loop of dlib/cuda/cpu_dlib.cpp tt::add(dest, src1, src2), written out.
    a, b = torch.randn(2, 3, 2, 3), torch.randn(2, 5, 4, 1)
    dest = torch.zeros(2, 5, 4, 3)
    for n, k, r, c in np.ndindex(*dest.shape):
        v1 = a[n, k, r, c] if k < 3 and r < 2 and c < 3 else 0.0
        v2 = b[n, k, r, c] if k < 5 and r < 4 and c < 1 else 0.0
        dest[n, k, r, c] = v1 + v2
    assert torch.equal(dr.dlib_add(a, b), dest)
    assert torch.equal(dr.dlib_add(b, a), dest)


def test_registered_variants_and_their_maps() -> None:
    stages = {name: create_backbone(name, img_size=150).feature_stage for name in dr.VARIANTS}
    assert stages == {"dlib_resnet": dr.DEFAULT_STAGE, "dlib_resnet_l0": "level0", "dlib_resnet_l1": "level1",
                      "dlib_resnet_l2": "level2", "dlib_resnet_l3": "level3"}
    with pytest.raises(ValueError, match="stochastic depth"):
        create_backbone("dlib_resnet", img_size=150, drop_path_rate=0.1)


def test_cam_head_runs_on_the_backbone() -> None:
    from models import build_model

    model = build_model("dlib_resnet_l2", num_classes=7, img_size=112).eval()
    out = model(torch.randn(2, 3, 112, 112), with_maps=True)
    assert tuple(out.logits.shape) == (2, 7) and tuple(out.attention_maps.shape) == (2, 7, 6, 6)


def test_norm_constants_are_dlibs_input_layer_in_unit_pixels() -> None:
    mean, std = dr.DLIB_NORM
    pixels = torch.randint(0, 256, (1, 3, 4, 4)).float()
    project = (pixels / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    dlib_way = (pixels - torch.tensor(dr.DLIB_MEAN_255).view(1, 3, 1, 1)) / 256.0
    assert torch.allclose(project, dlib_way, atol=1e-6)
    assert dr.DLIB_PIXEL_ORDER == "RGB"
    chip = np.zeros((150, 150, 3), np.uint8)
    chip[..., 0] = 255  # pure red lands in channel 0
    x = dr.preprocess_chips(chip)
    assert x.shape == (1, 3, 150, 150) and math.isclose(float(x[0, 0, 0, 0]), (255 - 122.782) / 256, rel_tol=1e-6)


# --------------------------------------------------------------------------- a .dat writer (dlib's format)


class _Writer:
    """dlib/serialize.h encodings, for synthetic files."""

    def __init__(self) -> None:
        self.out = bytearray()

    def int(self, v: int) -> None:
        mag = abs(int(v))
        body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
        self.out += bytes([len(body) | (0x80 if v < 0 else 0)]) + body

    def string(self, s: str) -> None:
        self.int(len(s))
        self.out += s.encode()

    def float(self, x: float) -> None:
        m, e = math.frexp(x)
        self.int(int(m * 2**53))
        self.int(e - 53)

    def bool(self, b: bool) -> None:
        self.out += b"1" if b else b"0"

    def tensor(self, arr: np.ndarray | None, dims: tuple[int, ...] | None = None) -> None:
        self.int(2)
        arr = np.zeros(0, np.float32) if arr is None else np.asarray(arr, np.float32)
        for d in dims if dims is not None else (arr.size, 1, 1, 1) if arr.size else (0, 0, 0, 0):
            self.int(d)
        self.out += arr.astype("<f4").tobytes()

    def alias(self, dims: tuple[int, ...]) -> None:
        self.int(1)
        for d in dims:
            self.int(d)


def write_dat(path: Path, state: dict[str, np.ndarray], new_versions: bool = False, loss: str = "loss_metric_2") -> Path:
    """Serialise ``state`` (this port's names) as dlib serialises anet_type (layer names of 2017's dlib, or
    of dlib 20 with ``new_versions``)."""
    w = _Writer()
    plan = dr._layer_plan()
    w.int(1)
    w.string(loss)
    if loss == "loss_metric_2":
        w.float(0.04)
        w.float(0.6)
    for kind, name, _ in reversed(plan):
        w.int(1 if kind in ("tag", "skip") else 2)
    w.string("input_rgb_image_sized")
    for m in dr.DLIB_MEAN_255:
        w.float(float(np.float32(m)))
    w.int(150)
    w.int(150)
    for index, (kind, name, args) in enumerate(plan):
        if kind in ("tag", "skip"):
            continue
        if kind == "con":
            weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
            cout, k, stride = args
            w.string("con_5" if new_versions else "con_4")
            w.tensor(np.concatenate([weight.ravel(), bias.ravel()]))
            w.int(cout)
            pad = 0 if stride != 1 else k // 2
            for v in (k, k, stride, stride, pad, pad):
                w.int(v)
            w.alias(weight.shape)
            w.alias((1, cout, 1, 1))
            for v in (1.0, 1.0, 1.0, 0.0):
                w.float(v)
            if new_versions:
                w.bool(True)
        elif kind == "affine":
            c = args[0]
            w.string("affine_2" if new_versions else "affine_")
            w.tensor(np.concatenate([state[f"{name}.weight"], state[f"{name}.bias"]]))
            w.alias((1, c, 1, 1))
            w.alias((1, c, 1, 1))
            w.int(0)
            if new_versions:
                w.bool(False)
        elif kind == "relu":
            w.string("relu_2" if new_versions else "relu_")
            if new_versions:
                w.bool(False)
        elif kind in ("max_pool", "avg_pool"):
            k, stride = args
            w.string(f"{kind}_2")
            pad = 0 if stride != 1 else k // 2
            for v in (k, k, stride, stride, pad, pad):
                w.int(v)
        elif kind == "add_prev":
            w.string("add_prev_")
        elif kind == "fc":
            w.string("fc_3" if new_versions else "fc_2")
            w.int(128)
            w.int(256)
            w.tensor(state["fc.weight"].T.ravel(), (256, 128, 1, 1))
            w.alias((256, 128, 1, 1))
            w.alias((0, 0, 0, 0))
            w.int(1)
            for v in (1.0, 1.0, 1.0, 0.0):
                w.float(v)
            if new_versions:
                w.bool(False)
        for _ in range(3):
            w.bool(True)
        w.tensor(None)
        w.tensor(None)
        w.tensor(None)  # params_grad, or grad_final for the layer over the input
    path.write_bytes(bytes(w.out))
    return path


@pytest.fixture(scope="module")
def random_state() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    model = dr.DlibResNet("level0", with_descriptor=True)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def synthetic_dat(tmp_path_factory: pytest.TempPathFactory, random_state) -> Path:
    return write_dat(tmp_path_factory.mktemp("dlib") / "synthetic_resnet.dat", random_state)


@pytest.mark.parametrize("new_versions", [False, True])
def test_reader_recovers_every_tensor(tmp_path: Path, random_state, new_versions: bool) -> None:
    path = write_dat(tmp_path / "net.dat", random_state, new_versions=new_versions)
    net = dr.read_dlib_dat(path)
    assert sorted(net.state) == sorted(random_state) and len(net.state) == 117
    for name, value in random_state.items():
        assert np.array_equal(net.state[name], value), name
    assert net.input_size == (150, 150) and net.margin == pytest.approx(0.04)
    assert np.allclose(net.input_mean, dr.DLIB_MEAN_255, atol=1e-4)


@pytest.mark.parametrize("name,stage,matched,dropped", [
    ("dlib_resnet_l0", "level0", 116, 1), ("dlib_resnet_l1", "level1", 108, 9), ("dlib_resnet_l3", "level3", 60, 57),
])
def test_load_report_counts_every_tensor(synthetic_dat: Path, random_state, name, stage, matched, dropped, capsys) -> None:
    backbone = create_backbone(name, img_size=150)
    report = load_pretrained_backbone(backbone, synthetic_dat, name)
    assert report.format == FORMAT_DLIB and len(report.matched) == matched and len(report.dropped_head) == dropped
    assert len(report.matched) + len(report.dropped_head) == 117
    assert report.loaded_fraction == 1.0 and not report.missing and not report.unexpected
    own = backbone.state_dict()
    assert all(torch.equal(own[k], torch.from_numpy(random_state[k])) for k in report.matched)
    assert "format: dlib-face-recognition-resnet" in capsys.readouterr().out
    # The summary calls only fc.weight the head; the stages cut off are listed apart.
    summary = report.summary().splitlines()
    head_line = next(line for line in summary if "dropped classifier head" in line)
    assert head_line.endswith("1 (fc.weight)")
    cut_lines = [line for line in summary if "stages it cuts off" in line]
    assert len(cut_lines) == (dropped > 1)


def _one_line_refusal(backbone_name: str, path, match: str) -> str:
    with pytest.raises(PretrainedLoadError, match=match) as refusal:
        load_pretrained_backbone(create_backbone(backbone_name, img_size=150), path, backbone_name)
    message = str(refusal.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("cut", [1, 40, 5_000, -1])
def test_truncated_dat_refused_in_one_line(tmp_path: Path, synthetic_dat: Path, cut: int) -> None:
    data = synthetic_dat.read_bytes()
    path = tmp_path / "cut.dat"
    path.write_bytes(data[:cut])
    assert str(path) in _one_line_refusal("dlib_resnet", path, "truncated")


def test_trailing_bytes_and_foreign_files_refused(tmp_path: Path, synthetic_dat: Path) -> None:
    longer = tmp_path / "longer.dat"
    longer.write_bytes(synthetic_dat.read_bytes() + b"\x01\x01")
    assert "follow the network" in _one_line_refusal("dlib_resnet", longer, "not dlib's face-recognition ResNet")
    mmod = tmp_path / "mmod_like.dat"
    w = _Writer()
    w.int(1)
    w.string("loss_mmod_")
    mmod.write_bytes(bytes(w.out) + b"\x01\x02" * 20)
    assert "MMOD" in _one_line_refusal("dlib_resnet", mmod, str(mmod))
    noise = tmp_path / "noise.dat"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "not dlib's face-recognition ResNet" in _one_line_refusal("dlib_resnet", noise, str(noise))
    text = tmp_path / "weights.dat"
    text.write_text("not weights\n")
    _one_line_refusal("dlib_resnet", text, "not a dlib DNN file")


def test_dat_refused_for_other_backbones_and_missing_file(tmp_path: Path, synthetic_dat: Path) -> None:
    assert "--backbone dlib_resnet" in _one_line_refusal("resnet18", synthetic_dat, "loads only into")
    missing = tmp_path / "absent.dat"
    assert str(missing) in _one_line_refusal("dlib_resnet", missing, "not found")


def test_missing_package_names_the_pip_package(monkeypatch) -> None:
    monkeypatch.setattr(dr, "DLIB_PACKAGE_MODULE", "face_recognition_models_not_installed_here")
    monkeypatch.setattr(dr, "DLIB_PACKAGE", "face-recognition-models-not-installed-here")
    message = _one_line_refusal("dlib_resnet", "dlib", "pip install face-recognition-models-not-installed-here")
    assert "--pretrained dlib" in message


def test_train_py_exits_2_with_one_line_on_a_foreign_dat(tmp_path: Path) -> None:
    from conftest import make_raf_db

    data = make_raf_db(tmp_path / "raf", [1, 2, 3, 4, 5, 6, 7] * 2, [1, 2, 3, 4, 5, 6, 7])
    foreign = tmp_path / "shape_predictor_like.dat"
    foreign.write_bytes(b"\x01\x01\x81\x0a\x81\x01\x03" + bytes(64))
    proc = subprocess.run(
        [sys.executable, "train.py", "--dataset", "raf-db", "--data-root", str(data), "--backbone",
         "dlib_resnet", "--pretrained", str(foreign), "--steps", "1", "--img-size", "150", "--batch-size", "4", "--output",
         str(tmp_path / "run"), "--device", "cpu", "--workers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(foreign) in lines[0] and "not a dlib DNN file" in lines[0]


# --------------------------------------------------------------------------- parity with dlib itself


@pytest.fixture(scope="module")
def dlib_model():
    dlib = pytest.importorskip("dlib")
    try:
        path = dr.packaged_model_path()
    except dr.DlibFileError as err:
        pytest.skip(str(err))
    return dlib.face_recognition_model_v1(str(path)), dr.build_dlib_descriptor_model(path), path


def _chips() -> dict[str, np.ndarray]:
    from PIL import Image
    from skimage import data

    img = data.astronaut()  # 512x512 RGB photograph; face at about x 177-272, y 66-161
    face = img[40:190, 150:300]
    wide = np.asarray(Image.fromarray(img[15:235, 115:335]).resize((150, 150), Image.BILINEAR))
    return {"face": face, "mirrored": face[:, ::-1], "shifted": img[25:175, 165:315], "wide-resized": wide,
            "no-face": img[330:480, 300:450]}


def _max_diff(reference, port, chip: np.ndarray) -> float:
    chip = np.ascontiguousarray(chip)
    expected = np.asarray(reference.compute_face_descriptor(chip), dtype=np.float64)
    with torch.no_grad():
        got = port.descriptor(dr.preprocess_chips(chip))[0].double().numpy()
    assert expected.shape == got.shape == (128,)
    return float(np.abs(expected - got).max())


def test_descriptor_equals_dlib_on_real_face_chips(dlib_model) -> None:
    reference, port, _ = dlib_model
    diffs = {name: _max_diff(reference, port, chip) for name, chip in _chips().items()}
    assert max(diffs.values()) <= 1e-4, diffs
    # and the same person's chips are close in dlib's metric (distance threshold 0.6), unlike random noise
    with torch.no_grad():
        batch = port.descriptor(dr.preprocess_chips(np.stack([np.ascontiguousarray(c) for c in _chips().values()])))
    assert float((batch[0] - batch[1]).norm()) < 0.6 and float((batch[0] - batch[2]).norm()) < 0.6


def test_a_broken_port_fails_the_parity_check(dlib_model, monkeypatch) -> None:
    # dlib pads the smaller add_prev input at the END; padding it at the start (a plausible mistake)
    # changes level1 and level0 and must be caught by the 1e-4 bound.
    reference, port, _ = dlib_model

    def add_padding_first(a, b):
        c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
        grow = lambda t: F.pad(t, (w - t.shape[3], 0, h - t.shape[2], 0, 0, c - t.shape[1]))  # noqa: E731
        return grow(a) + grow(b)

    monkeypatch.setattr(dr, "dlib_add", add_padding_first)
    assert _max_diff(reference, port, _chips()["face"]) > 1e-2


def test_cli_prints_one_json_line_per_image(dlib_model, tmp_path: Path) -> None:
    from PIL import Image

    reference, _, path = dlib_model
    face = _chips()["face"]
    Image.fromarray(np.ascontiguousarray(face)).save(tmp_path / "face.png")
    Image.fromarray(np.ascontiguousarray(face)).resize((300, 300), Image.BILINEAR).save(tmp_path / "big.png")
    proc = subprocess.run([sys.executable, "-m", "models.dlib_resnet", str(tmp_path / "face.png"),
                           str(tmp_path / "big.png"), "--weights", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["image"]).name for r in records] == ["face.png", "big.png"]
    assert all(len(r["descriptor"]) == 128 for r in records)
    expected = np.asarray(reference.compute_face_descriptor(np.ascontiguousarray(face)))
    assert np.abs(np.asarray(records[0]["descriptor"]) - expected).max() <= 1e-4


def test_packaged_file_loads_through_pretrained_dlib(dlib_model, capsys) -> None:
    _, port, path = dlib_model
    backbone = create_backbone("dlib_resnet_l0", img_size=150)
    report = load_pretrained_backbone(backbone, "dlib", "dlib_resnet_l0")
    assert report.path == str(path) and len(report.matched) == 116 and report.dropped_head == ["fc.weight"]
    x = torch.randn(1, 3, 150, 150)
    with torch.no_grad():
        assert torch.equal(backbone.forward_features(x), port.forward_features(x))


def test_other_dlib_files_of_the_package_refused(dlib_model) -> None:
    _, _, path = dlib_model
    mmod = path.parent / "mmod_human_face_detector.dat"
    shape = path.parent / "shape_predictor_5_face_landmarks.dat"
    if not (mmod.is_file() and shape.is_file()):
        pytest.skip("face-recognition-models without its detector files")
    assert "MMOD" in _one_line_refusal("dlib_resnet", mmod, str(mmod))
    assert "not a dlib DNN file" in _one_line_refusal("dlib_resnet", shape, str(shape))

"""export.py: the ONNX file, run by ONNX Runtime alone, gives PyTorch's logits at any batch size."""
import json

import numpy as np
import pytest
import torch

import export
import train
from utils.inference import load_predictor


@pytest.fixture(scope="module")
def checkpoint(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_run")
    train.cli(["--dataset", "demo", "--data-root", str(demo_root), "--img-size", "32", "--batch-size", "16",
               "--workers", "0", "--no-progress", "--backbone", "resnet18", "--steps", "2", "--output", str(out)])
    return out / "best.pth"


def pytorch_logits(checkpoint, batch):
    predictor = load_predictor(checkpoint)
    with torch.no_grad():
        return predictor.model(torch.from_numpy(batch)).logits.numpy(), predictor


def test_onnx_matches_pytorch_with_a_dynamic_batch(checkpoint, tmp_path):
    import onnxruntime

    output = export.cli([str(checkpoint), "--format", "onnx", "--output", str(tmp_path / "fer.onnx"), "--no-check"])
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    rng = np.random.default_rng(0)
    for batch_size in (1, 5):
        batch = rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32)
        got = session.run(["logits"], {"image": batch})[0]
        expected, predictor = pytorch_logits(checkpoint, batch)
        assert got.shape == (batch_size, 7)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    meta = json.loads((tmp_path / "fer.json").read_text())
    assert meta["classes"] == predictor.classes and meta["img_size"] == 32
    assert meta["mean"] == list(predictor.mean) and meta["std"] == list(predictor.std)


def test_torchscript_matches_pytorch(checkpoint, tmp_path, capsys):
    output = export.cli([str(checkpoint), "--format", "torchscript", "--output", str(tmp_path / "fer.pt")])
    assert "checked: torchscript and PyTorch agree" in capsys.readouterr().out
    batch = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    loaded = torch.jit.load(str(output))
    expected, _ = pytorch_logits(checkpoint, batch)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(torch.from_numpy(batch)).numpy(), expected, atol=1e-4, rtol=0)


def test_foreign_checkpoint_is_refused(tmp_path, capsys):
    foreign = tmp_path / "weights.pth"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(SystemExit) as exc:
        export.cli([str(foreign), "--output", str(tmp_path / "x.onnx")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "weights.pth is not a training checkpoint" in err and "\n" not in err

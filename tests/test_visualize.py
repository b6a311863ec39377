"""visualize.py: the maps drawn are the ones the logits come from; figures are written."""
import pytest
import torch
from PIL import Image

import train
import visualize
from utils.inference import load_predictor


@pytest.fixture(scope="module")
def checkpoint(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("visualize_run")  # 64 px: 2x2 maps from ResNet-18, not 1x1
    train.cli(["--dataset", "demo", "--data-root", str(demo_root), "--img-size", "64", "--batch-size", "16",
               "--workers", "0", "--no-progress", "--backbone", "resnet18", "--steps", "2", "--output", str(out)])
    return out / "best.pth"


@pytest.fixture(scope="module")
def faces(demo_root):
    paths = sorted((demo_root / "Image" / "aligned").glob("test_000[1-3]_aligned.jpg"))
    return paths, [Image.open(p).convert("RGB") for p in paths]


def test_predicted_panel_is_the_map_its_logit_comes_from(checkpoint, faces):
    predictor = load_predictor(checkpoint)
    maps, logits, probs = visualize.class_maps(predictor, faces[1])
    assert maps.shape[:2] == logits.shape == (3, len(predictor.classes)) and maps.shape[2] > 1
    from_maps = maps.mean(dim=(2, 3)) + predictor.model.head.bias.detach()
    assert torch.allclose(from_maps, logits, atol=1e-4)
    tokens = visualize.parse_class_spec("pred,true", predictor.classes)
    for face_maps, face_logits, face_probs in zip(maps, logits, probs):
        (index, role), *_ = visualize.select_classes(tokens, face_probs, None, predictor.classes)
        assert role == "pred" and index == int(face_logits.argmax())
        assert index == int((face_maps.mean(dim=(1, 2)) + predictor.model.head.bias.detach()).argmax())


def test_select_classes_merges_pred_and_true_and_keeps_names():
    classes = ["a", "b", "c"]
    probs = torch.tensor([0.2, 0.7, 0.1])
    assert visualize.select_classes(["pred", "true"], probs, 1, classes) == [(1, "pred, true")]
    assert visualize.select_classes(["pred", "true"], probs, 2, classes) == [(1, "pred"), (2, "true")]
    assert visualize.select_classes(["c", "a"], probs, 0, classes) == [(2, ""), (0, "true")]


def test_cli_writes_one_grid_per_image(checkpoint, faces, demo_root, tmp_path, capsys):
    paths, _ = faces
    labels = demo_root / "EmoLabel" / "list_patition_label.txt"
    code = visualize.cli([str(checkpoint), *map(str, paths), "--no-detect", "--out", str(tmp_path),
                          "--classes", "pred,true", "--labels", str(labels)])
    assert code == 0
    for path in paths:
        figure = tmp_path / f"{path.stem}_cam.png"
        assert figure.is_file() and Image.open(figure).size[0] > 200
    assert "3 figure(s)" in capsys.readouterr().out
    assert visualize.cli([str(checkpoint), str(paths[0]), "--no-detect", "--out", str(tmp_path / "all")]) == 0
    assert (tmp_path / "all" / f"{paths[0].stem}_cam.png").is_file()


def test_unknown_class_name_names_the_flag(checkpoint, faces, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        visualize.cli([str(checkpoint), str(faces[0][0]), "--no-detect", "--out", str(tmp_path), "--classes", "joy"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: --classes: unknown class 'joy'")


def test_head_without_maps_is_reported(checkpoint, faces, monkeypatch, tmp_path, capsys):
    from utils.inference import Predictor

    real_run = Predictor.run
    monkeypatch.setattr(Predictor, "run", lambda self, f, with_maps=False: real_run(self, f)._replace(attention_maps=None))
    with pytest.raises(SystemExit) as exc:
        visualize.cli([str(checkpoint), str(faces[0][0]), "--no-detect", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "gives no attention maps" in capsys.readouterr().err

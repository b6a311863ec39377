"""test.py on another dataset: only the shared classes, dropped classes named and counted,
prediction restricted to the shared classes' logits; a folder root with only test/ or val/."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import test as evaluate
from data import DatasetError, build_dataset
from data.classes import CANONICAL_CLASSES
from models import build_model_from_config
from tests.conftest import make_raf_db, write_image
from utils.checkpoint import save_checkpoint

RAF_CLASSES = list(CANONICAL_CLASSES[:7])


def make_checkpoint(path, classes, bias):
    """A tiny model whose head bias decides every prediction (``bias``: class -> value)."""
    model_config = {"backbone": "test_resnet", "head": "cam", "num_classes": len(classes), "img_size": 32,
                    "classes": classes, "norm": "imagenet", "interpolation": "bilinear"}
    torch.manual_seed(0)
    model = build_model_from_config(model_config)
    with torch.no_grad():
        model.head.weight.mul_(1e-3)
        model.head.bias.zero_()
        for name, value in bias.items():
            model.head.bias[classes.index(name)] = value
    save_checkpoint({"model": model.state_dict(), "model_config": model_config,
                     "config": {"dataset": "raf-db", "data_root": "elsewhere", "batch_size": 2, "amp": "off"}}, path)
    return path


def make_folder(root, split, counts):
    for name, n in counts.items():
        for i in range(n):
            write_image(root / split / name / f"{name}_{i}.png", size=24, seed=hash((name, i)) % 1000)
    return root


def run(argv, tmp_path):
    return evaluate.cli([*argv, "--workers", "0", "--no-progress", "--device", "cpu", "--out-dir", str(tmp_path / "eval")])


def test_folder_with_only_test_split_extra_and_missing_classes(tmp_path, capsys):
    # The model knows RAF-DB's 7 classes; the data has contempt (unknown to it) and lacks neutral etc.
    ckpt = make_checkpoint(tmp_path / "m.pth", RAF_CLASSES, {"neutral": 100.0, "anger": 5.0})
    root = make_folder(tmp_path / "other", "test", {"angry": 3, "happy": 2, "contempt": 4})
    metrics = run([str(ckpt), "--dataset", "folder", "--data-root", str(root)], tmp_path)
    out = capsys.readouterr().out
    cross = metrics["cross_dataset"]
    assert cross["shared_classes"] == ["happiness", "anger"]
    assert cross["dropped_dataset_classes"] == {"contempt": 4}
    assert cross["images_removed"] == 4 and cross["images_total"] == 9
    assert cross["excluded_model_classes"] == ["surprise", "fear", "disgust", "sadness", "neutral"]
    # Unrestricted, every image would be 'neutral' (bias 100); over the shared logits it is 'anger'.
    assert metrics["num_samples"] == 5
    assert metrics["per_class_acc"] == [0.0, 1.0]
    assert metrics["overall_acc"] == pytest.approx(0.6) and metrics["mean_acc"] == pytest.approx(0.5)
    assert metrics["confusion_matrix"] == [[0, 2], [0, 3]]
    assert "contempt (4 images removed)" in out and "4 of 9 images removed" in out
    assert "argmax over the shared classes' logits" in out
    with open(tmp_path / "eval" / "m_test_predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and {r["prediction"] for r in rows} == {"anger"}
    assert {r["label"] for r in rows} == {"anger", "happiness"}
    for r in rows:  # the model's full probabilities are kept; neutral's dominates them
        assert float(r["p_neutral"]) > 0.99
    saved = json.loads((tmp_path / "eval" / "m_test_metrics.json").read_text())
    assert saved["cross_dataset"]["dropped_dataset_classes"] == {"contempt": 4}


def test_eight_class_model_on_raf_db(tmp_path, capsys):
    """A model with contempt on RAF-DB (7 classes): nothing dropped, contempt's logit ignored."""
    ckpt = make_checkpoint(tmp_path / "m8.pth", list(CANONICAL_CLASSES), {"contempt": 100.0, "happiness": 5.0})
    root = make_raf_db(tmp_path / "raf", labels_train=[1], labels_test=[4, 4, 1, 5, 7, 4])  # 4 = happiness
    metrics = run([str(ckpt), "--dataset", "raf-db", "--data-root", str(root)], tmp_path)
    out = capsys.readouterr().out
    assert metrics["cross_dataset"]["shared_classes"] == RAF_CLASSES
    assert metrics["cross_dataset"]["dropped_dataset_classes"] == {}
    assert metrics["cross_dataset"]["excluded_model_classes"] == ["contempt"]
    assert metrics["overall_acc"] == pytest.approx(0.5)
    # mean class accuracy over the 4 classes present in the test data: happiness 1, the others 0
    assert metrics["mean_acc"] == pytest.approx(0.25)
    assert "model classes the dataset lacks (logits excluded): contempt" in out


def test_same_classes_is_not_cross_dataset(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pth", RAF_CLASSES, {"anger": 5.0})
    root = make_raf_db(tmp_path / "raf", labels_train=[1], labels_test=[6, 6, 1])
    metrics = run([str(ckpt), "--dataset", "raf-db", "--data-root", str(root)], tmp_path)
    assert "cross_dataset" not in metrics and metrics["per_class_acc"][5] == 1.0


def test_no_shared_class_is_one_error(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth", ["happiness", "sadness"], {})
    root = make_folder(tmp_path / "other", "val", {"angry": 1, "contempt": 1})
    with pytest.raises(SystemExit) as exc:
        run([str(ckpt), "--dataset", "folder", "--data-root", str(root)], tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "none of which" in err[0]


def test_folder_root_with_only_val(tmp_path):
    root = make_folder(tmp_path / "v", "val", {"sad": 1, "fear": 2})
    data = build_dataset("folder", root, "test")
    assert data.classes == ["fear", "sadness"] and data.class_counts() == [2, 1]
    with pytest.raises(DatasetError, match="no train/ directory"):
        build_dataset("folder", root, "train")

"""predict.py and utils/inference.py on a tiny demo model and on a real photograph.

skimage.data.astronaut() is a portrait shipped inside scikit-image; its face is at about
x 177-272, y 66-161 (checked by eye on docs/predict_astronaut.png).
"""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import predict
import train
from utils import inference

FACE_CENTRE = (224, 113)


@pytest.fixture(scope="module")
def checkpoint(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict_run")
    train.cli(["--dataset", "demo", "--data-root", str(demo_root), "--img-size", "32", "--batch-size", "16",
               "--workers", "0", "--no-progress", "--backbone", "resnet18", "--steps", "2", "--output", str(out)])
    return out / "best.pth"


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def photos(astronaut, tmp_path_factory):
    """The portrait as colour, grayscale, 16-bit, CMYK and EXIF-rotated files, plus bad inputs."""
    root = tmp_path_factory.mktemp("photos")
    astronaut.save(root / "colour.jpg")
    astronaut.convert("L").save(root / "gray.png")
    deep = (np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(deep).save(root / "deep16.png")
    astronaut.convert("CMYK").save(root / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the pixels are stored lying on their side
    astronaut.transpose(Image.Transpose.ROTATE_90).save(root / "rotated.jpg", exif=exif)
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(root / "blank.png")  # no face
    (root / "broken.jpg").write_bytes(b"not an image at all")
    return root


def face_box(record):
    assert len(record["faces"]) == 1, record
    return record["faces"][0]["box"]


def assert_on_face(box):
    x, y, w, h = box
    assert abs(x + w / 2 - FACE_CENTRE[0]) < 25 and abs(y + h / 2 - FACE_CENTRE[1]) < 25, box
    assert 60 < w < 140


def test_haar_detector_finds_the_astronauts_face(astronaut):
    boxes = inference.detect_faces(astronaut)
    assert len(boxes) == 1
    assert_on_face(boxes[0])
    left, top, right, bottom = inference.crop_box(boxes[0])
    assert right - left == bottom - top == round(boxes[0][2] * 1.4)  # 20% margin on each side
    assert inference.detect_faces(Image.new("RGB", (16, 16))) == []  # smaller than the detector's window


def test_predict_reads_every_photo_kind_and_reports_failures(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = predict.cli([str(checkpoint), str(photos), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # broken.jpg failed
    assert "broken.jpg: cannot read image" in captured.err and "Traceback" not in captured.err
    assert "blank.png: no face found" in captured.out
    report = json.loads((out / "predictions.json").read_text())
    records = {r["image"].rsplit("/", 1)[-1]: r for r in report["images"]}
    for name in ("colour.jpg", "gray.png", "deep16.png", "cmyk.jpg", "rotated.jpg"):
        assert records[name]["error"] is None
        assert_on_face(face_box(records[name]))  # rotated.jpg only if EXIF rotation was applied
        face = records[name]["faces"][0]
        assert face["prediction"] == max(face["probabilities"], key=face["probabilities"].get)
        assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert (out / name.replace(".jpg", ".png")).is_file()
    assert records["broken.jpg"]["error"] and records["blank.png"]["faces"] == []
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 5 and set(rows[0]) >= {"image", "x", "prediction", "p_happiness"}


def test_rotated_photo_is_sideways_without_exif(photos):
    with Image.open(photos / "rotated.jpg") as raw:
        assert inference.detect_faces(raw.convert("RGB")) == []  # so the test above can fail
    assert len(inference.detect_faces(inference.read_image(photos / "rotated.jpg"))) == 1


def test_no_detect_uses_the_checkpoints_own_preprocessing(checkpoint, demo_root, tmp_path, capsys):
    from data.transforms import NORMALISATIONS, AugmentConfig, build_eval_transform
    from models import build_model_from_config
    from utils.checkpoint import load_checkpoint

    images = sorted((demo_root / "Image" / "aligned").glob("test_000[1-4]_aligned.jpg"))
    assert predict.cli([str(checkpoint), *map(str, images), "--no-detect", "--out", str(tmp_path)]) == 0
    assert "4 images: 4 face(s)" in capsys.readouterr().out
    got = [r["faces"][0]["probabilities"] for r in json.loads((tmp_path / "predictions.json").read_text())["images"]]

    state = load_checkpoint(checkpoint)
    config = state["model_config"]
    model = build_model_from_config(config)
    model.load_state_dict(state["model"])
    mean, std = NORMALISATIONS[config["norm"]]
    transform = build_eval_transform(AugmentConfig(img_size=config["img_size"], mean=mean, std=std,
                                                   interpolation=config["interpolation"]))
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
        expected = torch.softmax(model.eval()(batch).logits, dim=1)
    for probs, row in zip(got, expected):
        assert [probs[c] for c in config["classes"]] == pytest.approx(row.tolist(), abs=1e-5)


@pytest.mark.parametrize("case", ["bad_checkpoint", "empty_folder", "missing_file"])
def test_bad_input_gives_one_error_line_and_exit_2(case, checkpoint, photos, tmp_path, capsys):
    args = {
        "bad_checkpoint": [str(photos / "colour.jpg"), str(photos / "colour.jpg")],
        "empty_folder": [str(checkpoint), str(tmp_path)],
        "missing_file": [str(checkpoint), str(tmp_path / "nope.jpg")],
    }[case]
    with pytest.raises(SystemExit) as exc:
        predict.cli(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    assert {"bad_checkpoint": "colour.jpg", "empty_folder": "no images", "missing_file": "nope.jpg"}[case] in err[-1]


def test_tiny_face_crop_is_refused_by_name(checkpoint, photos, tmp_path, capsys):
    Image.new("RGB", (4, 4)).save(tmp_path / "speck.png")
    code = predict.cli([str(checkpoint), str(tmp_path / "speck.png"), str(photos / "colour.jpg"), "--no-detect"])
    assert code == 1
    assert "speck.png: image is 4x4 px, too small" in capsys.readouterr().err

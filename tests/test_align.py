"""data/align.py: dlib detection and landmarks on a real photograph, the similarity warp, the
templates, and the framing a checkpoint records (predict.py / test.py apply it).

skimage.data.astronaut() is a portrait shipped inside scikit-image. Its landmarks, read by eye on a
4x enlargement of the face: pupils at (203, 101) and (246, 103), nose tip (225, 127), mouth
corners (200, 139) and (246, 141).
"""
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import predict
import test as test_script
import train
from data import align
from utils import inference

HAND_CHECKED = np.array([[203, 101], [246, 103], [225, 127], [200, 139], [246, 141]], np.float64)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return Image.fromarray(data.astronaut())


def rotation_degrees(matrix: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))


def test_similarity_transform_recovers_a_known_similarity():
    # dst = 2 * R(30 deg) @ src + (5, -3), computed by hand for the first point: (1, 0) -> (2cos30 + 5, 2sin30 - 3)
    src = np.array([[1, 0], [0, 1], [-1, 0], [3, 2], [0.5, -2]], np.float64)
    angle = np.radians(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = 2 * src @ rotation.T + [5, -3]
    matrix = align.similarity_transform(src, dst)
    assert np.allclose(align.apply_matrix(matrix, src[:1]), [[2 * np.cos(angle) + 5, 2 * 0.5 - 3]])
    assert np.allclose(matrix[:, :2], 2 * rotation) and np.allclose(matrix[:, 2], [5, -3])
    # A mirrored point set still gets a proper rotation (no reflection), as insightface's warp does.
    assert np.linalg.det(align.similarity_transform(src, src * [-1, 1])[:, :2]) > 0


def test_landmarks_on_the_astronaut_lie_on_the_hand_checked_positions(astronaut):
    faces = align.FaceAligner("arcface112").align(astronaut)
    assert len(faces) == 1  # at the photo's own scale the mission badge is not a face
    face = faces[0]
    x, y, w, h = face.box
    assert 170 < x < 190 and 75 < y < 95 and 80 < w < 100 and face.score > 1
    assert np.abs(align.five_points(face.landmarks) - HAND_CHECKED).max() <= 3


def test_arcface_warp_puts_the_eyes_on_the_template(astronaut):
    aligner = align.FaceAligner("arcface112")
    face = aligner.align(astronaut)[0]
    assert face.crop.size == (112, 112)
    warped = align.apply_matrix(face.matrix, align.five_points(face.landmarks))
    # Landmarks found again on the crop itself are where the warp put them (within a pixel)...
    x, y, w, h = face.box
    corner = align.apply_matrix(face.matrix, np.array([[x, y], [x + w, y + h]], np.float64))
    box = (int(corner[0, 0]), int(corner[0, 1]), int(corner[1, 0] - corner[0, 0]), int(corner[1, 1] - corner[0, 1]))
    again, _ = aligner.landmarks(np.ascontiguousarray(np.asarray(face.crop)), box)
    assert np.abs(align.five_points(again)[:2] - warped[:2]).max() < 1.0
    # ...the eyes are level, and on the template up to the least-squares residual of five points
    # on a smiling face (her mouth corners are 5 px wider than the template's: measured 3.3 px for the eyes).
    assert abs(warped[0, 1] - warped[1, 1]) < 1.0
    assert np.abs(warped[:2] - align.ARCFACE_112[:2]).max() < 4.0
    # Five points that are the template up to a similarity land on it exactly.
    matrix = align.similarity_transform(align.ARCFACE_112 * 3 + [40, 7], align.ARCFACE_112)
    assert np.abs(align.apply_matrix(matrix, align.ARCFACE_112 * 3 + [40, 7]) - align.ARCFACE_112).max() < 1e-6


def test_dlib_chip_is_dlibs_own_and_its_matrix_describes_it(astronaut):
    import dlib

    aligner = align.FaceAligner("dlib150")
    face = aligner.align(astronaut)[0]
    rgb = np.asarray(astronaut)
    _, shape = aligner.landmarks(rgb, face.box)
    reference = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
    assert np.array_equal(np.asarray(face.crop), reference)
    # warping the photo with the recorded matrix redraws the chip (up to interpolation)
    redrawn = cv2.warpAffine(rgb, face.matrix, (150, 150)).astype(float)
    assert np.abs(redrawn - np.asarray(face.crop, float)).mean() < 2.0


@pytest.mark.parametrize("template", ["arcface112", "dlib150"])
def test_a_rotated_face_is_turned_back_upright(astronaut, template):
    aligner = align.FaceAligner(template)
    upright = aligner.align(astronaut)[0]
    turn = cv2.getRotationMatrix2D((224, 120), 25, 1.0)  # 25 degrees anticlockwise about the face
    rotated = aligner.align(Image.fromarray(cv2.warpAffine(np.asarray(astronaut), turn, (512, 512))))
    assert len(rotated) == 1
    # the warp turns it 25 degrees further, and the two crops show the same face the same way up
    assert abs(rotation_degrees(rotated[0].matrix) - rotation_degrees(upright.matrix) - 25) < 1.5
    difference = np.abs(np.asarray(rotated[0].crop, float) - np.asarray(upright.crop, float)).mean()
    unaligned = np.abs(np.asarray(upright.crop.rotate(25), float) - np.asarray(upright.crop, float)).mean()
    assert difference < 8 and unaligned > 40  # measured 4.8 / 2.1 against 58 / 57


def test_unknown_template_and_records():
    with pytest.raises(align.AlignError, match="unknown alignment template 'nope'"):
        align.FaceAligner("nope")


def test_aligner_from_flags_prints_the_framing_and_exits_naming_the_flag(monkeypatch, capsys):
    from types import SimpleNamespace

    checkpoint = SimpleNamespace(align=None)  # resolve_framing reads only the recorded template
    assert inference.aligner_from_flags("auto", False, checkpoint) is None  # --no-detect: no framing line
    assert capsys.readouterr().out == ""
    assert inference.aligner_from_flags("auto", True, checkpoint) is None
    assert "framing: OpenCV Haar box + 20% per side (the checkpoint records no alignment)" in capsys.readouterr().out

    def no_dlib(name):
        raise align.AlignError("dlib is not installed")

    monkeypatch.setattr(align, "FaceAligner", no_dlib)
    with pytest.raises(SystemExit) as exit_info:
        inference.aligner_from_flags("arcface112", True, checkpoint)
    assert exit_info.value.code != 0
    assert "--align arcface112: dlib is not installed" in capsys.readouterr().err


def test_recorded_template(tmp_path):
    assert align.recorded_template(tmp_path) is None
    (tmp_path / "align.json").write_text(json.dumps({"template": "dlib150"}))
    assert align.recorded_template(tmp_path) == "dlib150"
    (tmp_path / "align.json").write_text("{broken")
    with pytest.raises(align.AlignError, match="align.json: cannot read"):
        align.recorded_template(tmp_path)


@pytest.fixture(scope="module")
def aligned_checkpoint(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("align_run")
    train.cli(["--dataset", "demo", "--data-root", str(demo_root), "--img-size", "32", "--batch-size", "16",
               "--workers", "0", "--no-progress", "--steps", "1", "--align", "arcface112", "--output", str(out)])
    return out / "last.pth"


def test_checkpoint_records_its_framing_and_predict_applies_it(aligned_checkpoint, astronaut, tmp_path, capsys,
                                                              monkeypatch):
    assert torch.load(aligned_checkpoint, weights_only=False)["model_config"]["align"] == "arcface112"
    astronaut.save(tmp_path / "astronaut.png")
    assert predict.cli([str(aligned_checkpoint), str(tmp_path / "astronaut.png"), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "framing: arcface112 alignment" in out and "recorded in the checkpoint" in out and "[arcface112]" in out
    face = json.loads((tmp_path / "o" / "predictions.json").read_text())["images"][0]["faces"][0]
    assert face["framing"] == "arcface112" and len(face["crop"]) == 4
    # where dlib finds no face, the Haar box is used and the line says so
    monkeypatch.setattr(align.FaceAligner, "align", lambda self, image: [])
    assert predict.cli([str(aligned_checkpoint), str(tmp_path / "astronaut.png")]) == 0
    assert "[haar]" in capsys.readouterr().out
    # --align haar overrides the checkpoint's framing
    predict.cli([str(aligned_checkpoint), str(tmp_path / "astronaut.png"), "--align", "haar"])
    assert "framing: OpenCV Haar box + 20% per side (--align haar)" in capsys.readouterr().out


def test_training_reads_the_framing_of_a_prepared_folder(demo_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "prepared"
    shutil.copytree(demo_root, root)
    (root / "align.json").write_text(json.dumps({"template": "dlib150"}))
    with pytest.raises(SystemExit):
        train.cli(["--dataset", "demo", "--data-root", str(root), "--align", "arcface112", "--dry-run",
                   "--workers", "0", "--img-size", "32"])
    assert "align.json says its images were aligned to dlib150" in capsys.readouterr().err
    train.cli(["--dataset", "demo", "--data-root", str(root), "--img-size", "32", "--batch-size", "16",
               "--workers", "0", "--no-progress", "--steps", "1", "--output", str(tmp_path / "run")])
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=False)["model_config"]["align"] == "dlib150"


def test_test_py_aligns_raw_data_only(tmp_path):
    framing = test_script.evaluation_framing
    assert framing("auto", "arcface112", str(tmp_path), same_data=True)[0] is None  # the training data itself
    assert framing("auto", "arcface112", str(tmp_path), same_data=False)[0] == "arcface112"  # raw photos
    assert framing("auto", None, str(tmp_path), same_data=False)[0] is None
    assert framing("none", "arcface112", str(tmp_path), same_data=False)[0] is None
    (tmp_path / "align.json").write_text(json.dumps({"template": "arcface112"}))
    assert framing("auto", "arcface112", str(tmp_path), same_data=False)[0] is None  # already aligned that way


def test_framing_transform_aligns_else_falls_back_to_the_whole_image(astronaut):
    assert inference.FramingTransform("arcface112")(astronaut).size == (112, 112)
    blank = Image.new("RGB", (64, 48), (90, 90, 90))
    assert inference.FramingTransform("arcface112")(blank).size == (64, 48)


@pytest.fixture()
def raw_folder(astronaut, tmp_path):
    src = tmp_path / "raw"
    (src / "happy").mkdir(parents=True)
    astronaut.save(src / "happy" / "astronaut.png")
    astronaut.rotate(20).save(src / "happy" / "tilted.png")
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(src / "blank.png")  # no face
    (src / "broken.jpg").write_bytes(b"not an image at all")
    return src


def test_prepare_folder_reports_faceless_and_unreadable_and_resumes(raw_folder, tmp_path, capsys, monkeypatch):
    dst = tmp_path / "aligned"
    argv = [str(raw_folder), str(dst), "--template", "arcface112", "--no-progress"]
    assert align.main(argv + ["--workers", "2"]) == 1  # broken.jpg is unreadable
    captured = capsys.readouterr()
    assert "no face found (1):\n  blank.png" in captured.out
    assert "unreadable (1):" in captured.err and "broken.jpg: cannot read image" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "4 images: 2 aligned to arcface112, 1 without a face, 1 unreadable" in captured.out
    rows = {r["path"]: r for r in __import__("csv").DictReader(open(dst / "align.csv"))}
    assert {p: r["status"] for p, r in rows.items()} == {
        "happy/astronaut.png": "ok", "happy/tilted.png": "ok", "blank.png": "no_face", "broken.jpg": "unreadable"}
    x, y, w, h = (int(rows["happy/astronaut.png"][k]) for k in ("x", "y", "width", "height"))
    assert 170 < x < 190 and 75 < y < 95 and float(rows["happy/astronaut.png"]["score"]) > 1
    points = np.array(rows["happy/astronaut.png"]["landmarks"].split(), float).reshape(68, 2)
    assert np.abs(align.five_points(points) - HAND_CHECKED).max() <= 3
    assert Image.open(dst / "happy" / "astronaut.png").size == (112, 112)
    assert json.loads((dst / "align.json").read_text())["template"] == "arcface112"

    # Resume: an interrupted run (a crop lost, a half-written last row) redoes only what is missing.
    (dst / "happy" / "tilted.png").unlink()
    with open(dst / "align.csv", "a") as handle:
        handle.write("happy/new.png,o")
    done = []
    real_work = align._work
    monkeypatch.setattr(align, "_work", lambda job: done.append(job[0]) or real_work(job))
    assert align.main(argv) == 1
    assert sorted(done) == ["broken.jpg", "happy/tilted.png"]  # unreadable files are tried again
    assert (dst / "happy" / "tilted.png").is_file()
    assert len(list(__import__("csv").DictReader(open(dst / "align.csv")))) == 4


def test_prepare_folder_refuses_bad_arguments(raw_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        align.main([str(tmp_path / "missing"), str(tmp_path / "d"), "--template", "arcface112"])
    assert exc.value.code == 2 and "SRC" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "align.json").write_text(json.dumps({"template": "dlib150"}))
    with pytest.raises(SystemExit):
        align.main([str(raw_folder), str(tmp_path / "d"), "--template", "arcface112", "--no-progress"])
    assert "holds crops aligned to dlib150" in capsys.readouterr().err


def test_test_py_aligns_a_folder_of_raw_photos_to_the_checkpoints_framing(aligned_checkpoint, astronaut, tmp_path,
                                                                          capsys, monkeypatch):
    root = tmp_path / "raw"
    for split in ("train", "test"):
        (root / split / "happy").mkdir(parents=True)
        (root / split / "neutral").mkdir(parents=True)
        astronaut.save(root / split / "happy" / "astronaut.png")
        Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(root / split / "neutral" / "blank.png")
    framed = []
    real = inference.FramingTransform.__call__

    def recording(self, image):
        face = real(self, image)
        framed.append(face.size)
        return face

    monkeypatch.setattr(inference.FramingTransform, "__call__", recording)
    metrics = test_script.cli([str(aligned_checkpoint), "--dataset", "folder", "--data-root", str(root),
                               "--workers", "0", "--no-progress", "--device", "cpu", "--output", str(tmp_path / "e")])
    assert "framing: every image aligned to arcface112, the checkpoint's framing" in capsys.readouterr().out
    assert sorted(framed) == [(64, 64), (112, 112)]  # the face aligned; the blank image whole
    assert len(metrics["per_class_acc"]) == 2


def test_visualize_frames_faces_as_the_checkpoint_was_trained(aligned_checkpoint, astronaut, tmp_path, capsys,
                                                              monkeypatch):
    import visualize

    astronaut.save(tmp_path / "astronaut.png")
    seen = []
    real = visualize.class_maps
    monkeypatch.setattr(visualize, "class_maps", lambda predictor, faces: seen.extend(f.size for f in faces) or real(
        predictor, faces))
    assert visualize.cli([str(aligned_checkpoint), str(tmp_path / "astronaut.png"), "--classes", "pred",
                          "--output", str(tmp_path / "maps")]) == 0
    assert "framing: arcface112 alignment" in capsys.readouterr().out
    assert (tmp_path / "maps" / "astronaut_cam.png").is_file()
    assert seen == [(112, 112)]  # the arcface112 crop, not the Haar box's 130-px square

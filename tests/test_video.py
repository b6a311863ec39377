"""predict.py on a video (utils/video.py): one CSV row per frame, the smoothing and tracking rules,
an annotated copy, and one error line for a video that cannot be read."""
import csv

import cv2
import numpy as np
import pytest

import predict
import train
from utils.video import MAX_MISSED, FaceTracker, iou

FPS = 10.0


@pytest.fixture(scope="module")
def checkpoint(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("video_run")
    train.cli(["--dataset", "demo", "--data-root", str(demo_root), "--img-size", "32", "--batch-size", "16",
               "--workers", "0", "--no-progress", "--backbone", "test_resnet", "--steps", "1",
               "--no-tensorboard", "--output", str(out)])
    return out / "last.pth"


def write_video(path, faces: int, blanks: int):
    """``faces`` frames panning across the astronaut's face, then ``blanks`` grey frames, at 10 fps."""
    from skimage import data

    bgr = data.astronaut()[:, :, ::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (256, 256))
    assert writer.isOpened()
    for i in range(faces):
        writer.write(np.ascontiguousarray(bgr[0:256, 96 + 3 * i:352 + 3 * i]))
    for _ in range(blanks):
        writer.write(np.full((256, 256, 3), 128, np.uint8))
    writer.release()
    return path


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_short_video_gives_one_row_per_frame_with_smoothed_probabilities(checkpoint, tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", faces=6, blanks=2)
    out = tmp_path / "out"
    assert predict.cli([str(checkpoint), str(video), "--output", str(out), "--smooth", "0.3", "--annotate"]) == 0
    assert "clip.mp4: 8 frames at 10.00 fps, 6 face(s) in 1 track(s)" in capsys.readouterr().out
    rows = read_rows(out / "clip.csv")
    assert [int(r["frame"]) for r in rows] == list(range(8))
    assert [float(r["time_s"]) for r in rows] == pytest.approx([i / FPS for i in range(8)])
    faces, blanks = rows[:6], rows[6:]
    assert all(r["track"] == "1" and r["framing"] == "haar" for r in faces)
    for i, r in enumerate(faces):  # the crop pans 3 px a frame to the right: the face moves left
        x, w = int(r["x"]), int(r["width"])
        assert abs(x + w / 2 - (224 - 96 - 3 * i)) < 25
    assert all(r["prediction"] == "no face" and r["x"] == "" for r in blanks)
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    p = np.array([[float(r[f"p_{c}"]) for c in classes] for r in faces])
    s = np.array([[float(r[f"smooth_{c}"]) for c in classes] for r in faces])
    expected = [p[0]]
    for frame in p[1:]:
        expected.append(0.3 * frame + 0.7 * expected[-1])
    assert np.allclose(s, expected, atol=2e-5)  # 5 decimals in the CSV
    assert not np.allclose(s, p, atol=1e-3)  # the smoothing did something
    annotated = cv2.VideoCapture(str(out / "clip_annotated.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 8


def test_an_unreadable_video_gets_one_error_line(checkpoint, tmp_path, capfd):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 50)
    assert predict.cli([str(checkpoint), str(broken), "--output", str(tmp_path / "out")]) == 1
    err = capfd.readouterr().err
    assert err.strip().splitlines() == [f"error: {broken}: cannot read video (OpenCV cannot open it: corrupt, "
                                        "truncated or an unknown codec)"]


def test_a_video_needs_an_output_folder_and_smooth_in_range(checkpoint, tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", faces=1, blanks=0)
    with pytest.raises(SystemExit):
        predict.cli([str(checkpoint), str(video)])
    assert "needs --output DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.cli([str(checkpoint), str(video), "--output", str(tmp_path), "--smooth", "0"])
    assert "--smooth is the weight of the newest frame" in capsys.readouterr().err


def test_tracker_matches_by_overlap_and_ends_lost_tracks():
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    tracker = FaceTracker(alpha=0.5)
    one, two = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert [t for t, _ in tracker.update([(0, 0, 10, 10), (100, 0, 10, 10)], np.stack([one, two]))] == [1, 2]
    # listed the other way round and moved a little: each keeps its number and its own average
    out = tracker.update([(102, 0, 10, 10), (2, 0, 10, 10)], np.stack([one, two]))
    assert [t for t, _ in out] == [2, 1]
    assert np.allclose(out[0][1], [0.5, 0.5]) and np.allclose(out[1][1], [0.5, 0.5])
    # IoU below 0.3 (here 0.18) is a new face
    assert tracker.update([(8, 0, 10, 10)], one[None])[0][0] == 3
    for _ in range(MAX_MISSED + 1):  # track 2 unseen for more than MAX_MISSED frames ends
        tracker.update([], np.zeros((0, 2)))
    assert tracker.update([(102, 0, 10, 10)], one[None])[0][0] == 4

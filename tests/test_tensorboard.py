"""utils/tensorboard.py: the event files, read back with TensorBoard's own reader, hold what
metrics.jsonl holds, and a run killed and resumed leaves no step twice."""
import signal

import numpy as np
import pytest

import train
from utils.logging import read_metrics
from utils.stop import GracefulStop
from utils.tensorboard import record_scalars

CLASSES = ["happy", "sad"]


def test_record_scalars_names_every_metric():
    record = {"epoch": 0, "step": 7, "loss": 1.5, "loss_rsl": 0.25, "lr": 0.1, "time": 3.0, "classes": CLASSES,
              "selected_on": "val", "skipped_nonfinite": 0, "overall_acc": 0.5, "mean_acc": 0.4,
              "per_class_acc": [0.3, 0.5], "macro_f1": 0.35, "ece": 0.1, "vote_kl": 0.2, "vote_nll": 0.9,
              "val_mean_acc": 0.6, "val_per_class_acc": [0.7, 0.5], "online_overall_acc": 0.45,
              "val_online_mean_acc": 0.55, "teacher_macro_f1": 0.3, "best": {"step": 7, "mean_acc": 0.4}}
    assert record_scalars(record) == {
        "epoch/loss": 1.5, "epoch/loss_rsl": 0.25, "test/overall_acc": 0.5, "test/mean_acc": 0.4,
        "test/recall/happy": 0.3, "test/recall/sad": 0.5, "test/macro_f1": 0.35, "test/ece": 0.1, "test/vote_kl": 0.2,
        "test/vote_nll": 0.9, "val/mean_acc": 0.6, "val/recall/happy": 0.7, "val/recall/sad": 0.5,
        "test_online/overall_acc": 0.45, "val_online/mean_acc": 0.55, "test_teacher/macro_f1": 0.3}


def read_board(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(directory), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    return reader


def test_events_equal_metrics_jsonl_and_a_resumed_run_has_no_duplicate_steps(demo_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run = ["--method", "mek", "--dataset", "demo", "--data-root", str(demo_root), "--backbone", "test_resnet",
           "--img-size", "32", "--batch-size", "16", "--workers", "0", "--no-progress", "--steps", "6",
           "--eval-interval", "1", "--save-interval", "2", "--log-interval", "1", "--val-fraction", "0.25",
           "--output", str(out)]

    def killed_at_five(self, step):  # as a SIGKILL after step 5's evaluation: last.pth holds step 4
        if step == 5:
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(GracefulStop, "requested", killed_at_five)
    with pytest.raises(SystemExit) as exc:
        train.cli(run)
    assert exc.value.code == 130
    before = read_board(out / "tensorboard")
    assert [e.step for e in before.Scalars("test/mean_acc")] == [1, 2, 3, 4, 5]  # step 5 reached the file

    monkeypatch.setattr(GracefulStop, "requested", lambda self, step: None)
    train.cli([*run, "--resume", "auto"])
    assert "steps after 4 purged" in (out / "log.txt").read_text()
    board = read_board(out / "tensorboard")
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    tags = board.Tags()["scalars"]
    for tag in tags:
        steps = [e.step for e in board.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)  # no step twice
    for record in records:
        expected = record_scalars(record)
        assert {"test/mean_acc", "val/mean_acc", "test/recall/fear", "test/ece", "epoch/loss", "epoch/loss_rsl",
                "val/macro_f1"} <= set(expected)
        for tag, value in expected.items():
            logged = {e.step: e.value for e in board.Scalars(tag)}
            assert logged[record["step"]] == pytest.approx(value, rel=1e-6, abs=1e-7), (tag, record["step"])
        assert {e.step: e.value for e in board.Scalars("train/lr")}[record["step"]] == pytest.approx(record["lr"])
    # with --log-interval 1 the first window is the first step, as is the epoch's average there
    assert board.Scalars("train/loss")[0].value == pytest.approx(records[0]["loss"], rel=1e-6)
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in board.Images("test/confusion_matrix")] == [1, 2, 3, 4, 5, 6]


def test_no_tensorboard_writes_nothing(demo_root, tmp_path):
    out = tmp_path / "run"
    train.cli(["--method", "ce", "--dataset", "demo", "--data-root", str(demo_root), "--backbone", "test_resnet",
               "--img-size", "32", "--batch-size", "16", "--workers", "0", "--no-progress", "--steps", "1",
               "--no-tensorboard", "--output", str(out)])
    assert not (out / "tensorboard").exists()


def test_confusion_image_shades_each_cell_by_its_rows_recall():
    from utils.tensorboard import BLUE, confusion_image

    image = confusion_image([[4, 0], [1, 3]], CLASSES)  # recalls: happy 4/4, sad 3/4 (1/4 taken for happy)
    height, width, _ = image.shape
    assert image.dtype.name == "uint8" and width > 2 * 44 and height > 2 * 44

    def cell_colours(value):
        want = np.array([round(255 - value * (255 - c)) for c in BLUE])
        return int((np.abs(image.reshape(-1, 3).astype(int) - want).sum(1) == 0).sum())

    # the 100% cell is solid dark blue, the 75% and 25% cells their shades, the 0% cell white
    assert cell_colours(1.0) > 1000 and cell_colours(0.75) > 1000 and cell_colours(0.25) > 1000
    assert cell_colours(0.5) == 0  # no row has a 50% cell

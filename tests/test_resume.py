"""Runs that survive: determinism, kill-and-resume equality, NaN guard, bad images, dataset scan."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import engine
import train
from methods.mek import MEK
from conftest import make_raf_db
from data import check as data_check
from test_val_split import _scripted_evaluate
from utils.checkpoint import load_checkpoint
from utils.logging import read_metrics
from utils.stop import GracefulStop

ROOT = Path(__file__).resolve().parent.parent
# 128 images / batch 16 = 8 steps per epoch; 2 epochs; checkpoints every 3 steps, mid-epoch.
RUN = ["--dataset", "demo", "--img-size", "32", "--batch-size", "16", "--workers", "0", "--no-progress",
       "--opt", "adamw", "--lr", "1e-3", "--sched", "cosine", "--warmup-steps", "3", "--epochs", "2",
       "--save-interval", "3", "--seed", "7", "--reprob", "0.5"]
# The augmentation flags of train_exp.sh's SWIN recipe (the backbone stays resnet18 at 32 px).
SWIN_AUGMENT = ["--norm", "half", "--interpolation", "bicubic", "--scale-min", "1.0", "--auto-augment",
                "rand-m9-mstd0.5-inc1", "--color-jitter", "0.4", "--reprob", "0.25", "--remode", "pixel",
                "--re-max-area", "0.3333"]


def with_flag(run: list[str], flag: str, value: str) -> list[str]:
    """``run`` with ``flag``'s value replaced."""
    at = run.index(flag)
    return [*run[:at + 1], value, *run[at + 2:]]


def final_state(output: Path):
    return torch.load(output / "last.pth", map_location="cpu", weights_only=True)


def metrics_without_time(output: Path):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(output / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference_run(demo_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("reference")
    train.cli([*RUN, "--data-root", str(demo_root), "--output", str(output)])
    return output


def test_same_seed_gives_identical_metrics(reference_run, demo_root, tmp_path):
    train.cli([*RUN, "--data-root", str(demo_root), "--output", str(tmp_path / "again")])
    assert metrics_without_time(tmp_path / "again") == metrics_without_time(reference_run)
    a, b = final_state(reference_run)["model"], final_state(tmp_path / "again")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _kill_at_a_random_step_then_resume(run: list[str], demo_root: Path, output: Path) -> None:
    command = [sys.executable, "train.py", *run, "--data-root", str(demo_root), "--output", str(output)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (output / "last.pth").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.5))  # land on a random later step, possibly mid-save
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    saved = torch.load(output / "last.pth", map_location="cpu", weights_only=True)["progress"]
    killed_at, trained_before = saved["step"], saved["elapsed_s"]
    assert 0 < killed_at < 16

    resumed = subprocess.run([*command, "--resume", "auto"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at epoch {killed_at // 8}, step {killed_at}" in resumed.stdout
    # The loop's clock goes on from the checkpoint's: the last evaluation's time includes the killed process's.
    assert trained_before > 0 and read_metrics(output / "metrics.jsonl")[-1]["time"] > trained_before


def _assert_same_run(reference: Path, output: Path) -> None:
    a, b = final_state(reference), final_state(output)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert metrics_without_time(output) == metrics_without_time(reference)


def test_sigkill_at_a_random_step_then_resume_matches_uninterrupted_run(reference_run, demo_root, tmp_path):
    _kill_at_a_random_step_then_resume(RUN, demo_root, tmp_path / "killed")
    _assert_same_run(reference_run, tmp_path / "killed")


def test_sigkill_and_resume_with_the_swin_augmentation_and_two_workers(demo_root, tmp_path):
    # RandAugment draws from Python's, torch's and NumPy's generators; the two workers are seeded
    # from the loader's base seed, which a resumed process draws afresh. Only per-sample seeding
    # of all three (data/base.py) makes the resumed run the uninterrupted one.
    run = [*with_flag(RUN, "--workers", "2"), *SWIN_AUGMENT]
    train.cli([*run, "--data-root", str(demo_root), "--output", str(tmp_path / "reference")])
    _kill_at_a_random_step_then_resume(run, demo_root, tmp_path / "killed")
    _assert_same_run(tmp_path / "reference", tmp_path / "killed")


def test_resume_refuses_a_checkpoint_of_another_model(reference_run, demo_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.cli([*RUN, "--data-root", str(demo_root), "--output", str(tmp_path / "other"), "--backbone", "resnet10t",
                   "--resume", str(reference_run / "last.pth")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "backbone='resnet18'" in err


def _nan_after(step_to_break: int):
    """MEK's training step with a NaN RAC term at its (step_to_break + 1)-th call."""
    original = MEK.training_step
    calls = {"n": 0}

    def training_step(self, model, images, labels):
        terms = original(self, model, images, labels)
        calls["n"] += 1
        if calls["n"] == step_to_break + 1:
            terms["rac"] = terms["rac"] * float("nan")
            terms["loss"] = terms["rsl"] + terms["rac"]
        return terms

    return training_step


def test_nonfinite_loss_stops_with_step_term_and_diagnostic_checkpoint(demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(MEK, "training_step", _nan_after(2))
    with pytest.raises(SystemExit) as exc:
        train.cli([*RUN, "--data-root", str(demo_root), "--output", str(tmp_path / "nan"), "--epochs", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step 2 in term(s) rac" in err
    diagnostic = tmp_path / "nan" / "nonfinite_step2_rank0.pth"
    assert diagnostic.is_file() and torch.load(diagnostic, weights_only=True)["progress"]["step"] == 2


def test_nonfinite_batches_can_be_skipped_and_are_counted(demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(MEK, "training_step", _nan_after(2))
    train.cli([*RUN, "--data-root", str(demo_root), "--output", str(tmp_path / "skip"), "--epochs", "1", "--skip-nonfinite"])
    record = read_metrics(tmp_path / "skip" / "metrics.jsonl")[-1]
    assert record["skipped_nonfinite"] == 1
    assert "skipped 1 batches with a non-finite loss" in (tmp_path / "skip" / "log.txt").read_text()


def _broken_raf_db(tmp_path: Path) -> Path:
    root = make_raf_db(tmp_path / "raf", [1, 2, 3, 4, 5, 6, 7] * 3, [1, 2, 3, 4, 5, 6, 7])
    aligned = root / "Image" / "aligned"
    jpeg = aligned / "train_00002_aligned.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:60])  # truncated JPEG
    (aligned / "train_00005_aligned.jpg").write_bytes(b"")  # zero-byte file
    return root


def test_bad_images_stop_training_with_the_file_name(tmp_path, capsys):
    root = _broken_raf_db(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train.cli(["--dataset", "raf-db", "--data-root", str(root), "--img-size", "32", "--batch-size", "7",
                   "--workers", "0", "--no-progress", "--steps", "3", "--output", str(tmp_path / "out"), "--seed", "0"])
    assert exc.value.code == 2
    assert "cannot decode image" in capsys.readouterr().err


def test_bad_images_skipped_and_counted(tmp_path):
    root = _broken_raf_db(tmp_path)
    out = tmp_path / "out"
    train.cli(["--dataset", "raf-db", "--data-root", str(root), "--img-size", "32", "--batch-size", "7",
               "--workers", "0", "--no-progress", "--epochs", "1", "--output", str(out), "--skip-bad-images"])
    log = (out / "log.txt").read_text()
    assert "skipped 2 unreadable images" in log
    listed = (out / "bad_images.tsv").read_text()
    assert "train_00002_aligned.jpg" in listed and "train_00005_aligned.jpg" in listed


def test_dataset_scan_lists_every_problem(tmp_path, capsys):
    root = _broken_raf_db(tmp_path)
    labels = root / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text() + "train_00099.jpg 9\ntrain_00100.jpg\ntrain_00001.jpg 1\n")
    aligned = root / "Image" / "aligned"
    (aligned / "train_00003_aligned.jpg").unlink()
    (aligned / "train_00003_aligned.jpg").mkdir()  # a directory where a file should be
    assert data_check.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "train_00002_aligned.jpg" in out and "train_00005_aligned.jpg" in out
    assert "list_patition_label.txt:29: label 9 is outside 1..7" in out
    assert "list_patition_label.txt:30: expected 'image_name label'" in out
    assert "train_00001.jpg is listed 2 times" in out
    assert "found a directory" in out
    assert "train: surprise=" in out


def test_dataset_scan_reports_duplicates_and_empty_classes_in_folders(tmp_path, capsys):
    from conftest import write_image

    root = tmp_path / "fer"
    write_image(root / "train" / "happy" / "a.png")
    write_image(root / "train" / "sad" / "a.png")
    (root / "train" / "angry").mkdir(parents=True)
    write_image(root / "val" / "happy" / "b.png")
    assert data_check.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "duplicate file name a.png" in out and "class 'anger' has no samples" in out


def test_empty_class_stops_training_with_a_clear_message(tmp_path, capsys):
    from conftest import write_image

    root = tmp_path / "fer"
    for i in range(4):
        write_image(root / "train" / "happy" / f"{i}.png")
        write_image(root / "val" / "happy" / f"{i}.png")
    (root / "train" / "angry").mkdir(parents=True)
    with pytest.raises(SystemExit):
        train.cli(["--dataset", "folder", "--data-root", str(root), "--img-size", "32", "--batch-size", "2",
                   "--workers", "0", "--output", str(tmp_path / "out")])
    assert "anger have no training samples" in capsys.readouterr().err


def sigterm_at_step_two_then_resume(command: list[str], output: Path) -> tuple[int, str, str]:
    """Run ``command`` (a train.py with ``--log-interval 1``), SIGTERM it once it logs step 2, check
    it saved that step and exited 128 + 15, resume it with ``--resume auto`` from that step; return
    (the step it stopped at, the stopped run's stdout, the resumed run's stdout)."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})  # each progress line as it is written
    for line in process.stdout:
        if line.startswith("train 0 step 2 "):
            process.send_signal(signal.SIGTERM)
            break
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    stopped_at = torch.load(output / "last.pth", map_location="cpu", weights_only=True)["progress"]["step"]
    assert stopped_at >= 2
    resumed = subprocess.run([*command, "--resume", "auto"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return stopped_at, out, resumed.stdout


def test_sigterm_saves_the_step_in_flight_and_resume_matches_uninterrupted_run(reference_run, demo_root, tmp_path):
    # A scheduler's SIGTERM (or Ctrl-C's SIGINT) finishes the current step, writes last.pth at that
    # step (not only at the last --save-interval multiple) and exits 128 + 15.
    output = tmp_path / "stopped"
    run = [flag for flag in with_flag(RUN, "--save-interval", "100") if flag != "--no-progress"]
    command = [sys.executable, "train.py", *run, "--log-interval", "1",
               "--data-root", str(demo_root), "--output", str(output)]
    stopped_at, out, resumed = sigterm_at_step_two_then_resume(command, output)
    assert stopped_at < 16  # no periodic save before step 100: this checkpoint is the signal's
    assert f"stopped by SIGTERM at step {stopped_at}; last.pth holds that step" in out
    assert f"at epoch {stopped_at // 8}, step {stopped_at}" in resumed
    _assert_same_run(reference_run, output)


def test_resume_restores_the_best_score_so_a_worse_evaluation_keeps_best_pth(demo_root, tmp_path, monkeypatch):
    # Validation mean class accuracy 0.5, 0.9, 0.6 at steps 1, 2, 3; the run is stopped at step 3
    # (as by SIGTERM) and resumed: 0.7 and 0.8 at steps 4 and 5 are worse than step 2's 0.9, so
    # best.pth stays at step 2. A resume that forgot the best score would write step 4's.
    out = tmp_path / "run"
    run = ["--method", "ce", "--dataset", "demo", "--data-root", str(demo_root), "--backbone", "test_resnet",
           "--img-size", "32", "--batch-size", "16", "--workers", "0", "--no-progress", "--steps", "5",
           "--eval-interval", "1", "--val-fraction", "0.25", "--output", str(out)]  # 96 training images: 6 steps an epoch
    calls: list[str] = []
    monkeypatch.setattr(engine, "evaluate", _scripted_evaluate([0.5, 0.9, 0.6], [0.3, 0.4, 0.5], calls))
    monkeypatch.setattr(GracefulStop, "requested", lambda self, step: signal.SIGTERM if step == 3 else None)
    with pytest.raises(SystemExit) as exc:
        train.cli(run)
    assert exc.value.code == 128 + signal.SIGTERM
    assert load_checkpoint(out / "best.pth")["progress"]["step"] == 2
    assert load_checkpoint(out / "last.pth")["progress"]["step"] == 3

    calls.clear()
    monkeypatch.setattr(engine, "evaluate", _scripted_evaluate([0.7, 0.8], [0.6, 0.7], calls))
    monkeypatch.setattr(GracefulStop, "requested", lambda self, step: None)
    train.cli([*run, "--resume", "auto"])
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["val_mean_acc"] for r in records] == [0.5, 0.9, 0.6, 0.7, 0.8]
    best = load_checkpoint(out / "best.pth")
    assert best["progress"]["step"] == 2 and best["metrics"]["mean_acc"] == 0.4
    assert records[-1]["best"]["step"] == 2 and records[-1]["best"]["val_mean_acc"] == 0.9
    assert ("test at the validation-chosen step (best.pth, step 2, validation mean 90.00): overall 40.00"
            in (out / "log.txt").read_text())


def test_a_resumed_ema_run_with_batch_augmentation_equals_the_uninterrupted_one(demo_root, tmp_path, monkeypatch):
    # --ema's average is saved in last.pth and restored: stopped at step 5 (as by SIGTERM) and resumed, the
    # trained and the averaged weights and every metric equal those of a run that never stopped.
    run = ["--method", "ce", "--dataset", "demo", "--data-root", str(demo_root), "--backbone", "test_resnet",
           "--img-size", "32", "--batch-size", "16", "--workers", "0", "--no-progress", "--steps", "12",
           "--eval-interval", "6", "--val-fraction", "0.25", "--ema", "0.9", "--batch-augment", "--rotate", "10",
           "--scale-min", "0.5", "--tta", "flip"]
    train.cli([*run, "--output", str(tmp_path / "through")])
    monkeypatch.setattr(GracefulStop, "requested", lambda self, step: signal.SIGTERM if step == 5 else None)
    with pytest.raises(SystemExit):
        train.cli([*run, "--output", str(tmp_path / "stopped")])
    assert load_checkpoint(tmp_path / "stopped" / "last.pth")["progress"]["step"] == 5
    monkeypatch.setattr(GracefulStop, "requested", lambda self, step: None)
    train.cli([*run, "--output", str(tmp_path / "stopped"), "--resume", "auto"])
    a, b = final_state(tmp_path / "through"), final_state(tmp_path / "stopped")
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert not all(torch.equal(a["model"][k], a["ema"][k]) for k in a["model"])  # the average is not the model
    assert metrics_without_time(tmp_path / "stopped") == metrics_without_time(tmp_path / "through")
    last = read_metrics(tmp_path / "through" / "metrics.jsonl")[-1]
    # test.py evaluates the average with the run's flip TTA (the logged numbers), --network online the trained
    # weights; predict.py / visualize.py / export.py load the average (utils/inference.py).
    import test as test_script
    from utils.inference import load_predictor

    common = [str(tmp_path / "through" / "last.pth"), "--no-progress", "--workers", "0", "--output", str(tmp_path / "ev")]
    averaged, online = test_script.cli(common), test_script.cli([*common, "--network", "online"])
    assert averaged["per_class_acc"] == last["per_class_acc"] and averaged["mean_acc"] == pytest.approx(last["mean_acc"])
    assert online["per_class_acc"] == last["online_per_class_acc"]
    weights = load_predictor(tmp_path / "through" / "last.pth").model.state_dict()
    assert all(torch.equal(weights[k], a["ema"][k]) for k in weights)
    # Resuming without --ema (or with it, from a run without) is refused: the average cannot be made up.
    with pytest.raises(SystemExit):
        train.cli([*[f for f in run if f not in ("--ema", "0.9")], "--output", str(tmp_path / "stopped"),
                   "--resume", "auto"])

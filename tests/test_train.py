"""End to end on the generated demo data: train.py writes metrics and checkpoints, test.py reproduces them."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import test as test_script
import train
from utils.logging import read_metrics

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "demo", "--img-size", "32", "--batch-size", "16", "--workers", "0", "--no-progress",
        "--backbone", "resnet18", "--lr", "1e-3"]


def run_train(demo_root, output, *extra):
    train.cli([*TINY, "--data-root", str(demo_root), "--output", str(output), *extra])


@pytest.fixture(scope="module")
def trained_run(demo_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    run_train(demo_root, output, "--epochs", "2")
    return output


def test_training_writes_metrics_config_and_checkpoints(trained_run):
    records = read_metrics(trained_run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1]
    for record in records:
        for key in ("epoch", "overall_acc", "mean_acc", "per_class_acc", "macro_f1", "loss", "loss_rsl", "loss_rac"):
            assert key in record
        assert 0 <= record["overall_acc"] <= 1 and 0 <= record["mean_acc"] <= 1 and len(record["per_class_acc"]) == 7
    config = json.loads((trained_run / "config.json").read_text())
    assert config["method"] == "mek" and config["rsl_eps"] == 0.3 and config["rac_weight"] == 0.1
    assert config["method_settings"]["rsl_eps"] == 0.3 and config["method_settings"]["rac_weight"] == 0.1
    for name in ("last.pth", "best.pth", "log.txt", "curves.png"):
        assert (trained_run / name).is_file()
    log = (trained_run / "log.txt").read_text()
    # The class weights logged once at the start are N / (10 n_k) of the logged training counts.
    counts = config["train_counts"]
    weights = dict(item.split("=") for item in log.split("MEK weights N/(10 n_k): ")[1].splitlines()[0].split(", "))
    assert [float(weights[c]) for c in config["classes"]] == pytest.approx(
        [sum(counts) / (10 * n) for n in counts], abs=1e-4)
    # The closing lines give the last and the best evaluation, labelled, with the recorded numbers.
    last, best = records[-1], max(records, key=lambda r: r["mean_acc"])
    assert f"last evaluation (step {last['step']}): overall {last['overall_acc'] * 100:.2f}  " \
           f"mean {last['mean_acc'] * 100:.2f}" in log
    assert f"best evaluation, selected on the test split (step {best['step']}): " \
           f"overall {best['overall_acc'] * 100:.2f}  mean {best['mean_acc'] * 100:.2f}" in log


def test_test_py_reproduces_logged_numbers(trained_run, tmp_path):
    records = read_metrics(trained_run / "metrics.jsonl")
    best = max(records, key=lambda r: r["mean_acc"])
    metrics = test_script.cli([str(trained_run / "best.pth"), "--workers", "0", "--no-progress", "--out-dir", str(tmp_path)])
    assert metrics["overall_acc"] == pytest.approx(best["overall_acc"], abs=1e-9)
    assert metrics["mean_acc"] == pytest.approx(best["mean_acc"], abs=1e-9)
    assert metrics["per_class_acc"] == pytest.approx(best["per_class_acc"], abs=1e-9)
    assert (tmp_path / "best_test_confusion_matrix.png").stat().st_size > 1000
    rows = (tmp_path / "best_test_predictions.csv").read_text().splitlines()
    assert rows[0].startswith("path,label,prediction") and len(rows) == 1 + 56


def test_refuses_to_clobber_a_finished_run(trained_run, demo_root, capsys):
    with pytest.raises(SystemExit) as exc:
        run_train(demo_root, trained_run, "--epochs", "1")
    assert exc.value.code == 2
    assert "already holds a run" in capsys.readouterr().err


def test_the_backend_settings_are_applied_before_the_model_and_logged(demo_root, tmp_path, capsys, monkeypatch):
    # utils/device.py configure_backends (tests/test_device.py): its lines open the log.
    calls = []

    def configure(device, amp, deterministic):
        calls.append((device.type, deterministic))
        return ["CUDA backends: as configured"]

    monkeypatch.setattr(train, "configure_backends", configure)
    run_train(demo_root, tmp_path / "dry", "--dry-run", "--deterministic")
    assert calls == [("cpu", True)] and "CUDA backends: as configured" in capsys.readouterr().out


def test_dry_run_prints_counts_and_weights(demo_root, tmp_path, capsys):
    run_train(demo_root, tmp_path / "dry", "--dry-run")
    out = capsys.readouterr().out
    assert "train counts:" in out and "class weights" in out and "dry run: one batch" in out
    assert not (tmp_path / "dry").exists()


def test_separate_class_weight_powers_for_rsl_and_rac(demo_root, tmp_path, capsys):
    run_train(demo_root, tmp_path / "dry", "--dry-run", "--rac-class-weight-power", "0.5")
    out = capsys.readouterr().out
    assert "RSL class weights N/(10 n_k): " in out and "RAC class weights (N/(10 n_k))^0.5: " in out
    rsl = dict(item.split("=") for item in out.split("RSL class weights N/(10 n_k): ")[1].splitlines()[0].split(", "))
    rac = dict(item.split("=") for item in out.split("RAC class weights (N/(10 n_k))^0.5: ")[1].splitlines()[0].split(", "))
    assert all(float(rac[c]) == pytest.approx(float(rsl[c]) ** 0.5, abs=2e-4) for c in rsl)


def train_subprocess(*args: str) -> subprocess.CompletedProcess:
    """train.py as a user runs it: its exit status and stderr, not an exception."""
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_out_of_range_class_weight_power_names_the_flag(tmp_path):
    result = train_subprocess("--dataset", "demo", "--data-root", str(tmp_path / "demo"), "--output",
                              str(tmp_path / "out"), "--rsl-class-weight-power", "1.5")
    assert result.returncode == 2
    assert "error: --rsl-class-weight-power must be in [0, 1], got 1.5" in result.stderr
    assert "Traceback" not in result.stderr


def test_ablation_flags_select_terms(demo_root, tmp_path):
    run_train(demo_root, tmp_path / "ce", "--steps", "2", "--rsl-eps", "0", "--rac-weight", "0")
    record = read_metrics(tmp_path / "ce" / "metrics.jsonl")[-1]
    assert "loss_rac" not in record and record["loss"] == pytest.approx(record["loss_rsl"])


def test_bad_input_is_one_clear_message_without_traceback(tmp_path):
    result = train_subprocess("--dataset", "raf-db", "--data-root", str(tmp_path / "missing"), "--output",
                              str(tmp_path / "out"), "--workers", "0")
    assert result.returncode == 2
    assert "error: RAF-DB root not found" in result.stderr and "Traceback" not in result.stderr


def test_progress_is_plain_lines_when_output_is_not_a_terminal(demo_root, tmp_path):
    result = train_subprocess("--dataset", "demo", "--data-root", str(demo_root), "--img-size", "32", "--batch-size", "16",
                              "--workers", "0", "--steps", "4", "--log-interval", "2", "--output", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stdout + result.stderr  # no bar redraws in a log file
    lines = [line for line in result.stdout.splitlines() if line.startswith("train 0 step ")]
    assert [line.split()[3] for line in lines] == ["2", "4"]


def test_ctrl_c_while_importing_is_one_line_without_traceback(demo_root, tmp_path):
    # bench/compare.py stops an arm with SIGINT; one second in, train.py is still importing torch,
    # timm and the project (several seconds on a CPU). Later, cli() reports it the same way.
    process = subprocess.Popen([sys.executable, "train.py", *TINY, "--data-root", str(demo_root), "--output",
                                str(tmp_path / "run")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
    assert not (tmp_path / "run" / "last.pth").exists()

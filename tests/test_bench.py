"""The training-step benchmark runs end to end on a tiny configuration and reports what it promises."""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_train_step_benchmark_reports_ratio_flops_and_equal_losses(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "train_step.py"), "--backbone", "resnet18", "--img-size", "32",
           "--batch-size", "4", "--steps", "2", "--warmup", "1", "--eval-batches", "1", "--data-images", "21",
           "--amp", "off", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup: \d+\.\d\d", lines[-1])
    assert sum("OK" in line and line.startswith("loss (") for line in lines) == 2
    assert any(line.startswith("data pipeline") for line in lines)
    result = json.loads(out.read_text())
    naive, fast = result["results"]["naive"], result["results"]["optimised"]
    assert naive["flip_forward"] == "two-pass" and fast["flip_forward"] == "one-pass"
    assert fast["channels_last"] and not naive["channels_last"]
    assert len(naive["step_times"]) == len(fast["step_times"]) == 2
    assert float(lines[-1].split()[1]) == round(result["speedup"], 2)
    # ResNet-18 at 32 px: conv FLOPs scale with the pixels, 182 GFLOP per step of 32 (+32) at 112 px
    # (measured), so about 182 * (32/112)^2 / 8 = 1.9 GFLOP for 4 (+4) images at 32 px.
    assert 1.0 < naive["step_gflop"] < 3.0
    assert naive["matmul_gflops"]["fp32"] > 0


def test_targets_runs_each_configuration_and_tabulates_against_the_target(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "targets.py"), "--out", str(tmp_path), "--config", "resnet18:32",
           "--target", "0.01", "--batch-size", "4", "--steps", "1", "--warmup", "1", "--eval-batches", "1",
           "--skip-data"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "resnet18_32.json").read_text())
    row = next(line for line in run.stdout.splitlines() if line.startswith("| resnet18 @ 32 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{result['speedup']:.2f}"
    assert cells[4] == "met (0.01x)"  # any working optimised step is above 1% of the naive one


def test_targets_rejects_a_malformed_configuration(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "targets.py"), "--out", str(tmp_path), "--config", "resnet18"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "expected BACKBONE:SIZE" in run.stderr

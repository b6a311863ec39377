"""The training-step benchmark runs end to end on a tiny configuration and reports what it promises."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_in_group(cmd, cwd, env, timeout=600):
    """Run cmd in its own process group, and kill the whole group (the bench's worker processes
    too) if it runs out of time."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


def test_train_step_benchmark_reports_ratio_flops_and_equal_losses(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "train_step.py"), "--backbone", "resnet18", "--img-size", "32",
           "--batch-size", "4", "--steps", "2", "--warmup", "1", "--eval-batches", "1", "--data-images", "21",
           "--amp", "auto", "--channels-last", "on", "--json", str(out)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # the amp probe's cache, if any
    run = run_in_group(cmd, tmp_path, env)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup: \d+\.\d\d", lines[-1])
    assert sum("OK" in line and line.startswith("loss (") for line in lines) == 2
    assert any(line.startswith("data pipeline") for line in lines)
    result = json.loads(out.read_text())
    naive, fast = result["results"]["naive"], result["results"]["optimised"]
    # --flip-forward auto, as train.py: ResNet has BatchNorm, so the paper's two passes in both forms.
    assert naive["flip_forward"] == "two-pass" and fast["flip_forward"] == "two-pass"
    assert fast["channels_last"] and not naive["channels_last"]
    # Evaluation asks the model for logits only, never for attention maps.
    assert naive["eval_with_maps"] is False and fast["eval_with_maps"] is False
    assert any(line.startswith("precision of the optimised form: --amp auto") for line in lines)
    assert len(naive["step_times"]) == len(fast["step_times"]) == 2
    assert float(lines[-1].split()[1]) == round(result["speedup"], 2)
    # ResNet-18 at 32 px: conv FLOPs scale with the pixels, 182 GFLOP per step of 32 (+32) at 112 px
    # (measured), so about 182 * (32/112)^2 / 8 = 1.9 GFLOP for 4 (+4) images at 32 px.
    assert 1.0 < naive["step_gflop"] < 3.0
    assert naive["matmul_gflops"]["fp32"] > 0


def synthetic_result(naive_ips: float, fast_ips: float, step_gflop: float = 10.0, ceiling: float = 100.0,
                     batch_size: int = 32, spread: float = 0.0) -> dict:
    """A train_step.py --json result: naive at naive_ips images/s, ceiling GFLOP/s fp32."""
    def form(ips):
        step = batch_size / ips
        return {"train_images_per_s": ips, "amp": "off", "step_times": [step * (1 - spread), step, step * (1 + spread)]}
    naive, fast = form(naive_ips), form(fast_ips)
    naive.update(step_gflop=step_gflop, matmul_gflops={"fp32": ceiling, "bf16": ceiling / 5})
    return {"args": {"batch_size": batch_size}, "results": {"naive": naive, "optimised": fast}}


def test_targets_verdicts_can_fail():
    targets = load_targets()
    # naive: 16 img/s of 10 GFLOP per 32 = 5 GFLOP/s; bound = 100 / 5 = 20x; 80% of it = 16x.
    slower = targets.verdicts(synthetic_result(16.0, 15.0))          # 0.94x, steps without noise
    short = targets.verdicts(synthetic_result(16.0, 16.0 * 15.9))    # 15.9x < 16x
    both = targets.verdicts(synthetic_result(16.0, 16.0 * 16.1))     # 16.1x
    assert slower["bound"] == pytest.approx(20.0)
    assert (slower["never_slower"], slower["near_ceiling"]) == ("not met", "not met")
    assert (short["never_slower"], short["near_ceiling"]) == ("met", "not met")
    assert (both["never_slower"], both["near_ceiling"]) == ("met", "met")
    # Within the steps' noise (here 3%), 0.98x is not evidence of a slower step; beyond 5% noise never is.
    assert targets.verdicts(synthetic_result(16.0, 15.7, spread=0.03))["never_slower"] == "met within noise"
    assert targets.verdicts(synthetic_result(16.0, 15.0, spread=0.5))["never_slower"] == "not met"
    # Without counted FLOPs the ceiling target is unknown, not met.
    no_flops = synthetic_result(16.0, 17.0)
    no_flops["results"]["naive"]["step_gflop"] = None
    assert targets.verdicts(no_flops)["near_ceiling"] == "-"
    rows = targets.table([("a", synthetic_result(16.0, 15.0)), ("b", synthetic_result(16.0, 16.0 * 16.1))]).splitlines()
    assert [c.strip() for c in rows[2].strip("|").split("|")][7:9] == ["not met", "not met"]
    assert [c.strip() for c in rows[3].strip("|").split("|")][7:9] == ["met", "met"]


def load_targets():
    spec = importlib.util.spec_from_file_location("bench_targets", ROOT / "bench" / "targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_targets_rejects_a_malformed_configuration(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "targets.py"), "--out", str(tmp_path), "--config", "resnet18"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "expected BACKBONE:SIZE" in run.stderr


def _load_profile_step():
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "bench" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_step_sorts_operators_into_kinds():
    kind_of = _load_profile_step().kind_of
    # The backward of a convolution is a convolution, the backward of a norm a norm.
    assert kind_of("aten::convolution_backward") == "conv / matmul"
    assert kind_of("aten::mm") == "conv / matmul"
    assert kind_of("aten::native_batch_norm_backward") == "norm"
    assert kind_of("aten::native_layer_norm") == "norm"
    assert kind_of("aten::_softmax_backward_data") == "softmax"
    assert kind_of("aten::max_pool2d_with_indices") == "pooling"
    assert kind_of("aten::_fused_adam_") == "optimiser"
    assert kind_of("aten::copy_") == "memory copy / layout"
    assert kind_of("aten::threshold_backward") == "element-wise / activation"
    assert kind_of("aten::some_new_op") == "other"


def test_profile_step_shares_add_up(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "profile_step.py"), "--backbone", "resnet18", "--img-size", "32",
           "--batch-size", "4", "--steps", "1", "--warmup", "1", "--top", "3"]
    run = run_in_group(cmd, tmp_path, {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    shares = [float(m) for m in re.findall(r"^\| [^|]+ \| (\d+\.\d)% \| \d+\.\d+ \|$", run.stdout, re.M)]
    assert shares and abs(sum(shares) - 100) < 0.5, run.stdout
    assert "GFLOP/s" in run.stdout and "two-pass" in run.stdout  # ResNet: BatchNorm -> two passes


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.sh")))
def test_bench_driver_parses(script):
    result = subprocess.run(["sh", "-n", str(ROOT / "bench" / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ferplus_driver_refuses_an_unknown_table_and_finds_the_python(tmp_path):
    """bench/env.sh picks the interpreter; an unknown TABLES entry is one line and exit 2."""
    env = {**os.environ, "PYTHON": sys.executable, "TABLES": "main-8"}
    result = subprocess.run(["sh", str(ROOT / "bench" / "ferplus.sh"), str(tmp_path), str(tmp_path / "out")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2 and result.stderr == "error: TABLES: unknown table 'main-8' (main, 7class, stages, methods, face2exp)\n"
    probe = "REPO=%s; . %s/bench/env.sh; echo $PYTHON" % (tmp_path, ROOT)
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("#!/bin/sh\n")
    venv_python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    found = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, env=env)
    assert found.stdout.strip() == str(venv_python)


def test_ferplus_stop_reaches_every_table_that_was_started(tmp_path):
    """STOP=1 sends compare.py --stop to each table folder that exists, the methods table included."""
    log = tmp_path / "calls.log"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake_python.chmod(0o755)
    out = tmp_path / "out"
    for table in ("methods", "7class"):
        (out / table).mkdir(parents=True)
    env = {**os.environ, "PYTHON": str(fake_python), "STOP": "1"}
    result = subprocess.run(["sh", str(ROOT / "bench" / "ferplus.sh"), str(tmp_path), str(out)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    compare = ROOT / "bench" / "compare.py"
    assert log.read_text().splitlines() == [f"{compare} --stop --output {out}{suffix}"
                                            for suffix in ("", "/7class", "/methods")]


def test_fer2013_probe_measures_the_training_terms_of_the_current_heads():
    """bench/fer2013_probe.py (and bench/ferplus_probe.py, which uses it) measures CE and RAC as the model
    computes them: its head takes the feature map and returns the maps from the detached head weight."""
    import torch
    import torch.nn.functional as F

    from losses.rebalanced_attention_consistency import rebalanced_attention_consistency
    from models import build_model

    spec = importlib.util.spec_from_file_location("fer2013_probe", ROOT / "bench" / "fer2013_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=7, img_size=64).eval()  # eval: BN the same in one and two passes
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 2, 5, 6])
    weights = torch.rand(7) + 0.5
    out, *_ = probe.measure(model, images, labels, weights, disgust=2)
    with torch.no_grad():
        direct = model(images, with_maps=True)
        mirror = model(torch.flip(images, dims=[3]), with_maps=True)
        rac = rebalanced_attention_consistency(direct.attention_maps, mirror.attention_maps, weights)
        ce = F.cross_entropy(direct.logits, labels)
    assert abs(out["ce"] - float(ce)) < 1e-4 * max(1.0, float(ce))
    assert abs(out["rac"] - float(rac)) < 1e-4 * max(1.0, float(rac))
    assert all(out[k] > 0 for k in ("g_ce", "g_smooth", "g_rac", "feat_flip_asym"))
    assert 0.0 <= out["rac_disgust_share"] <= 1.0


def test_attention_flip_mirror_averaged_kernels_are_exact_only_on_odd_grids():
    """resnet18_s2_w32 with every kernel mirror-averaged: at 65 px (65-33-17-9-5, every strided layer on an
    odd input) maps and mirrored maps agree to float32 rounding; at 64 px the half-cell shifts leave a large
    error. The strided-layer count names the 7 stride-2 layers (stem, three 3x3 and three 1x1 shortcuts)."""
    spec = importlib.util.spec_from_file_location("attention_flip", ROOT / "bench" / "attention_flip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch
    from models import build_model

    torch.manual_seed(0)
    model = module.symmetrise_kernels(build_model("resnet18_s2_w32", num_classes=7, img_size=64))
    faces = module.load_faces(None, 2)
    odd = module.flip_errors(model, module.batch(faces, 65, "imagenet"))
    even = module.flip_errors(model, module.batch(faces, 64, "imagenet"))
    assert odd[2] == (5, 5) and even[2] == (4, 4)
    assert odd[0] < 1e-4 and odd[1] < 1e-4  # float32 rounding through ~20 layers, relative
    assert even[0] > 0.1
    layers = module.strided_layers(model, 64)
    assert len(layers) == 7 and all(offset == 0.5 for _, _, offset in layers)
    assert all(offset == 0.0 for _, _, offset in module.strided_layers(model, 65))


def test_attention_collapse_weighs_the_terms_by_hand(tmp_path):
    spec = importlib.util.spec_from_file_location("attention_collapse", ROOT / "bench" / "attention_collapse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def write(arm, config, records):
        run = tmp_path / arm / "seed0"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(config))
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return run

    eac = write("eac", {"eac_lambda": 5.0}, [
        {"step": 195, "mean_acc": 0.125, "overall_acc": 0.366, "per_class_acc": [0, 0, 1.0, 0], "loss": 1.7,
         "loss_ce": 1.6, "loss_eac": 0.012, "online_mean_acc": 0.25, "online_overall_acc": 0.4,
         "online_per_class_acc": [0, 0.5, 0.5, 0]},
        {"step": 390, "mean_acc": 0.5, "overall_acc": 0.7, "per_class_acc": [0.5, 0.5, 0.5, 0.5], "loss": 1.0,
         "loss_ce": 0.8, "loss_eac": 0.04}])
    rows = module.early_rows(eac, evals=1)
    assert len(rows) == 1 and rows[0]["zero_recall"] == 3 and rows[0]["classes"] == 4
    assert rows[0]["weighted_attention"] == pytest.approx(5 * 0.012) and rows[0]["classification"] == pytest.approx(1.6)
    online = module.early_rows(eac, evals=1, network="online_")[0]  # the trained model of an --ema run
    assert (online["mean_acc"], online["overall_acc"], online["zero_recall"]) == (25.0, 40.0, 2)
    # MEK deferred: lambda 0.1 off before step 378, then ramped over 189 steps (step 390: 13 of them);
    # the classification term is RSL's.
    mek = write("mek", {"rac_weight": 0.1, "mek_start_step": 378, "mek_ramp_steps": 189}, [
        {"step": 195, "mean_acc": 0.3, "overall_acc": 0.6, "per_class_acc": [0.3, 0.3], "loss_rsl": 1.4, "loss_rac": 0.0},
        {"step": 390, "mean_acc": 0.3, "overall_acc": 0.6, "per_class_acc": [0.3, 0.3], "loss_rsl": 1.0, "loss_rac": 12.0}])
    rows = module.early_rows(mek, evals=5)
    assert rows[0]["weighted_attention"] == 0.0
    assert rows[1]["weighted_attention"] == pytest.approx(12.0 * 0.1 * 13 / 189)
    assert rows[1]["classification"] == pytest.approx(1.0) and rows[1]["attention"] == "rac"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "attention_collapse.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "| 0 | 195 | 12.5 | 36.6 | 3 of 4 | 1.600 | 0.0600 | 0.037 | 0.0120 |" in out


def test_fast_ablation_table_rows_by_hand(tmp_path):
    spec = importlib.util.spec_from_file_location("fast_ablation_table", ROOT / "bench" / "fast_ablation_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = tmp_path / "proxy" / "r1-ema-tta" / "seed0"
    run.mkdir(parents=True)
    best = {"step": 500, "overall_acc": 0.7, "mean_acc": 0.4, "vote_kl": 0.6}
    records = [{"step": 500, "overall_acc": 0.7, "mean_acc": 0.4, "best": best},
               {"step": 1000, "overall_acc": 0.65, "mean_acc": 0.45, "online_overall_acc": 0.66, "best": best}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "done.json").write_text(json.dumps({"wall_s": 600.0, "total_steps": 1000, "threads": 1,
                                               "machine": "AMD EPYC (family 25 model 17), native bf16, 2 logical CPUs"}))
    (run / "command.json").write_text(json.dumps({"argv": ["--batch-size", "32"]}))
    unfinished = tmp_path / "proxy" / "r0-ce-dlib" / "seed0"  # no done.json: no row
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.jsonl").write_text(json.dumps(records[0]) + "\n")
    lines = module.main(["--records", str(tmp_path), "--tables", "proxy"])
    # 1,000 steps x 32 images / 600 s = 53 images/s; chosen step 500, end 65.00 / 45.00.
    assert lines[2:] == ["| proxy | `r1-ema-tta` | 0 | 500 | 70.00 / 40.00 | 65.00 / 45.00 | 66.00 | 0.600 | 10.0 | 53 | 1 "
                         "| AMD EPYC (family 25 model 17), native bf16 |"]


def test_ferplus_regimes_pairs_seeds_by_hand(tmp_path):
    spec = importlib.util.spec_from_file_location("ferplus_regimes", ROOT / "bench" / "ferplus_regimes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(records, arm, seed, mean_acc, overall, done=True):
        folder = records / arm / f"seed{seed}"
        folder.mkdir(parents=True)
        # Two evaluations: the second has the higher validation score, so it is the chosen one.
        evals = [{"step": 1, "mean_acc": 0.9, "overall_acc": 0.9, "macro_f1": 0.0, "val_mean_acc": 0.1,
                  "per_class_acc": [0, 0], "classes": ["a", "b"]},
                 {"step": 2, "mean_acc": mean_acc, "overall_acc": overall, "macro_f1": 0.0, "val_mean_acc": 0.5,
                  "per_class_acc": [0, 0], "classes": ["a", "b"]}]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
        if done:
            (folder / "done.json").write_text(json.dumps({"wall_s": 1.0}))

    weak, strong = tmp_path / "weak", tmp_path / "strong"
    run(weak, "ce", 0, 0.50, 0.80)
    run(weak, "ce", 1, 0.54, 0.82)
    run(weak, "mek", 0, 0.40, 0.75)  # paired: -10 and -12 mean class, -5 and -6 overall
    run(weak, "mek", 1, 0.42, 0.76)
    run(weak, "mek", 2, 0.99, 0.99)  # no ce seed 2: not paired
    run(strong, "ce", 0, 0.60, 0.85)
    run(strong, "mek", 0, 0.61, 0.80, done=False)  # unfinished: not counted
    lines = module.table(weak, strong)
    assert lines[2] == "| `ce` | 52.00 ± 2.83 (2) | 81.00 ± 1.41 (2) | 60.00 (1) | 85.00 (1) |"
    # mean class: -11 ± 1.41 against 2 x max(2.83, 1.41) = 5.66: beyond; overall -5.5 ± 0.71 against 2.83: beyond.
    assert lines[3] == ("| `mek` | -11.00 ± 1.41 (2), worse beyond seed noise | -5.50 ± 0.71 (2), worse beyond seed noise "
                        "| - | - |")


def _device_output(root: Path, device: str, runs: dict[str, bool]) -> Path:
    """A device call's files as bench/ferplus_fast_device.sh returns them: device.txt and records/TABLE/ARM/seedS."""
    (root / "records").mkdir(parents=True)
    (root / "device.txt").write_text(device + "\n")
    for rel, finished in runs.items():
        run = root / "records" / rel
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text('{"step": 1, "mean_acc": 0.5}\n')
        if finished:
            (run / "done.json").write_text(json.dumps({"wall_s": 60.0, "device": device}))
    return root


def _collect(files_at: Path, records_to: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ROOT / "bench" / "ferplus_fast_device.sh"), "collect", str(files_at)],
                          env={**os.environ, "RECORDS_TO": str(records_to)}, capture_output=True, text=True)


def test_ferplus_fast_device_collect_adds_finished_runs_and_keeps_recorded_ones(tmp_path):
    records = tmp_path / "records"
    old = records / "methods7" / "ce" / "seed0"
    old.mkdir(parents=True)
    (old / "done.json").write_text('{"wall_s": 1.0, "device": "Zen 4"}')
    files_at = _device_output(tmp_path / "device", "NVIDIA H100 80GB HBM3",
                              {"methods7/ce/seed0": True, "methods7/mek/seed0": True, "methods7/eac/seed0": False})
    result = _collect(files_at, records)
    assert result.returncode == 0, result.stderr
    assert "1 run(s) added" in result.stdout
    assert json.loads((old / "done.json").read_text())["device"] == "Zen 4"  # a recorded run is never replaced
    added = records / "methods7" / "mek" / "seed0"
    assert json.loads((added / "done.json").read_text())["device"] == "NVIDIA H100 80GB HBM3"
    assert (added / "metrics.jsonl").is_file()
    assert not (records / "methods7" / "eac").exists()  # not finished: not a record


def test_ferplus_fast_device_collect_refuses_a_rehearsal(tmp_path):
    files_at = _device_output(tmp_path / "device", "cpu (rehearsal): x86_64", {"methods7/ce/seed0": True})
    result = _collect(files_at, tmp_path / "records")
    assert result.returncode == 2
    assert "rehearsal" in result.stderr and str(files_at) in result.stderr
    assert not (tmp_path / "records").exists()
    missing = _collect(tmp_path / "nowhere", tmp_path / "records")
    assert missing.returncode == 2 and "records not found" in missing.stderr

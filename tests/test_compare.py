"""bench/compare.py: every arm through train.py, resumable, and a report that matches the runs."""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import compare  # noqa: E402
import compare_records  # noqa: E402
import compare_report  # noqa: E402

# test_resnet: timm's tiny ResNet, so four training runs fit in a test.
COMMON = "--img-size 32 --batch-size 16 --workers 0 --backbone test_resnet --eval-interval 10"


def run_compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_compare_runs_skips_and_reports(demo_root, tmp_path):
    out = tmp_path / "cmp"
    argv = ["--dataset", "demo", "--data-root", str(demo_root), "--methods", "ce,mek", "--seeds", "0,1",
            "--steps", "20", "--common", COMMON, "--lanes", "2", "--output", str(out)]
    first = run_compare(*argv)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = {(arm, seed): out / arm / f"seed{seed}" for arm in ("ce", "mek") for seed in (0, 1)}
    for run_dir in runs.values():
        assert (run_dir / "done.json").is_file() and (run_dir / "train.log").stat().st_size > 0
    mtimes = {k: (d / "metrics.jsonl").stat().st_mtime_ns for k, d in runs.items()}

    second = run_compare(*argv)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("done, skipped") == 4, second.stdout
    assert "starting" not in second.stdout and "resuming" not in second.stdout
    assert {k: (d / "metrics.jsonl").stat().st_mtime_ns for k, d in runs.items()} == mtimes

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["arm"], int(r["seed"])) for r in rows) == sorted(runs)
    for row in rows:
        records = [json.loads(line) for line in (runs[(row["arm"], int(row["seed"]))] / "metrics.jsonl").open()]
        assert len(records) == 2  # steps 10 and 20
        last, best = records[-1], max(records, key=lambda r: r["mean_acc"])
        assert row["status"] == "done" and int(row["last_step"]) == 20 and int(row["total_steps"]) == 20
        assert int(row["best_step"]) == best["step"]
        for which, rec in (("last", last), ("best", best)):
            for key in ("overall_acc", "mean_acc", "macro_f1"):
                assert float(row[f"{which}_{key}"]) == pytest.approx(rec[key], abs=1e-12)
            for name, acc in zip(rec["classes"], rec["per_class_acc"]):
                assert float(row[f"{which}_recall_{name}"]) == pytest.approx(acc, abs=1e-12)
        assert float(row["wall_s"]) > 0

    # RESULTS.md: the mean over seeds and the paired difference to ce, computed here from the runs.
    md = (out / "RESULTS.md").read_text()
    last = {k: [json.loads(line) for line in (d / "metrics.jsonl").open()][-1] for k, d in runs.items()}
    ce_mean = [last[("ce", s)]["mean_acc"] for s in (0, 1)]
    diffs = [last[("mek", s)]["mean_acc"] - last[("ce", s)]["mean_acc"] for s in (0, 1)]
    m, sd = sum(ce_mean) / 2, abs(ce_mean[0] - ce_mean[1]) / math.sqrt(2)
    assert f"{m * 100:.2f} ± {sd * 100:.2f}" in md
    dm, dsd = sum(diffs) / 2, abs(diffs[0] - diffs[1]) / math.sqrt(2)
    assert f"| {dm * 100:+.2f} ± {dsd * 100:.2f} |" in md  # a difference carries its sign
    assert "Noise rule" in md and ("within seed noise" in md or "beyond seed noise" in md)
    # the trajectory table: overall / mean class accuracy at steps 10 and 20, one row per run
    assert "| arm | seed | 10 | 20 |" in md
    for (arm, seed), run_dir in runs.items():
        cells = " | ".join(f"{r['overall_acc'] * 100:.1f} / {r['mean_acc'] * 100:.1f}"
                           for r in map(json.loads, (run_dir / "metrics.jsonl").open()))
        assert f"| {arm} | {seed} | {cells} |" in md
    for name in ("per_class_recall.png", "mean_acc_curves.png", "time_to_accuracy.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stopped_arm_resumes_with_resume_auto(tmp_path):
    """An arm with last.pth but not finished is restarted with --resume auto; a fresh one with --overwrite."""
    args, arms, common = compare.parse_args(["--dataset", "demo", "--methods", "ce,focal", "--steps", "20",
                                             "--output", str(tmp_path)])
    (tmp_path / "ce" / "seed0").mkdir(parents=True)
    (tmp_path / "ce" / "seed0" / "last.pth").write_bytes(b"x")
    (tmp_path / "ce" / "seed0" / "config.json").write_text(json.dumps({"total_steps": 20}))
    (tmp_path / "ce" / "seed0" / "metrics.jsonl").write_text(json.dumps(
        {"step": 10, "mean_acc": 0.1, "overall_acc": 0.2, "macro_f1": 0.1, "per_class_acc": [0.1], "classes": ["a"]}) + "\n")
    launched = []

    class FakeProc:
        pid = 12345

        def __init__(self, argv, **kwargs):
            launched.append(argv)
            assert kwargs["env"]["OMP_NUM_THREADS"] == "3"

        def wait(self, timeout=None):
            return 1  # as a training run that failed

    args.threads = 3
    runner = compare.Runner(args, arms, common)
    runner.popen = FakeProc
    runner.run()
    assert [a[a.index("--method") + 1] for a in launched] == ["ce", "focal"]
    assert launched[0][-2:] == ["--resume", "auto"] and launched[1][-1] == "--overwrite"
    assert runner.failed == ["ce seed 0", "focal seed 0"]


def test_wall_time_counts_every_process_and_survives_a_killed_compare(tmp_path, monkeypatch):
    """wall_time.json is rewritten while an arm trains, so the process of a compare.py killed with its
    machine still counts, and the run's total adds this process's time to it."""
    args, arms, common = compare.parse_args(["--dataset", "demo", "--methods", "ce", "--steps", "20",
                                             "--output", str(tmp_path)])
    run_dir = tmp_path / "ce" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pth").write_bytes(b"x")
    (run_dir / "wall_time.json").write_text(json.dumps({"wall_s": 1000.0}))  # a killed process's last heartbeat
    monkeypatch.setattr(compare, "WALL_HEARTBEAT_S", 0.01)
    seen = []

    class FakeProc:
        pid = 12345
        calls = 0

        def __init__(self, argv, **kwargs):
            pass

        def wait(self, timeout=None):
            FakeProc.calls += 1
            seen.append(json.loads((run_dir / "wall_time.json").read_text())["wall_s"])
            if FakeProc.calls < 3:
                time.sleep(0.25)  # still training
                raise subprocess.TimeoutExpired("train.py", timeout)
            return 1

    runner = compare.Runner(args, arms, common)
    runner.popen = FakeProc
    runner.run()
    # Before the first heartbeat the earlier processes' 1000 s; then 1000 s plus this one's, so far.
    assert seen[0] == 1000.0 and 1000.2 <= seen[1] < seen[2] and seen[2] >= 1000.5
    assert json.loads((run_dir / "wall_time.json").read_text())["wall_s"] >= seen[2]


def test_stop_flag_stops_the_running_comparison_with_a_checkpoint(demo_root, tmp_path):
    out = tmp_path / "cmp"
    argv = [sys.executable, str(ROOT / "bench" / "compare.py"), "--dataset", "demo", "--data-root", str(demo_root),
            "--methods", "ce", "--steps", "100000", "--common", COMMON + " --save-interval 100000",
            "--output", str(out)]
    running = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        metrics = out / "ce" / "seed0" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (metrics.is_file() and metrics.read_text().strip()):  # in the training loop, past step 10
            assert running.poll() is None and time.monotonic() < deadline, running.communicate()[0]
            time.sleep(0.2)
        stop = subprocess.run([*argv, "--stop"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "sent SIGTERM" in stop.stdout and "stopped; rerun the same command" in stop.stdout
        assert running.wait(timeout=5) == 130  # it had exited when --stop returned
    finally:
        if running.poll() is None:
            running.kill()
    run_dir = out / "ce" / "seed0"
    assert (run_dir / "last.pth").is_file() and not (run_dir / "done.json").exists()  # saved on the signal only
    assert "stopping after this step with a checkpoint" in (run_dir / "train.log").read_text()
    assert not (out / "compare.pid").exists()
    again = subprocess.run([*argv, "--stop"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_changed_flags_are_refused(tmp_path, capsys):
    argv = ["--dataset", "demo", "--methods", "ce", "--steps", "20", "--output", str(tmp_path)]
    args, arms, common = compare.parse_args(argv)
    (tmp_path / "ce" / "seed0").mkdir(parents=True)
    (tmp_path / "ce" / "seed0" / "command.json").write_text(json.dumps({"argv": ["--method", "ce", "--steps", "10"]}))
    with pytest.raises(SystemExit) as exc:
        compare.Runner(args, arms, common).run()
    assert exc.value.code == 2 and "started with other flags" in capsys.readouterr().err
    (tmp_path / "ce" / "seed0" / "command.json").write_text("[1, 2]")  # not a record compare.py wrote
    with pytest.raises(SystemExit) as exc:
        compare.Runner(args, arms, common).run()
    assert exc.value.code == 2 and "command.json is not a command record" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{\"wall_s\": 12", "[1, 2]", "{\"wall_s\": \"soon\"}"])
def test_unreadable_wall_time_is_one_error_naming_the_file(tmp_path, capsys, text):
    """A truncated or hand-edited wall_time.json stops compare.py before anything trains (not a
    traceback in a lane thread), names the file, and is left as it was; --report-only says the same."""
    argv = ["--dataset", "demo", "--methods", "ce", "--steps", "20", "--output", str(tmp_path)]
    args, arms, common = compare.parse_args(argv)
    run_dir = tmp_path / "ce" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "wall_time.json").write_text(text)
    (run_dir / "metrics.jsonl").write_text(json.dumps(
        {"step": 10, "mean_acc": 0.1, "overall_acc": 0.2, "macro_f1": 0.1, "per_class_acc": [0.1], "classes": ["a"]}) + "\n")
    runner = compare.Runner(args, arms, common)
    runner.popen = lambda *a, **k: pytest.fail("trained despite an unreadable wall_time.json")
    for call in (runner.run, lambda: compare.main([*argv, "--report-only"])):
        with pytest.raises(SystemExit) as exc:
            call()
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1, err
        assert str(run_dir / "wall_time.json") in err[0] and "not a wall-time record" in err[0]
    assert (run_dir / "wall_time.json").read_text() == text


@pytest.mark.parametrize("argv, message", [
    (["--methods", "ce,nosuch"], "method 'nosuch' is unknown"),
    (["--methods", "ce", "--dataset", "nosuch"], "--dataset 'nosuch' is unknown"),
    (["--methods", "ce", "--seeds", "0,x"], "--seeds '0,x' is not a comma-separated list"),
    (["--methods", "ce", "--seeds", "0,0"], "repeats a seed"),
    (["--methods", "ce", "--arm-seeds", "mek=0,1"], "--arm-seeds 'mek=0,1'"),
    (["--methods", "ce:--rsl-eps=0.1"], "--rsl-eps belongs to --method mek"),
    (["--methods", "ce", "--common", "--seed 3"], "--common may not hold --seed"),
    (["--methods", "mek:--no-such-flag=1"], "train.py would refuse its flags"),
    (["--arm", "x=--rsl-eps 0.1"], "name its method"),
])
def test_bad_input_one_error_line_exit_2(argv, message, tmp_path, capsys):
    full = ["--dataset", "demo", "--steps", "5", "--output", str(tmp_path / "o")] + argv
    with pytest.raises(SystemExit) as exc:
        compare.main(full)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_arm_forms_and_seeds():
    args, arms, _ = compare.parse_args([
        "--dataset", "demo", "--steps", "5", "--output", "/tmp/x", "--seeds", "0",
        "--methods", "ce,mek:--class-weight-power=0.5 --rac-weight=0.03",
        "--arm", "mek_eps01=--method mek --rsl-eps 0.1", "--arm-seeds", "ce=0,1"])
    assert [(a.name, a.method, a.flags, a.seeds) for a in arms] == [
        ("ce", "ce", [], [0, 1]),
        ("mek_class-weight-power=0.5_rac-weight=0.03", "mek", ["--class-weight-power=0.5", "--rac-weight=0.03"], [0]),
        ("mek_eps01", "mek", ["--rsl-eps", "0.1"], [0]),
    ]


def test_job_order_baseline_seeds_then_first_seeds_and_run_last_at_the_end():
    args, arms, _ = compare.parse_args([
        "--dataset", "demo", "--steps", "5", "--output", "/tmp/x", "--methods", "ce,mek,face2exp,dan",
        "--arm-seeds", "ce=0,1", "--arm-seeds", "mek=0,1", "--arm-seeds", "face2exp=0,1", "--run-last", "face2exp"])
    order = [(arm.name, seed) for arm, seed in compare.job_order(arms, args.run_last, args.baseline)]
    assert order == [("ce", 0), ("ce", 1), ("mek", 0), ("dan", 0), ("mek", 1), ("face2exp", 0), ("face2exp", 1)]
    no_defer = [(arm.name, seed) for arm, seed in compare.job_order(arms, [], "ce")]
    assert no_defer == [("ce", 0), ("ce", 1), ("mek", 0), ("face2exp", 0), ("dan", 0), ("mek", 1), ("face2exp", 1)]
    no_baseline = [(arm.name, seed) for arm, seed in compare.job_order(arms, [], None)]
    assert no_baseline == [("ce", 0), ("mek", 0), ("face2exp", 0), ("dan", 0), ("ce", 1), ("mek", 1), ("face2exp", 1)]
    baseline_run_last = [(arm.name, seed) for arm, seed in compare.job_order(arms, ["ce"], "ce")]
    assert baseline_run_last == [("mek", 0), ("face2exp", 0), ("dan", 0), ("mek", 1), ("face2exp", 1), ("ce", 0), ("ce", 1)]


def test_run_last_must_name_an_arm(capsys):
    with pytest.raises(SystemExit) as exc:
        compare.parse_args(["--dataset", "demo", "--steps", "5", "--output", "/tmp/x", "--methods", "ce,mek",
                            "--run-last", "face2exp"])
    assert exc.value.code == 2
    assert "--run-last 'face2exp' is not an arm" in capsys.readouterr().err


def test_noise_rule():
    # two paired seeds: |mean| against 2 x std of the differences
    assert compare_report.verdict([0.010, 0.012], None).startswith("better beyond seed noise")
    assert compare_report.verdict([0.010, -0.010], None).startswith("within seed noise")
    assert compare_report.verdict([-0.05, -0.04], None).startswith("worse beyond seed noise")
    # two paired diffs that agree by chance (std 0.00014) do not make +0.0231 significant when the
    # baseline itself spreads by 0.02 over its seeds: the larger std is the noise
    assert compare_report.verdict([0.0230, 0.0232], 0.02).startswith("within seed noise (|2.31| < 4.00 = 2 × std of baseline")
    assert compare_report.verdict([0.0230, 0.0232], 0.001).startswith("better beyond seed noise (+2.31, noise 0.20 = 2 × std of baseline")
    assert compare_report.verdict([0.010, 0.012], 0.0001).startswith("better beyond seed noise (+1.10, noise 0.28 = 2 × std of paired")
    # one paired seed: against 2 x the baseline's std over its seeds; unknown without it
    assert compare_report.verdict([0.01], 0.01).startswith("within seed noise")
    assert compare_report.verdict([0.03], 0.01).startswith("better beyond seed noise")
    assert compare_report.verdict([0.03], None) == "noise unknown (1 seed)"
    # on the threshold to two decimals (the FER2013 rul arm: -1.3931 against 1.3920): as many
    # decimals as it takes to show which side it is on
    assert compare_report.verdict([-0.013931], 0.006960).startswith("worse beyond seed noise (-1.393, noise 1.392 =")
    assert compare_report.verdict([0.013919], 0.006960).startswith("within seed noise (|1.3919| < 1.3920 =")


def test_trajectory_columns_keep_the_first_and_last_evaluation():
    assert compare_report.evaluation_columns([224, 448, 672]) == [224, 448, 672]
    assert compare_report.evaluation_columns(list(range(10, 1010, 10)), limit=5) == [10, 260, 510, 750, 1000]


def test_fmt_signs_differences_only():
    assert compare_report.fmt(0.0299, None, signed=True) == "+2.99"
    assert compare_report.fmt(-0.0591, 0.001, signed=True) == "-5.91 ± 0.10"
    assert compare_report.fmt(0.4862, None) == "48.62"


def test_records_let_a_fresh_machine_skip_the_finished_runs(demo_root, tmp_path):
    """--records keeps every finished run's small files (no checkpoints) and restores them into a new
    --output, with the data moved elsewhere: only the run the records lack is trained."""
    records, first_out = tmp_path / "records", tmp_path / "machine_a"
    common = ["--steps", "10", "--common", COMMON, "--records", str(records)]
    first = run_compare("--dataset", "demo", "--data-root", str(demo_root), "--methods", "ce", *common,
                        "--output", str(first_out))
    assert first.returncode == 0, first.stdout + first.stderr
    kept = records / "ce" / "seed0"
    assert sorted(p.name for p in kept.iterdir()) == sorted(compare_records.RECORD_FILES)  # no .pth
    assert (kept / "metrics.jsonl").read_bytes() == (first_out / "ce" / "seed0" / "metrics.jsonl").read_bytes()
    done = json.loads((kept / "done.json").read_text())
    assert done["machine"] == compare_records.machine_line() and done["threads"] >= 1
    # as if it had finished on another CPU
    (kept / "done.json").write_text(json.dumps({**done, "machine": "Other CPU (family 6 model 143)"}))

    moved_root = tmp_path / "elsewhere" / "demo"  # a copy: compare.py resolves a symlink back to demo_root
    shutil.copytree(demo_root, moved_root)
    second_out = tmp_path / "machine_b"
    second = run_compare("--dataset", "demo", "--data-root", str(moved_root), "--methods", "ce",
                         "--seeds", "0,1", *common, "--output", str(second_out))
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"ce seed 0: restored from {kept} (finished on Other CPU (family 6 model 143))" in second.stdout
    assert "ce seed 0: done, skipped" in second.stdout and second.stdout.count("starting") == 1  # seed 1 only
    assert not (second_out / "ce" / "seed0" / "last.pth").exists()
    assert (records / "ce" / "seed1" / "done.json").is_file()  # the new run is recorded too
    with open(second_out / "results.csv", newline="") as handle:
        rows = {int(r["seed"]): r for r in csv.DictReader(handle)}
    first_last = [json.loads(line) for line in (first_out / "ce" / "seed0" / "metrics.jsonl").open()][-1]
    assert float(rows[0]["last_mean_acc"]) == pytest.approx(first_last["mean_acc"], abs=1e-12)
    assert rows[0]["machine"].startswith("Other CPU (family 6 model 143); ")
    assert rows[1]["machine"].startswith(compare_records.machine_line())
    md = (second_out / "RESULTS.md").read_text()
    assert "- Trained on: Other CPU (family 6 model 143)" in md and f"{compare_records.machine_line()}" in md

    # a record whose flags differ from today's is refused, naming the record
    third = run_compare("--dataset", "demo", "--data-root", str(moved_root), "--methods", "ce", "--steps", "12",
                        "--common", COMMON, "--records", str(records), "--output", str(tmp_path / "machine_c"))
    assert third.returncode == 2 and third.stderr.count("\n") == 1
    assert f"{kept} was started with other flags" in third.stderr and "--steps 12" in third.stderr


def test_same_command_follows_a_moved_data_root_and_output():
    recorded = {"argv": ["--data-root", "/old/fer", "--unlabeled-root", "/old/fer/train",
                         "--init-checkpoint=/runs/a/ce/seed0/last.pth", "--x", "/old/ferplus"],
                "data_root": "/old/fer", "output": "/runs/a"}
    moved = {"data_root": "/new/fer", "output": "/home/b/runs"}
    now = ["--data-root", "/new/fer", "--unlabeled-root", "/new/fer/train",
           "--init-checkpoint=/home/b/runs/ce/seed0/last.pth", "--x", "/old/ferplus"]  # a sibling is not moved
    assert compare_records.same_command(recorded, now, moved)
    assert not compare_records.same_command(recorded, now[:-1] + ["/new/ferplus"], moved)
    assert not compare_records.same_command({"argv": recorded["argv"]}, now, moved)  # no folders recorded: exact only
    assert compare_records.same_command({"argv": now}, now, moved)


def test_machine_line_tells_cpu_generations_and_bf16_apart():
    zen3 = "model name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 1\nflags\t\t: fpu avx2 fma\n"
    zen4 = "model name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    assert compare_records.machine_line(zen3).startswith("AMD EPYC (family 25 model 1), no native bf16, ")
    assert compare_records.machine_line(zen4).startswith("AMD EPYC (family 25 model 17), native bf16, ")


def test_with_a_validation_split_best_is_the_test_result_at_the_validation_best(tmp_path):
    """Runs with a validation split (train.py --val-fraction / --val-split official: val_* keys in
    metrics.jsonl): best is the evaluation with the highest validation mean class accuracy (first of
    ties, as best.pth), reported on the test split, and RESULTS.md pairs the arms there too."""
    def write_run(arm, seed, evals):  # (step, test mean class acc, validation mean class acc)
        run_dir = tmp_path / arm / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"total_steps": 30}))
        (run_dir / "done.json").write_text(json.dumps({"wall_s": 1.0}))
        with open(run_dir / "metrics.jsonl", "w") as handle:
            for step, test, val in evals:
                handle.write(json.dumps({
                    "step": step, "overall_acc": test + 0.01, "mean_acc": test, "macro_f1": test - 0.01,
                    "per_class_acc": [test, test], "classes": ["a", "b"], "val_overall_acc": val, "val_mean_acc": val,
                    "val_macro_f1": val, "val_per_class_acc": [val, val], "selected_on": "val"}) + "\n")

    write_run("ce", 0, [(10, 0.50, 0.40), (20, 0.60, 0.45), (30, 0.55, 0.45)])  # validation-best: 20, first of ties
    write_run("ce", 1, [(10, 0.52, 0.50), (20, 0.70, 0.40), (30, 0.54, 0.42)])  # 10; the test split's best is 20
    write_run("mek", 0, [(10, 0.62, 0.30), (20, 0.50, 0.48), (30, 0.58, 0.44)])  # 20
    write_run("mek", 1, [(10, 0.40, 0.30), (20, 0.45, 0.35), (30, 0.66, 0.47)])  # 30
    assert compare.main(["--report-only", "--dataset", "demo", "--methods", "ce,mek", "--seeds", "0,1", "--steps", "30",
                         "--output", str(tmp_path)]) == 0
    with open(tmp_path / "results.csv", newline="") as handle:
        rows = {(r["arm"], int(r["seed"])): r for r in csv.DictReader(handle)}
    chosen = {("ce", 0): (20, 0.60, 0.45), ("ce", 1): (10, 0.52, 0.50), ("mek", 0): (20, 0.50, 0.48),
              ("mek", 1): (30, 0.66, 0.47)}
    for key, (step, test, val) in chosen.items():
        row = rows[key]
        assert (int(row["best_step"]), row["selected_on"]) == (step, "val")
        assert float(row["best_mean_acc"]) == pytest.approx(test) and float(row["best_val_mean_acc"]) == pytest.approx(val)
        assert float(row["best_overall_acc"]) == pytest.approx(test + 0.01)
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## At the validation-best evaluation (best.pth, chosen on the validation split)" in md
    assert "highest mean class accuracy on the validation split" in md and "so optimistic" not in md
    assert "## Paired difference to `ce` (last evaluation, percentage points)" in md
    assert "## Paired difference to `ce` (validation-best evaluation, percentage points)" in md
    diffs = [chosen[("mek", s)][1] - chosen[("ce", s)][1] for s in (0, 1)]  # -0.10, +0.14
    mean, sd = sum(diffs) / 2, abs(diffs[0] - diffs[1]) / math.sqrt(2)
    assert f"| mek | 0,1 | {mean * 100:+.2f} ± {sd * 100:.2f} |" in md.split("validation-best evaluation, percentage")[1]


def test_validation_split_end_to_end_best_is_train_pys_best_pth(demo_root, tmp_path):
    """train.py --val-fraction through compare.py: the best evaluation of results.csv is the step
    train.py chose for best.pth on the validation split (metrics.jsonl's ``best``), its test metrics."""
    out = tmp_path / "cmp"
    result = run_compare("--dataset", "demo", "--data-root", str(demo_root), "--methods", "ce", "--steps", "20",
                         "--common", COMMON.replace("--eval-interval 10", "--eval-interval 5") + " --val-fraction 0.25",
                         "--output", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in (out / "ce" / "seed0" / "metrics.jsonl").open()]
    chosen = records[-1]["best"]
    assert chosen["selected_on"] == "val" and len(records) == 4
    with open(out / "results.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["selected_on"] == "val" and int(row["best_step"]) == chosen["step"]
    assert float(row["best_mean_acc"]) == pytest.approx(chosen["mean_acc"], abs=1e-12)
    assert float(row["best_val_mean_acc"]) == pytest.approx(chosen["val_mean_acc"], abs=1e-12)
    assert "## At the validation-best evaluation" in (out / "RESULTS.md").read_text()


def test_distribution_metrics_appear_only_where_every_run_has_votes(tmp_path):
    from types import SimpleNamespace

    def row(arm: str, seed: int, kl: float | None, ece: float) -> dict:
        rec = {"step": 10, "overall_acc": 0.5, "mean_acc": 0.4, "macro_f1": 0.3, "per_class_acc": [0.4, 0.4], "ece": ece}
        if kl is not None:
            rec.update(vote_kl=kl, vote_nll=kl + 1.0)
        return {"arm": arm, "method": arm, "flags": "", "seed": seed, "status": "done", "total_steps": 10,
                "wall_s": 1.0, "code_version": "", "machine": "", "classes": ["a", "b"], "last": rec, "best": rec,
                "selected_on": "test", "evals": [rec]}

    arms = [SimpleNamespace(name="ce")]
    with_votes = {"ce": [row("ce", 0, 0.5, 0.10), row("ce", 1, 0.7, 0.20)]}
    table = "\n".join(compare_report.summary_table("last", "Last", with_votes, arms, ["a", "b"]))
    assert "KL(votes ‖ model) | NLL of votes | ECE |" in table
    assert "| 0.600 ± 0.141 | 1.600 ± 0.141 | 15.00 ± 7.07 |" in table  # nats; ECE in percent
    without = {"ce": [row("ce", 0, None, 0.10), row("ce", 1, 0.7, 0.20)]}
    assert "KL" not in "\n".join(compare_report.summary_table("last", "Last", without, arms, ["a", "b"]))

    compare_report.write_csv(tmp_path / "r.csv", with_votes["ce"])
    with open(tmp_path / "r.csv", newline="") as handle:
        first = next(csv.DictReader(handle))
    assert float(first["last_vote_kl"]) == 0.5 and float(first["best_vote_nll"]) == 1.5
    compare_report.write_csv(tmp_path / "n.csv", without["ce"])
    assert "vote_kl" not in (tmp_path / "n.csv").read_text()

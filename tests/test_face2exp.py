"""Face2Exp: the teacher/student step against a hand computation, the UDA mask, bad input, and
kill -9 + --resume auto giving the uninterrupted run (both networks, both data streams)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import engine
import test as test_script
import train
from data.demo import generate_demo_unlabeled
from losses.uda_consistency import confidence_mask, soft_pseudo_labels, uda_consistency
from methods import make_method
from utils.logging import read_metrics

ROOT = Path(__file__).resolve().parent.parent


class Linear(nn.Module):
    def __init__(self, weight: list, bias: list) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))
            self.fc.bias.copy_(torch.tensor(bias))

    def forward(self, x):
        return SimpleNamespace(logits=self.fc(x))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ce(z, y):
    return float(np.mean(-np.log(softmax(z)[np.arange(len(y)), y])))


def test_one_step_updates_student_and_teacher_as_computed_by_hand():
    # Labelled x, y; unlabelled weak / strong views (mu = 1, B = 2); learning rates 0.5 and 0.3.
    x, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 2])
    uw, us = np.array([[2.0, 1.0], [-1.0, 0.5]]), np.array([[1.5, 1.0], [-0.5, 1.5]])
    wt, bt = np.array([[1.0, -0.5], [0.2, 0.3], [-0.4, 0.8]]), np.array([0.1, 0.0, -0.1])
    ws, bs = np.array([[0.3, 0.1], [-0.2, 0.4], [0.5, -0.3]]), np.array([0.0, 0.2, 0.0])
    lr_s, lr_t = 0.5, 0.3

    # --- by hand (numpy): student step on the teacher's weak-view hard labels of the strong views
    q = softmax(uw @ wt.T + bt)
    y_hat = q.argmax(1)
    s_old = ce(x @ ws.T + bs, y)
    g = (softmax(us @ ws.T + bs) - np.eye(3)[y_hat]) / 2  # dCE/dlogits, batch mean
    ws2, bs2 = ws - lr_s * g.T @ us, bs - lr_s * g.sum(0)
    h = s_old - ce(x @ ws2.T + bs2, y)  # how much the student's labelled loss fell
    z_us = us @ wt.T + bt
    y_us = z_us.argmax(1)
    mpl = h * ce(z_us, y_us)
    uda = float(np.mean(-(q * np.log(softmax(z_us))).sum(1)))
    # teacher gradient of CE_l + UDA + h * CE(z_us, argmax z_us), all three batch means of 2
    g_l = (softmax(x @ wt.T + bt) - np.eye(3)[y]) / 2
    g_u = (softmax(z_us) - q) / 2 + h * (softmax(z_us) - np.eye(3)[y_us]) / 2
    wt2 = wt - lr_t * (g_l.T @ x + g_u.T @ us)
    bt2 = bt - lr_t * (g_l.sum(0) + g_u.sum(0))

    # --- the method
    teacher, student = Linear(wt.tolist(), bt.tolist()), Linear(ws.tolist(), bs.tolist())
    method = make_method("face2exp", [1, 1, 1], unlabeled_root="unused", mu=1, finetune_epochs=0)
    method.teacher_optimizer = torch.optim.SGD(teacher.parameters(), lr=lr_t)
    method.teacher_scaler = None
    student_optimizer = torch.optim.SGD(student.parameters(), lr=lr_s)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    terms = method.mpl_step(student, teacher, t(x), torch.tensor(y), t(uw), t(us), student_optimizer, None,
                            engine.Stepper(torch.device("cpu"), engine.StepOptions(), 0))

    assert abs(h) > 1e-3  # the feedback is not trivially zero here
    assert float(terms["teacher_mpl"]) == pytest.approx(mpl, rel=1e-5, abs=1e-7)
    assert float(terms["teacher_uda"]) == pytest.approx(uda, rel=1e-5)
    assert float(terms["teacher_labeled"]) == pytest.approx(ce(x @ wt.T + bt, y), rel=1e-5)
    assert float(terms["student"]) == pytest.approx(ce(us @ ws.T + bs, y_hat), rel=1e-5)
    np.testing.assert_allclose(student.fc.weight.detach().numpy(), ws2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(student.fc.bias.detach().numpy(), bs2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(teacher.fc.weight.detach().numpy(), wt2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(teacher.fc.bias.detach().numpy(), bt2, rtol=1e-5, atol=1e-6)


def test_an_mpl_step_reads_nothing_from_the_device_with_the_deferred_guard(monkeypatch):
    # Both updates (student, teacher) record their check on the device: no host sync in the step.
    from test_engine import HostReads

    teacher, student = Linear([[1.0, -0.5], [0.2, 0.3], [-0.4, 0.8]], [0.1, 0.0, -0.1]), Linear([[0.3, 0.1]] * 3, [0.0] * 3)
    method = make_method("face2exp", [1, 1, 1], unlabeled_root="unused", mu=1, finetune_epochs=0)
    method.teacher_optimizer, method.teacher_scaler = torch.optim.SGD(teacher.parameters(), lr=0.3), None
    images, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 2])
    weak, strong = torch.tensor([[2.0, 1.0], [-1.0, 0.5]]), torch.tensor([[1.5, 1.0], [-0.5, 1.5]])
    guard = engine.NonFiniteGuard()
    stepper = engine.Stepper(torch.device("cpu"), engine.StepOptions(nonfinite_check_interval=50), 0, guard)
    reads = HostReads(monkeypatch)
    terms = method.mpl_step(student, teacher, images, labels, weak, strong,
                            torch.optim.SGD(student.parameters(), lr=0.5), None, stepper)
    assert terms is not None and reads.calls == []
    guard.check()  # the one read, when the engine asks for it
    assert reads.calls == ["item"]


def test_the_confidence_threshold_is_applied_when_set():
    weak = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0]])  # confident, unsure
    strong = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.5]])
    q = soft_pseudo_labels(weak)
    per_sample = -(q * torch.log_softmax(strong, -1)).sum(-1)
    assert confidence_mask(q, None).tolist() == [1.0, 1.0]
    assert float(uda_consistency(q, strong, confidence_mask(q, None))) == pytest.approx(float(per_sample.mean()))
    mask = confidence_mask(q, 0.9)
    assert mask.tolist() == [1.0, 0.0]
    assert float(uda_consistency(q, strong, mask)) == pytest.approx(float(per_sample[0]) / 2)  # mean over the batch
    sharp = soft_pseudo_labels(weak, temperature=0.5)
    assert float(sharp[1, 0]) > float(q[1, 0])


# ------------------------------------------------------------------------ end to end

BASE = ["--method", "face2exp", "--dataset", "demo", "--backbone", "test_resnet", "--img-size", "32",
        "--batch-size", "16", "--mu", "2", "--workers", "0", "--no-progress", "--opt", "momentum", "--lr", "0.05",
        "--weight-decay", "0", "--sched", "cosine", "--epochs", "1", "--finetune-epochs", "1",
        "--finetune-lr", "0.01", "--randaug", "2", "16", "--threshold", "0.2", "--balanced-sampler",
        "--save-interval", "3", "--seed", "3", "--eval-interval", "4"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The reference run (here) and the killed/resumed ones (subprocesses, OMP_NUM_THREADS) must use the same
    # thread count to be bit-identical; one thread is also ~5x faster than two on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def unlabeled_list(demo_root):
    return generate_demo_unlabeled(demo_root, 64)  # 128 train images + 64 more: 6 batches of 32


def run_args(demo_root, unlabeled_list, output):
    return [*BASE, "--data-root", str(demo_root), "--unlabeled-root", str(unlabeled_list), "--output", str(output)]


@pytest.fixture(scope="module")
def reference(demo_root, unlabeled_list, tmp_path_factory):
    output = tmp_path_factory.mktemp("f2e_reference")
    train.cli(run_args(demo_root, unlabeled_list, output))
    return output


def _without_time(output):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(output / "metrics.jsonl")]


def test_metrics_hold_both_networks_and_test_py_evaluates_either(reference, capsys):
    records = read_metrics(reference / "metrics.jsonl")
    assert [r["step"] for r in records] == [4, 8, 12, 16]  # 8 MPL steps, then 8 fine-tuning steps
    assert {"teacher_mean_acc", "teacher_per_class_acc", "mean_acc", "per_class_acc", "loss_teacher_mpl",
            "loss_student", "loss_mask"} <= set(records[1])
    assert "loss_finetune" in records[-1]
    # the logged lr is that of the optimiser taking the steps: the fine-tuning SGD's constant 0.01
    # once the MPL stage's cosine has run out (it had read 0 there)
    assert [r["lr"] for r in records[2:]] == [0.01, 0.01] and records[0]["lr"] != 0.01
    last = records[-1]
    capsys.readouterr()
    student = test_script.cli([str(reference / "last.pth"), "--no-progress", "--workers", "0",
                               "--out-dir", str(reference / "eval")])
    teacher = test_script.cli([str(reference / "last.pth"), "--network", "teacher", "--no-progress", "--workers", "0",
                               "--out-dir", str(reference / "eval")])
    assert student["mean_acc"] == pytest.approx(last["mean_acc"]) and student["per_class_acc"] == last["per_class_acc"]
    assert teacher["mean_acc"] == pytest.approx(last["teacher_mean_acc"])
    assert teacher["per_class_acc"] == last["teacher_per_class_acc"]


def test_sigkill_then_resume_auto_gives_the_uninterrupted_run(reference, demo_root, unlabeled_list, tmp_path):
    output = tmp_path / "killed"
    command = [sys.executable, "train.py", *run_args(demo_root, unlabeled_list, output)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 180
    while not (output / "last.pth").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    state = torch.load(output / "last.pth", map_location="cpu", weights_only=True)
    killed_at = state["progress"]["step"]
    assert 0 < killed_at < 8 and state["extra"]["unlabeled_stream"]["batch"] == killed_at  # mid MPL stage

    resumed = subprocess.run([*command, "--resume", "auto"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step {killed_at}" in resumed.stdout
    a = torch.load(reference / "last.pth", map_location="cpu", weights_only=True)
    b = torch.load(output / "last.pth", map_location="cpu", weights_only=True)
    for key in ("model",):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    teacher_a, teacher_b = a["networks"]["teacher"]["model"], b["networks"]["teacher"]["model"]
    assert all(torch.equal(teacher_a[k], teacher_b[k]) for k in teacher_a)
    assert a["extra"]["unlabeled_stream"] == b["extra"]["unlabeled_stream"] == {"epoch": 1, "batch": 2, "size": 192}
    assert _without_time(output) == _without_time(reference)


@pytest.mark.parametrize("flags, message", [
    (["--mu", "0"], "--mu must be >= 1"),
    (["--threshold", "1.5"], "--threshold must be in [0, 1]"),
    (["--batch-size", "4"], "--balanced-sampler needs --batch-size >= the number of classes (7)"),
    (["--unlabeled-root", "EMPTY"], "no image files"),
    (["--unlabeled-root", "BROKEN"], "none of the 1 image files"),
])
def test_bad_input_gives_one_message_and_exit_2(flags, message, demo_root, unlabeled_list, tmp_path, capsys):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "BROKEN").mkdir()
    (tmp_path / "BROKEN" / "face.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    flags = [str(tmp_path / f) if f in ("EMPTY", "BROKEN") else f for f in flags]
    with pytest.raises(SystemExit) as exc:
        train.cli([*run_args(demo_root, unlabeled_list, tmp_path / "out"), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err


def test_finetune_within_budget_splits_the_budget(demo_root, unlabeled_list, tmp_path, capsys):
    from methods.face2exp import Face2Exp, MethodArgumentError

    args = train.parse_args(run_args(demo_root, unlabeled_list, tmp_path / "a"))
    assert Face2Exp.split_budget(args, 1344, 448) == (1344, 448)  # official: fine-tuning after the budget
    args.finetune_within_budget = True
    assert Face2Exp.split_budget(args, 1344, 448) == (896, 448)  # bench/compare_fer2013.sh's face2exp arm
    with pytest.raises(MethodArgumentError, match="--finetune-within-budget: --finetune-epochs 1"):
        Face2Exp.split_budget(args, 448, 448)
    # end to end: demo has 8 steps per epoch at batch 16; --epochs 2 is 8 MPL + 8 fine-tuning steps
    train.cli([*run_args(demo_root, unlabeled_list, tmp_path / "b"), "--epochs", "2", "--finetune-within-budget",
               "--dry-run"])
    out = capsys.readouterr().out
    assert "8 MPL steps, then 1 fine-tuning epochs" in out and "16 steps (8/epoch, 2 epochs)" in out


def test_unlabeled_rest_streams_the_images_the_labelled_fraction_leaves(demo_root, tmp_path, capsys):
    """Face2Exp's protocol on one dataset: a class-balanced half keeps its labels, the other half is the
    unlabelled stream (disjoint from the labelled images; their labels never used)."""
    from data import build_dataset
    from data.loaders import unlabelled_rest

    flags = [*BASE, "--data-root", str(demo_root), "--labelled-fraction", "0.5", "--unlabeled-rest",
             "--output", str(tmp_path / "out"), "--dry-run"]
    train.cli(flags)
    out = capsys.readouterr().out
    assert "unlabelled: 64 images from the training images without labels" in out  # 128 - round(0.5 x 128)
    args = train.parse_args(flags)
    args.data_root = str(demo_root)
    rest = set(unlabelled_rest(args))
    full = {s.path for s in build_dataset("demo", demo_root, "train").samples}
    assert len(rest) == 64 and rest < full
    for bad, message in ((["--unlabeled-rest"], "give --labelled-fraction too"),
                         (["--unlabeled-rest", "--labelled-fraction", "0.5", "--unlabeled-root", str(demo_root)],
                          "needs one unlabelled set")):
        with pytest.raises(SystemExit) as exc:
            train.cli([*BASE, "--data-root", str(demo_root), *bad, "--output", str(tmp_path / "x"), "--dry-run"])
        assert exc.value.code == 2 and message in capsys.readouterr().err

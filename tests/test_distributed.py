"""Data-parallel training and sharded evaluation on 2 CPU processes (gloo) equal one process.

The workers are this file run as a script under ``torchrun --standalone`` (a free port is
picked by the rendezvous); each launch runs in its own process group and is killed after
a timeout, so a deadlocked collective fails the test instead of hanging it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import engine  # noqa: E402
from data.sampler import ShardSampler  # noqa: E402
import methods  # noqa: E402
from utils.optim import build_optimizer  # noqa: E402

from tiny_models import small_swin  # noqa: E402
from tolerances import DEFAULT_ULPS, FLOAT32_EPS, assert_float32_close, float32_tolerance  # noqa: E402

RAF_DB_COUNTS = [1290, 281, 717, 4772, 1982, 705, 2524]
BATCH, IMG, EVAL_SIZE = 8, 32, 13  # 13 is odd: the shards are 7 and 6 samples
TIMEOUT = 120
LR, ADAM_EPS = 1e-3, 1e-8
CPU = torch.device("cpu")


class NoSchedule:
    def step_update(self, step: int) -> None:
        pass


class IndexedTensors(Dataset):
    """(image, label, index) items, like ImageListDataset's."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index]), index


def one_step(model: torch.nn.Module, module: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             flip_forward: str) -> dict:
    """One engine training step (AdamW); returns the gradients, the updated weights and the loss."""
    optimizer = build_optimizer(module, "adamw", LR, 0.05)
    progress = engine.TrainProgress()
    method = methods.make_method("mek", RAF_DB_COUNTS, flip_forward=flip_forward, rsl_eps=0.3, rac_weight=0.1)
    engine.train_one_epoch(model, method, [(images, labels, None)], optimizer, NoSchedule(), None, CPU,
                           engine.StepOptions(), progress, max_steps=1, show_progress=False)
    return {
        "grads": {n: p.grad.detach().clone() for n, p in module.named_parameters()},
        "weights": {n: p.detach().clone() for n, p in module.named_parameters()},
        "loss": progress.averages()["loss"],
    }


def make_payload(path: Path) -> dict:
    torch.manual_seed(0)
    payload = {
        "state": small_swin(IMG).state_dict(),
        "images": torch.randn(BATCH, 3, IMG, IMG),
        "labels": torch.tensor([0, 1, 2, 3, 4, 5, 6, 3]),
        "eval_images": torch.randn(EVAL_SIZE, 3, IMG, IMG),
        "eval_labels": torch.arange(EVAL_SIZE) % 7,
    }
    torch.save(payload, path)
    return payload


# --------------------------------------------------------------------------- worker side
def worker(payload_path: str, out_dir: str) -> None:
    from utils.distributed import cleanup_distributed, init_distributed

    torch.set_num_threads(1)  # two processes on two cores
    info = init_distributed("cpu")
    assert info.world_size == 2, info
    payload = torch.load(payload_path)
    model = small_swin(IMG)
    half = BATCH // info.world_size
    shard = slice(info.rank * half, (info.rank + 1) * half)
    result = {}
    for flip_forward in ("one-pass", "two-pass"):
        model.load_state_dict(payload["state"])
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        result[flip_forward] = one_step(ddp, model, payload["images"][shard], payload["labels"][shard], flip_forward)

    model.load_state_dict(payload["state"])
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    dataset = IndexedTensors(payload["eval_images"], payload["eval_labels"])
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    indices, targets, predictions, probs = engine.predict(ddp, loader, CPU, show_progress=False)
    metrics = engine.evaluate(ddp, loader, CPU, num_classes=7, show_progress=False)
    result["eval"] = {"shard_size": len(sampler), "indices": indices, "targets": targets,
                      "predictions": predictions, "probs": probs, "metrics": metrics}
    torch.save(result, Path(out_dir) / f"rank{info.rank}.pt")
    cleanup_distributed()


# --------------------------------------------------------------------------- test side
def run_with_timeout(cmd: list[str], cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (torchrun and its workers)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout}s:\n{out[-4000:]}") from None
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-4000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def _ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    payload = make_payload(out / "payload.pt")
    run_with_timeout(torchrun(str(Path(__file__).resolve()), "--payload", str(out / "payload.pt"), "--out", str(out)),
                     cwd=ROOT)
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    return payload, ranks


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    return _ddp_results(tmp_path_factory)


def test_ddp_step_on_two_ranks_equals_one_process_on_the_whole_batch(ddp_results):
    # Each rank's loss is the mean over its half; DDP averages the ranks' gradients, so the
    # result is the gradient of the mean over the whole batch. RSL and RAC use the same
    # class weights on both ranks, and the LayerNorm backbone has no cross-sample terms.
    payload, ranks = ddp_results
    model = small_swin(IMG)
    for flip_forward in ("one-pass", "two-pass"):
        model.load_state_dict(payload["state"])
        reference = one_step(model, model, payload["images"], payload["labels"], flip_forward)
        mean_rank_loss = sum(r[flip_forward]["loss"] for r in ranks) / 2
        assert abs(mean_rank_loss - reference["loss"]) <= DEFAULT_ULPS * FLOAT32_EPS * abs(reference["loss"])
        for rank in ranks:
            for name, grad in reference["grads"].items():
                # Each rank sums its half of the batch and DDP averages the halves: float32 rounding
                # of the largest gradient element's size (tests/tolerances.py), not a fixed atol
                # (1e-7 failed by 1.27e-7 on an AMX Xeon).
                tolerance = float32_tolerance(grad)
                torch.testing.assert_close(rank[flip_forward]["grads"][name], grad, **tolerance,
                                           msg=lambda m: f"{flip_forward} grad {name}: {m}")
                # AdamW's first update is lr * f(g) with f(g) = g / (|g| + eps) (eps 1e-8, timm's default),
                # whose slope is eps / (|g| + eps)^2: the gradient difference dg moves the update by at
                # most lr * eps * dg / (max(|g| - dg, 0) + eps)^2 (tiny where |g| >> eps, up to 2 lr for a
                # gradient within noise of zero), plus the float32 rounding of the update and of
                # w + update (ulps of lr and of |w|).
                dg = (rank[flip_forward]["grads"][name] - grad).abs()
                slack = (grad.abs() - dg).clamp(min=0) + ADAM_EPS
                update_bound = (LR * ADAM_EPS * dg / slack**2).clamp(max=2 * LR)
                rounding = 4 * FLOAT32_EPS * (reference["weights"][name].abs() + LR)
                delta = rank[flip_forward]["weights"][name] - reference["weights"][name]
                assert (delta.abs() <= update_bound + rounding).all(), f"{flip_forward} weight {name}"


def test_sharded_evaluation_counts_every_sample_once_and_equals_one_process(ddp_results):
    payload, ranks = ddp_results
    assert sorted(r["eval"]["shard_size"] for r in ranks) == [6, 7]
    model = small_swin(IMG)
    model.load_state_dict(payload["state"])
    loader = DataLoader(IndexedTensors(payload["eval_images"], payload["eval_labels"]), batch_size=4)
    indices, targets, predictions, probs = engine.predict(model, loader, CPU, show_progress=False)
    reference = engine.evaluate(model, loader, CPU, num_classes=7, show_progress=False)
    for rank in ranks:  # every rank gets the gathered, index-ordered predictions
        result = rank["eval"]
        assert result["indices"].tolist() == list(range(EVAL_SIZE))
        assert torch.equal(result["targets"], targets) and torch.equal(result["predictions"], predictions)
        assert_float32_close(result["probs"], probs, what="gathered probabilities")
        assert result["metrics"]["num_samples"] == EVAL_SIZE
        assert sum(map(sum, result["metrics"]["confusion_matrix"])) == EVAL_SIZE
        for key in ("overall_acc", "mean_acc", "per_class_acc", "macro_f1", "confusion_matrix"):
            assert result["metrics"][key] == reference[key], key


def test_torchrun_train_py_two_processes_end_to_end(tmp_path):
    from data.demo import generate_demo_dataset
    from utils.checkpoint import load_checkpoint
    from utils.logging import read_metrics

    root = generate_demo_dataset(tmp_path / "demo", num_train=64, num_test=30, image_size=32)
    out = tmp_path / "run"
    result = run_with_timeout(torchrun(
        "train.py", "--dataset", "demo", "--data-root", str(root), "--img-size", "32", "--batch-size", "8",
        "--steps", "2", "--device", "cpu", "--workers", "0", "--no-progress", "--output", str(out)), cwd=ROOT)
    assert "world size 2" in result.stdout
    assert result.stdout.count("done in") == 1  # only rank 0 logs
    # Only rank 0 writes files.
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pth", "config.json", "curves.png", "last.pth", "log.txt", "metrics.jsonl", "tensorboard"]
    assert len(list((out / "tensorboard").iterdir())) == 1  # one event file: rank 0's
    records = read_metrics(out / "metrics.jsonl")
    assert len(records) == 1 and records[0]["step"] == 2
    metrics = load_checkpoint(out / "best.pth")["metrics"]
    assert metrics["num_samples"] == 30  # the 15 + 15 shards gathered, each test image once
    assert sum(map(sum, metrics["confusion_matrix"])) == 30
    assert json.loads((out / "config.json").read_text())["world_size"] == 2


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--payload", required=True)
    parser.add_argument("--out", required=True)
    cli = parser.parse_args()
    worker(cli.payload, cli.out)

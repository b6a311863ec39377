"""DAN (methods/dan.py, losses/affinity.py, losses/partition.py, the dan head): both losses against
hand-computed values and the official formula, the head's fusion, the method's step, one class centre
per class of the dataset (optimised, checkpointed), the step schedule, the refusals, and the
dan-affectnet recipe end to end with test.py."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import test as test_script
import train
from conftest import make_raf_db, write_image
from losses.affinity import affinity_loss
from losses.partition import partition_loss
from methods import make_method
from models.heads import DANHead, FERModel
from utils.logging import read_metrics
from utils.optim import build_scheduler

ROOT = Path(__file__).resolve().parent.parent


def test_affinity_loss_by_hand():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    centers = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 0.0]])
    # distances to own centre: 1 and (0-2)^2 + (1-2)^2 = 5, mean 3; centre variance per dim (unbiased):
    # [0, 2, 1] -> 1, [0, 2, 0] -> 4/3, total 7/3; L = 3 / (7/3) = 9/7
    assert affinity_loss(features, torch.tensor([0, 1]), centers).item() == pytest.approx(9 / 7)


def official_affinity(x: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """yaoing/DAN rafdb.py AffinityLoss.forward after the GAP, transcribed for comparison."""
    batch, num_class = x.shape[0], centers.shape[0]
    distmat = x.pow(2).sum(dim=1, keepdim=True).expand(batch, num_class) + \
        centers.pow(2).sum(dim=1, keepdim=True).expand(num_class, batch).t()
    distmat = distmat.addmm(x, centers.t(), beta=1, alpha=-2)
    mask = labels.unsqueeze(1).expand(batch, num_class).eq(torch.arange(num_class).expand(batch, num_class))
    dist = distmat * mask.float() / centers.var(dim=0).sum()
    return dist.clamp(min=1e-12, max=1e12).sum() / batch


def test_affinity_loss_matches_the_official_formula_with_one_centre_per_class():
    torch.manual_seed(0)
    x, centers, labels = torch.randn(6, 16), torch.randn(7, 16), torch.tensor([0, 1, 2, 3, 4, 6])
    ours = affinity_loss(x, labels, centers)
    assert ours.item() == pytest.approx(official_affinity(x, labels, centers).item(), rel=1e-5)
    # the official RAF-DB script's 8th centre (for 7 classes) changes the value through the variance
    assert ours.item() != pytest.approx(official_affinity(x, labels, torch.cat([centers, torch.randn(1, 16)])).item(),
                                        rel=1e-3)


def test_partition_loss_by_hand():
    heads = torch.tensor([[[0.0, 0.0], [2.0, 4.0]]])  # one sample, two heads, two channels
    # unbiased variance over the heads: 2 and 8, mean 5; L = log(1 + 2/5)
    assert partition_loss(heads).item() == pytest.approx(math.log(1.4))
    assert partition_loss(heads[:, :1]).item() == 0.0


class TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, stride=4, padding=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def tiny_dan_model(num_classes: int = 3) -> FERModel:
    torch.manual_seed(0)
    return FERModel(TinyBackbone(), DANHead(32, num_classes), num_classes)


def test_head_fuses_four_attention_heads_by_log_softmax_and_sum():
    model = tiny_dan_model()
    out = model(torch.randn(4, 3, 16, 16))
    heads = out.head_features
    assert heads.shape == (4, 4, 32) and len(model.head.heads) == 4
    assert torch.allclose(heads.exp().sum(dim=1), torch.ones(4, 32), atol=1e-5)  # log-softmax over the heads
    assert torch.allclose(out.logits, model.head.bn(model.head.fc(heads.sum(dim=1))))
    assert out.features.shape == (4, 32) and out.attention_maps is None


def test_step_is_ce_plus_affinity_plus_partition_and_trains_one_centre_per_class():
    model, images, labels = tiny_dan_model(), torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    method = make_method("dan", [10, 30, 60])
    groups = method.param_groups(model, 0.1, 1e-4)
    assert method.centers.shape == (3, 32)  # one per class, the backbone's width
    assert any(g["params"] == [method.centers] for g in groups)  # optimised with the network
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted([id(p) for p in model.parameters()] + [id(method.centers)])
    torch.manual_seed(1)
    terms = method.training_step(model, images, labels)
    torch.manual_seed(1)
    out = model(images)
    expected = (F.cross_entropy(out.logits, labels) + affinity_loss(out.features, labels, method.centers)
                + partition_loss(out.head_features))
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    terms["loss"].backward()
    assert method.centers.grad is not None and method.centers.grad.abs().sum() > 0
    saved = method.state_dict()["centers"]
    restored = make_method("dan", [10, 30, 60])
    restored.load_state_dict({"centers": saved})
    assert torch.equal(restored.centers.detach(), saved)


def test_step_schedule_decays_every_n_epochs():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, "step", total_steps=30, steps_per_epoch=3, decay_rate=0.1, decay_epochs=2)
    lrs = []
    for step in range(13):
        scheduler.step_update(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[:6] == pytest.approx([0.1] * 6) and lrs[6:12] == pytest.approx([0.01] * 6)
    assert lrs[12] == pytest.approx(0.001)


@pytest.fixture(scope="module")
def raf_root(tmp_path_factory):
    return make_raf_db(tmp_path_factory.mktemp("raf"), [1, 2, 3, 4, 5, 6, 7] * 2 + [4, 7], [1, 2, 3, 4, 5, 6, 7], size=32)


@pytest.mark.parametrize("flags,message", [
    (["--head", "cam"], "--method dan cannot use --head cam; it needs dan"),
    (["--batch-size", "1"], "--method dan needs --batch-size >= 2"),
    (["--rac-weight", "0.1"], "--rac-weight needs class attention maps, and --method dan's head (dan) gives none"),
])
def test_refusals_name_the_flags(flags, message, raf_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.cli(["--method", "dan", "--dataset", "raf-db", "--data-root", str(raf_root), "--img-size", "32",
                   "--batch-size", "4", "--workers", "0", "--no-progress", "--output", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error: " in err and message in err, err


def make_affectnet(root: Path) -> Path:
    """AffectNet's list layout (data/affectnet.py (b)): 'path code' with AffectNet's codes 0..7."""
    for split, file, per_class in (("train", "train.txt", 2), ("val", "val.txt", 1)):
        lines = []
        for code in range(8):
            for i in range(per_class):
                rel = f"{split}/{code}/{i}.jpg"
                write_image(root / rel, size=32, seed=code * 10 + i + (100 if split == "val" else 0))
                lines.append(f"{rel} {code}")
        (root / file).write_text("\n".join(lines) + "\n")
    return root


def test_affectnet_recipe_trains_with_eight_centres_and_test_py_evaluates_it(tmp_path):
    root, output = make_affectnet(tmp_path / "affectnet"), tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("NGPUS", "NNODES")}
    env.update({"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "AFFECTNET_ROOT": str(root)})
    result = subprocess.run(["sh", "train_exp.sh", "dan-affectnet", "--steps", "2", "--batch-size", "8", "--img-size", "32",
                             "--workers", "0", "--no-progress", "--output", str(output)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((output / "config.json").read_text())
    expected = {"method": "dan", "dataset": "affectnet", "opt": "adam", "lr": 1e-4, "weight_decay": 0.0,
                "sched": "exponential", "decay_rate": 0.6, "epochs": 40, "balanced_sampler": True, "re_max_area": 0.33}
    assert {k: config[k] for k in expected} == expected and len(config["classes"]) == 8
    state = torch.load(output / "last.pth", map_location="cpu", weights_only=False)
    assert state["extra"]["centers"].shape == (8, 512)  # one centre per AffectNet class
    assert state["model_config"]["head"] == "dan"
    record = read_metrics(output / "metrics.jsonl")[-1]
    assert {"loss_ce", "loss_affinity", "loss_partition"} <= set(record)
    metrics = test_script.cli([str(output / "last.pth"), "--workers", "0", "--no-progress", "--out-dir", str(tmp_path)])
    assert metrics["overall_acc"] == pytest.approx(record["overall_acc"], abs=1e-9)
    assert metrics["per_class_acc"] == pytest.approx(record["per_class_acc"], abs=1e-9)


# --------------------------------------------------------------------------- two ranks (gloo)
def record_centres_worker(out_dir: str, argv: list[str]) -> None:
    """train.py under torchrun, each rank writing its own class centres whenever last.pth is saved
    (the checkpoint holds rank 0's only)."""
    from utils import run_state

    save = run_state.RunState.save

    def save_and_record(self, name, progress, metrics=None):
        save(self, name, progress, metrics)
        torch.save(self.method.centers.detach().cpu(),
                   Path(out_dir) / f"centres_rank{self.dist_info.rank}_step{progress.step}.pt")

    run_state.RunState.save = save_and_record
    train.cli(argv)


def test_centres_are_the_same_on_every_rank_of_a_two_process_run(tmp_path):
    # train.py seeds each rank with seed + rank; centres drawn from that generator differed per
    # rank, and averaging their gradients kept them different for the whole run.
    from data.demo import generate_demo_dataset
    from test_distributed import run_with_timeout, torchrun

    root = generate_demo_dataset(tmp_path / "demo", num_train=64, num_test=21, image_size=32)
    out = tmp_path / "centres"
    out.mkdir()
    argv = ["--method", "dan", "--dataset", "demo", "--data-root", str(root), "--img-size", "32", "--batch-size", "4",
            "--steps", "3", "--save-interval", "1", "--device", "cpu", "--workers", "0", "--no-progress",
            "--opt", "momentum", "--lr", "0.1", "--output", str(tmp_path / "run")]
    run_with_timeout(torchrun(str(Path(__file__).resolve()), "--record-centres", str(out), *argv), cwd=ROOT)
    steps = sorted({int(p.stem.rsplit("step", 1)[1]) for p in out.glob("centres_rank0_step*.pt")})
    assert steps == [1, 2, 3]
    for step in steps:
        rank0, rank1 = (torch.load(out / f"centres_rank{r}_step{step}.pt") for r in (0, 1))
        assert torch.equal(rank0, rank1), f"step {step}: rank 0 and rank 1 hold different class centres"
    first, last = (torch.load(out / f"centres_rank0_step{s}.pt") for s in (1, 3))
    assert not torch.equal(first, last)  # trained, not merely equal
    saved = torch.load(tmp_path / "run" / "last.pth", map_location="cpu", weights_only=False)["extra"]["centers"]
    assert torch.equal(saved, last)


if __name__ == "__main__":
    # torchrun tests/test_dan.py --record-centres DIR train.py flags...
    assert sys.argv[1] == "--record-centres"
    record_centres_worker(sys.argv[2], sys.argv[3:])

"""RUL (methods/rul.py, losses/uncertainty_mixing.py, the rul head): the mixing and the add-up loss
against hand-computed values, the method's step against the same computation by hand, evaluation on
mu, the classifier's 10x learning rate, the refusals, and train.py -> test.py end to end."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import test as test_script
import train
from conftest import make_raf_db
from losses.uncertainty_mixing import add_up_loss, random_partner, relative_uncertainty_mix
from methods import make_method
from models.heads import FERModel, RULHead
from utils.logging import read_metrics

COUNTS = [10, 30, 60]


def test_mix_weights_each_sample_by_its_relative_uncertainty():
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    uncertainty = torch.tensor([1.0, 3.0, 2.0])
    partner = torch.tensor([1, 2, 0])
    mixed, own, other = relative_uncertainty_mix(features, uncertainty, partner)
    # sample 0 (u 1) with sample 1 (u 3): 1/4 and 3/4; 1 (u 3) with 2 (u 2): 3/5, 2/5; 2 (u 2) with 0 (u 1): 2/3, 1/3
    assert own.tolist() == pytest.approx([0.25, 0.6, 2 / 3])
    assert other.tolist() == pytest.approx([0.75, 0.4, 1 / 3])
    expected = [[0.25, 1.5], [1.2, 2.4], [7 / 3, 2.0]]
    assert mixed.tolist() == [pytest.approx(row) for row in expected]


def test_the_more_uncertain_sample_gets_the_larger_weight_as_officially():
    # official src/utils.py: att1 = att / (att + att[index]) multiplies x (the sample itself)
    _, own, _ = relative_uncertainty_mix(torch.eye(2), torch.tensor([5.0, 1.0]), torch.tensor([1, 0]))
    assert own[0] > 0.5 > own[1]


def test_add_up_loss_is_half_cross_entropy_against_each_label():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax (1/4, 3/4)
    loss, ce_a, ce_b = add_up_loss(logits, torch.tensor([0]), torch.tensor([1]))
    assert ce_a.item() == pytest.approx(math.log(4)) and ce_b.item() == pytest.approx(math.log(4 / 3))
    assert loss.item() == pytest.approx(0.5 * math.log(16 / 3))


def test_class_weighted_add_up_loss_is_torchs_weighted_mean():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # CE: ln 4 for label 0, ln 2 for label 1
    labels = torch.tensor([0, 1])
    loss, ce_a, _ = add_up_loss(logits, labels, labels, class_weights=torch.tensor([1.0, 3.0]))
    assert ce_a.item() == pytest.approx((math.log(4) + 3 * math.log(2)) / 4)
    assert loss.item() == pytest.approx(ce_a.item())


def test_a_sample_paired_with_itself_gives_plain_cross_entropy():
    torch.manual_seed(0)
    features, classifier = torch.randn(4, 6), nn.Linear(6, 3)
    labels = torch.tensor([0, 2, 1, 2])
    mixed, own, _ = relative_uncertainty_mix(features, torch.rand(4) + 0.1, torch.arange(4))
    assert torch.equal(own, torch.full((4,), 0.5)) and torch.allclose(mixed, features)
    loss, _, _ = add_up_loss(classifier(mixed), labels, labels)
    assert loss.item() == pytest.approx(F.cross_entropy(classifier(features), labels).item(), rel=1e-6)


class TinyBackbone(nn.Module):
    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def tiny_rul_model(num_classes: int = 3) -> FERModel:
    torch.manual_seed(0)
    return FERModel(TinyBackbone(), RULHead(8, num_classes), num_classes)


def test_training_step_mixes_with_a_partner_from_the_global_generator():
    model, images, labels = tiny_rul_model(), torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    method = make_method("rul", COUNTS)
    model.train()
    torch.manual_seed(123)
    terms = method.training_step(model, images, labels)
    # By hand, from the same generator state: forward (dropout draws), then torch.randperm.
    torch.manual_seed(123)
    out = model(images)
    partner = torch.randperm(6)
    u = out.uncertainty
    mixed = (u / (u + u[partner]))[:, None] * out.features + (u[partner] / (u + u[partner]))[:, None] * out.features[partner]
    logits = model.head.classifier(mixed)
    expected = 0.5 * F.cross_entropy(logits, labels) + 0.5 * F.cross_entropy(logits, labels[partner])
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == {"ce_own", "ce_partner", "loss"}
    terms["loss"].backward()  # the uncertainty branch is trained through the mixing weights
    assert model.head.log_var[3].weight.grad.abs().sum() > 0


def test_random_partner_is_drawn_on_the_training_device(monkeypatch):
    # Made on the CPU and copied, it cost a host-to-device copy at every RUL step on a GPU.
    calls = []
    randperm = torch.randperm

    def recording_randperm(n, *args, **kwargs):
        calls.append(kwargs.get("device"))
        return randperm(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", recording_randperm)
    partner = random_partner(8, torch.device("meta"))  # meta: a device other than the CPU
    assert calls == [torch.device("meta")] and partner.device.type == "meta" and partner.shape == (8,)


def test_random_partner_follows_torch_manual_seed():
    torch.manual_seed(7)
    first = random_partner(16)
    torch.manual_seed(7)
    assert torch.equal(first, random_partner(16)) and sorted(first.tolist()) == list(range(16))


def test_evaluation_classifies_mu_alone():
    model = tiny_rul_model().eval()
    images = torch.randn(3, 3, 16, 16)
    out = model(images)
    head = model.head
    features = F.adaptive_avg_pool2d(model.backbone.forward_features(images), 7)
    assert out.uncertainty is None and out.attention_maps is None
    assert torch.allclose(out.logits, head.classifier(head.mu(features)))
    assert torch.allclose(out.features, head.mu(features))


def test_classifier_gets_ten_times_the_learning_rate_and_every_parameter_one_group():
    model = tiny_rul_model()
    method = make_method("rul", COUNTS)
    groups = method.param_groups(model, 2e-4, 1e-4)
    classifier = {id(p) for p in model.head.classifier.parameters()}
    for group in groups:
        in_classifier = {id(p) in classifier for p in group["params"]}
        assert len(in_classifier) == 1
        assert group["lr"] == pytest.approx(2e-3 if in_classifier.pop() else 2e-4)
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())
    # --weight-decay-scope all (the official Adam decays every parameter): one group per learning rate
    method_all = make_method("rul", COUNTS)
    method_all.decay_all = True
    assert [g["weight_decay"] for g in method_all.param_groups(model, 2e-4, 1e-4)] == [1e-4, 1e-4]


@pytest.fixture(scope="module")
def raf_root(tmp_path_factory):
    return make_raf_db(tmp_path_factory.mktemp("raf"), [1, 2, 3, 4, 5, 6, 7] * 2 + [4, 7], [1, 2, 3, 4, 5, 6, 7], size=32)


def base_flags(root, output) -> list[str]:
    return ["--dataset", "raf-db", "--data-root", str(root), "--img-size", "32", "--batch-size", "4", "--workers", "0",
            "--no-progress", "--output", str(output)]


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "1"], "--method rul needs --batch-size >= 2"),
    (["--rac-weight", "0.1"], "--rac-weight needs class attention maps, and --method rul's head (rul) gives none"),
    (["--head", "cam"], "--method rul cannot use --head cam; it needs rul"),
    (["--backbone", "vit_tiny_patch16_224", "--dry-run"],
     "--method rul (--head rul) cannot use --backbone vit_tiny_patch16_224: it gives no spatial feature map"),
])
def test_refusals_name_the_flags(flags, message, raf_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.cli(["--method", "rul", *base_flags(raf_root, tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error: " in err and message in err, err


def test_trains_end_to_end_and_test_py_evaluates_mu(raf_root, tmp_path):
    output = tmp_path / "run"
    train.cli(["--method", "rul", *base_flags(raf_root, output), "--steps", "2"])
    record = read_metrics(output / "metrics.jsonl")[-1]
    assert record["step"] == 2 and {"loss_ce_own", "loss_ce_partner"} <= set(record)
    metrics = test_script.cli([str(output / "last.pth"), "--workers", "0", "--no-progress", "--out-dir", str(tmp_path)])
    assert metrics["overall_acc"] == pytest.approx(record["overall_acc"], abs=1e-9)
    assert metrics["per_class_acc"] == pytest.approx(record["per_class_acc"], abs=1e-9)
    state = torch.load(output / "last.pth", map_location="cpu", weights_only=False)
    assert state["model_config"]["head"] == "rul"
    assert state["optimizer"]["param_groups"][-1]["lr"] == pytest.approx(10 * state["optimizer"]["param_groups"][0]["lr"])


def test_hybrid_class_weights_are_inverse_frequency():
    method = make_method("rul", COUNTS, rul_class_weights="inverse")
    # a_k = N / (K n_k) with N = 100, K = 3
    assert method.class_weights.tolist() == pytest.approx([100 / 30, 100 / 90, 100 / 180])
    assert make_method("rul", COUNTS).class_weights is None


@pytest.mark.parametrize("method,head,flag", [("ce", "rul", "--rac-weight"), ("eac", "dan", "--eac-lambda")])
def test_attention_terms_are_refused_on_heads_without_maps(method, head, flag, raf_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.cli(["--method", method, "--head", head, flag, "0.1", *base_flags(raf_root, tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"{flag} needs class attention maps, and --head {head} gives none" in err, err


def test_sigterm_and_resume_of_rul_matches_the_uninterrupted_run(demo_root, tmp_path):
    # RUL draws from torch's global generator at every step (the partner permutation, dropout), so
    # a resumed run only matches the uninterrupted one when train.py restores that generator from
    # last.pth. MEK and Face2Exp draw nothing after the first step, so their resume tests cannot
    # tell.
    import sys

    from test_resume import sigterm_at_step_two_then_resume

    run = ["--method", "rul", "--dataset", "demo", "--data-root", str(demo_root), "--img-size", "32",
           "--batch-size", "16", "--workers", "0", "--opt", "adam", "--lr", "1e-3", "--steps", "6",
           "--eval-interval", "3", "--save-interval", "100", "--seed", "3", "--log-interval", "1"]
    train.cli([*run, "--no-progress", "--output", str(tmp_path / "reference")])
    stopped = tmp_path / "stopped"
    stopped_at, _, resumed = sigterm_at_step_two_then_resume([sys.executable, "train.py", *run, "--output", str(stopped)],
                                                             stopped)
    assert stopped_at < 6 and f"step {stopped_at}" in resumed  # resumed mid-run

    a = torch.load(tmp_path / "reference" / "last.pth", map_location="cpu", weights_only=True)["model"]
    b = torch.load(stopped / "last.pth", map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed RUL run differs from the uninterrupted one"
    strip = lambda records: [{k: v for k, v in r.items() if k != "time"} for r in records]  # noqa: E731
    assert strip(read_metrics(stopped / "metrics.jsonl")) == strip(read_metrics(tmp_path / "reference" / "metrics.jsonl"))

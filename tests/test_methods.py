"""Every method's loss against hand-computed values on tiny tensors, the class prior, the
mirror axis, and the flag rules of ``--method``.

``MapsModel`` treats its input (B, K, H, W), times a fixed gain per column, as the class
activation maps and returns their spatial mean as logits, so a test chooses the logits and the
maps directly. With gain [1, 2] it is not mirror-equivariant: the maps of flip(x), flipped
back, are x * [2, 1] where those of x are x * [1, 2], so attention terms see x^2 per position.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import methods
from losses.class_prior import ClassPrior
from methods.mirror import mirror_grid_offsets, relative_flip_error, resolve_flip_forward
from models import ModelOutput, build_model

from tiny_models import small_swin

ROOT = Path(__file__).resolve().parent.parent
RAF_DB_COUNTS = [1290, 281, 717, 4772, 1982, 705, 2524]


class MapsModel(nn.Module):
    def __init__(self, gain: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor, with_maps: bool = False) -> ModelOutput:
        maps = x if self.gain is None else x * self.gain
        return ModelOutput(maps.mean(dim=(2, 3)), maps if with_maps else None, maps.mean(dim=(2, 3)))


GAIN = torch.tensor([1.0, 2.0])


def maps_batch() -> tuple[torch.Tensor, torch.Tensor]:
    # Two samples, two classes, 1x2 inputs. Through MapsModel(GAIN): logits [[1.5, 2], [4.5, 0]];
    # mean over positions of the squared map difference = mean of x^2: [[1, 2], [9, 0]].
    x = torch.tensor([[[[1.0, 1.0]], [[0.0, 2.0]]],
                      [[[3.0, 3.0]], [[0.0, 0.0]]]])
    return x, torch.tensor([0, 1])


# ---- class prior ---------------------------------------------------------------------------
def test_class_prior_hand_computed():
    prior = ClassPrior.from_counts([81, 16, 1], ["a", "b", "c"])
    assert torch.allclose(prior.mek_weights(), torch.tensor([98 / 810, 98 / 160, 98 / 10]))
    assert torch.allclose(prior.log_prior(), torch.tensor([math.log(81 / 98), math.log(16 / 98), math.log(1 / 98)]))
    # n^-1/4 = 1/3, 1/2, 1; scaled so the largest is 0.5.
    assert torch.allclose(prior.ldam_margins(0.5), torch.tensor([0.5 / 3, 0.25, 0.5]))
    # beta 0.5: (1 - 0.5) / (1 - 0.5^n) = ~0.5, 0.5/(1-2^-16), 1 -> normalised to sum 3.
    raw = torch.tensor([0.5 / (1 - 0.5**81), 0.5 / (1 - 0.5**16), 1.0], dtype=torch.float64)
    assert torch.allclose(prior.effective_number_weights(0.5).double(), raw / raw.sum() * 3, atol=1e-6)
    assert torch.allclose(prior.effective_number_weights(0.0), torch.ones(3))
    with pytest.raises(ValueError, match="beta"):
        prior.effective_number_weights(1.0)
    with pytest.raises(ValueError, match="no training samples"):
        ClassPrior.from_counts([3, 0])


# ---- MEK -----------------------------------------------------------------------------------
def test_mek_step_is_rsl_plus_lambda_rac_hand_computed():
    x, labels = maps_batch()
    method = methods.make_method("mek", [30, 10], rsl_eps=0.2, rac_weight=0.1)
    terms = method.training_step(MapsModel(GAIN), x, labels)
    # Two classes: RSL's target is (1 - eps) on the label and eps on the other class.
    log_p = F.log_softmax(torch.tensor([[1.5, 2.0], [4.5, 0.0]]), dim=1)
    rsl = -(0.8 * log_p[0, 0] + 0.2 * log_p[0, 1] + 0.8 * log_p[1, 1] + 0.2 * log_p[1, 0]) / 2
    # RAC: w = N/(10 n_k) = [40/300, 40/100]; per sample sum_k w_k mean x^2, then the batch mean.
    rac = ((40 / 300) * 1 + 0.4 * 2 + (40 / 300) * 9 + 0.4 * 0) / 2
    assert terms["rsl"].item() == pytest.approx(rsl.item(), rel=1e-6)
    assert terms["rac"].item() == pytest.approx(rac, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(rsl.item() + 0.1 * rac, rel=1e-6)


def test_mek_gives_rac_its_own_class_weights():
    x, labels = maps_batch()
    method = methods.make_method("mek", [30, 10], rac_class_weight_power=0.5)
    expected = ((40 / 300) ** 0.5 * 1 + 0.4**0.5 * 2 + (40 / 300) ** 0.5 * 9) / 2
    assert method.training_step(MapsModel(GAIN), x, labels)["rac"].item() == pytest.approx(expected, rel=1e-6)


def test_mek_gives_rsl_its_own_class_weights():
    # w = N/(10 n_k) = [40/300, 40/100]; RSL's power 0.5, RAC's the default 1.
    method = methods.make_method("mek", [30, 10], rsl_class_weight_power=0.5)
    assert torch.allclose(method.rsl.class_weights, torch.tensor([(40 / 300) ** 0.5, 0.4**0.5]))
    assert torch.allclose(method.attention_class_weights, torch.tensor([40 / 300, 0.4]))


def test_mek_deferred_start_and_ramp():
    method = methods.make_method("mek", [3, 1, 2], mek_start_step=10, mek_ramp_steps=4)
    method.set_step(5)
    assert method.rsl.eps == 0.0 and method.rac_weight == 0.0
    x = torch.randn(2, 3, 2, 2)
    terms = method.training_step(MapsModel(), x, torch.tensor([0, 1]))
    assert float(terms["rac"]) == 0.0 and terms["loss"].item() == pytest.approx(
        F.cross_entropy(x.mean(dim=(2, 3)), torch.tensor([0, 1])).item(), rel=1e-6)
    method.set_step(11)  # second step of the ramp
    assert method.rsl.eps == pytest.approx(0.15) and method.rac_weight == pytest.approx(0.05)
    method.set_step(100)
    assert method.rsl.eps == pytest.approx(0.3) and method.rac_weight == pytest.approx(0.1)
    by_epoch = methods.make_method("mek", [3, 1, 2], steps_per_epoch=7, mek_start_epoch=2)
    assert by_epoch.start_step == 14


def test_mirror_is_horizontal():
    # A mirror-equivariant model and an input symmetric left-right but not top-bottom: the
    # horizontal mirror's maps, flipped back, equal the image's (RAC 0). A vertical mirror would
    # give maps flipped top-bottom, which differ (RAC > 0), as the last line checks.
    row = torch.tensor([1.0, 5.0, 1.0])
    maps = torch.stack([row, 2 * row, 7 * row]).expand(2, 2, 3, 3).clone()  # (B, K, H=3, W=3)
    for flip_forward in ("one-pass", "two-pass"):
        method = methods.make_method("mek", [10, 10], flip_forward=flip_forward)
        assert method.training_step(MapsModel(), maps, torch.tensor([0, 1]))["rac"].item() == 0.0
    from losses import rebalanced_attention_consistency
    assert rebalanced_attention_consistency(maps, torch.flip(maps, dims=[2]), torch.ones(2)) > 0


def test_relative_flip_error_by_hand():
    # M(x) = [1, 2], M(flip x) = [1, 2]: flip(M(flip x)) = [2, 1], the difference [-1, 1]: sqrt(2) / sqrt(5).
    maps = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    assert relative_flip_error(maps, maps.clone()).item() == pytest.approx((2 / 5) ** 0.5, rel=1e-6)
    # An equivariant pair (the mirror's maps are the maps mirrored): 0, per image.
    pair = torch.tensor([[[[3.0, 1.0, 4.0]]], [[[1.0, 5.0, 9.0]]]])
    assert relative_flip_error(pair, torch.flip(pair, dims=[3])).tolist() == [0.0, 0.0]


def test_mirror_grid_offsets_half_a_cell_on_even_inputs():
    # 3x3, stride 2, padding 1 on 64: outputs centred at 0, 2, .., 62, whose mirrors 63 - c are odd: half a cell.
    assert mirror_grid_offsets(64, [(3, 2, 1)]) == [(32, 0.5)]
    # On 65 the centres 0, 2, .., 64 mirror onto themselves; the 1x1 stride-2 shortcut (padding 0) likewise.
    assert mirror_grid_offsets(65, [(3, 2, 1), (1, 2, 0), (3, 2, 1), (3, 2, 1)]) == [(33, 0.0), (17, 0.0), (9, 0.0),
                                                                                      (5, 0.0)]
    assert mirror_grid_offsets(32, [(1, 2, 0)]) == [(16, 0.5)]
    assert mirror_grid_offsets(48, [(3, 1, 1)]) == [(48, 0.0)]  # stride 1: always on the grid


def test_flip_forward_auto_is_one_pass_only_without_batchnorm():
    assert resolve_flip_forward("auto", build_model("resnet18", 7, 32)) == "two-pass"
    assert resolve_flip_forward("auto", small_swin(32)) == "one-pass"
    assert resolve_flip_forward("one-pass", build_model("resnet18", 7, 32)) == "one-pass"


# ---- cross-entropy family --------------------------------------------------------------------
def test_ce_and_class_balanced_ce():
    logits, labels = torch.tensor([[2.0, 0.0], [0.5, 1.5]]), torch.tensor([0, 1])
    x = logits[:, :, None, None]
    ce = methods.make_method("ce", [3, 1]).training_step(MapsModel(), x, labels)
    nll = [-math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(math.exp(1.5) / (math.exp(0.5) + math.exp(1.5)))]
    assert set(ce) == {"ce", "loss"} and ce["loss"].item() == pytest.approx(sum(nll) / 2, rel=1e-6)
    # beta 0.5, counts [3, 1]: raw weights 0.5/0.875, 1 -> normalised to sum 2.
    raw = [0.5 / 0.875, 1.0]
    w = [r / sum(raw) * 2 for r in raw]
    cb = methods.make_method("ce", [3, 1], cb_beta=0.5).training_step(MapsModel(), x, labels)
    assert cb["loss"].item() == pytest.approx((w[0] * nll[0] + w[1] * nll[1]) / 2, rel=1e-6)



def test_label_smoothing_mixes_the_target_with_the_uniform_distribution():
    # eps 0.2, K = 2: targets (0.9, 0.1) and (0.1, 0.9); log-softmax of [2, 0] is [-0.126928, -2.126928],
    # of [0.5, 1.5] is [-1.313262, -0.313262].
    logits, labels = torch.tensor([[2.0, 0.0], [0.5, 1.5]]), torch.tensor([0, 1])
    x = logits[:, :, None, None]
    log_p = [[-math.log1p(math.exp(-2)), -2 - math.log1p(math.exp(-2))],
             [-1 - math.log1p(math.exp(-1)), -math.log1p(math.exp(-1))]]
    expected = -(0.9 * log_p[0][0] + 0.1 * log_p[0][1] + 0.1 * log_p[1][0] + 0.9 * log_p[1][1]) / 2
    smoothed = methods.make_method("ce", [3, 1], label_smoothing=0.2).training_step(MapsModel(), x, labels)
    assert smoothed["loss"].item() == pytest.approx(expected, rel=1e-6)
    # On vote distributions (--ferplus-labels soft): (1 - eps) q + eps / K, here q = (0.5, 0.5) and (0, 1).
    votes = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    soft = methods.make_method("ce", [3, 1], label_smoothing=0.2).training_step(MapsModel(), x, votes)
    expected_soft = -(0.5 * log_p[0][0] + 0.5 * log_p[0][1] + 0.1 * log_p[1][0] + 0.9 * log_p[1][1]) / 2
    assert soft["loss"].item() == pytest.approx(expected_soft, rel=1e-6)

def test_focal_loss_hand_computed_and_gamma_zero_is_ce():
    logits, labels = torch.tensor([[2.0, 0.0], [0.5, 1.5]]), torch.tensor([0, 1])
    x = logits[:, :, None, None]
    p = [math.exp(2) / (math.exp(2) + 1), math.exp(1.5) / (math.exp(0.5) + math.exp(1.5))]
    expected = sum((1 - q) ** 2 * -math.log(q) for q in p) / 2
    assert methods.make_method("focal", [3, 1]).training_step(MapsModel(), x, labels)["focal"].item() == \
        pytest.approx(expected, rel=1e-6)
    zero = methods.make_method("focal", [3, 1], focal_gamma=0.0).training_step(MapsModel(), x, labels)["loss"]
    assert zero.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_class_balanced_focal_is_the_plain_mean_of_weighted_focal_terms():
    # counts [3, 1], beta 0.5: raw weights 0.5 / (1 - 0.5^3) = 4/7 and 0.5 / 0.5 = 1, normalised
    # to sum 2: a = [8/11, 14/11]. Two samples of class 0 and one of class 1, so the plain mean
    # (Cui et al.) differs from torch's weighted mean (divided by 8/11 + 8/11 + 14/11 = 30/11).
    ln3, ln2 = math.log(3.0), math.log(2.0)
    logits = torch.tensor([[ln3, 0.0], [0.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    # p_y = 3/4, 1/2, 1/2; focal terms (1 - p)^2 (-log p) with gamma 2.
    fl = [(1 / 4) ** 2 * math.log(4 / 3), (1 / 2) ** 2 * ln2, (1 / 2) ** 2 * ln2]
    a = [8 / 11, 8 / 11, 14 / 11]
    expected = sum(w * f for w, f in zip(a, fl)) / 3
    x = logits[:, :, None, None]
    terms = methods.make_method("focal", [3, 1], cb_beta=0.5).training_step(MapsModel(), x, labels)
    assert terms["focal"].item() == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(sum(w * f for w, f in zip(a, fl)) / sum(a), rel=1e-3)
    assert expected != pytest.approx(sum(fl) / 3, rel=1e-3)  # the weights matter here


def test_ldam_margins_scale_and_deferred_reweighting():
    # counts [16, 1]: margins 0.25 and 0.5; cosine logits scaled by s = 2.
    logits, labels = torch.tensor([[0.5, 0.1], [0.2, 0.3]]), torch.tensor([0, 1])
    x = logits[:, :, None, None]
    method = methods.make_method("ldam", [16, 1], steps_per_epoch=10, total_steps=100, logit_scale=2.0)
    assert method.drw_epoch == 8  # 80% of 10 epochs
    shifted = torch.tensor([[2 * (0.5 - 0.25), 2 * 0.1], [2 * 0.2, 2 * (0.3 - 0.5)]])
    method.set_step(0)
    assert method.training_step(MapsModel(), x, labels)["ldam"].item() == pytest.approx(
        F.cross_entropy(shifted, labels).item(), rel=1e-6)
    method.set_step(79)  # the last step of epoch 7 (steps 70..79): still unweighted
    assert not method.reweight
    assert method.training_step(MapsModel(), x, labels)["ldam"].item() == pytest.approx(
        F.cross_entropy(shifted, labels).item(), rel=1e-6)
    method.set_step(80)  # epoch 8: class-balanced weights, torch's weighted mean
    assert method.reweight
    w = methods.make_method("ldam", [16, 1]).drw_weights
    nll = F.cross_entropy(shifted, labels, reduction="none")
    assert method.training_step(MapsModel(), x, labels)["ldam"].item() == pytest.approx(
        ((w[0] * nll[0] + w[1] * nll[1]) / (w[0] + w[1])).item(), rel=1e-6)
    assert methods.get_method_class("ldam").head == "norm-linear"


def test_balanced_softmax_and_logit_adjustment():
    logits, labels = torch.tensor([[2.0, 0.0], [0.5, 1.5]]), torch.tensor([0, 1])
    x = logits[:, :, None, None]
    counts = [3, 1]
    bs = methods.make_method("balanced-softmax", counts).training_step(MapsModel(), x, labels)["loss"]
    assert bs.item() == pytest.approx(F.cross_entropy(logits + torch.tensor([math.log(3), 0.0]), labels).item(), rel=1e-6)
    log_prior = torch.tensor([math.log(3 / 4), math.log(1 / 4)])
    la = methods.make_method("logit-adjust", counts, la_tau=0.5)
    assert la.training_step(MapsModel(), x, labels)["loss"].item() == pytest.approx(
        F.cross_entropy(logits + 0.5 * log_prior, labels).item(), rel=1e-6)
    assert torch.equal(la.eval_logits(logits), logits)  # loss form: plain argmax at evaluation
    posthoc = methods.make_method("logit-adjust", counts, la_mode="posthoc")
    assert posthoc.training_step(MapsModel(), x, labels)["loss"].item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert torch.allclose(posthoc.eval_logits(logits), logits - log_prior)
    # The post-hoc rule changes a prediction: [0.8, 0] -> 0.8 + 0.29 vs 0 + 1.39: the minor class.
    assert posthoc.eval_logits(torch.tensor([[0.8, 0.0]])).argmax().item() == 1
    # tau 0.5 halves the correction: [0.8 + 0.144, 0 + 0.693], and the major class stays predicted.
    half = methods.make_method("logit-adjust", counts, la_mode="posthoc", la_tau=0.5)
    assert torch.allclose(half.eval_logits(torch.tensor([[0.8, 0.0]])),
                          torch.tensor([[0.8 - 0.5 * math.log(3 / 4), -0.5 * math.log(1 / 4)]]))
    assert half.eval_logits(torch.tensor([[0.8, 0.0]])).argmax().item() == 0


def test_long_tail_losses_add_mek_attention_term():
    x, labels = maps_batch()
    terms = methods.make_method("focal", [30, 10], rac_weight=0.5).training_step(MapsModel(GAIN), x, labels)
    assert terms["rac"].item() == pytest.approx(((40 / 300) * 1 + 0.4 * 2 + (40 / 300) * 9) / 2, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(terms["focal"].item() + 0.5 * terms["rac"].item(), rel=1e-6)


def test_eac_is_ce_plus_lambda_times_unweighted_map_mse():
    x, labels = maps_batch()
    terms = methods.make_method("eac", [30, 10]).training_step(MapsModel(GAIN), x, labels)
    # Mean over all 8 elements of the squared difference x^2 * (2 - 1)^2: (1 + 1 + 0 + 4 + 9 + 9 + 0 + 0) / 8.
    assert terms["eac"].item() == pytest.approx(3.0, rel=1e-6)
    ce = F.cross_entropy(torch.tensor([[1.5, 2.0], [4.5, 0.0]]), labels).item()
    assert terms["loss"].item() == pytest.approx(ce + 5 * 3.0, rel=1e-6)


# ---- flags ---------------------------------------------------------------------------------
def train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["--method", "nope"], "--method 'nope' is unknown; choose from " + ", ".join(sorted(methods.METHODS))),
    (["--method", "ce", "--focal-gamma", "1"], "--focal-gamma belongs to --method focal, not to --method ce"),
    (["--method", "eac", "--rsl-eps=0.1"], "--rsl-eps belongs to --method mek, not to --method eac"),
    (["--method", "focal", "--focal-gamma", "-1"], "--focal-gamma must be >= 0, got -1.0"),
    (["--method", "ce", "--cb-beta", "1"], "--cb-beta must be in [0, 1), got 1.0"),
    (["--method", "ce", "--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0"),
    (["--method", "logit-adjust", "--la-tau", "50"], "--la-tau must be in [0, 10], got 50.0"),
    (["--method", "eac", "--eac-lambda", "-5"], "--eac-lambda must be >= 0, got -5.0"),
    (["--method", "mek", "--rac-weight", "-1"], "--rac-weight must be >= 0, got -1.0"),
])
def test_bad_method_flags_are_one_line_naming_the_flag(args, message, tmp_path, capsys):
    import train

    with pytest.raises(SystemExit) as exc:
        train.cli([*args, "--dataset", "demo", "--data-root", str(tmp_path / "demo"), "--output", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_method_help_lists_its_own_flags():
    help_text = train_cli("--method", "ldam", "--help").stdout
    assert "--drw-epoch" in help_text and "--max-margin" in help_text and "--rsl-eps" not in help_text


def test_test_py_uses_the_prediction_rule_the_method_was_trained_for(demo_root, tmp_path):
    import test as test_script
    import train
    from utils.logging import read_metrics

    output = tmp_path / "la"
    train.cli(["--method", "logit-adjust", "--la-mode", "posthoc", "--dataset", "demo", "--data-root", str(demo_root),
               "--img-size", "32", "--batch-size", "16", "--workers", "0", "--no-progress", "--steps", "3",
               "--lr", "1e-3", "--output", str(output)])
    logged = read_metrics(output / "metrics.jsonl")[-1]
    metrics = test_script.cli([str(output / "last.pth"), "--workers", "0", "--no-progress", "--out-dir", str(tmp_path)])
    assert metrics["per_class_acc"] == pytest.approx(logged["per_class_acc"], abs=1e-12)
    # and the rule matters: the plain argmax of the same checkpoint predicts differently
    state = torch.load(output / "last.pth", weights_only=True)
    assert state["method"] == {"name": "logit-adjust", "settings": {"la_tau": 1.0, "la_mode": "posthoc"}}
    rows = (tmp_path / "last_test_predictions.csv").read_text().splitlines()[1:]
    probs = torch.tensor([[float(x) for x in row.split(",")[3:]] for row in rows])
    prior = methods.method_from_config(json.loads((output / "config.json").read_text())).log_prior
    plain = (probs.log() + prior).argmax(1)  # undo the adjustment: softmax(z - log pi) -> z up to a constant
    assert not torch.equal(plain, probs.argmax(1))

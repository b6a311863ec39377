"""data/label_modes.py and losses/soft_targets.py: the FERPlus paper's training modes by hand."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from data.label_modes import MULTI_TARGET_EPSILON, draw_label, official_distribution, training_target
from losses.soft_targets import multi_target_loss, soft_target_cross_entropy

# 10 counts: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF.
VOTES = [5, 3, 1, 1, 0, 0, 0, 0, 0, 0]


def test_soft_and_draw_distribution_hand_computed():
    # The single votes (surprise, sadness) are outliers: 8 votes remain. The largest, 5, holds
    # 62.5% < 75%, so the next, 3, joins: 8 of 8 kept; q = 5/8, 3/8.
    q = official_distribution(VOTES, "soft")
    assert q == pytest.approx([5 / 8, 3 / 8, 0, 0, 0, 0, 0, 0])
    assert official_distribution(VOTES, "draw") == q
    # A clear winner with 8 of 10 votes is kept alone (80% >= 75%).
    assert official_distribution([8, 2, 0, 0, 0, 0, 0, 0, 0, 0], "soft") == pytest.approx([1, 0, 0, 0, 0, 0, 0, 0])
    # 4, 4 of 10 reach 80% together; 4 alone (40%) does not, and the tied 3, 3 then join together.
    assert official_distribution([4, 4, 2, 0, 0, 0, 0, 0, 0, 0], "soft") == pytest.approx([0.5, 0.5, 0, 0, 0, 0, 0, 0])
    assert official_distribution([4, 3, 3, 0, 0, 0, 0, 0, 0, 0], "soft") == pytest.approx([0.4, 0.3, 0.3, 0, 0, 0, 0, 0])


def test_multi_target_keeps_every_emotion_with_30_percent():
    # 8 votes after outliers: 5 (62.5%) and 3 (37.5%) both reach 30%.
    assert official_distribution(VOTES, "multi-target") == pytest.approx([5 / 8, 3 / 8, 0, 0, 0, 0, 0, 0])
    # 4, 3, 3 of 10: all at or above 30%; 4, 2, 2, 2: only the 4 (40%) -> 4 of 10 kept <= 50%: discarded.
    assert official_distribution([4, 3, 3, 0, 0, 0, 0, 0, 0, 0], "multi-target") == pytest.approx(
        [0.4, 0.3, 0.3, 0, 0, 0, 0, 0])
    assert official_distribution([4, 2, 2, 2, 0, 0, 0, 0, 0, 0], "multi-target") is None


def test_multi_target_threshold_is_30_percent_of_the_votes_left_after_outliers():
    # Five single votes are outliers: 5 votes remain, 30% of them 1.5: 3 and 2 both pass (of the
    # 10 raw votes, 30% would be 3 and 2 would not).
    assert official_distribution([3, 2, 1, 1, 1, 1, 1, 0, 0, 0], "multi-target") == pytest.approx(
        [0.6, 0.4, 0, 0, 0, 0, 0, 0])


def test_unknown_and_not_a_face_count_towards_the_threshold_but_not_the_distribution():
    # Neutral 4, happiness 3, unknown 3 of 10: all three reach 30% (3 votes), 10 > 50% kept; the
    # emotions then share their own 7 votes: 4/7, 3/7 (not 0.4, 0.3).
    assert official_distribution([4, 3, 0, 0, 0, 0, 0, 0, 3, 0], "multi-target") == pytest.approx(
        [4 / 7, 3 / 7, 0, 0, 0, 0, 0, 0])
    # Neutral 5, not-a-face 4 of 9: both kept (2.7 votes), neutral alone is the distribution.
    assert official_distribution([5, 0, 0, 0, 0, 0, 0, 0, 0, 4], "multi-target") == pytest.approx(
        [1, 0, 0, 0, 0, 0, 0, 0])


def test_images_the_official_rules_discard():
    # Unknown ahead of every emotion.
    assert official_distribution([2, 0, 0, 0, 0, 0, 0, 0, 6, 2], "soft") is None
    # Four emotions of 2 votes each plus 2 unknown: the first pass takes all four tied at 2 (count 4 > 3).
    assert official_distribution([2, 2, 2, 2, 0, 0, 0, 0, 2, 0], "soft") is None


def test_training_targets_per_mode():
    q = [0.625, 0.375, 0.0]
    assert training_target("majority", 0, q, seed=5) == 0
    soft = training_target("soft", 0, q, seed=5)
    assert torch.equal(soft, torch.tensor(q, dtype=torch.float32))
    eps = MULTI_TARGET_EPSILON
    assert torch.allclose(training_target("multi-target", 0, q, seed=5), torch.tensor([1.0, 1.0, eps]))
    assert training_target("draw", 0, q, seed=None) == 0  # no sampler seed: the majority label
    with pytest.raises(ValueError, match="vote distribution"):
        training_target("soft", 0, None, seed=1)


def test_drawn_labels_follow_the_distribution_and_the_seed():
    q = [0.625, 0.375, 0.0]
    draws = [draw_label(q, seed) for seed in range(4000)]
    assert set(draws) == {0, 1}  # never a class without votes
    assert draws.count(1) / len(draws) == pytest.approx(0.375, abs=0.03)  # 4 standard deviations: 0.031
    assert [draw_label(q, seed) for seed in range(50)] == draws[:50]  # the same seed, the same label


def test_soft_target_cross_entropy_hand_computed_and_one_hot_is_ce():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # p = (1/4, 3/4), (1/2, 1/2)
    q = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    expected = (-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)) - math.log(0.5)) / 2
    assert soft_target_cross_entropy(logits, q).item() == pytest.approx(expected, rel=1e-6)
    labels = torch.tensor([1, 0])
    assert soft_target_cross_entropy(logits, F.one_hot(labels, 2).float()).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_multi_target_loss_takes_the_best_accepted_emotion():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0]])  # p = 1/5, 3/5, 1/5
    eps = MULTI_TARGET_EPSILON
    # Emotions 0 and 2 accepted: t = 1 there (0.999 + 0.001), eps on emotion 1: max(1/5, eps 3/5) = 1/5.
    t = (1 - eps) * torch.tensor([[1.0, 0.0, 1.0]]) + eps  # t = 1, eps, 1
    assert multi_target_loss(logits, t).item() == pytest.approx(-math.log(1 / 5), rel=1e-6)
    # Emotion 1 accepted as well: it is predicted best, so the loss is -log(3/5).
    t = (1 - eps) * torch.ones(1, 3) + eps
    assert multi_target_loss(logits, t).item() == pytest.approx(-math.log(3 / 5), rel=1e-6)


# ---- on a FERPlus fixture (tests/test_datasets_extra.py's) ------------------------------------
from data import DatasetError, build_dataset  # noqa: E402
from data.ferplus import class_vote_counts  # noqa: E402
from data.label_modes import apply_label_mode  # noqa: E402

from test_datasets_extra import make_ferplus  # noqa: E402

# Canonical order: surprise, fear, disgust, happiness, sadness, anger, neutral, contempt.
NEUTRAL, ANGER, DISGUST, HAPPINESS, CONTEMPT = 6, 5, 2, 3, 7


def test_soft_and_multi_target_items_on_ferplus(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    train_set = build_dataset("ferplus", root, "train")
    assert train_set.samples[0].path.name == "fer0000000.png"  # votes neutral 4, sadness 1, anger 3, disgust 2
    soft = apply_label_mode(train_set, "soft")
    # Sadness's single vote is an outlier: 9 votes remain; neutral (4) then anger (3) reach 7 >= 75% of 9.
    expected = torch.zeros(8)
    expected[NEUTRAL], expected[ANGER] = 4 / 7, 3 / 7
    image, target, index = soft[(0, 1234)]
    assert index == 0 and torch.allclose(target, expected)
    # Contempt 6, unknown 4: unknown is dropped, contempt alone.
    contempt_row = [s.path.name for s in train_set.samples].index("fer0000003.png")
    assert torch.allclose(soft[(contempt_row, 0)][1], F.one_hot(torch.tensor(CONTEMPT), 8).float())
    # Multi-target: 30% of 9 = 2.7 votes: neutral and anger are accepted, disgust (2) is not.
    multi = apply_label_mode(train_set, "multi-target")
    t = torch.full((8,), MULTI_TARGET_EPSILON)
    t[NEUTRAL] = t[ANGER] = 1.0
    assert torch.allclose(multi[(0, 0)][1], t)
    # A validation subset keeps majority labels.
    assert soft.subset([0])[0][1] == NEUTRAL


def test_drawn_labels_on_ferplus_come_from_the_votes_and_the_sample_seed(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    draw = apply_label_mode(build_dataset("ferplus", root, "train"), "draw")
    labels = [draw[(0, seed)][1] for seed in range(300)]
    assert set(labels) == {NEUTRAL, ANGER}
    assert labels == [draw[(0, seed)][1] for seed in range(300)]
    assert draw[0][1] == NEUTRAL  # no sampler seed: the majority label


def test_label_modes_need_votes_and_know_their_names(tmp_path, demo_root):
    with pytest.raises(DatasetError, match="--ferplus-labels soft needs the annotators' votes"):
        apply_label_mode(build_dataset("demo", demo_root, "train"), "soft")
    root = make_ferplus(tmp_path / "ferplus")
    with pytest.raises(DatasetError, match="--ferplus-labels 'hard' is unknown"):
        apply_label_mode(build_dataset("ferplus", root, "train"), "hard")
    assert apply_label_mode(build_dataset("demo", demo_root, "train"), "majority") is not None


def test_seven_classes_drop_contempt_from_the_distribution(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    test_votes = class_vote_counts(build_dataset("ferplus", root, "test").samples, 8)
    # fer0028638: happiness 9 (unknown 1 is not a class); fer0028639: neutral 1, sadness 1, disgust 2, contempt 6.
    assert test_votes.tolist() == [[0, 0, 0, 9, 0, 0, 0, 0], [0, 0, 2, 0, 1, 0, 1, 6]]
    train7 = build_dataset("ferplus", root, "train", num_classes=7)
    assert class_vote_counts(train7.samples, 7).shape == (len(train7), 7)
    soft7 = apply_label_mode(train7, "soft")
    assert all(len(d) == 7 and abs(sum(d) - 1) < 1e-9 for d in soft7.distributions)


@pytest.mark.parametrize("mode", ["soft", "multi-target"])
def test_seven_classes_renormalise_what_contempt_leaves(mode):
    from data.base import ImageListDataset
    from data.classes import CANONICAL_CLASSES
    from data.ferplus import VotedSample

    # Neutral 4, happiness 3, contempt 3 of 10: the official distribution is 0.4, 0.3, 0.3 (soft:
    # 4 alone is under 75%, the tied 3s join; multi-target: all three reach 30%). Without
    # contempt the two emotions share what is left: 4/7 and 3/7.
    votes = (4, 3, 0, 0, 0, 0, 0, 3, 0, 0)
    sample = VotedSample(Path("fer0000000.png"), NEUTRAL, votes)
    seven = apply_label_mode(ImageListDataset([sample], CANONICAL_CLASSES[:7]), mode)
    expected = [0.0] * 7
    expected[NEUTRAL], expected[HAPPINESS] = 4 / 7, 3 / 7
    assert seven.distributions[0] == pytest.approx(expected)
    eight = apply_label_mode(ImageListDataset([sample], CANONICAL_CLASSES), mode)
    expected = [0.0] * 8
    expected[NEUTRAL], expected[HAPPINESS], expected[CONTEMPT] = 0.4, 0.3, 0.3
    assert eight.distributions[0] == pytest.approx(expected)


def test_training_on_ferplus_records_the_distribution_metrics(tmp_path):
    import test as test_script
    import train
    from utils.logging import read_metrics

    root = make_ferplus(tmp_path / "ferplus")
    out = tmp_path / "run"
    train.cli(["--dataset", "ferplus", "--data-root", str(root), "--img-size", "32", "--batch-size", "4",
               "--workers", "0", "--steps", "2", "--no-progress", "--output", str(out)])
    record = read_metrics(out / "metrics.jsonl")[-1]
    assert {"vote_kl", "vote_nll", "ece"} <= set(record)
    assert record["vote_kl"] >= 0 and record["vote_nll"] >= record["vote_kl"]
    metrics = test_script.cli([str(out / "last.pth"), "--workers", "0", "--no-progress", "--out-dir", str(tmp_path)])
    for key in ("vote_kl", "vote_nll", "ece"):
        assert metrics[key] == pytest.approx(record[key], rel=1e-9), key


@pytest.mark.parametrize("mode", ["draw", "soft", "multi-target"])
def test_train_py_trains_with_each_label_mode_and_records_it(tmp_path, mode):
    import json

    import train

    root = make_ferplus(tmp_path / "ferplus")
    out = tmp_path / mode
    train.cli(["--dataset", "ferplus", "--data-root", str(root), "--img-size", "32", "--batch-size", "4",
               "--workers", "0", "--steps", "2", "--no-progress", "--method", "ce", "--ferplus-labels", mode,
               "--output", str(out)])
    assert json.loads((out / "config.json").read_text())["ferplus_labels"] == mode
    assert (out / "last.pth").is_file()


def test_soft_targets_reach_ces_loss_as_distributions():
    import methods

    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    q = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    x = logits[:, :, None, None]
    from test_methods import MapsModel

    soft = methods.make_method("ce", [3, 1], ferplus_labels="soft").training_step(MapsModel(), x, q)
    assert soft["ce"].item() == pytest.approx(soft_target_cross_entropy(logits, q).item(), rel=1e-6)
    t = (1 - MULTI_TARGET_EPSILON) * (q > 0).float() + MULTI_TARGET_EPSILON
    multi = methods.make_method("ce", [3, 1], ferplus_labels="multi-target").training_step(MapsModel(), x, t)
    assert multi["ce"].item() == pytest.approx(multi_target_loss(logits, t).item(), rel=1e-6)
    assert multi["ce"].item() != pytest.approx(soft["ce"].item(), rel=1e-3)


@pytest.mark.parametrize("flags,message", [
    (["--method", "mek", "--ferplus-labels", "soft"],
     "--ferplus-labels soft trains on target distributions, which only --method ce takes; --method mek needs class labels"),
    (["--method", "ce", "--ferplus-labels", "multi-target", "--cb-beta", "0.9"],
     "--cb-beta weights samples by their class, and --ferplus-labels multi-target gives distributions"),
])
def test_label_modes_that_a_method_cannot_take_are_refused_in_one_line(tmp_path, capsys, flags, message):
    import train

    root = make_ferplus(tmp_path / "ferplus")
    with pytest.raises(SystemExit) as exc:
        train.cli(["--dataset", "ferplus", "--data-root", str(root), "--img-size", "32", "--batch-size", "4",
                   "--workers", "0", "--steps", "2", "--output", str(tmp_path / "out"), *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err

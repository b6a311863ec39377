"""data/label_modes.py and losses/soft_targets.py: the FERPlus paper's training modes by hand."""
from __future__ import annotations

import math

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

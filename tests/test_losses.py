import math

import pytest
import torch

from losses import (
    RebalancedSmoothLabelLoss,
    class_weights_from_counts,
    rebalanced_attention_consistency,
    rebalanced_smooth_targets,
)

RAF_DB_COUNTS = [1290, 281, 717, 4772, 1982, 705, 2524]
PAPER_WEIGHTS = [0.95124031, 4.36690391, 1.71143654, 0.25714585, 0.6191221, 1.74056738, 0.48617274]


def test_class_weights_reproduce_paper_constants():
    weights = class_weights_from_counts(RAF_DB_COUNTS)
    assert torch.allclose(weights.double(), torch.tensor(PAPER_WEIGHTS, dtype=torch.float64), atol=1e-6)


def test_class_weights_tempering_and_refusals():
    assert torch.allclose(class_weights_from_counts([10, 40], power=0.5), torch.tensor([0.5**0.5, 0.125**0.5]))
    assert torch.allclose(class_weights_from_counts([10, 40], power=0.0), torch.ones(2))
    with pytest.raises(ValueError, match="no training samples"):
        class_weights_from_counts([10, 0, 5])


def test_rsl_targets_hand_computed():
    targets = rebalanced_smooth_targets(torch.tensor([0, 2]), torch.tensor([1.0, 2.0, 3.0]), eps=0.3)
    # Label 0: the others have w 2 and 3 -> 0.3 * 2/5, 0.3 * 3/5. Label 2: w 1 and 2 -> 0.1, 0.2.
    assert torch.allclose(targets, torch.tensor([[0.7, 0.12, 0.18], [0.1, 0.2, 0.7]]))


def test_rsl_targets_sum_to_one_and_keep_true_class():
    weights = class_weights_from_counts(RAF_DB_COUNTS)
    labels = torch.arange(7).repeat(3)
    for eps in (0.0, 0.1, 0.3, 0.9):
        targets = rebalanced_smooth_targets(labels, weights, eps)
        assert torch.allclose(targets.sum(1), torch.ones(len(labels)))
        assert torch.allclose(targets[torch.arange(len(labels)), labels], torch.full((len(labels),), 1 - eps))


def test_rsl_loss_values():
    weights = torch.tensor([1.0, 2.0, 3.0])
    # Uniform logits: -sum t log(1/3) = log 3 whatever the target.
    assert math.isclose(float(RebalancedSmoothLabelLoss(weights, 0.3)(torch.zeros(2, 3), torch.tensor([0, 1]))), math.log(3), rel_tol=1e-6)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = torch.log_softmax(logits, 1)[0]
    expected = -(0.7 * log_p[0] + 0.12 * log_p[1] + 0.18 * log_p[2])
    assert torch.isclose(RebalancedSmoothLabelLoss(weights, 0.3)(logits, torch.tensor([0])), expected)
    # eps 0 is plain cross-entropy.
    assert torch.isclose(RebalancedSmoothLabelLoss(weights, 0.0)(logits, torch.tensor([1])),
                         torch.nn.functional.cross_entropy(logits, torch.tensor([1])))


def test_rac_hand_computed():
    maps = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]])  # (B=1, K=2, H=1, W=2)
    flipped = torch.tensor([[[[3.0, 1.0]], [[1.0, 1.0]]]])  # mirrored back: [1, 3] and [1, 1]
    # class 0: mean((1-1)^2, (2-3)^2) = 0.5; class 1: mean(1, 1) = 1; weights 2 and 0.5 -> 1.5.
    value = rebalanced_attention_consistency(maps, flipped, torch.tensor([2.0, 0.5]))
    assert torch.isclose(value, torch.tensor(1.5))


def test_rac_zero_for_mirror_consistent_maps_and_positive_otherwise():
    maps = torch.randn(4, 7, 5, 5)
    weights = class_weights_from_counts(RAF_DB_COUNTS)
    assert float(rebalanced_attention_consistency(maps, torch.flip(maps, dims=[3]), weights)) == 0.0
    assert float(rebalanced_attention_consistency(maps, maps + 0.1, weights)) > 0.0


def test_rac_batch_mean_and_class_weighting():
    maps = torch.zeros(2, 2, 2, 2)
    flipped = torch.zeros(2, 2, 2, 2)
    flipped[0, 1] = 2.0  # sample 0, class 1: squared error 4 everywhere
    value = rebalanced_attention_consistency(maps, flipped, torch.tensor([1.0, 3.0]))
    assert torch.isclose(value, torch.tensor(3.0 * 4.0 / 2))


def test_target_mass_per_class_hand_computed_and_sums_to_one():
    from losses import target_mass_per_class

    # Two classes: all smoothing mass of one class goes to the other.
    assert target_mass_per_class([3, 1], torch.tensor([1.0, 2.0]), 0.3) == pytest.approx([(3 * 0.7 + 0.3) / 4, (0.7 + 3 * 0.3) / 4])
    mass = target_mass_per_class(RAF_DB_COUNTS, class_weights_from_counts(RAF_DB_COUNTS), 0.3)
    assert sum(mass) == pytest.approx(1.0)
    assert max(range(7), key=mass.__getitem__) == 3  # on RAF-DB happiness keeps the most mass

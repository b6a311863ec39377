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


def test_rsl_loss_hand_computed_on_non_uniform_logits():
    weights = torch.tensor([1.0, 2.0, 3.0])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, -0.5]])
    labels = torch.tensor([0, 2])
    # Targets, eps 0.3: t_y = 0.7, t_j = 0.3 w_j / sum_{i != y} w_i.
    #   label 0: others w 2, 3 -> [0.7, 0.3 * 2/5, 0.3 * 3/5] = [0.7, 0.12, 0.18]
    #   label 2: others w 1, 2 -> [0.3 * 1/3, 0.3 * 2/3, 0.7]  = [0.1, 0.2, 0.7]
    # -sum_j t_j log softmax(z)_j = logsumexp(z) - sum_j t_j z_j, since sum_j t_j = 1:
    #   sample 0: log(e^2 + e^0 + e^-1) = log 8.7569349 = 2.1698460; sum t z = 1.4 + 0 - 0.18 = 1.22
    #             -> 0.9498460 (a uniform smoothing [0.7, 0.15, 0.15] would give 0.9198460)
    #   sample 1: log(e^0.5 + e^1.5 + e^-0.5) = log 6.7369409 = 1.9076060; sum t z = 0.05 + 0.3 - 0.35 = 0
    #             -> 1.9076060
    # Batch mean: (0.9498460 + 1.9076060) / 2 = 1.4287260.
    assert math.isclose(math.log(math.exp(2) + 1 + math.exp(-1)), 2.1698460, abs_tol=1e-7)
    assert math.isclose(math.log(math.exp(0.5) + math.exp(1.5) + math.exp(-0.5)), 1.9076060, abs_tol=1e-7)
    rsl = RebalancedSmoothLabelLoss(weights, 0.3)
    assert float(rsl(logits[:1], labels[:1])) == pytest.approx(0.9498460, abs=1e-6)
    assert float(rsl(logits[1:], labels[1:])) == pytest.approx(1.9076060, abs=1e-6)
    assert float(rsl(logits, labels)) == pytest.approx(1.4287260, abs=1e-6)
    # eps 0 is plain cross-entropy: -log softmax(z)_1 = 2.1698460 - 0 for the first sample.
    assert float(RebalancedSmoothLabelLoss(weights, 0.0)(logits[:1], torch.tensor([1]))) == pytest.approx(2.1698460, abs=1e-6)


def test_rac_hand_computed():
    maps = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]])  # (B=1, K=2, H=1, W=2)
    flipped = torch.tensor([[[[3.0, 1.0]], [[1.0, 1.0]]]])  # mirrored back: [1, 3] and [1, 1]
    # class 0: mean((1-1)^2, (2-3)^2) = 0.5; class 1: mean(1, 1) = 1; weights 2 and 0.5 -> 1.5.
    value = rebalanced_attention_consistency(maps, flipped, torch.tensor([2.0, 0.5]))
    assert torch.isclose(value, torch.tensor(1.5))


def test_rac_zero_for_mirror_consistent_maps_and_weighted_otherwise():
    torch.manual_seed(0)
    maps = torch.randn(4, 7, 5, 5)
    weights = class_weights_from_counts(RAF_DB_COUNTS)
    assert float(rebalanced_attention_consistency(maps, torch.flip(maps, dims=[3]), weights)) == 0.0
    # Mirrored back, these maps are off by 0.1 everywhere: every class contributes 0.1^2 w_k, so
    # RAC = 0.01 * sum of the paper's weights = 0.01 * 10.13258883.
    shifted = torch.flip(maps, dims=[3]) + 0.1
    assert float(rebalanced_attention_consistency(maps, shifted, weights)) == pytest.approx(0.1013258883, rel=1e-5)


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

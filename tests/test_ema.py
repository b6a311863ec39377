"""utils/ema.py: the weight average's update against hand-computed values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from utils.ema import WeightAverage, build_weight_average


def _scalar_model(value: float) -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)


def test_first_update_copies_then_the_warmup_ramps_the_decay():
    model = _scalar_model(1.0)
    ema = WeightAverage(model, decay=0.999)
    _set(model, 2.0)
    ema.update(0)  # decay 0: the average becomes the online weights
    assert ema.module.weight.item() == pytest.approx(2.0)
    _set(model, 4.0)
    ema.update(1)  # t = 1: decay 1 - 2^-0.75 = 0.405396...
    decay = 1 - 2 ** -0.75
    assert ema.decay_at(1) == pytest.approx(decay)
    assert ema.module.weight.item() == pytest.approx(decay * 2.0 + (1 - decay) * 4.0, rel=1e-6)
    # Late in a run the warm-up exceeds DECAY, which caps it.
    assert 1 - (1 + 100_000) ** -0.75 > 0.999
    assert ema.decay_at(100_000) == pytest.approx(0.999)


def test_without_warmup_the_decay_is_constant_after_the_copy():
    model = _scalar_model(0.0)
    ema = WeightAverage(model, decay=0.9, warmup=False)
    _set(model, 10.0)
    ema.update(0)
    assert ema.module.weight.item() == pytest.approx(10.0)
    _set(model, 0.0)
    ema.update(1)
    ema.update(2)
    assert ema.module.weight.item() == pytest.approx(10.0 * 0.9 * 0.9, rel=1e-6)


def test_batchnorm_running_statistics_are_averaged_too():
    model = nn.BatchNorm1d(1)
    ema = WeightAverage(model, decay=0.5, warmup=False)
    ema.update(0)
    with torch.no_grad():
        model.running_mean.fill_(4.0)
    ema.update(1)
    assert ema.module.running_mean.item() == pytest.approx(2.0)


def test_the_average_is_a_copy_and_round_trips_through_its_state_dict():
    model = _scalar_model(1.0)
    ema = WeightAverage(model, decay=0.99)
    assert ema.module is not model and ema.module.weight is not model.weight
    state = {k: v.clone() for k, v in ema.state_dict().items()}
    _set(model, 5.0)
    ema.update(0)
    ema.load_state_dict(state)
    assert ema.module.weight.item() == pytest.approx(1.0)


def test_off_is_none_and_a_decay_outside_0_1_is_refused():
    assert build_weight_average(None, _scalar_model(0.0)) is None
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="--ema"):
            WeightAverage(_scalar_model(0.0), decay=bad)

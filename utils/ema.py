"""``--ema DECAY``: an exponential moving average of the model's weights (timm's ``ModelEmaV3``).

After every optimiser step the averaged copy moves towards the trained ("online") weights,

    ema <- decay_t * ema + (1 - decay_t) * online,   decay_t = min(DECAY, 1 - (1 + t)^(-3/4))

for every parameter and floating buffer (BatchNorm's running statistics included); t counts the
steps before this one, so the first update copies the online weights (decay_0 = 0) and the warm-up
keeps the average from being dominated by its random start in short runs. ``--no-ema-warmup``
uses DECAY from the second update on. This is the averaging of the CIFAR speed-run codebases (airbench,
hlb-CIFAR10) and of DeiT / timm's train.py.

The averaged model is the one a run evaluates first and chooses ``best.pth`` on; the online model
is evaluated beside it (``online_*`` keys in metrics.jsonl). Checkpoints hold it under ``"ema"``;
``test.py``, ``predict.py``, ``visualize.py`` and ``export.py`` use it when present
(:func:`utils.checkpoint.inference_weights`).
"""
from __future__ import annotations

import torch
from torch import nn
from timm.utils.model_ema import ModelEmaV3

# timm's warm-up exponent for runs of thousands to tens of thousands of steps (its docstring: 3/4
# reaches a decay of 0.999 after 10k steps).
WARMUP_POWER = 0.75


class WeightAverage:
    """The averaged copy of ``model`` and its update; ``module`` is the network to evaluate."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.source = model
        self.decay, self.warmup = decay, warmup
        # foreach=False: the same per-tensor lerp on every device and build (bit-exact resumes).
        self._ema = ModelEmaV3(model, decay=decay, use_warmup=warmup, warmup_power=WARMUP_POWER,
                               stochastic_rounding=False, foreach=False)

    @property
    def module(self) -> nn.Module:
        return self._ema.module

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimiser step ``step`` (0-based)."""
        return self._ema.get_decay(step + 1)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the online weights after optimiser step ``step`` (0-based)."""
        self._ema.update(self.source, step=step + 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def describe(self) -> str:
        ramp = f", warm-up min({self.decay}, 1 - (1 + t)^-{WARMUP_POWER})" if self.warmup else ""
        return (f"weight averaging (--ema): decay {self.decay}{ramp}; the averaged model is evaluated first and "
                "chooses best.pth, the online model is logged beside it (online_*)")


def build_weight_average(decay: float | None, model: nn.Module, warmup: bool = True) -> WeightAverage | None:
    """``--ema``: None when off."""
    return None if decay is None else WeightAverage(model, decay, warmup)

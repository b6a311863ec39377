"""Optimiser and learning-rate schedule, from timm.

Schedules are stepped per optimiser update (``step_update(step)``), so the learning rate
is a pure function of the global step and resumes exactly.
"""
from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from torch import nn


# timm names that build torch's Adam, AdamW or SGD, which have a fused (single-kernel) implementation.
FUSABLE = frozenset({"adam", "adamw", "sgd", "nesterov", "momentum"})


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9, fused: bool = False,
    decay_all: bool = False, param_groups: list[dict] | None = None,
) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD (or any timm optimiser name).

    By default (timm) biases and norm parameters get no weight decay; ``decay_all`` decays
    every parameter, as the official MEK (AdamW over ``model.parameters()``) and EAC (Adam over
    ``model.parameters()``) optimisers do. ``param_groups`` (a method's own groups, e.g. a
    larger learning rate for a classifier) replace the default single group.

    ``fused`` uses torch's fused kernel for Adam, AdamW and SGD: the same update rule in one
    pass over all parameters instead of a dozen element-wise ops per tensor (ResNet-18's Adam
    step: 43 ms -> 8 ms on a 2-core CPU). Other optimisers ignore it.
    """
    extra = {"fused": True} if fused and name.lower() in FUSABLE else {}
    params = param_groups if param_groups is not None else model
    return create_optimizer_v2(params, opt=name, lr=lr, weight_decay=weight_decay, momentum=momentum,
                               filter_bias_and_bn=not decay_all, **extra)


# Param-group keys that choose how the update is computed, not what it is.
IMPLEMENTATION_KEYS = ("fused", "foreach")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimiser state but keep this run's implementation choice.

    ``Optimizer.load_state_dict`` restores every param-group key, including ``fused`` and
    ``foreach``; those belong to the command line of the resuming run (``--no-fused-opt``),
    while the hyperparameters and moments come from the checkpoint.

    It also fits the state to this run's parameters and flags (a resume may change
    ``--channels-last`` or ``--fused-opt``): torch keeps each moment's saved memory layout, which
    a kernel that pairs tensors element by element (fused Adam) then reads against weights of
    another layout, and places the step counter by the saved ``fused`` flag (on the parameters'
    device for a fused group, on the CPU otherwise).
    """
    chosen = [{k: g[k] for k in IMPLEMENTATION_KEYS if k in g} for g in optimizer.param_groups]
    # torch casts the saved state by the groups it loads: give them this run's flags first.
    groups = [{**saved, **keys} for saved, keys in zip(state["param_groups"], chosen)]
    optimizer.load_state_dict({**state, "param_groups": groups + state["param_groups"][len(groups):]})
    for group, keys in zip(optimizer.param_groups, chosen):
        group.update(keys)
    fit_layout_to_parameters(optimizer)


def fit_layout_to_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (moments, momentum buffers) its parameter's strides,
    and a non-fused group's step counters the CPU (torch leaves a counter where it was loaded:
    on the GPU for a state saved by a fused run and not mapped to the CPU first)."""
    for group in optimizer.param_groups:
        counter_on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if not torch.is_tensor(value):
                    continue
                if key == "step" and not counter_on_device and value.device.type not in ("cpu", "meta"):
                    state[key] = value.cpu()
                elif value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    warmup_lr: float = 0.0,
    min_lr: float = 0.0,
    decay_rate: float = 0.9,
    decay_epochs: int = 10,
):
    """'cosine' (warmup then cosine to ``min_lr``), 'exponential' (x ``decay_rate`` each epoch), 'step'
    (x ``decay_rate`` every ``decay_epochs`` epochs: torch's StepLR per epoch, e.g. DAN's x0.1 every 10)
    or 'constant'."""
    common = dict(warmup_t=warmup_steps, warmup_lr_init=warmup_lr, t_in_epochs=False)
    if name == "cosine":
        return CosineLRScheduler(optimizer, t_initial=max(total_steps, 1), lr_min=min_lr, **common)
    if name == "exponential":
        return StepLRScheduler(optimizer, decay_t=max(steps_per_epoch, 1), decay_rate=decay_rate, **common)
    if name == "step":
        return StepLRScheduler(optimizer, decay_t=max(steps_per_epoch, 1) * decay_epochs, decay_rate=decay_rate, **common)
    if name == "constant":
        return StepLRScheduler(optimizer, decay_t=max(total_steps, 1) * 10, decay_rate=1.0, **common)
    raise ValueError(f"--sched {name!r} is unknown; choose cosine, exponential, step or constant")

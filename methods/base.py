"""What a training method is: the seam between the engine and MEK, EAC, CE, the long-tail losses.

A method owns
- its command-line flags (``add_args``, one argparse group) and their checks (``check_args``);
- the head it needs (``head``) and whether it needs attention maps;
- its training step: forwards through the model and a dict of loss terms with the total
  under ``"loss"`` (``training_step``);
- per-step hooks (``set_step``: MEK's deferred start and ramp, LDAM's deferred re-weighting);
- optional parameter groups (``param_groups``), e.g. a larger learning rate for a classifier;
- its prediction rule at evaluation (``eval_logits``: post-hoc logit adjustment changes it);
- the settings recorded in checkpoints (``settings``) and its log lines (``describe``).

The engine keeps mixed precision, backward, clipping, the non-finite guard, DDP and progress.
The training step runs under the engine's autocast; methods compute losses on ``.float()``
outputs.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from losses.class_prior import ClassPrior


@dataclass(frozen=True)
class TrainSchedule:
    """The run's length, for hooks that act at a given epoch or step."""

    steps_per_epoch: int
    total_steps: int


@dataclass
class MethodContext:
    """What train.py hands to ``Method.setup``: the run's flags and devices, the labelled data, and
    builders that make a second network and optimiser exactly as the main ones are made."""

    args: argparse.Namespace
    device: torch.device
    dist_info: Any
    augment: Any  # data.transforms.AugmentConfig of the labelled stream
    model: nn.Module  # the main network, unwrapped (its parameters are those the main optimiser steps)
    train_set: Any
    steps_per_epoch: int
    train_steps: int  # the method's main stage (Method.split_budget), the main schedule's length
    make_network: Callable[[str], tuple[nn.Module, nn.Module, dict]]  # backbone -> (module, wrapped, model_config)
    make_optimizer: Callable[..., tuple[torch.optim.Optimizer, Any]]  # (module, lr) -> (optimiser, schedule)


class MethodArgumentError(ValueError):
    """A method flag has an impossible value; the message names the flag."""


class Method(nn.Module):
    """Base class: subclasses set ``name``/``paper`` and implement ``training_step``."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    head: ClassVar[str] = "cam"  # the head the method needs (``--head`` may override where allowed)
    allowed_heads: ClassVar[tuple[str, ...] | None] = None  # None: any head

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__()
        self.prior = prior
        self.schedule = schedule
        self.flip_forward = getattr(args, "flip_forward", "two-pass")

    # ---- flags -------------------------------------------------------------------------
    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        """Add this method's flags to ``group``."""

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        """Raise :class:`MethodArgumentError` naming the flag for an impossible value."""

    # ---- training ------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Called by the engine before each optimiser step (a no-op unless the method has a schedule)."""

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]] | None:
        """Optimiser parameter groups, or None for the default (one lr for every parameter)."""
        return None

    # ---- methods that train more than one network (teacher/student) ------------------------
    # A method with ``manual_optimization = True`` runs its own backward passes and optimiser
    # steps in ``manual_step`` (through ``engine.ManualUpdate``, which keeps the engine's mixed
    # precision, clipping and non-finite guard); the engine still steps the main schedule, calls
    # ``set_step`` and keeps progress. ``setup`` gives such a method what train.py built (it may
    # build a second network, optimiser, schedule and data stream there); ``networks`` names the
    # extra networks (evaluated and saved with the main model); ``extra_state`` /
    # ``load_extra_state`` carry the rest of its training state (optimisers, stream positions)
    # through checkpoints. The defaults do nothing, so a one-network method is unaffected.
    manual_optimization: ClassVar[bool] = False

    @classmethod
    def split_budget(cls, args: argparse.Namespace, budget_steps: int, steps_per_epoch: int) -> tuple[int, int]:
        """(steps of the main stage, steps of a stage the method runs after it, e.g. fine-tuning) for a
        ``--steps``/``--epochs`` budget of ``budget_steps``. One-stage methods: the whole budget, 0."""
        return budget_steps, 0

    def setup(self, context: Any) -> None:
        """Called once by train.py after the main model, optimiser and data are built."""

    def manual_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
                    scaler: Any, update: Any) -> dict[str, torch.Tensor] | None:
        """One training step with the method's own updates: loss terms, or None if skipped (non-finite)."""
        raise NotImplementedError

    def current_lr(self, optimizer: torch.optim.Optimizer) -> float:
        """The learning rate of the step just taken, as logged and written to metrics.jsonl: the main
        optimiser's, unless a later stage steps an optimiser of the method's own."""
        return optimizer.param_groups[0]["lr"]

    def networks(self) -> dict[str, nn.Module]:
        """Extra networks (name -> unwrapped module), evaluated and checkpointed beside the main model."""
        return {}

    def network_configs(self) -> dict[str, dict]:
        """Each extra network's model config (as train.py's ``model_config``), so test.py can rebuild it."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Training state beyond the main model/optimiser (saved in checkpoints; {} = none)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""

    # ---- evaluation ----------------------------------------------------------------------
    def eval_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The scores whose argmax is the prediction (the logits themselves by default)."""
        return logits

    # ---- record --------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {}

    def describe(self) -> list[str]:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return [f"method {self.name} ({self.paper})" + (f": {settings}" if settings else "")]


def positive(args: argparse.Namespace, flag: str, allow_zero: bool = True) -> None:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise MethodArgumentError(f"{flag} must be {'>=' if allow_zero else '>'} 0, got {value}")


def in_range(args: argparse.Namespace, flag: str, low: float, high: float, high_open: bool = False) -> None:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value is None:
        return
    if not (low <= value < high if high_open else low <= value <= high):
        raise MethodArgumentError(f"{flag} must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value}")

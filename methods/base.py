"""What a training method is: the seam between the engine and MEK, EAC, CE, the long-tail losses.

Read this class first, then one method (``methods/ce.py`` is the shortest, ``methods/face2exp.py``
the longest). A method owns
- its command-line flags (``add_args``, one argparse group) and their checks (``check_args``);
- the head it needs (``head``, ``allowed_heads``) and whether it takes target distributions
  (``takes_target_distributions``: FERPlus's soft and multi-target label modes);
- its loss: forwards through the model and a dict of loss terms with the total under
  ``"loss"`` (``training_step``), run under the engine's autocast; losses on ``.float()`` outputs;
- its update (``train_step``): by default ``training_step`` then one update of the main
  optimiser through the engine's :class:`engine.Stepper` (the codebase's only backward /
  unscale / clip / step / scaler / non-finite sequence); a method with networks of its own
  (Face2Exp) overrides it and updates each network through the same stepper;
- per-step schedules (``set_step``: MEK's deferred start and ramp, LDAM's deferred
  re-weighting, Face2Exp's teacher schedule);
- what it builds once the run is (``setup``), e.g. a second network, its optimiser and schedule,
  a data stream; the extra networks it evaluates and saves (``networks``); its training state
  (``state_dict`` / ``load_state_dict``: its optimisers, centres, stream positions), which a
  checkpoint carries beside the model, the main optimiser, the scaler, progress and RNG;
- optional parameter groups (``param_groups``), e.g. a larger learning rate for a classifier;
- its prediction rule at evaluation (``eval_logits``: post-hoc logit adjustment changes it);
- the settings recorded in checkpoints (``settings``) and its log lines (``describe``).

The engine keeps mixed precision, the update sequence, the non-finite guard, DDP and progress;
nothing in ``train.py`` or ``engine.py`` knows a method by name.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from losses.class_prior import ClassPrior


@dataclass(frozen=True)
class TrainSchedule:
    """The run's length, for hooks that act at a given epoch or step."""

    steps_per_epoch: int
    total_steps: int


@dataclass
class RunContext:
    """What train.py hands to ``Method.setup``: the run's flags, devices and labelled data. A method
    builds its own networks and optimisers from it with ``utils.build`` (as the main ones are)."""

    args: argparse.Namespace
    device: torch.device
    dist_info: Any
    augment: Any  # data.transforms.AugmentConfig of the labelled stream
    model: nn.Module  # the main network, unwrapped (its parameters are those the main optimiser steps)
    train_set: Any
    classes: list[str]
    steps_per_epoch: int
    train_steps: int  # the method's main stage (Method.split_budget), the main schedule's length


class MethodArgumentError(ValueError):
    """A method flag has an impossible value; the message names the flag."""


class Method(nn.Module):
    """Base class: subclasses set ``name``/``paper`` and implement ``training_step``."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    head: ClassVar[str] = "cam"  # the head the method needs (``--head`` may override where allowed)
    allowed_heads: ClassVar[tuple[str, ...] | None] = None  # None: any head
    # Whether ``training_step`` takes (B, K) target distributions as ``labels`` (FERPlus's
    # ``--ferplus-labels soft / multi-target``); other methods get class indices only.
    takes_target_distributions: ClassVar[bool] = False

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

    @classmethod
    def split_budget(cls, args: argparse.Namespace, budget_steps: int, steps_per_epoch: int) -> tuple[int, int]:
        """(steps of the main stage, steps of a stage the method runs after it, e.g. fine-tuning) for a
        ``--steps``/``--epochs`` budget of ``budget_steps``. One-stage methods: the whole budget, 0."""
        return budget_steps, 0

    def setup(self, context: RunContext) -> None:
        """Called once by train.py after the main model, optimiser and data are built."""

    # ---- training ------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Called by the engine before each step (a no-op unless the method has a schedule)."""

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   optimizer: torch.optim.Optimizer, scaler: Any, stepper: Any) -> dict[str, torch.Tensor] | None:
        """One step: the loss terms of ``training_step`` under autocast, then one update of
        ``optimizer`` (``stepper.update``); the terms, or None when skipped as non-finite."""
        with stepper.autocast():
            terms = self.training_step(model, images, labels)
        if not stepper.update(terms["loss"], terms, optimizer, model.parameters(), scaler):
            return None
        return terms

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]] | None:
        """Optimiser parameter groups, or None for the default (one lr for every parameter)."""
        return None

    def networks(self) -> dict[str, tuple[nn.Module, dict]]:
        """Extra networks: name -> (unwrapped module, its model config as a checkpoint's ``model_config``),
        evaluated and saved beside the main model (``test.py --network NAME``)."""
        return {}

    # ---- state ---------------------------------------------------------------------------
    # Not nn.Module's parameter dict: the method's *training* state beyond the main model and
    # optimiser (its own optimisers, schedules' positions, centres, data streams), saved under a
    # checkpoint's "extra" and restored on --resume. Networks listed by ``networks`` are saved
    # (and restored) with their weights beside it.
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {}

    def load_state_dict(self, state: dict[str, Any], *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Restore what ``state_dict`` returned."""

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

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
from typing import Any, ClassVar

import torch
from torch import nn

from losses.class_prior import ClassPrior


@dataclass(frozen=True)
class TrainSchedule:
    """The run's length, for hooks that act at a given epoch or step."""

    steps_per_epoch: int
    total_steps: int


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

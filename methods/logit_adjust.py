"""Logit adjustment (Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR 2021).

``--la-mode loss``: train with CE(z + tau log pi); predict argmax z.
``--la-mode posthoc``: train with plain CE; predict argmax (z - tau log pi).
tau 1 is the paper's default. Optionally with MEK's attention term.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from losses.class_prior import ClassPrior
from losses.logit_adjusted import logit_adjusted_loss, posthoc_adjusted_logits

from .base import MethodArgumentError, TrainSchedule
from .logit_loss import LogitLossMethod


class LogitAdjust(LogitLossMethod):
    name = "logit-adjust"
    paper = "Menon et al., ICLR 2021"

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--la-tau", type=float, default=1.0, help="temperature tau of the log-prior adjustment")
        group.add_argument("--la-mode", choices=["loss", "posthoc"], default="loss",
                           help="adjust the training loss, or only the prediction at evaluation")
        cls.add_attention_args(group)

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        super().check_args(args)
        if not 0.0 <= args.la_tau <= 10.0:
            raise MethodArgumentError(f"--la-tau must be in [0, 10], got {args.la_tau}")

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        self.tau, self.mode = args.la_tau, args.la_mode
        self.register_buffer("log_prior", prior.log_prior())

    def classification_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.mode == "posthoc":
            return {"ce": F.cross_entropy(logits, labels)}
        return {"logit_adjusted": logit_adjusted_loss(logits, labels, self.log_prior, self.tau)}

    def eval_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mode == "posthoc":
            return posthoc_adjusted_logits(logits, self.log_prior, self.tau)
        return logits

    def settings(self) -> dict:
        return {"la_tau": self.tau, "la_mode": self.mode, **super().settings()}

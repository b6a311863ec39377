"""LDAM-DRW (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
Loss", NeurIPS 2019; official code kaidic/LDAM-DRW, cifar_train.py and losses.py).

    L = CE(s (z - m_y e_y), y; weights a from the DRW epoch on)

Margins m_k ~ n_k^(-1/4), largest 0.5; s = 30; the normalised-linear head (cosine logits) by
default, as the official code builds ``NormedLinear`` for LDAM; deferred re-weighting (DRW):
unweighted until ``--drw-epoch``, then class-balanced weights (1 - beta)/(1 - beta^n_k) with
beta 0.9999, normalised to sum K. The official CIFAR schedule switches at epoch 160 of 200;
here the default is the same fraction, 80% of the run.
"""
from __future__ import annotations

import argparse

import torch

from losses.class_prior import ClassPrior
from losses.ldam import ldam_loss

from .base import TrainSchedule, in_range, positive
from .logit_loss import LogitLossMethod


class LDAM(LogitLossMethod):
    name = "ldam"
    paper = "Cao et al., NeurIPS 2019"
    head = "norm-linear"

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--max-margin", type=float, default=0.5, help="largest class margin (official: 0.5)")
        group.add_argument("--logit-scale", type=float, default=30.0, help="logit scale s (official: 30)")
        group.add_argument("--drw-epoch", type=int, default=None,
                           help="deferred re-weighting from this epoch (default: 80%% of the epochs, as 160/200 "
                                "officially; -1 = never)")
        group.add_argument("--drw-beta", type=float, default=0.9999, help="effective-number beta of the DRW weights")
        cls.add_attention_args(group)

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        super().check_args(args)
        positive(args, "--max-margin")
        positive(args, "--logit-scale", allow_zero=False)
        in_range(args, "--drw-beta", 0.0, 1.0, high_open=True)
        if args.drw_epoch is not None and args.drw_epoch < -1:
            raise ValueError(f"--drw-epoch must be -1 (never) or >= 0, got {args.drw_epoch}")

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        num_epochs = -(-schedule.total_steps // max(schedule.steps_per_epoch, 1))
        self.drw_epoch = int(0.8 * num_epochs) if args.drw_epoch is None else args.drw_epoch
        self.max_margin, self.scale, self.drw_beta = args.max_margin, args.logit_scale, args.drw_beta
        self.register_buffer("margins", prior.ldam_margins(args.max_margin))
        self.register_buffer("drw_weights", prior.effective_number_weights(args.drw_beta))
        self.reweight = False

    def set_step(self, step: int) -> None:
        epoch = step // max(self.schedule.steps_per_epoch, 1)
        self.reweight = self.drw_epoch >= 0 and epoch >= self.drw_epoch

    def classification_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        weights = self.drw_weights if self.reweight else None
        return {"ldam": ldam_loss(logits, labels, self.margins, self.scale, weights)}

    def settings(self) -> dict:
        return {"max_margin": self.max_margin, "logit_scale": self.scale, "drw_epoch": self.drw_epoch,
                "drw_beta": self.drw_beta, **super().settings()}

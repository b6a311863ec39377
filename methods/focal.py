"""Focal loss (Lin et al., ICCV 2017), optionally class-balanced (Cui et al., CVPR 2019), with
LDAM's margins (``--max-margin``, the "coupling-regulation" combination of focal and margin), and
MEK's attention term.

    L = mean_i a_{y_i} (1 - p_{y_i})^gamma (-log p_{y_i}),   p = softmax(s (z - m_y e_y))

gamma 2 (Lin et al.); margins m_k proportional to n_k^(-1/4) (``ClassPrior.ldam_margins``),
off by default; s = ``--logit-scale`` (1 without margins).
"""
from __future__ import annotations

import argparse

import torch

from losses.class_prior import ClassPrior
from losses.focal import focal_loss
from losses.ldam import margin_logits

from .base import TrainSchedule, in_range, positive
from .ce import add_class_balanced_arg
from .logit_loss import LogitLossMethod


class Focal(LogitLossMethod):
    name = "focal"
    paper = "Lin et al., ICCV 2017"

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--focal-gamma", type=float, default=2.0, help="focusing parameter gamma (0 = cross-entropy)")
        add_class_balanced_arg(group)
        group.add_argument("--max-margin", type=float, default=0.0,
                           help="LDAM margins m_k ~ n_k^(-1/4) with this maximum before the focal loss (0 = off)")
        group.add_argument("--logit-scale", type=float, default=1.0,
                           help="scale s of the (margin-shifted) logits (LDAM uses 30 with --head norm-linear)")
        cls.add_attention_args(group)

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        super().check_args(args)
        positive(args, "--focal-gamma")
        in_range(args, "--cb-beta", 0.0, 1.0, high_open=True)
        positive(args, "--max-margin")
        positive(args, "--logit-scale", allow_zero=False)

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        self.gamma, self.cb_beta = args.focal_gamma, args.cb_beta
        self.max_margin, self.scale = args.max_margin, args.logit_scale
        self.register_buffer("margins", prior.ldam_margins(args.max_margin) if args.max_margin > 0 else None)
        self.register_buffer("sample_class_weights",
                             None if args.cb_beta is None else prior.effective_number_weights(args.cb_beta))

    def classification_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.margins is not None:
            logits = margin_logits(logits, labels, self.margins, self.scale)
        elif self.scale != 1.0:
            logits = self.scale * logits
        return {"focal": focal_loss(logits, labels, self.gamma, self.sample_class_weights)}

    def settings(self) -> dict:
        return {"focal_gamma": self.gamma, "cb_beta": self.cb_beta, "max_margin": self.max_margin,
                "logit_scale": self.scale, **super().settings()}

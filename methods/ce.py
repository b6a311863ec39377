"""Plain cross-entropy, optionally class-balanced (Cui et al., "Class-Balanced Loss Based on
Effective Number of Samples", CVPR 2019) and optionally with MEK's attention term.

    CE(z, y) = -log softmax(z)_y                      (batch mean)
    CB-CE(z, y) = -a_y log softmax(z)_y,  a_k = (1 - beta) / (1 - beta^n_k), sum_k a_k = K
    label smoothing (Szegedy et al., CVPR 2016): the target is (1 - eps) one-hot(y) + eps / K
    (``--label-smoothing``; on vote distributions q: (1 - eps) q + eps / K)

``--method ce`` gives the same numbers as ``--method mek --rsl-eps 0 --rac-weight 0``.

On FERPlus's vote distributions (``--ferplus-labels soft`` / ``multi-target``, ``data/label_modes.py``)
the targets are (B, K) distributions and the loss is the paper's for that mode
(``losses/soft_targets.py``): soft CE ``-sum_k q_k log p_k`` or ``-log max_k t_k p_k``.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from losses.class_prior import ClassPrior
from losses.soft_targets import multi_target_loss, soft_target_cross_entropy

from .base import MethodArgumentError, TrainSchedule, in_range
from .logit_loss import LogitLossMethod


def add_class_balanced_arg(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--cb-beta", type=float, default=None,
                       help="class-balanced weighting by the effective number of samples, beta in [0, 1) "
                            "(Cui et al. use 0.9999); default: off")


class CrossEntropy(LogitLossMethod):
    name = "ce"
    paper = "cross-entropy baseline"
    takes_target_distributions = True

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        add_class_balanced_arg(group)
        group.add_argument("--label-smoothing", type=float, default=0.0,
                           help="mix the targets with the uniform distribution: (1 - eps) y + eps / K (0 = off)")
        cls.add_attention_args(group)

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        super().check_args(args)
        in_range(args, "--cb-beta", 0.0, 1.0, high_open=True)
        in_range(args, "--label-smoothing", 0.0, 1.0, high_open=True)
        labels = getattr(args, "ferplus_labels", "majority")
        if args.label_smoothing and labels == "multi-target":
            raise MethodArgumentError("--label-smoothing mixes targets with the uniform distribution; multi-target's "
                                      "loss takes a max over accepted emotions instead: use --ferplus-labels soft")
        if args.cb_beta is not None and labels in ("soft", "multi-target"):
            raise MethodArgumentError(f"--cb-beta weights samples by their class, and --ferplus-labels {labels} gives "
                                      "distributions, not classes; use one of them")

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        self.cb_beta = args.cb_beta
        self.label_smoothing = args.label_smoothing
        self.target_mode = getattr(args, "ferplus_labels", "majority")
        self.register_buffer("sample_class_weights",
                             None if args.cb_beta is None else prior.effective_number_weights(args.cb_beta))

    def classification_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if labels.is_floating_point():  # (B, K) target distributions
            if self.target_mode == "multi-target":
                return {"ce": multi_target_loss(logits, labels)}
            eps = self.label_smoothing
            return {"ce": soft_target_cross_entropy(logits, (1 - eps) * labels + eps / labels.shape[1])}
        if self.sample_class_weights is None:
            return {"ce": F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)}
        per_sample = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        return {"ce": (per_sample * self.sample_class_weights[labels]).mean()}

    def settings(self) -> dict:
        return {**({"cb_beta": self.cb_beta} if self.cb_beta is not None else {}),
                **({"label_smoothing": self.label_smoothing} if self.label_smoothing else {}), **super().settings()}

"""Shared shape of the methods that are a loss on the logits, optionally plus an attention term.

    L = classification_loss(z(x), y) + lambda * A(M(x), M(flip x))

A is MEK's re-balanced attention consistency (``losses/rebalanced_attention_consistency.py``):
the class activation maps of the image and of its mirror must agree, class k weighted by
w_k. Every long-tail loss here can add it with ``--rac-weight`` (0 = off, no mirrored pass);
EAC uses the same term with uniform weights. The mirror is computed inside the step from the
augmented batch, so both views share the augmentation (erasing included) as in MEK's and EAC's
code.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from losses.class_prior import ClassPrior
from losses.rebalanced_attention_consistency import rebalanced_attention_consistency

from .base import Method, TrainSchedule, in_range, positive
from .mirror import forward_with_mirror


class LogitLossMethod(Method):
    """Subclasses implement ``classification_terms``; this class adds the attention term."""

    attention_term = "rac"  # name of the attention term in the logs
    attention_flag = "--rac-weight"  # its weight's flag: non-zero needs a head with class attention maps
    default_rac_weight = 0.0

    @classmethod
    def add_attention_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--rac-weight", type=float, default=cls.default_rac_weight,
                           help="lambda of MEK's re-balanced attention consistency (0 = off)")
        group.add_argument("--rac-class-weight-power", type=float, default=None,
                           help="RAC's class weights (N/(10 n_k))^power (default 1, MEK's: --class-weight-power)")

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        cls.add_attention_args(group)

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        positive(args, "--rac-weight")
        in_range(args, "--rac-class-weight-power", 0.0, 1.0)

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        self.full_rac_weight = float(self.attention_weight(args))
        self.rac_weight = self.full_rac_weight
        self.register_buffer("attention_class_weights", self.make_attention_weights(args, prior))

    def attention_weight(self, args: argparse.Namespace) -> float:
        """lambda of the attention term (0 = off): ``--rac-weight`` here; a method with its own flag overrides."""
        return args.rac_weight

    def make_attention_weights(self, args: argparse.Namespace, prior: ClassPrior) -> torch.Tensor:
        power = 1.0 if args.rac_class_weight_power is None else args.rac_class_weight_power
        return prior.mek_weights(power)

    def classification_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.rac_weight > 0:
            out, mirror_maps = forward_with_mirror(model, images, one_pass=self.flip_forward == "one-pass")
        else:
            out, mirror_maps = model(images), None
        terms = self.classification_terms(out.logits.float(), labels)
        loss = sum(terms.values())
        if self.full_rac_weight > 0:
            if mirror_maps is None:  # switched off for now (deferred start): keep the logged terms stable
                terms[self.attention_term] = torch.zeros((), device=loss.device)
            else:
                attention = rebalanced_attention_consistency(out.attention_maps.float(), mirror_maps.float(),
                                                             self.attention_class_weights)
                terms[self.attention_term] = attention
                loss = loss + self.rac_weight * attention
        terms["loss"] = loss
        return terms

    def settings(self) -> dict:
        return {"rac_weight": self.full_rac_weight} if self.full_rac_weight > 0 else {}

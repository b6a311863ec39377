"""EAC, erasing attention consistency (Zhang et al., "Learn From All: Erasing Attention
Consistency for Noisy Label Facial Expression Recognition", ECCV 2022; official code
zyh-uaiaaaa/Erasing-Attention-Consistency, src/main.py, src/loss.py, src/model.py).

    L = CE(z(x), y) + lambda * mean_{b,k,h,w} (M(x) - flip(M(flip x)))^2

x is the randomly erased image; M are the class activation maps of every class with the head
weight detached (no bias); the MSE is averaged over classes (``F.mse_loss`` over all elements
in ``ACLoss``), i.e. MEK's RAC with uniform class weights 1/K. lambda = 5 (``--lam``).

Erasing and flipping: in the official clean-label run the flipped view is the mirror of the
already erased tensor (``RandomHorizontalFlip(p=1)`` after the transform), which is what this
step does (the mirror is taken inside the step). The official noisy-label branch instead
transforms the flipped raw image separately (an independent erasing box); that variant is
not reproduced here and the difference is noted in docs/methods.md.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from losses.class_prior import ClassPrior

from .base import positive
from .logit_loss import LogitLossMethod


class EAC(LogitLossMethod):
    name = "eac"
    paper = "Zhang et al., ECCV 2022"
    attention_term = "eac"
    attention_flag = "--eac-lambda"

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--eac-lambda", type=float, default=5.0,
                           help="weight of the erasing attention consistency term (official --lam 5)")

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        positive(args, "--eac-lambda")

    def attention_weight(self, args: argparse.Namespace) -> float:
        return args.eac_lambda

    def make_attention_weights(self, args: argparse.Namespace, prior: ClassPrior) -> torch.Tensor:
        return torch.full((prior.num_classes,), 1.0 / prior.num_classes)

    def classification_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(logits, labels)}

    def settings(self) -> dict:
        return {"eac_lambda": self.full_rac_weight}

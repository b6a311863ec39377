"""Balanced softmax (Ren et al., NeurIPS 2020): cross-entropy on z + log n_k, plain argmax z at
evaluation (``losses/balanced_softmax.py``); optionally with MEK's attention term."""
from __future__ import annotations

import argparse

import torch

from losses.balanced_softmax import balanced_softmax_loss
from losses.class_prior import ClassPrior

from .base import TrainSchedule
from .logit_loss import LogitLossMethod


class BalancedSoftmax(LogitLossMethod):
    name = "balanced-softmax"
    paper = "Ren et al., NeurIPS 2020"

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        self.register_buffer("log_counts", torch.tensor(prior.counts, dtype=torch.float32).log())

    def classification_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"balanced_softmax": balanced_softmax_loss(logits, labels, self.log_counts)}

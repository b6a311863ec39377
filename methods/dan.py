"""DAN, Distract your Attention (Wen et al., "Distract Your Attention: Multi-head Cross Attention
Network for Facial Expression Recognition", Biomimetics 2023 / arXiv 2109.07270; official code
yaoing/DAN: ``networks/dan.py`` (the model), ``rafdb.py`` and ``affectnet.py`` (losses, recipes)).

The ``dan`` head (``models/heads.py`` ``DANHead``): 4 attention heads, each spatial then channel
attention on the backbone's feature map F, fused by a log-softmax over the heads and a sum, then
fc + BN1d to the logits. The loss (official weights 1 and 1):

    L = CE(z, y) + L_af(GAP(F), y; centres) + L_pt(heads)

- L_af, affinity loss (``losses/affinity.py``): squared distance of the pooled backbone feature to
  its class centre over the centres' total variance. The centres (K, C) are this method's
  parameters, ONE PER CLASS OF THE DATASET (the official RAF-DB script builds 8 for 7 classes),
  initialised N(0, 1) as officially, created when the optimiser is built (C is the backbone's
  width) and optimised with the network (``param_groups`` adds them; the official optimiser is
  ``model.parameters() + criterion_af.parameters()``, all weight-decayed). Under DDP their gradient
  is averaged over the processes by a hook (they are outside the DDP-wrapped model), so they stay
  equal only if they start equal: they are drawn from a generator of their own seeded with
  ``--seed``, not from the global one, which train.py seeds with seed + rank.
- L_pt, partition loss (``losses/partition.py``): log(1 + n / mean variance across the heads).

Official recipes: RAF-DB, SGD (plain momentum 0.9) lr 0.1, weight decay 1e-4 on everything,
x0.1 every 10 epochs, 40 epochs, batch 256 (``sh train_exp.sh dan``); AffectNet, Adam lr 1e-4, no
weight decay, x0.6 per epoch, 40 epochs, batch 256, class-balanced sampling
(``sh train_exp.sh dan-affectnet``; see docs/methods.md for what differs here).

BatchNorm1d layers in the head need batches of at least 2 in training: batch 1 is refused. The
head has no class attention maps, so ``--rac-weight`` is refused.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from losses.affinity import affinity_loss
from losses.class_prior import ClassPrior
from losses.partition import partition_loss

from .base import Method, MethodArgumentError, TrainSchedule, positive
from .rul import (add_rac_refusal_arg, forward_own_head, own_head, refuse_rac, refuse_small_batch, unwrap_model,
                  weight_decay_groups)


def _average_over_processes(grad: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        grad = grad / torch.distributed.get_world_size()
    return grad


class DAN(Method):
    name = "dan"
    paper = "Wen et al., Biomimetics 2023"
    head = "dan"
    allowed_heads = ("dan",)

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--affinity-weight", type=float, default=1.0, help="weight of the affinity loss (official 1)")
        group.add_argument("--partition-weight", type=float, default=1.0, help="weight of the partition loss (official 1)")
        add_rac_refusal_arg(group, "dan")

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        positive(args, "--affinity-weight")
        positive(args, "--partition-weight")
        refuse_small_batch(args, "dan", "its head's BatchNorm1d layers normalise over the batch")
        refuse_rac(args, "dan", "dan")

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        self.affinity_weight = float(args.affinity_weight)
        self.partition_weight = float(args.partition_weight)
        self.backbone = getattr(args, "backbone", "?")
        self.decay_all = getattr(args, "weight_decay_scope", "filtered") == "all"
        self.centers: nn.Parameter | None = None  # (K, C): C is known once the model is
        self.seed = int(getattr(args, "seed", 0))  # the run's seed, the same on every rank

    def ensure_centers(self, feature_dim: int, device: torch.device | str) -> nn.Parameter:
        """Create the class centres N(0, 1), one per class of the dataset (no-op once they exist)."""
        if self.centers is None:
            # Every rank draws the same centres (the global generator differs per rank).
            generator = torch.Generator().manual_seed(self.seed)
            centers = torch.randn(self.prior.num_classes, feature_dim, generator=generator)
            self.centers = nn.Parameter(centers.to(device))
            self.centers.register_hook(_average_over_processes)
        elif self.centers.shape[1] != feature_dim:
            raise ValueError(f"DAN's class centres have {self.centers.shape[1]} dimensions, the backbone gives {feature_dim}")
        return self.centers

    def _head_centers(self, model: nn.Module) -> nn.Parameter:
        from models.heads import DANHead

        head = own_head(model, self.name, DANHead)
        return self.ensure_centers(head.fc.in_features, head.fc.weight.device)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The network's parameters, plus the class centres (decayed, as in the official optimiser)."""
        centers = self._head_centers(model)
        groups = weight_decay_groups(list(unwrap_model(model).named_parameters()), lr, weight_decay, self.decay_all)
        return groups + [{"params": [centers], "lr": lr, "weight_decay": weight_decay}]

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[0] < 2:
            raise MethodArgumentError(f"--method dan's head normalises over the batch (BatchNorm1d); got a batch of "
                                      f"{images.shape[0]}")
        centers = self._head_centers(model)
        out = forward_own_head(model, images, self.name, "dan", self.backbone)
        ce = F.cross_entropy(out.logits.float(), labels)
        affinity = affinity_loss(out.features.float(), labels, centers.float())
        partition = partition_loss(out.extra("head_features").float())
        loss = ce + self.affinity_weight * affinity + self.partition_weight * partition
        return {"ce": ce, "affinity": affinity, "partition": partition, "loss": loss}

    # The centres are training state outside the model: carried through checkpoints.
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {} if self.centers is None else {"centers": self.centers.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any], *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        saved = state.get("centers")
        if saved is None:
            return
        if self.centers is None:
            self.ensure_centers(saved.shape[1], "cpu")
        with torch.no_grad():
            self.centers.copy_(saved.to(self.centers.device))

    def settings(self) -> dict:
        return {"affinity_weight": self.affinity_weight, "partition_weight": self.partition_weight,
                "num_centers": self.prior.num_classes}

    def describe(self) -> list[str]:
        return [f"method dan ({self.paper}): CE + {self.affinity_weight:g} x affinity ({self.prior.num_classes} class "
                f"centres, one per class) + {self.partition_weight:g} x partition over the dan head's attention heads"]

"""RUL, relative uncertainty learning (Zhang et al., "Relative Uncertainty Learning for Facial
Expression Recognition", NeurIPS 2021; official code zyh-uaiaaaa/Relative-Uncertainty-Learning:
``src/rul.py`` (the two branches), ``src/utils.py`` (mixing and the add-up loss), ``src/main.py``
(optimiser and schedule)).

The ``rul`` head (``models/heads.py`` ``RULHead``) gives each sample a feature mu and an
uncertainty u = mean exp(log-variance) from two parallel branches on the final feature map. In
training each sample is mixed with a random partner j of the same batch, weighted by their
relative uncertainties, and the mix is classified against both labels
(``losses/uncertainty_mixing.py``):

    mixed_i = u_i/(u_i+u_j) mu_i + u_j/(u_i+u_j) mu_j          (j = perm(i), the partner of i)
    L       = 1/2 CE(fc(mixed_i), y_i) + 1/2 CE(fc(mixed_i), y_j)   (each CE averaged over the batch)

One mix per sample, scored against its own label and its partner's (official ``src/utils.py``
``mixup_criterion``).

Evaluation classifies mu alone (fc(mu)): the head's eval-mode logits. The partner permutation comes
from torch's global generator (``torch.randperm``), which seeding and exact resume cover.

Official settings (``src/main.py``): Adam, lr 2e-4 for the network and 10x (2e-3) for the
classifier fc (``--rul-classifier-lr-mult``, through ``param_groups``), weight decay 1e-4 on every
parameter (``--weight-decay-scope all``), x0.9 per epoch, batch 64, 60 epochs, MS-Celeb ResNet-18 at
224 px; the recipe is ``sh train_exp.sh rul``.

``--rul-class-weights inverse`` (not in RUL) makes both cross-entropies class-weighted with
a_k = N/(K n_k); with ``--backbone resnet18_cbam`` it is the CBAM + uncertainty hybrid
(``sh train_exp.sh hybrid``).

Batches of one cannot be mixed (a sample's only partner is itself, which is plain
cross-entropy): refused. The head has no class attention maps, so ``--rac-weight`` is refused.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from losses.class_prior import ClassPrior
from losses.uncertainty_mixing import add_up_loss, random_partner, relative_uncertainty_mix
from models import ModelOutput

from .base import Method, MethodArgumentError, TrainSchedule, positive


# ---- shared by the methods that bring their own head (rul, dan) ------------------------------------

def unwrap_model(model: nn.Module) -> nn.Module:
    """The FERModel inside DDP (``.module``) and/or torch.compile (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def own_head(model: nn.Module, method: str, head_type: type) -> nn.Module:
    head = getattr(unwrap_model(model), "head", None)
    if not isinstance(head, head_type):
        raise MethodArgumentError(f"--method {method} needs its own head ({head_type.__name__}), "
                                  f"the model has {type(head).__name__}")
    return head


def forward_own_head(model: nn.Module, images: torch.Tensor, method: str, head: str, backbone: str) -> ModelOutput:
    """``model(images)``; a backbone without a spatial feature map is refused naming method, head and backbone."""
    try:
        return model(images)
    except ValueError as exc:
        if "spatial feature map" not in str(exc):
            raise
        raise MethodArgumentError(f"--method {method} (--head {head}) cannot use --backbone {backbone}: "
                                  f"it gives no spatial feature map ({exc})") from None


def refuse_small_batch(args: argparse.Namespace, method: str, why: str) -> None:
    batch = getattr(args, "batch_size", None)
    if batch is not None and batch < 2:
        raise MethodArgumentError(f"--method {method} needs --batch-size >= 2 ({why}), got {batch}")


def refuse_rac(args: argparse.Namespace, method: str, head: str) -> None:
    if getattr(args, "rac_weight", 0.0):
        raise MethodArgumentError(
            f"--rac-weight needs class attention maps, and --method {method}'s head ({head}) gives none "
            "(its logits are not a spatial mean of per-class maps); use --rac-weight 0, or a method on the "
            "cam / norm-linear head (mek, ce, eac, focal, ldam, ...)")


def add_rac_refusal_arg(group: argparse._ArgumentGroup, method: str) -> None:
    group.add_argument("--rac-weight", type=float, default=0.0,
                       help=f"not supported by {method} (its head has no class attention maps): must be 0")


def weight_decay_groups(named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float,
                        decay_all: bool) -> list[dict[str, Any]]:
    """Parameter groups at ``lr``: with ``decay_all`` one group decayed; otherwise timm's rule (no decay
    on biases and 1-D parameters such as norms) as two groups. Empty groups are left out."""
    named = [(n, p) for n, p in named if p.requires_grad]
    if decay_all:
        groups = [{"params": [p for _, p in named], "lr": lr, "weight_decay": weight_decay}]
    else:
        no_decay = [p for n, p in named if p.ndim <= 1 or n.endswith(".bias")]
        decay = [p for n, p in named if not (p.ndim <= 1 or n.endswith(".bias"))]
        groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
                  {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


# ---- RUL ----------------------------------------------------------------------------------------------

class RUL(Method):
    name = "rul"
    paper = "Zhang et al., NeurIPS 2021"
    head = "rul"
    allowed_heads = ("rul",)

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--rul-classifier-lr-mult", type=float, default=10.0,
                           help="learning rate of the classifier on the mixed feature, as a multiple of --lr "
                                "(official: 10, 2e-3 vs 2e-4)")
        group.add_argument("--rul-class-weights", choices=["none", "inverse"], default="none",
                           help="class-weighted cross-entropy in the add-up loss: inverse = N/(K n_k) "
                                "(not in RUL; the CBAM hybrid recipe uses it)")
        add_rac_refusal_arg(group, "rul")

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        positive(args, "--rul-classifier-lr-mult", allow_zero=False)
        refuse_small_batch(args, "rul", "it mixes each sample with another of its batch")
        refuse_rac(args, "rul", "rul")

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        self.classifier_lr_mult = float(args.rul_classifier_lr_mult)
        self.class_weight_mode = args.rul_class_weights
        self.backbone = getattr(args, "backbone", "?")
        self.decay_all = getattr(args, "weight_decay_scope", "filtered") == "all"
        weights = None
        if self.class_weight_mode == "inverse":
            counts = torch.tensor(prior.counts, dtype=torch.float64)
            weights = (counts.sum() / (prior.num_classes * counts)).float()
        self.register_buffer("class_weights", weights)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The network at ``lr``, the classifier fc at ``--rul-classifier-lr-mult`` x ``lr`` (official)."""
        from models.heads import RULHead

        net = unwrap_model(model)
        classifier = {id(p) for p in own_head(net, self.name, RULHead).classifier.parameters()}
        named = list(net.named_parameters())
        return (weight_decay_groups([(n, p) for n, p in named if id(p) not in classifier], lr, weight_decay,
                                    self.decay_all)
                + weight_decay_groups([(n, p) for n, p in named if id(p) in classifier],
                                      lr * self.classifier_lr_mult, weight_decay, self.decay_all))

    def training_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        from models.heads import RULHead

        if images.shape[0] < 2:
            raise MethodArgumentError(f"--method rul mixes each sample with another of its batch; got a batch of "
                                      f"{images.shape[0]}")
        head = own_head(model, self.name, RULHead)
        out = forward_own_head(model, images, self.name, "rul", self.backbone)
        partner = random_partner(images.shape[0], images.device)
        mixed, _, _ = relative_uncertainty_mix(out.features.float(), out.extra("uncertainty").float(), partner)
        logits = head.classifier(mixed).float()
        loss, ce_a, ce_b = add_up_loss(logits, labels, labels[partner], self.class_weights)
        return {"ce_own": ce_a, "ce_partner": ce_b, "loss": loss}

    def settings(self) -> dict:
        return {"classifier_lr_mult": self.classifier_lr_mult, "class_weights": self.class_weight_mode}

    def describe(self) -> list[str]:
        lines = [f"method rul ({self.paper}): relative-uncertainty mixing of mu with a random partner, add-up loss "
                 f"1/2 CE(y) + 1/2 CE(y_partner); classifier lr x{self.classifier_lr_mult:g}; evaluation fc(mu)"]
        if self.class_weights is not None:
            lines.append("class-weighted cross-entropy N/(K n_k): " + ", ".join(
                f"{c}={w:.4f}" for c, w in zip(self.prior.classes, self.class_weights.tolist())))
        return lines

"""MEK (Zhang et al., "Leave No Stone Unturned: Mine Extra Knowledge for Imbalanced Facial
Expression Recognition", NeurIPS 2023).

    L = RSL(z(x), y; eps) + lambda * RAC(M(x), M(flip x))

RSL: re-balanced smooth labels (``losses/rebalanced_smooth_labels.py``); RAC: re-balanced
attention consistency (``losses/rebalanced_attention_consistency.py``); both weighted by
w_k = N / (10 n_k). eps 0.3 and lambda 0.1 are the paper's. eps = 0 and lambda = 0 is plain
cross-entropy, so every ablation row is one command.

Deferred start (not in the paper): before step ``--mek-start-step`` both terms are off (plain
cross-entropy, no mirrored pass), then eps and lambda ramp linearly to their values over
``--mek-ramp-steps``.
"""
from __future__ import annotations

import argparse

import torch

from losses.class_prior import ClassPrior
from losses.rebalanced_smooth_labels import RebalancedSmoothLabelLoss, target_mass_per_class

from .base import TrainSchedule, in_range, positive
from .logit_loss import LogitLossMethod


class MEK(LogitLossMethod):
    name = "mek"
    paper = "Zhang et al., NeurIPS 2023"
    default_rac_weight = 0.1

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--rsl-eps", type=float, default=0.3, help="re-balanced smooth labels epsilon; 0 = cross-entropy")
        cls.add_attention_args(group)
        group.add_argument("--class-weight-power", type=float, default=1.0,
                           help="temper the class weights: w_k = (N / (10 n_k)) ** power, power in [0, 1]; 1 = paper")
        group.add_argument("--rsl-class-weight-power", type=float, default=None,
                           help="the power for RSL's weights only (default: --class-weight-power)")
        group.add_argument("--mek-start-step", type=int, default=0,
                           help="plain cross-entropy before this step, then RSL and RAC (deferred start; 0 = paper)")
        group.add_argument("--mek-start-epoch", type=int, default=None, help="the same in epochs (overrides --mek-start-step)")
        group.add_argument("--mek-ramp-steps", type=int, default=0,
                           help="after the start, ramp eps and lambda linearly to their values over N steps (0 = at once)")

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        in_range(args, "--rsl-eps", 0.0, 1.0, high_open=True)
        positive(args, "--rac-weight")
        for flag in ("--class-weight-power", "--rsl-class-weight-power", "--rac-class-weight-power"):
            in_range(args, flag, 0.0, 1.0)
        for flag in ("--mek-start-step", "--mek-start-epoch", "--mek-ramp-steps"):
            positive(args, flag)

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        self.rsl_power = args.class_weight_power if args.rsl_class_weight_power is None else args.rsl_class_weight_power
        self.rac_power = args.class_weight_power if args.rac_class_weight_power is None else args.rac_class_weight_power
        super().__init__(args, prior, schedule)
        self.rsl = RebalancedSmoothLabelLoss(prior.mek_weights(self.rsl_power), eps=args.rsl_eps)
        self.full_rsl_eps = float(args.rsl_eps)
        self.start_step = (args.mek_start_step if args.mek_start_epoch is None
                           else args.mek_start_epoch * schedule.steps_per_epoch)
        self.ramp_steps = args.mek_ramp_steps
        self.set_step(0)

    def make_attention_weights(self, args: argparse.Namespace, prior: ClassPrior) -> torch.Tensor:
        return prior.mek_weights(self.rac_power)

    def set_step(self, step: int) -> None:
        """Scale eps and lambda for the deferred start (a no-op with the paper's defaults)."""
        if step < self.start_step:
            factor = 0.0
        elif self.ramp_steps > 0:
            factor = min(1.0, (step - self.start_step + 1) / self.ramp_steps)
        else:
            factor = 1.0
        self.rsl.eps = self.full_rsl_eps * factor
        self.rac_weight = self.full_rac_weight * factor

    def classification_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"rsl": self.rsl(logits, labels)}

    def settings(self) -> dict:
        return {"rsl_eps": self.full_rsl_eps, "rac_weight": self.full_rac_weight, "rsl_class_weight_power": self.rsl_power,
                "rac_class_weight_power": self.rac_power, "start_step": self.start_step, "ramp_steps": self.ramp_steps}

    def describe(self) -> list[str]:
        prior = self.prior
        lines = [f"method mek ({self.paper}): RSL eps={self.full_rsl_eps} + {self.full_rac_weight} x RAC "
                 f"(from step {self.start_step}" + (f", ramp {self.ramp_steps}" if self.ramp_steps else "") + ")"]
        for term, power, weights in ([("", self.rsl_power, self.rsl.class_weights)] if self.rsl_power == self.rac_power else
                                     [("RSL ", self.rsl_power, self.rsl.class_weights),
                                      ("RAC ", self.rac_power, self.attention_class_weights)]):
            formula = "N/(10 n_k)" if power == 1 else f"(N/(10 n_k))^{power:g}"
            lines.append(f"{term}class weights {formula}: " +
                         ", ".join(f"{c}={w:.4f}" for c, w in zip(prior.classes, weights.tolist())))
        mass = target_mass_per_class(list(prior.counts), self.rsl.class_weights, self.full_rsl_eps)
        lines.append("RSL target mass vs share of images: " + ", ".join(
            f"{c}={m * 100:.1f}%/{n / prior.total * 100:.1f}%" for c, m, n in zip(prior.classes, mass, prior.counts)))
        top = max(range(len(mass)), key=mass.__getitem__)
        if self.full_rsl_eps > 0 and top != max(range(len(prior.counts)), key=prior.counts.__getitem__):
            lines.append(
                f"warning: RSL gives {prior.classes[top]} the most target mass ({mass[top] * 100:.1f}%) although it is "
                f"{prior.counts[top] / prior.total * 100:.1f}% of the images; the head may over-predict it "
                "(consider --class-weight-power 0.5, --rsl-class-weight-power 0.5 or a smaller --rsl-eps; "
                "see docs/results.md, FER2013)")
        return lines

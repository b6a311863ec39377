"""Face2Exp (Zeng et al., "Face2Exp: Combating Data Biases for Facial Expression Recognition",
CVPR 2022): a teacher ("base network") and a student ("adaptation network") trained with meta
pseudo-labels on unlabelled faces, then the student fine-tuned on the labelled data.

Per step, in the order of the official ``src/main.py`` (``train_loop``), with a labelled batch
(x, y) of B images and an unlabelled batch of mu*B images in a weak view u_w and a strong one u_s
(``data/unlabeled.py``):

1. teacher forward on [x, u_w, u_s] (one pass):
       L_T,l = CE(z_T(x), y)
       q = softmax(z_T(u_w) / T) (no gradient),  y_hat = argmax q
       L_T,u = UDA consistency of z_T(u_s) with q, masked by max q >= --threshold when given
       L_T,uda = L_T,l + lambda_u * min(1, (step + 1) / uda_steps) * L_T,u
2. student forward on [x, u_s] (one pass): L_S,old = CE(z_S(x), y) (a number);
   L_S = CE(z_S(u_s), y_hat); the student's backward and optimiser step;
3. student forward on x (no gradient, training mode, as the official code): L_S,new;
   L_T,mpl = (L_S,old - L_S,new) * CE(z_T(u_s), argmax z_T(u_s))   (``losses/meta_pseudo_label.py``)
4. the teacher's backward of L_T,uda + L_T,mpl and its optimiser step.

Then ``--finetune-epochs`` epochs of the student alone on the labelled data (plain CE, SGD at
``--finetune-lr``, constant, as the official ``finetune``): after the ``--steps``/``--epochs``
budget, as officially, or inside it with ``--finetune-within-budget`` (the MPL stage gets the
rest), so that the run has the same budget as a one-stage method in ``bench/compare.py``. The
student is the run's main model (``best.pth``/``last.pth``'s ``model``, what test.py evaluates);
the teacher is saved beside it (``test.py --network teacher``). Both are evaluated at every
evaluation (``teacher_*`` keys in metrics.jsonl). ``--balanced-sampler`` gives the teacher
class-balanced labelled batches, the paper's "base network learns on class-balanced FER data".

Defaults are the official parser's: mu 7, lambda_u 1, uda_steps 1, T 1, RandAugment (10, 10)
when --randaug is not given, label smoothing 0, teacher lr = student lr, fine-tuning 125 epochs
at lr 1e-5, momentum 0, no weight decay. Where the official code differs from the paper or
cannot run, this one does what the paper describes:
- the confidence mask is computed there but never applied (the teacher trains on the unmasked
  term); here ``--threshold`` applies it, and no threshold (the default) gives the official
  unmasked term (its parser default 0.95 only ever reached a logged number);
- the final fine-tuning reloads the student that scored best *on the test set*; here the last
  student is fine-tuned (no selection on test data);
- ``iter.next()`` (removed from PyTorch's loader iterators) and bare ``except`` cycling: here
  both streams are cycled explicitly and resumable;
- the unlabelled loader there must yield labels (``unlabeled_targets``, for a logged accuracy);
  here it needs none;
- fine-tuning batches have the labelled --batch-size (official: a separate 32); EMA of the
  student (official default off) and ``--student-wait-steps`` (default 0) are not implemented.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from losses.class_prior import ClassPrior
from losses.meta_pseudo_label import meta_pseudo_label_loss
from losses.uda_consistency import confidence_mask, soft_pseudo_labels, uda_consistency

from .base import Method, MethodArgumentError, TrainSchedule, in_range, positive


def label_smoothed_ce(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The official ``SmoothCrossEntropy``: target (1 - a) one-hot + a / K; plain CE for a = 0."""
    if smoothing == 0:
        return F.cross_entropy(logits, labels)
    target = F.one_hot(labels, logits.shape[-1]).float() * (1 - smoothing) + smoothing / logits.shape[-1]
    return -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class Face2Exp(Method):
    name = "face2exp"
    paper = "Zeng et al., CVPR 2022"
    head = "cam"  # average pooling + linear layer: the official ResNet-50 fc on pooled features

    @classmethod
    def add_args(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--unlabeled-root", default=None,
                           help="unlabelled faces: a directory tree of images (class folders ignored) or a list file")
        group.add_argument("--unlabeled-rest", action="store_true",
                           help="unlabelled faces: the training images --labelled-fraction leaves without labels "
                                "(their labels are never read), instead of --unlabeled-root")
        group.add_argument("--mu", type=int, default=7, help="unlabelled batch = mu x --batch-size")
        group.add_argument("--lambda-u", type=float, default=1.0, help="weight of the teacher's UDA consistency")
        group.add_argument("--uda-steps", type=float, default=1.0, help="lambda_u ramps up linearly over N steps")
        group.add_argument("--temperature", type=float, default=1.0, help="softening of the weak-view soft labels")
        group.add_argument("--threshold", type=float, default=None,
                           help="confidence mask of the UDA term, in [0, 1] (default: none, the official code's "
                                "effective behaviour)")
        group.add_argument("--label-smoothing", type=float, default=0.0,
                           help="label smoothing of the teacher's labelled CE, the student's pseudo-label CE and "
                                "fine-tuning")
        group.add_argument("--randaug", type=int, nargs=2, default=[10, 10], metavar=("N", "M"),
                           help="strong view: N RandAugment ops at magnitude M (official default 10 10; README 2 16)")
        group.add_argument("--teacher-backbone", default=None, help="the teacher's backbone (default: --backbone)")
        group.add_argument("--teacher-lr", type=float, default=None, help="the teacher's learning rate (default: --lr)")
        group.add_argument("--finetune-epochs", type=int, default=125,
                           help="epochs of fine-tuning the student on the labelled data after the MPL stage")
        group.add_argument("--finetune-within-budget", action="store_true",
                           help="count the fine-tuning epochs inside --steps/--epochs (the MPL stage gets the rest), "
                                "so the whole run has the budget of a one-stage method (bench/compare.py); "
                                "default: after it, as officially")
        group.add_argument("--finetune-lr", type=float, default=1e-5)
        group.add_argument("--finetune-momentum", type=float, default=0.0)
        group.add_argument("--finetune-weight-decay", type=float, default=0.0)

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        rest = getattr(args, "unlabeled_rest", False)
        if (getattr(args, "unlabeled_root", None) is None) == (not rest):
            raise MethodArgumentError("--method face2exp needs one unlabelled set: --unlabeled-root (a directory of face "
                                      "images or a list file) or --unlabeled-rest")
        if rest and getattr(args, "labelled_fraction", None) is None:
            raise MethodArgumentError("--unlabeled-rest streams the images --labelled-fraction leaves unlabelled; "
                                      "give --labelled-fraction too")
        if args.mu < 1:
            raise MethodArgumentError(f"--mu must be >= 1 (unlabelled batch = mu x --batch-size), got {args.mu}")
        in_range(args, "--threshold", 0.0, 1.0)
        in_range(args, "--label-smoothing", 0.0, 1.0, high_open=True)
        positive(args, "--temperature", allow_zero=False)
        positive(args, "--uda-steps", allow_zero=False)
        for flag in ("--lambda-u", "--finetune-epochs", "--finetune-lr", "--finetune-momentum",
                     "--finetune-weight-decay", "--teacher-lr"):
            positive(args, flag)
        if min(args.randaug) < 1:
            raise MethodArgumentError(f"--randaug needs N >= 1 and M >= 1, got {args.randaug[0]} {args.randaug[1]}")

    @classmethod
    def split_budget(cls, args: argparse.Namespace, budget_steps: int, steps_per_epoch: int) -> tuple[int, int]:
        finetune = args.finetune_epochs * steps_per_epoch
        if not args.finetune_within_budget:
            return budget_steps, finetune  # official: --epochs of MPL, then the fine-tuning epochs
        if finetune >= budget_steps:
            raise MethodArgumentError(f"--finetune-within-budget: --finetune-epochs {args.finetune_epochs} "
                                      f"({finetune} steps) leaves no MPL steps in a budget of {budget_steps}")
        return budget_steps - finetune, finetune

    def __init__(self, args: argparse.Namespace, prior: ClassPrior, schedule: TrainSchedule) -> None:
        super().__init__(args, prior, schedule)
        self.args = args
        self.mu, self.lambda_u, self.uda_steps = args.mu, args.lambda_u, args.uda_steps
        self.temperature, self.threshold, self.smoothing = args.temperature, args.threshold, args.label_smoothing
        self.finetune_epochs = args.finetune_epochs
        self.train_steps = schedule.total_steps - args.finetune_epochs * schedule.steps_per_epoch
        self.step = 0
        self.teacher: nn.Module | None = None
        self._teacher_run: nn.Module | None = None
        self._teacher_config: dict = {}
        self.stream = None

    # ---- what the method owns, built once the run is -----------------------------------------
    def setup(self, context: Any) -> None:
        from data.loaders import unlabelled_rest
        from data.unlabeled import TwoViews, UnlabeledStream, unlabeled_dataset
        from utils.build import build_network, build_run_optimizer, model_config

        args, aug = context.args, context.augment
        self.train_steps = context.train_steps
        self.device = context.device
        self.channels_last = bool(getattr(args, "channels_last", False))
        backbone, head = args.teacher_backbone or args.backbone, args.head or self.head
        # The teacher: built, wrapped (DDP / compile) and optimised exactly as the main model is.
        teacher, self._teacher_run, _ = build_network(args, backbone, head, len(context.classes), context.device,
                                                      context.dist_info)
        self._teacher_config = model_config(args, backbone, head, context.classes)
        self.teacher = teacher  # a submodule: moves with the method; saved through networks()
        teacher_lr = args.teacher_lr if args.teacher_lr is not None else args.lr
        self.teacher_optimizer, self.teacher_scheduler = build_run_optimizer(
            args, teacher, teacher_lr, context.train_steps, context.steps_per_epoch)
        fp16 = getattr(args, "amp", "off") == "fp16"
        self.teacher_scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.finetune_scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.finetune_optimizer = torch.optim.SGD(context.model.parameters(), lr=args.finetune_lr,
                                                  momentum=args.finetune_momentum,
                                                  weight_decay=args.finetune_weight_decay)
        views = TwoViews(aug.img_size, aug.mean, aug.std, tuple(args.randaug), aug.interpolation)
        rest = unlabelled_rest(args) if getattr(args, "unlabeled_rest", False) else None
        data = unlabeled_dataset(args.unlabeled_root, views, skip_bad_images=getattr(args, "skip_bad_images", False),
                                 paths=rest)
        if getattr(args, "cache_images", False):
            data.cache_images()
        info = context.dist_info
        self.stream = UnlabeledStream(data, args.batch_size * self.mu, args.seed, info.rank, info.world_size,
                                      workers=args.workers, pin_memory=context.device.type == "cuda")

    def networks(self) -> dict[str, tuple[nn.Module, dict]]:
        return {"teacher": (self.teacher, self._teacher_config)} if self.teacher is not None else {}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        if self.teacher is None:
            return {}
        return {"teacher_optimizer": self.teacher_optimizer.state_dict(),
                "teacher_scaler": self.teacher_scaler.state_dict() if self.teacher_scaler else None,
                "finetune_optimizer": self.finetune_optimizer.state_dict(),
                "finetune_scaler": self.finetune_scaler.state_dict() if self.finetune_scaler else None,
                "unlabeled_stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any], *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        from utils.optim import load_optimizer_state

        load_optimizer_state(self.teacher_optimizer, state["teacher_optimizer"])
        self.finetune_optimizer.load_state_dict(state["finetune_optimizer"])
        for scaler, key in ((self.teacher_scaler, "teacher_scaler"), (self.finetune_scaler, "finetune_scaler")):
            if scaler is not None and state.get(key):
                scaler.load_state_dict(state[key])
        self.stream.load_state_dict(state["unlabeled_stream"])

    # ---- training ------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        self.step = step
        if self.teacher is not None and step < self.train_steps:
            self.teacher_scheduler.step_update(step)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)

    def train_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scaler: Any, update: Any) -> dict[str, torch.Tensor] | None:
        """The MPL stage (both networks, each through the engine's stepper), then fine-tuning."""
        if self.step >= self.train_steps:
            return self.finetune_step(model, images, labels, update)
        weak, strong = (self._to_device(v) for v in self.stream.next())
        return self.mpl_step(model, self._teacher_run, images, labels, weak, strong, optimizer, scaler, update)

    def mpl_step(self, student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 weak: torch.Tensor, strong: torch.Tensor, student_optimizer: torch.optim.Optimizer,
                 student_scaler: Any, update: Any) -> dict[str, torch.Tensor] | None:
        """Steps 1-4 of the module docstring; updates both networks. None if skipped as non-finite."""
        teacher.train()
        student.train()
        batch = images.shape[0]
        with update.autocast():
            t_logits = teacher(torch.cat([images, weak, strong])).logits.float()
            t_labeled = t_logits[:batch]
            t_weak, t_strong = t_logits[batch:].chunk(2)
            t_loss_l = label_smoothed_ce(t_labeled, labels, self.smoothing)
            soft = soft_pseudo_labels(t_weak, self.temperature)
            hard_pseudo = soft.argmax(dim=-1)
            mask = confidence_mask(soft, self.threshold)
            t_loss_u = uda_consistency(soft, t_strong, mask)
            weight_u = self.lambda_u * min(1.0, (self.step + 1) / self.uda_steps)
            t_loss_uda = t_loss_l + weight_u * t_loss_u

            s_logits = student(torch.cat([images, strong])).logits.float()
            s_loss_l_old = F.cross_entropy(s_logits[:batch].detach(), labels)
            s_loss = label_smoothed_ce(s_logits[batch:], hard_pseudo, self.smoothing)
        if not update.update(s_loss, {"student": s_loss}, student_optimizer, student.parameters(), student_scaler):
            return None
        with update.autocast(), torch.no_grad():
            s_loss_l_new = F.cross_entropy(student(images).logits.float(), labels)
        with update.autocast():
            t_loss_mpl = meta_pseudo_label_loss(s_loss_l_old, s_loss_l_new, t_strong)
            t_loss = t_loss_uda + t_loss_mpl
        terms = {"teacher": t_loss, "teacher_labeled": t_loss_l, "teacher_uda": t_loss_u, "teacher_mpl": t_loss_mpl,
                 "student": s_loss, "mask": mask.mean()}
        if not update.update(t_loss, terms, self.teacher_optimizer, teacher.parameters(), self.teacher_scaler):
            return None
        terms = {k: v.detach() for k, v in terms.items()}
        terms["loss"] = terms["teacher"] + terms["student"]
        return terms

    def finetune_step(self, student: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      update: Any) -> dict[str, torch.Tensor] | None:
        student.train()
        with update.autocast():
            loss = label_smoothed_ce(student(images).logits.float(), labels, self.smoothing)
        terms = {"finetune": loss}
        if not update.update(loss, terms, self.finetune_optimizer, student.parameters(), self.finetune_scaler):
            return None
        return {"finetune": loss.detach(), "loss": loss.detach()}

    # ---- record --------------------------------------------------------------------------
    def settings(self) -> dict:
        a = self.args
        return {"mu": a.mu, "lambda_u": a.lambda_u, "uda_steps": a.uda_steps, "temperature": a.temperature,
                "threshold": a.threshold, "label_smoothing": a.label_smoothing, "randaug": list(a.randaug),
                "teacher_backbone": a.teacher_backbone or a.backbone, "teacher_lr": a.teacher_lr,
                "finetune_epochs": a.finetune_epochs, "finetune_lr": a.finetune_lr,
                "finetune_within_budget": a.finetune_within_budget, "mpl_steps": self.train_steps}

    def describe(self) -> list[str]:
        a = self.args
        lines = [f"method face2exp ({self.paper}): teacher {a.teacher_backbone or a.backbone} (lr "
                 f"{a.teacher_lr if a.teacher_lr is not None else a.lr}) + student {a.backbone}; "
                 f"{self.train_steps} MPL steps, then {a.finetune_epochs} fine-tuning epochs (lr {a.finetune_lr})",
                 f"  UDA: lambda_u {a.lambda_u} (ramp {a.uda_steps} steps), T {a.temperature}, "
                 f"threshold {a.threshold if a.threshold is not None else 'off'}; RandAugment {a.randaug[0]} ops at "
                 f"{a.randaug[1]}; unlabelled batch {a.mu} x {a.batch_size}"]
        if self.stream is not None:
            lines.append(f"  unlabelled: {len(self.stream.dataset)} images from {a.unlabeled_root or 'the training images without labels'} "
                         f"({self.stream.batches_per_epoch} batches per pass)")
        return lines

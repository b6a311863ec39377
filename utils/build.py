"""Building a run's networks and optimisers from its flags, the same way for the main model and
for a method's own networks (Face2Exp's teacher): plain functions, no state."""
from __future__ import annotations

import argparse

import torch
from torch import nn

from utils.checkpoint import check_model_fits, load_checkpoint
from utils.logging import error_exit
from utils.optim import build_optimizer, build_scheduler


def model_config(args: argparse.Namespace, backbone: str, head: str, classes: list[str]) -> dict:
    """What test.py and the tools rebuild a network from (a checkpoint's ``model_config``)."""
    return {"backbone": backbone, "head": head, "num_classes": len(classes), "img_size": args.img_size,
            "classes": list(classes), "norm": args.norm, "interpolation": args.interpolation,
            "align": getattr(args, "align", None)}  # the face framing (data/align.py template), None: unknown


def build_network(args: argparse.Namespace, backbone: str, head: str, num_classes: int, device: torch.device,
                  dist_info, init_checkpoint: str | None = None) -> tuple[nn.Module, nn.Module, str]:
    """(module, module wrapped for training (DDP / compile), flip-forward mode) for ``backbone``."""
    from methods.mirror import resolve_flip_forward
    from models import build_model

    model = build_model(backbone, num_classes=num_classes, img_size=args.img_size, drop_path_rate=args.drop_path,
                        head=head)
    flip_forward = resolve_flip_forward(args.flip_forward, model)
    if args.pretrained and backbone == args.backbone:
        from models.pretrained import PretrainedLoadError, load_pretrained_backbone

        try:
            report = load_pretrained_backbone(model.backbone, args.pretrained, backbone, allow_partial=args.allow_partial)
        except PretrainedLoadError as exc:
            error_exit(str(exc))
        if dist_info.is_main:
            print(report.summary(), flush=True)
        if args.reset_final_norm:
            final_norm = getattr(model.backbone, "norm", None)
            if not isinstance(final_norm, torch.nn.LayerNorm):
                error_exit(f"--reset-final-norm: backbone {args.backbone} has no final LayerNorm 'norm'")
            final_norm.reset_parameters()
    if init_checkpoint:
        init_state = load_checkpoint(init_checkpoint)
        check_model_fits(init_state["model"], model, init_checkpoint, init_state.get("model_config"))
        model.load_state_dict(init_state["model"])
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn and dist_info.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model_without_ddp = model
    if dist_info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    return model_without_ddp, model, flip_forward


def lr_scale(args: argparse.Namespace) -> float:
    """``--lr-base-batch``: learning rates are per that total batch, scaled linearly to this run's."""
    return (args.batch_size * args.world_size / args.lr_base_batch) if args.lr_base_batch else 1.0


def build_run_optimizer(args: argparse.Namespace, module: nn.Module, lr: float, steps: int, steps_per_epoch: int,
                        param_groups: list | None = None):
    """(optimiser, schedule) from the run's flags for ``module`` at ``lr`` (scaled like --lr) over ``steps``."""
    scale = lr_scale(args)
    optimizer = build_optimizer(module, args.opt, lr * scale, args.weight_decay, args.momentum, fused=args.fused_opt,
                                decay_all=args.weight_decay_scope == "all", param_groups=param_groups)
    scheduler = build_scheduler(optimizer, args.sched, steps, steps_per_epoch, args.warmup_steps,
                                args.warmup_lr * scale, args.min_lr * scale, args.decay_rate, args.decay_epochs)
    return optimizer, scheduler

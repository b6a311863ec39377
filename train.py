"""Train a facial expression classifier with any registered method (``--method``, default MEK).

    python train.py --dataset raf-db --data-root dataset/raf-basic --backbone resnet18 \
        --method mek --rsl-eps 0.3 --rac-weight 0.1 --output output/mek_r18
    python train.py --method NAME --help      # that method's flags

Single process, or one process per device under ``torchrun --nproc_per_node N train.py ...``.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import signal
import sys
import time
from pathlib import Path


def _interrupted_while_importing(signum: int, frame) -> None:  # noqa: ARG001
    print("interrupted before training started; nothing to save", file=sys.stderr, flush=True)
    # Exit at once: an exception raised inside a C extension's import (torch, numpy) turns into a
    # different ImportError with a traceback, and nothing has been written that needs unwinding.
    os._exit(130)


if __name__ == "__main__":
    # Ctrl-C, or bench/compare.py stopping an arm, while the imports below load (seconds): nothing
    # exists to save yet, so one line and exit 130 instead of a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, _interrupted_while_importing)

import torch
from torch.utils.data import DataLoader

import engine
from data import DATASETS, DEFAULT_ROOTS, DatasetError, build_dataset
from data.sampler import ResumableSampler, ShardSampler
from data.split import split_record, stratified_holdout
from data.transforms import NORMALISATIONS, AugmentConfig, build_eval_transform, build_train_transform
from losses.class_prior import ClassPrior
from methods import METHODS, TrainSchedule, add_method_args, build_method, check_foreign_flags, get_method_class
from methods.base import MethodContext
from methods.mirror import resolve_flip_forward
from models import HEADS, build_model, count_parameters
from utils.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_model_fits,
    code_version,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from utils.device import resolve_amp, resolve_device, slow_amp_warning
from utils.distributed import DistInfo, barrier, cleanup_distributed, init_distributed
from utils.logging import RunLogger, error_exit, worker_error_message
from utils.optim import build_optimizer, build_scheduler, load_optimizer_state
from utils.evaluation import BestTracker, eval_lines, eval_record, summary_lines
from utils.plot import plot_curves
from utils.stop import GracefulStop, StopRequested


def get_args_parser(method: str = "mek") -> argparse.ArgumentParser:
    """Every common flag, plus the flags of ``method`` (one argument group)."""
    p = argparse.ArgumentParser("FER training", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--method", default="mek", help=f"training method: {', '.join(METHODS)} (registry: methods/)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="raf-db",
                   help="raf-db | folder | ferplus | ferplus-private | affectnet | demo (registry: data/__init__.py)")
    g.add_argument("--data-root", default=None, help="dataset root (default: dataset/raf-basic or dataset/demo)")
    g.add_argument("--label-file", default=None, help="alternative training label list, same format as RAF-DB's")
    g.add_argument("--num-classes", type=int, default=None, help="keep the first N canonical classes (e.g. 7 drops contempt)")
    g.add_argument("--img-size", type=int, default=224)
    g.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--cache-images", action="store_true", help="decode every image once into memory")
    g.add_argument("--skip-bad-images", action="store_true", help="log and skip unreadable images instead of stopping")
    g.add_argument("--balanced-sampler", action="store_true",
                   help="class-balanced labelled batches: every class equally likely (data/balanced_sampler.py)")
    g.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this stratified, seeded fraction of the training images as a validation split: "
                        "best.pth is chosen on it, the test split is only reported (data/split.py)")
    g.add_argument("--val-split", choices=["official"], default=None,
                   help="official: the dataset's own validation split (a folder's val/ beside test/, "
                        "ferplus-private's FER2013Valid) chooses best.pth")

    g = p.add_argument_group("augmentation")
    g.add_argument("--norm", choices=sorted(NORMALISATIONS), default="imagenet", help="mean/std: ImageNet or 0.5")
    g.add_argument("--scale-min", type=float, default=1.0, help="random-resized-crop area minimum (1 = plain resize)")
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--color-jitter", type=float, default=0.0, help="(ignored by timm when --auto-augment is set)")
    g.add_argument("--auto-augment", default=None, help="timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1")
    g.add_argument("--interpolation", choices=["bilinear", "bicubic"], default="bilinear")
    g.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    g.add_argument("--remode", choices=["const", "pixel"], default="const")
    g.add_argument("--re-max-area", type=float, default=0.25, help="random erasing maximum area fraction")
    g.add_argument("--noise-prob", type=float, default=0.0,
                   help="Gaussian pixel noise with this probability (EAC's and RUL's add_g: 0.5)")
    g.add_argument("--noise-var", type=float, default=30.0, help="its variance in 0-255 pixel units (official: 30)")

    g = p.add_argument_group("model")
    g.add_argument("--backbone", default="resnet18", help="resnet18 | resnet50 | swin_t | any timm feature-map model")
    g.add_argument("--pretrained", default=None, help="local backbone weights file (see pretrained/README.md)")
    g.add_argument("--allow-partial", action="store_true", help="accept pretrained weights that cover < 95%% of the backbone")
    g.add_argument("--drop-path", type=float, default=None,
                   help="stochastic depth rate; default: the backbone's own (timm: 0.1 for Swin-T, 0 for ResNets)")
    g.add_argument("--head", default=None, choices=sorted(HEADS),
                   help="classification head (default: the method's own; registry: models/heads.py)")
    g.add_argument("--reset-final-norm", action="store_true",
                   help="after --pretrained, re-initialise the backbone's final LayerNorm, as MEK's Swin model applies "
                        "a freshly initialised LayerNorm(768) after the encoder (code/expression/models.py)")
    g.add_argument("--init-checkpoint", default=None,
                   help="start from the full model (backbone and head) of a checkpoint of this codebase; "
                        "optimiser and schedule start fresh (warm start / fine-tuning)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=32, help="per process")
    g.add_argument("--epochs", type=int, default=60)
    g.add_argument("--steps", type=int, default=None, help="total optimiser steps (overrides --epochs)")
    g.add_argument("--opt", default="adam", help="adamw | adam | sgd (timm optimiser names)")
    g.add_argument("--lr", type=float, default=2e-4)
    g.add_argument("--lr-base-batch", type=int, default=None,
                   help="if set, --lr, --warmup-lr and --min-lr are per this total batch and scaled linearly")
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--weight-decay-scope", choices=["filtered", "all"], default="filtered",
                   help="filtered: no decay on biases and norms (timm); all: every parameter, as the official "
                        "MEK and EAC optimisers do")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--fused-opt", action=argparse.BooleanOptionalAction, default=True,
                   help="torch's fused Adam/AdamW/SGD kernel (same update rule, one pass over the parameters)")
    g.add_argument("--sched", choices=["cosine", "exponential", "step", "constant"], default="exponential")
    g.add_argument("--decay-rate", type=float, default=0.9,
                   help="exponential schedule: factor per epoch; step: factor every --decay-epochs epochs")
    g.add_argument("--decay-epochs", type=int, default=10, help="step schedule: epochs between decays (DAN: 10)")
    g.add_argument("--warmup-steps", type=int, default=0)
    g.add_argument("--warmup-lr", type=float, default=0.0)
    g.add_argument("--min-lr", type=float, default=0.0, help="cosine floor")
    g.add_argument("--clip-grad", type=float, default=None, help="gradient norm clipping")

    g = p.add_argument_group("speed and scale")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = CUDA when present")
    g.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                   help="mixed precision; auto: bf16 (or fp16) on CUDA, on CPU bf16 only where a timed probe finds it "
                        "faster than fp32 here (cached per machine); fp16 needs CUDA")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (CNNs)")
    g.add_argument("--flip-forward", choices=["auto", "one-pass", "two-pass"], default="auto",
                   help="image and mirror (attention terms) in one forward pass or two; auto: one pass where it is "
                        "exact (no BatchNorm), two otherwise (the paper's procedure)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    g.add_argument("--eval-batch-size", type=int, default=None, help="default: 2x --batch-size")

    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--output", default="output/run", help="output directory")
    g.add_argument("--resume", default=None, help="checkpoint to resume, or 'auto' for OUTPUT/last.pth")
    g.add_argument("--overwrite", action="store_true", help="reuse an output directory that holds a run")
    g.add_argument("--eval-interval", type=int, default=0, help="evaluate every N steps (0 = every epoch)")
    g.add_argument("--save-interval", type=int, default=200, help="write last.pth every N steps within an epoch (0 = off)")
    g.add_argument("--skip-nonfinite", action="store_true", help="skip batches with a NaN/Inf loss (counted) instead of stopping")
    g.add_argument("--dry-run", action="store_true", help="build everything, run one batch, print a summary and exit")
    g.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    g.add_argument("--log-interval", type=int, default=50,
                   help="when output is not a terminal, one progress line every N steps instead of a bar")

    add_method_args(p, method)
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.amp == "fp16" and args.device_type != "cuda":
        error_exit("--amp fp16 needs CUDA; use --amp bf16 on CPU")
    for flag in ("batch_size", "epochs", "img_size", "decay_epochs"):
        if getattr(args, flag) <= 0:
            error_exit(f"--{flag.replace('_', '-')} must be positive")
    if args.steps is not None and args.steps <= 0:
        error_exit("--steps must be positive")
    if not 0 <= args.noise_prob <= 1:
        error_exit(f"--noise-prob must be in [0, 1], got {args.noise_prob}")
    if args.noise_var < 0:
        error_exit(f"--noise-var must be >= 0, got {args.noise_var}")
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        error_exit(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.val_fraction is not None and args.val_split:
        error_exit("--val-fraction and --val-split official are two validation splits; give one")
    if args.reset_final_norm and not args.pretrained:
        error_exit("--reset-final-norm re-initialises the final norm after --pretrained; give --pretrained too")
    get_method_class(args.method).check_args(args)


def prepare_output(args: argparse.Namespace, main: bool) -> None:
    """Refuse to clobber a run: an output dir with a checkpoint or metrics needs --resume or --overwrite."""
    out = Path(args.output)
    if args.resume == "auto":
        args.resume = str(out / "last.pth") if (out / "last.pth").is_file() else None
    holds_run = (out / "last.pth").exists() or ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0)
    if holds_run and not args.resume and not args.overwrite:
        error_exit(f"--output {out} already holds a run; pass --resume auto to continue it or --overwrite to replace it")
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            error_exit(f"--output {out} is not writable: {exc.strerror or exc}")


def augment_config(args: argparse.Namespace) -> AugmentConfig:
    mean, std = NORMALISATIONS[args.norm]
    return AugmentConfig(
        img_size=args.img_size, mean=mean, std=std, scale=(args.scale_min, 1.0), hflip=args.hflip,
        color_jitter=args.color_jitter, auto_augment=args.auto_augment, interpolation=args.interpolation,
        reprob=args.reprob, remode=args.remode, re_max_area=args.re_max_area,
        noise_prob=args.noise_prob, noise_var=args.noise_var,
    )


def build_data(args: argparse.Namespace, dist_info: DistInfo):
    aug = augment_config(args)
    DATASETS.lookup(args.dataset)  # DatasetError naming the known datasets
    root = args.data_root or DEFAULT_ROOTS.get(args.dataset)
    if root is None:
        error_exit(f"--data-root is required for --dataset {args.dataset}")
    args.data_root = root
    common = dict(num_classes=args.num_classes, skip_bad_images=args.skip_bad_images)
    train_set = build_dataset(args.dataset, root, "train", build_train_transform(aug), label_file=args.label_file, **common)
    test_set = build_dataset(args.dataset, root, "test", build_eval_transform(aug), **common)
    if test_set.classes != train_set.classes:
        error_exit(f"train and test classes differ: {train_set.classes} vs {test_set.classes}")
    train_set, val_set, args.val_record = build_val_split(args, root, train_set, build_eval_transform(aug), common)
    if args.skip_bad_images and not args.dry_run:
        train_set.bad_image_log = test_set.bad_image_log = Path(args.output) / "bad_images.tsv"
        if val_set is not None:
            val_set.bad_image_log = train_set.bad_image_log
    if args.cache_images:
        for dataset in (train_set, test_set, val_set):
            if dataset is not None:
                dataset.cache_images()

    if args.balanced_sampler:
        from data.balanced_sampler import BalancedSampler

        if args.batch_size < len(train_set.classes):
            error_exit(f"--balanced-sampler needs --batch-size >= the number of classes ({len(train_set.classes)}) "
                       f"for one balanced batch, got {args.batch_size}")
        train_sampler = BalancedSampler(train_set.targets, len(train_set.classes), args.seed, dist_info.rank,
                                        dist_info.world_size)
    else:
        train_sampler = ResumableSampler(len(train_set), args.seed, True, dist_info.rank, dist_info.world_size)
    loader_kw = dict(num_workers=args.workers, pin_memory=args.device_type == "cuda",
                     persistent_workers=False, generator=torch.Generator().manual_seed(args.seed))
    # drop_last keeps every step's batch full (and BatchNorm away from batches of one).
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=train_sampler, drop_last=True, **loader_kw)
    test_loader, val_loader = (
        DataLoader(data, batch_size=args.eval_batch_size or 2 * args.batch_size,
                   sampler=ShardSampler(len(data), dist_info.rank, dist_info.world_size), **loader_kw)
        if data is not None else None for data in (test_set, val_set))
    return train_set, test_set, train_sampler, train_loader, test_loader, val_set, val_loader


def val_origin(args: argparse.Namespace) -> str:
    return "the dataset's own" if args.val_split else f"{args.val_fraction:g} of the training images held out"


def build_val_split(args: argparse.Namespace, root: str, train_set, eval_transform, common: dict):
    """(training set, validation set or None, its config.json record or None): ``--val-fraction``
    holds out training images (never in a training batch), ``--val-split official`` reads the
    dataset's own validation split."""
    if args.val_split == "official":
        val_set = build_dataset(args.dataset, root, "val", eval_transform, **common)
        if val_set.classes != train_set.classes:
            error_exit(f"train and validation classes differ: {train_set.classes} vs {val_set.classes}")
        record = split_record("official", None, args.seed, None, [s.path for s in val_set.samples], root,
                              val_set.source)
        return train_set, val_set, record
    if args.val_fraction is None:
        return train_set, None, None
    held = stratified_holdout(train_set.targets, args.val_fraction, args.seed)
    if not held:
        error_exit(f"--val-fraction {args.val_fraction} holds out no image of {len(train_set)}; give a larger fraction")
    kept = sorted(set(range(len(train_set))) - set(held))
    val_set = train_set.subset(held, eval_transform, source=f"{train_set.source}:val")
    record = split_record("fraction", args.val_fraction, args.seed, held, [s.path for s in val_set.samples], root,
                          train_set.source)
    return train_set.subset(kept), val_set, record


def build_network(args: argparse.Namespace, backbone: str, head: str, num_classes: int, device: torch.device,
                  dist_info: DistInfo, init_checkpoint: str | None = None):
    """(module, module wrapped for training (DDP / compile), flip-forward mode) for ``backbone``."""
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


def main(args: argparse.Namespace) -> None:
    dist_info = init_distributed("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    device = resolve_device(args.device, dist_info.local_rank)
    args.device_type = device.type
    args.world_size = dist_info.world_size
    args.amp, amp_reason = resolve_amp(args.amp, device)
    if dist_info.enabled:  # every rank trains in rank 0's precision, even where a first probe differs
        choice = [args.amp, amp_reason]
        torch.distributed.broadcast_object_list(choice, src=0)
        args.amp, amp_reason = choice
    check_args(args)
    if not args.dry_run:
        prepare_output(args, dist_info.is_main)
        barrier()  # the output directory exists before any rank writes to it
    torch.manual_seed(args.seed + dist_info.rank)

    train_set, test_set, train_sampler, train_loader, test_loader, val_set, val_loader = build_data(args, dist_info)
    classes = train_set.classes
    counts = train_set.class_counts()
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        error_exit(f"{train_set.source}: class(es) {', '.join(empty)} have no training samples; "
                   "the class weights N/(10 n_k) need every class (check the dataset, or --num-classes)")
    steps_per_epoch = len(train_set) // (args.batch_size * dist_info.world_size)
    if steps_per_epoch == 0:
        error_exit(f"the training set has {len(train_set)} images, fewer than one batch of {args.batch_size * dist_info.world_size}")
    # A method may run a stage after its main one (Face2Exp's fine-tuning), after the budget or inside it.
    train_steps, after_steps = get_method_class(args.method).split_budget(
        args, args.steps or args.epochs * steps_per_epoch, steps_per_epoch)
    total_steps = train_steps + after_steps
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    prior = ClassPrior.from_counts(counts, classes)

    method_cls = get_method_class(args.method)
    head = args.head or method_cls.head
    if method_cls.allowed_heads is not None and head not in method_cls.allowed_heads:
        error_exit(f"--method {args.method} cannot use --head {head}; it needs {' or '.join(method_cls.allowed_heads)}")
    attention_flag = next((f for f in ("rac_weight", "eac_lambda") if getattr(args, f, 0)), None)
    if attention_flag and not getattr(HEADS[head], "gives_maps", True):
        error_exit(f"--{attention_flag.replace('_', '-')} needs class attention maps, and --head {head} gives none "
                   "(use --head cam or norm-linear, or set it to 0)")
    model_without_ddp, model, args.flip_forward = build_network(
        args, args.backbone, head, len(classes), device, dist_info,
        init_checkpoint=args.init_checkpoint if args.init_checkpoint and not args.resume else None)

    method = build_method(args.method, args, prior, TrainSchedule(steps_per_epoch, total_steps)).to(device)
    lr_scale = (args.batch_size * dist_info.world_size / args.lr_base_batch) if args.lr_base_batch else 1.0
    optimizer = build_optimizer(model_without_ddp, args.opt, args.lr * lr_scale, args.weight_decay, args.momentum,
                                fused=args.fused_opt, decay_all=args.weight_decay_scope == "all",
                                param_groups=method.param_groups(model_without_ddp, args.lr * lr_scale, args.weight_decay))
    scheduler = build_scheduler(optimizer, args.sched, train_steps, steps_per_epoch, args.warmup_steps,
                                args.warmup_lr * lr_scale, args.min_lr * lr_scale, args.decay_rate, args.decay_epochs)
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None

    def model_config_for(backbone: str, network_head: str) -> dict:
        return {"backbone": backbone, "head": network_head, "num_classes": len(classes), "img_size": args.img_size,
                "classes": classes, "norm": args.norm, "interpolation": args.interpolation}

    def make_network(backbone: str, network_head: str | None = None):
        network_head = network_head or head
        module, wrapped, _ = build_network(args, backbone, network_head, len(classes), device, dist_info)
        return module, wrapped, model_config_for(backbone, network_head)

    def make_optimizer(module: torch.nn.Module, lr: float, **overrides):
        """An optimiser and schedule for a second network: the run's flags, ``lr`` (scaled like --lr), overrides."""
        o = {"opt": args.opt, "weight_decay": args.weight_decay, "momentum": args.momentum, "sched": args.sched,
             "steps": train_steps, "warmup_steps": args.warmup_steps, "warmup_lr": args.warmup_lr * lr_scale,
             "min_lr": args.min_lr * lr_scale, **overrides}
        opt = build_optimizer(module, o["opt"], lr * lr_scale, o["weight_decay"], o["momentum"], fused=args.fused_opt,
                              decay_all=args.weight_decay_scope == "all")
        sched = build_scheduler(opt, o["sched"], o["steps"], steps_per_epoch, o["warmup_steps"], o["warmup_lr"],
                                o["min_lr"], args.decay_rate, args.decay_epochs)
        return opt, sched

    method.setup(MethodContext(args=args, device=device, dist_info=dist_info, augment=augment_config(args),
                               model=model_without_ddp,
                               train_set=train_set, steps_per_epoch=steps_per_epoch, train_steps=train_steps,
                               make_network=make_network, make_optimizer=make_optimizer))
    options = engine.StepOptions(amp=args.amp, channels_last=args.channels_last, clip_grad=args.clip_grad,
                                 skip_nonfinite=args.skip_nonfinite)

    summary = [
        f"dataset {args.dataset} at {args.data_root}: {len(train_set)} train / {len(test_set)} test images"
        + (f" / {len(val_set)} validation images ({val_origin(args)}); best.pth is chosen on validation"
           if val_set is not None else "; best.pth is chosen on the test split (no validation split)"),
        "train counts: " + ", ".join(f"{c}={n}" for c, n in zip(classes, counts)),
        "test counts:  " + ", ".join(f"{c}={n}" for c, n in zip(classes, test_set.class_counts())),
        *prior.describe(),
        *method.describe(),
        f"model {args.backbone} + {head} head @ {args.img_size}px: {count_parameters(model_without_ddp) / 1e6:.2f}M "
        f"parameters, {len(classes)} classes; device {device}, amp {args.amp}, world size {dist_info.world_size}, "
        f"mirror {args.flip_forward}",
        f"{total_steps} steps ({steps_per_epoch}/epoch, {num_epochs} epochs), lr {args.lr * lr_scale:.3g} "
        f"({args.opt}, {args.sched}, weight decay {args.weight_decay} on {args.weight_decay_scope} parameters)",
    ]
    summary.append(amp_reason)
    amp_warning = slow_amp_warning(device, args.amp)
    if amp_warning:
        summary.append(amp_warning)
    if args.dry_run:
        if dist_info.is_main:
            print("\n".join(summary), flush=True)
        train_sampler.set_epoch(0)
        images, labels, _ = next(iter(train_loader))
        model.train()
        method.set_step(0)
        if method.manual_optimization:
            terms = method.manual_step(model, images.to(device), labels.to(device), optimizer, scaler,
                                       engine.ManualUpdate(device, options, 0))
        else:
            terms = engine.compute_loss(model, method, images.to(device), labels.to(device), device, options)
            terms["loss"].backward()
        if dist_info.is_main:
            print("dry run: one batch of", tuple(images.shape), "->",
                  ", ".join(f"{k}={float(v.detach()):.4f}" for k, v in terms.items()), flush=True)
        cleanup_distributed()
        return

    logger = RunLogger(args.output, enabled=dist_info.is_main, resume=bool(args.resume))
    progress = engine.TrainProgress()
    best = BestTracker("val" if val_set is not None else "test")
    if args.resume:
        state = load_checkpoint(args.resume)
        _check_resumable(state, model_without_ddp, args)
        model_without_ddp.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        progress = engine.TrainProgress(**state["progress"])
        best.load_state_dict(state.get("best"), legacy_score=state.get("best_mean_acc", -1.0))
        for name, network in method.networks().items():
            saved_network = state.get("networks", {}).get(name)
            if saved_network is None:
                raise CheckpointError(f"{args.resume} has no {name} network; it was not written by --method {args.method}")
            check_model_fits(saved_network["model"], network, args.resume, saved_network.get("model_config"))
            network.load_state_dict(saved_network["model"])
        if state.get("extra"):
            method.load_extra_state(state["extra"])
        restore_rng_state(state["rng"][dist_info.rank] if isinstance(state["rng"], list) else state["rng"])
        logger.truncate_metrics(after_step=progress.step)  # drop records of steps the resumed run redoes
        logger.info(f"resumed from {args.resume} at epoch {progress.epoch}, step {progress.step}")
    else:
        for line in summary:
            logger.info(line)
    config = {**vars(args), "head": head, "classes": classes, "train_counts": counts,
              "method_settings": method.settings(),
              "code_version": code_version(), "total_steps": total_steps, "steps_per_epoch": steps_per_epoch}
    logger.write_config(config)
    model_config = model_config_for(args.backbone, head)

    def checkpoint_state(progress: engine.TrainProgress, metrics: dict | None = None) -> dict:
        return {**checkpoint_state_local(progress, metrics), "rng": _gather_rng(dist_info)}

    def checkpoint_state_local(progress: engine.TrainProgress, metrics: dict | None = None) -> dict:
        extra = {}
        if method.networks():  # a second network (Face2Exp's teacher), for --resume and test.py --network
            configs = method.network_configs()
            extra["networks"] = {name: {"model": network.state_dict(), "model_config": configs.get(name)}
                                 for name, network in method.networks().items()}
        if method.extra_state():
            extra["extra"] = method.extra_state()
        return {
            **extra,
            "model": model_without_ddp.state_dict(), "model_config": model_config, "config": config,
            "backbone": args.backbone, "method": {"name": args.method, "settings": method.settings()},
            "code_version": config["code_version"], "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "progress": progress.state_dict(), "rng": capture_rng_state(), "best_mean_acc": best.score,
            "best": best.state_dict(), "metrics": metrics,
        }

    def save(name: str, progress: engine.TrainProgress, metrics: dict | None = None) -> None:
        state = checkpoint_state(progress, metrics)  # every rank joins the RNG gather
        if dist_info.is_main:
            save_checkpoint(state, Path(args.output) / name)

    last_metrics: dict | None = None

    def run_eval(progress: engine.TrainProgress) -> dict:
        nonlocal last_metrics
        show = not args.no_progress and dist_info.is_main
        val_metrics = None if val_loader is None else engine.evaluate(
            model, val_loader, device, len(classes), args.amp, args.channels_last, show_progress=show,
            eval_logits=method.eval_logits)
        metrics = engine.evaluate(model, test_loader, device, len(classes), args.amp, args.channels_last,
                                  show_progress=show, eval_logits=method.eval_logits)
        averages = progress.averages()
        network_metrics = {name: engine.evaluate(network, test_loader, device, len(classes), args.amp,
                                                 args.channels_last, show_progress=False)
                           for name, network in method.networks().items()}
        is_best = best.update(progress.step, metrics, val_metrics)
        logger.write_metrics(eval_record(progress, averages, method.current_lr(optimizer), metrics, val_metrics,
                                         network_metrics, classes, best, time.time() - start_time))
        if dist_info.is_main:
            plot_curves(args.output)  # OUTPUT/curves.png: loss terms and accuracies so far
        for line in eval_lines(progress, averages, metrics, val_metrics, network_metrics, classes):
            logger.info(line)
        last_metrics = metrics
        if is_best:
            save("best.pth", progress, metrics)
        return metrics

    def on_step(progress: engine.TrainProgress) -> None:
        if args.eval_interval and progress.step % args.eval_interval == 0 and progress.step < total_steps:
            model.eval()
            run_eval(progress)
            model.train()
        # An epoch's last step is saved (and a stop honoured) by train_loop, after the epoch's evaluation.
        mid_epoch = progress.batch_in_epoch < steps_per_epoch
        periodic = args.save_interval and progress.step % args.save_interval == 0
        signum = stop.requested(progress.step) if mid_epoch and progress.step < total_steps else None
        if mid_epoch and (periodic or signum is not None):
            save("last.pth", progress)
        if signum is not None:  # SIGINT/SIGTERM: this step is kept, then the run ends
            raise StopRequested(progress.step, signum)

    def train_loop() -> None:
        while progress.step < total_steps:
            if progress.batch_in_epoch >= steps_per_epoch:
                progress.start_epoch(progress.epoch + 1)
            elif progress.batch_in_epoch == 0:
                progress.start_epoch(progress.epoch)
            train_sampler.set_epoch(progress.epoch, progress.batch_in_epoch * args.batch_size)
            engine.train_one_epoch(model, method, train_loader, optimizer, scheduler, scaler, device, options,
                                   progress, total_steps, on_step, show_progress=not args.no_progress and dist_info.is_main,
                                   total_batches=steps_per_epoch, log_interval=args.log_interval)
            metrics = run_eval(progress) if not args.eval_interval or progress.step >= total_steps else None
            save("last.pth", progress, metrics)
            signum = stop.requested(progress.step) if progress.step < total_steps else None
            if signum is not None:
                raise StopRequested(progress.step, signum)

    start_time = time.time()
    stop = GracefulStop(device, distributed=dist_info.enabled)
    try:
        with stop:
            train_loop()
    except StopRequested as exc:
        logger.info(f"{exc}; last.pth holds that step; resume with --resume auto")
        logger.close()
        cleanup_distributed()
        raise SystemExit(128 + exc.signum) from None
    except engine.NonFiniteLossError as exc:
        # Saved by the rank that met it, without collectives (the other ranks may be elsewhere).
        path = Path(args.output) / f"nonfinite_step{exc.step}_rank{dist_info.rank}.pth"
        save_checkpoint({**checkpoint_state_local(progress)}, path)
        error_exit(f"{exc}; diagnostic checkpoint {path}; "
                   "lower --lr, use --clip-grad, or pass --skip-nonfinite to skip such batches")
    if args.skip_bad_images:
        log = Path(args.output) / "bad_images.tsv"
        bad = sorted({line.split("\t")[0] for line in log.read_text().splitlines()}) if log.exists() else []
        logger.info(f"skipped {len(bad)} unreadable images" + (f" (listed in {log})" if bad else ""))
    if progress.skipped_nonfinite:
        logger.info(f"skipped {progress.skipped_nonfinite} batches with a non-finite loss")
    logger.info(f"done in {time.time() - start_time:.0f}s; checkpoints in {args.output}")
    for line in summary_lines(progress.step, last_metrics, best, classes):
        logger.info(line)
    logger.close()
    barrier()
    cleanup_distributed()


def _gather_rng(dist_info: DistInfo):
    """This rank's RNG states, or every rank's (a list in rank order) under DDP."""
    state = capture_rng_state()
    if not dist_info.enabled:
        return state
    # Sent as torch-serialised bytes: all_gather_object cannot carry tensors on every backend.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    gathered: list = [None] * dist_info.world_size
    torch.distributed.all_gather_object(gathered, buffer.getvalue())
    return [torch.load(io.BytesIO(blob), weights_only=True) for blob in gathered]


def saved_split(state: dict) -> dict | None:
    """The validation split a checkpoint's run held out (its config.json record), None without one."""
    return state.get("config", {}).get("val_record")


def _check_resumable(state: dict, model: torch.nn.Module, args: argparse.Namespace) -> None:
    if "progress" not in state or "optimizer" not in state:
        raise CheckpointError(f"{args.resume} has no training state (optimizer/progress); it cannot be resumed")
    check_model_fits(state["model"], model, args.resume, state.get("model_config"))
    saved = state.get("config", {})
    for key in ("method", "batch_size", "world_size", "dataset", "seed", "val_fraction", "val_split"):
        if key.startswith("val_") and saved and saved.get(key) != getattr(args, key):
            raise CheckpointError(f"{args.resume} was trained with --{key.replace('_', '-')} {saved.get(key)}, this "
                                  f"run has {getattr(args, key)}; the validation split must stay the same")
        if saved.get(key, "mek" if key == "method" else None) not in (None, getattr(args, key)):
            raise CheckpointError(
                f"{args.resume} was trained with --{key.replace('_', '-')} {saved[key]}, this run has {getattr(args, key)}; "
                "an exact resume needs the same value")
    if saved_split(state) != getattr(args, "val_record", None):
        raise CheckpointError(f"{args.resume} held out other validation images than this run would (the training "
                              "list changed); an exact resume needs the same split")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Two stages: ``--method`` first, then the common flags plus that method's own."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", default="mek")
    method = pre.parse_known_args(argv)[0].method
    try:
        METHODS.lookup(method)
        check_foreign_flags(argv, method)
    except ValueError as exc:
        error_exit(str(exc))
    return get_args_parser(method).parse_args(argv)


def cli(argv: list[str] | None = None) -> None:
    try:
        main(parse_args(argv))
    except (DatasetError, CheckpointError, ValueError) as exc:
        error_exit(worker_error_message(exc))
    except KeyboardInterrupt:
        print("interrupted; resume with --resume auto", file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, cli() reports it
    cli()

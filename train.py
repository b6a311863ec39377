"""Train a facial expression classifier with any registered method (``--method``; methods/).

    python train.py --dataset raf-db --data-root dataset/raf-basic --backbone resnet18 \
        --method mek --rsl-eps 0.3 --rac-weight 0.1 --output output/mek_r18
    python train.py --method NAME --help      # that method's flags

Single process, or one process per device under ``torchrun --nproc_per_node N train.py ...``.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
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

import engine
from data import DEFAULT_ROOTS, DatasetError
from data.align import training_template
from data.batch_augment import build_batch_augment
from data.loaders import add_data_args, augment_config, build_data, check_data_args, val_origin
from losses.class_prior import ClassPrior
from methods import (DEFAULT_METHOD, METHODS, TrainSchedule, add_method_args, build_method, check_foreign_flags, check_method_args,
                     get_method_class, method_head)
from methods.base import RunContext
from models import HEADS, count_parameters
from utils.build import build_network, build_run_optimizer, lr_scale, model_config
from utils.checkpoint import CheckpointError, code_version
from utils.device import configure_backends, resolve_amp, resolve_device, slow_amp_warning
from utils.distributed import barrier, cleanup_distributed, init_distributed
from utils.ema import build_weight_average
from utils.evaluation import BestTracker, summary_lines
from utils.logging import RunLogger, bad_images_line, error_exit, prepare_output, worker_error_message
from utils.run_state import RunState, StepHooks
from utils.stop import GracefulStop, StopRequested
from utils.tensorboard import add_tensorboard_arg, open_board


def get_args_parser(method: str = DEFAULT_METHOD) -> argparse.ArgumentParser:
    """Every common flag, plus the flags of ``method`` (one argument group)."""
    p = argparse.ArgumentParser("FER training", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"training method: {', '.join(METHODS)} (registry: methods/)")
    add_data_args(p)  # the "data" and "augmentation" groups (data/loaders.py)

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
    g.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999); it is "
                        "evaluated first and chooses best.pth, the online model is logged beside it (utils/ema.py)")
    g.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="ramp the EMA decay up as min(DECAY, 1 - (1 + step)^-0.75) (timm's warm-up)")

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
    g.add_argument("--deterministic", action="store_true", help="CUDA: exact reruns, no autotuning (utils/device.py)")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    g.add_argument("--eval-batch-size", type=int, default=None, help="default: 2x --batch-size")
    g.add_argument("--tta", choices=engine.TTA_MODES, default="none",
                   help="test-time augmentation at every evaluation: flip averages the softmax of each face and "
                        "its mirror (twice the evaluation forwards)")

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
                   help="when output is not a terminal, one progress line every N steps instead of a bar; "
                        "TensorBoard's loss terms and lr every N steps")
    add_tensorboard_arg(g)  # --tensorboard / --no-tensorboard

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
    if args.ema is not None and not 0 < args.ema < 1:
        error_exit(f"--ema is a decay in (0, 1), e.g. 0.999; got {args.ema}")
    if not 0 <= args.noise_prob <= 1:
        error_exit(f"--noise-prob must be in [0, 1], got {args.noise_prob}")
    if not 0 <= args.rotate <= 180:
        error_exit(f"--rotate must be in [0, 180] degrees, got {args.rotate}")
    if args.noise_var < 0:
        error_exit(f"--noise-var must be >= 0, got {args.noise_var}")
    check_data_args(args)  # DatasetError, reported by cli()
    args.align = training_template(args.align, args.data_root or DEFAULT_ROOTS.get(args.dataset))  # AlignError
    if args.reset_final_norm and not args.pretrained:
        error_exit("--reset-final-norm re-initialises the final norm after --pretrained; give --pretrained too")
    check_method_args(args)  # the method's flags, and whether its head fits it


def setup_run(args: argparse.Namespace):
    """Processes, device, precision (the same on every rank), the flags' checks, the output folder, the seed."""
    dist_info = init_distributed("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    device = resolve_device(args.device, dist_info.local_rank)
    args.device_type, args.world_size = device.type, dist_info.world_size
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
    return dist_info, device, amp_reason


def run_summary(args, train_set, test_set, val_set, prior, method, model, head, device, dist_info,
                total_steps: int, steps_per_epoch: int, amp_reason: str) -> list[str]:
    """The lines that open the log: data, method, model, schedule, precision."""
    classes, counts = train_set.classes, train_set.class_counts()
    split = (f" / {len(val_set)} validation images ({val_origin(args)}); best.pth is chosen on validation"
             if val_set is not None else "; best.pth is chosen on the test split (no validation split)")
    lines = [
        f"dataset {args.dataset} at {args.data_root}: {len(train_set)} train / {len(test_set)} test images" + split,
        "train counts: " + ", ".join(f"{c}={n}" for c, n in zip(classes, counts)),
        "test counts:  " + ", ".join(f"{c}={n}" for c, n in zip(classes, test_set.class_counts())),
        *prior.describe(),
        *method.describe(),
        f"model {args.backbone} + {head} head @ {args.img_size}px: {count_parameters(model) / 1e6:.2f}M "
        f"parameters, {len(classes)} classes; device {device}, amp {args.amp}, world size {dist_info.world_size}, "
        f"mirror {args.flip_forward}",
        f"{total_steps} steps ({steps_per_epoch}/epoch, {math.ceil(total_steps / steps_per_epoch)} epochs) of "
        f"{args.batch_size * dist_info.world_size} images ({args.batch_size} per process x {dist_info.world_size}), lr "
        f"{args.lr * lr_scale(args):.3g} ({args.opt}, {args.sched}, weight decay {args.weight_decay} on "
        f"{args.weight_decay_scope} parameters)",
        amp_reason,
    ]
    return lines + [w for w in [slow_amp_warning(device, args.amp)] if w]


def main(args: argparse.Namespace) -> None:
    dist_info, device, amp_reason = setup_run(args)
    backends = configure_backends(device, args.amp, args.deterministic)  # before any CUDA kernel runs

    # Data, model, method, optimiser.
    data = build_data(args, dist_info)
    train_set, test_set, val_set, train_sampler, train_loader, test_loader, val_loader = data
    batch_augment = build_batch_augment(args, train_set)
    classes, counts = train_set.classes, train_set.class_counts()
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        error_exit(f"{train_set.source}: class(es) {', '.join(empty)} have no training samples; every class needs "
                   "some (the class priors and weights divide by n_k; check the dataset, or --num-classes)")
    steps_per_epoch = len(train_set) // (args.batch_size * dist_info.world_size)
    if steps_per_epoch == 0:
        error_exit(f"the training set has {len(train_set)} images, fewer than one batch of {args.batch_size * dist_info.world_size}")
    # A method may run a second stage (e.g. fine-tuning), after the --steps/--epochs budget or inside it.
    train_steps, after_steps = get_method_class(args.method).split_budget(
        args, args.steps or args.epochs * steps_per_epoch, steps_per_epoch)
    total_steps = train_steps + after_steps
    prior = ClassPrior.from_counts(counts, classes)
    head = method_head(args)
    model_without_ddp, model, args.flip_forward = build_network(
        args, args.backbone, head, len(classes), device, dist_info,
        init_checkpoint=args.init_checkpoint if args.init_checkpoint and not args.resume else None)
    method = build_method(args.method, args, prior, TrainSchedule(steps_per_epoch, total_steps)).to(device)
    ema = build_weight_average(args.ema, model_without_ddp, args.ema_warmup)
    optimizer, scheduler = build_run_optimizer(
        args, model_without_ddp, args.lr, train_steps, steps_per_epoch,
        param_groups=method.param_groups(model_without_ddp, args.lr * lr_scale(args), args.weight_decay))
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
    method.setup(RunContext(args=args, device=device, dist_info=dist_info, augment=augment_config(args),
                            model=model_without_ddp, train_set=train_set, classes=classes,
                            steps_per_epoch=steps_per_epoch, train_steps=train_steps))
    options = engine.StepOptions(amp=args.amp, channels_last=args.channels_last, clip_grad=args.clip_grad,
                                 skip_nonfinite=args.skip_nonfinite)
    summary = run_summary(args, train_set, test_set, val_set, prior, method, model_without_ddp, head, device,
                          dist_info, total_steps, steps_per_epoch, amp_reason) + backends
    summary += [ema.describe()] if ema is not None else []
    summary += [f"augmentation on the device, per batch (--batch-augment): {batch_augment!r}"] if batch_augment else []
    summary += ["test-time augmentation (--tta flip): every evaluation averages the softmax of a face and its mirror"
                ] if args.tta == "flip" else []
    if args.dry_run:
        if dist_info.is_main:
            print("\n".join(summary), flush=True)
        engine.dry_run(model, method, train_loader, train_sampler, optimizer, scaler, device, options, dist_info.is_main,
                       batch_augment)
        cleanup_distributed()
        return

    # The run's record, and the resume.
    logger = RunLogger(args.output, enabled=dist_info.is_main, resume=bool(args.resume))
    config = {**vars(args), "head": head, "classes": classes, "train_counts": counts,
              "method_settings": method.settings(), "code_version": code_version(), "total_steps": total_steps,
              "steps_per_epoch": steps_per_epoch}
    best = BestTracker("val" if val_set is not None else "test")
    run = RunState(args, model_without_ddp, method, optimizer, scaler, config,
                   model_config(args, args.backbone, head, classes), dist_info, best, ema)
    progress = engine.TrainProgress()
    if args.resume:
        progress = run.resume(args.resume, engine.TrainProgress)
        logger.truncate_metrics(after_step=progress.step)  # drop records of steps the resumed run redoes
        logger.info(f"resumed from {args.resume} at epoch {progress.epoch}, step {progress.step}")
    else:
        for line in summary:
            logger.info(line)
    logger.write_config(config)
    board = open_board(args, progress, logger, classes, dist_info.is_main)  # None without --tensorboard

    # The epoch loop: train one epoch, evaluate, save last.pth (best.pth when chosen), honour a stop.
    progress.start_clock()
    show = not args.no_progress and dist_info.is_main
    evaluate = engine.Evaluator(model, method, test_loader, val_loader, classes, device, args, logger, run, best, show,
                                ema)
    evaluate = board.wrap_evaluator(evaluate) if board else evaluate  # also draws the test confusion matrix
    stop = GracefulStop(device, distributed=dist_info.enabled)
    hooks = StepHooks(run, evaluate, stop, args.eval_interval, args.save_interval, total_steps, steps_per_epoch)
    try:
        with stop:
            while progress.step < total_steps:
                progress.next_epoch(steps_per_epoch)
                train_sampler.set_epoch(progress.epoch, progress.batch_in_epoch * args.batch_size)
                engine.train_one_epoch(model, method, train_loader, optimizer, scheduler, scaler, device, options,
                                       progress, total_steps, hooks if board is None else board.chain(hooks),
                                       show_progress=show,
                                       total_batches=steps_per_epoch, log_interval=args.log_interval, ema=ema,
                                       batch_augment=batch_augment)
                metrics = evaluate(progress) if not args.eval_interval or progress.step >= total_steps else None
                run.save("last.pth", progress, metrics)
                hooks.end_of_epoch(progress)
    except StopRequested as exc:
        logger.info(f"{exc}; last.pth holds that step; resume with --resume auto")
        logger.close()
        cleanup_distributed()
        raise SystemExit(128 + exc.signum) from None
    except engine.NonFiniteLossError as exc:
        path = run.save_diagnostic(exc.step, progress)
        error_exit(f"{exc}; diagnostic checkpoint {path}; "
                   "lower --lr, use --clip-grad, or pass --skip-nonfinite to skip such batches")

    # The summary: what was skipped, the last evaluation and the chosen one.
    if args.skip_bad_images:
        logger.info(bad_images_line(Path(args.output) / "bad_images.tsv"))
    if progress.skipped_nonfinite:
        logger.info(f"skipped {progress.skipped_nonfinite} batches with a non-finite loss")
    if scaler is not None:
        logger.info(f"the fp16 gradient scaler skipped {progress.scaler_skipped} of {progress.step} updates (inf/NaN)")
    logger.info(f"done in {progress.elapsed():.0f}s of training; checkpoints in {args.output}")
    for line in summary_lines(progress.step, evaluate.last, best, classes):
        logger.info(line)
    logger.close()
    barrier()
    cleanup_distributed()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Two stages: ``--method`` first, then the common flags plus that method's own."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", default=DEFAULT_METHOD)
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

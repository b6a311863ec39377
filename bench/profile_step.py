"""Where the optimised MEK training step spends its time: torch.profiler over a few steps.

    python bench/profile_step.py --backbone swin_t --img-size 112 [--steps 3] [--warmup 2]

Builds the step as bench/train_step.py's optimised form does (the mirror pass of
``--flip-forward auto``, the precision of ``--amp auto``, channels-last for CNNs unless
``--channels-last off``, fused Adam/AdamW), runs ``--warmup`` untimed steps, then profiles
``--steps`` steps of ``engine.train_one_epoch`` and prints:

- the share of self CPU time per kind of operator (convolutions and matmuls, the arithmetic the
  bench's ceiling measures, against norms, element-wise ops, memory copies, softmax, pooling, the
  optimiser and the rest), and the GFLOP/s of the convolution/matmul kernels alone;
- the operators that take the most self CPU time.

Self time is the time inside an operator minus its children's, so the kinds add up to the step.
The profiler adds overhead of its own (a few percent on these models); read shares, not seconds.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

# Operator name -> kind, by the first pattern it contains (order matters: "convolution_backward"
# is a convolution, "native_batch_norm_backward" a norm).
KINDS = [
    ("conv / matmul", ("convolution", "conv2d", "mkldnn_conv", "addmm", "::mm", "bmm", "matmul", "linear", "baddbmm")),
    ("norm", ("batch_norm", "layer_norm", "group_norm")),
    ("softmax", ("softmax",)),
    ("pooling", ("pool",)),
    ("optimiser", ("adam", "_foreach", "sgd", "lamb")),
    ("memory copy / layout", ("copy_", "clone", "contiguous", "cat", "roll", "index", "gather", "scatter", "to_dense",
                              "_to_copy", "flip", "pad", "stack", "fill_", "zero_", "empty", "constant_pad")),
    ("element-wise / activation", ("relu", "gelu", "threshold", "add", "mul", "div", "sub", "sum", "mean", "exp", "log",
                                   "sigmoid", "where", "masked", "pow", "sqrt", "neg", "clamp", "mse", "nll",
                                   "cross_entropy", "dropout", "bernoulli", "rsub")),
]


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, patterns in KINDS:
        if any(p in lowered for p in patterns):
            return kind
    return "other"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="profiled training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--channels-last", choices=["on", "off"], default="on", help="CNNs only; ignored for Swin")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--top", type=int, default=15, help="operators listed")
    args = p.parse_args()
    for flag, value, least in (("--steps", args.steps, 1), ("--warmup", args.warmup, 0),
                               ("--batch-size", args.batch_size, 1), ("--img-size", args.img_size, 1)):
        if value < least:
            p.error(f"{flag} must be >= {least}, got {value}")

    import engine
    from methods.mirror import resolve_flip_forward
    from models import build_model
    from train_step import NoSchedule, is_cnn, is_transformer, make_mek, step_gflop
    from utils.device import resolve_amp
    from utils.optim import build_optimizer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    try:
        model = build_model(args.backbone, num_classes=7, img_size=args.img_size).to(device)
    except ValueError as exc:
        p.error(str(exc))
    amp, amp_reason = resolve_amp("auto", device)
    channels_last = args.channels_last == "on" and is_cnn(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    flip_forward = resolve_flip_forward("auto", model)
    method = make_mek(flip_forward, device)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    labels = torch.arange(args.batch_size) % 7
    model.train()
    gflop = step_gflop(model, images, labels, device)
    opt = "adamw" if is_transformer(args.backbone) else "adam"  # train_step.py's --opt auto
    optimizer = build_optimizer(model, opt, 1e-4, 0.05 if opt == "adamw" else 1e-4, fused=True)
    options = engine.StepOptions(amp=amp, channels_last=channels_last)

    def steps(n: int) -> None:
        loader = [(images, labels, None)] * n
        engine.train_one_epoch(model, method, loader, optimizer, NoSchedule(), None, device, options,
                               engine.TrainProgress(), n, lambda _p: None, show_progress=False)

    steps(args.warmup)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        steps(args.steps)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind_of(e.key)] += e.self_cpu_time_total
    step_s = total / 1e6 / args.steps
    print(f"{args.backbone} @ {args.img_size}px, batch {args.batch_size} (+ mirrors), {flip_forward}, "
          f"{'channels-last' if channels_last else 'contiguous'}, {amp} ({amp_reason}), fused {opt}, "
          f"{torch.get_num_threads()} threads; {args.steps} profiled steps")
    print(f"self CPU time per step (all threads' operators, profiler on): {step_s:.3f} s; "
          f"{gflop:.0f} GFLOP of convolutions and matmuls per step")
    print("\n| kind | share of step | s per step |\n|---|---|---|")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {t / total:.1%} | {t / 1e6 / args.steps:.3f} |")
    conv_s = by_kind.get("conv / matmul", 0.0) / 1e6 / args.steps
    if conv_s > 0:
        print(f"\nconvolution/matmul kernels alone: {gflop / conv_s:.0f} GFLOP/s; the whole step: {gflop / step_s:.0f} GFLOP/s")
    print(f"\ntop {args.top} operators by self CPU time:\n| operator | kind | share | calls per step |\n|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f"| {e.key} | {kind_of(e.key)} | {e.self_cpu_time_total / total:.1%} | {e.count / args.steps:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time the MEK training step, naive against optimised, on one model, batch and machine.

    python bench/train_step.py --backbone resnet18 --img-size 112 [--batch-size 32] [--steps 10 --warmup 3]
    python bench/train_step.py --backbone dlib_resnet --img-size 150   # dlib's face ResNet (docs/face_backbone.md)
    sh bench/run_cpu.sh --backbone swin_t --img-size 112          # the same with tcmalloc preloaded

A training step is what ``engine.train_one_epoch`` does per batch: the images and their
mirrors through the model, RSL + RAC, backward, optimiser step (Adam for CNNs, AdamW for
transformers, as in train_exp.sh), plus the non-finite check and logging.

- naive:     two forward passes (image, mirror), fp32, contiguous memory format, torch's
             for-loop optimiser;
- optimised: one forward pass over [images; mirrors], torch's fused optimiser, autocast
             (``--amp``; auto = bf16 on CPUs with native bf16 and fp32 on the others, where
             bf16 is emulated and slower; CUDA: bf16 if supported, else fp16 with a
             GradScaler), channels-last for CNNs.

It also counts the step's matmul and convolution FLOPs and measures the device's large-matmul
ceiling, and prints each form's share of it and the largest speedup that ceiling allows.

Throughput counts each source image once (the mirror is not counted) and is the median over
the timed steps after warm-up. Each form runs in its own child process started from the same
saved weights and batch, so its peak memory (CPU: peak RSS from /proc, CUDA:
max_memory_allocated) is its own. The loss of the first step of both forms, on the same
weights and batch, must agree to ``--loss-tol``. Evaluation throughput (inference only) and
the data pipeline (JPEG decode + the recipe's train transform through the real dataset
class, single process, with and without the in-memory cache of ``--cache-images``) are
reported next to it, so one sees which of them bounds training. The last line is
``speedup: X.XX`` (optimised over naive training images/s).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from utils.device import (cached_probe, channels_last_probe, cpu_bf16_flags, cpu_has_native_bf16,  # noqa: E402
                          resolve_amp)

TCMALLOC_HINT = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
RAF_DB_COUNTS = [1290, 281, 717, 4772, 1982, 705, 2524]
FORMS = ("naive", "optimised")


# ----------------------------------------------------------------------------- environment
def tcmalloc_status() -> str:
    with open("/proc/self/maps", encoding="utf-8") as maps:
        loaded = any("tcmalloc" in line for line in maps)
    if loaded:
        return "tcmalloc: loaded (LD_PRELOAD)"
    if Path(TCMALLOC_HINT).exists():
        return "tcmalloc: installed but NOT preloaded (bench/run_cpu.sh preloads it)"
    return "tcmalloc: not found (glibc malloc)"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_rss_reset() -> None:
    # Writing 5 to clear_refs resets the kernel's peak-RSS counter (VmHWM) of this process.
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def proc_status_mb(field: str) -> float | None:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def peak_rss_mb() -> float:
    peak = proc_status_mb("VmHWM")
    if peak is None:  # no /proc: the process-lifetime peak
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak


def reset_peak(device: torch.device) -> float:
    """Reset the peak counter; return the current usage (MB) the peak is measured from."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    peak_rss_reset()
    return proc_status_mb("VmRSS") or 0.0


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a large square matmul: the practical ceiling a training step is measured against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times) / 1e9


def ceiling_dtypes(device: torch.device, amp: str) -> list[tuple[str, torch.dtype]]:
    """The precisions whose matmul ceiling is measured. A CPU without bf16 instructions emulates
    bf16 far below its fp32 ceiling (2048^2 bf16 matmuls take minutes on an AVX2-only EPYC), so
    there bf16 is timed only when the optimised form uses it: it cannot raise the bound."""
    dtypes = [("fp32", torch.float32)]
    if device.type == "cuda" or amp == "bf16" or cpu_bf16_flags() != frozenset():
        dtypes.append(("bf16", torch.bfloat16))
    if device.type == "cuda":
        dtypes.append(("fp16", torch.float16))
    return dtypes


def step_gflop(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """Floating-point operations of one training step (forward + backward of image and mirror),
    counted by torch's FlopCounterMode (matmuls and convolutions; element-wise ops are not counted)."""
    import engine
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        engine.compute_loss(model, make_mek("two-pass", device), images, labels, device,
                            engine.StepOptions())["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def utilisation(naive: dict, form: dict, batch_size: int) -> tuple[float, str, float, float] | None:
    """(achieved GFLOP/s, precision, share of that precision's matmul ceiling, bound) of ``form``;
    bound = the best ceiling over the naive step's GFLOP/s, the largest speedup any form keeping
    this arithmetic can reach. None when the FLOPs were not counted."""
    gflop, peaks = naive.get("step_gflop"), naive.get("matmul_gflops")
    if not gflop or not peaks:
        return None
    achieved = gflop * form["train_images_per_s"] / batch_size
    precision = "fp32" if form["amp"] == "off" else form["amp"]
    naive_achieved = gflop * naive["train_images_per_s"] / batch_size
    return achieved, precision, achieved / peaks[precision], max(peaks.values()) / naive_achieved


# ----------------------------------------------------------------------------- configuration
def resolve(args: argparse.Namespace) -> argparse.Namespace:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    # train.py's --amp auto: explicit values win; CPU: bf16 only where a timed probe finds it faster.
    args.amp, args.amp_reason = resolve_amp(args.amp, torch.device(args.device))
    if args.opt == "auto":  # the optimisers of train_exp.sh's recipes
        args.opt = "adamw" if is_transformer(args.backbone) else "adam"
    return args


def is_transformer(backbone: str) -> bool:
    return backbone.split("_")[0] in {"swin", "swinv2", "vit", "deit", "maxvit", "coat", "cait"}


def is_cnn(model: torch.nn.Module) -> bool:
    # A transformer has one (patch-embedding) convolution only.
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 1


def choose_channels_last(choice: str, model: torch.nn.Module, images: torch.Tensor, args: argparse.Namespace,
                         device: torch.device) -> tuple[bool, str]:
    """Channels-last for the optimised form: on / off as asked; auto = off for transformers, and
    for CNNs only where a timed forward + backward of this model and batch is faster with it
    (cached per machine, backbone, size and batch, like the bf16 probe)."""
    if choice != "auto":
        return choice == "on", f"--channels-last {choice} as requested"
    if not is_cnn(model):
        return False, "auto: contiguous (a transformer: one convolution only)"
    batch = torch.cat([images, torch.flip(images, dims=[3])]).to(device)
    kind = f"channels-last / contiguous, {args.backbone} @ {args.img_size} x {len(batch)}, {args.amp}"
    with engine_autocast(device, args.amp):
        ratio, cached = cached_probe(kind, lambda: channels_last_probe(model, batch), device=device)
    use = ratio >= 1.0
    return use, (f"auto: {'cached ' if cached else ''}probe: channels-last at {ratio:.2f}x contiguous speed; "
                 f"{'channels-last' if use else 'contiguous'}")


def engine_autocast(device: torch.device, amp: str):
    import engine

    return engine.autocast(device, amp)


def make_mek(flip_forward: str, device: torch.device):
    """MEK as train.py builds it (eps 0.3, lambda 0.1) with RAF-DB's class counts."""
    from methods import make_method

    return make_method("mek", RAF_DB_COUNTS, flip_forward=flip_forward).to(device)


def recipe_augment(backbone: str, img_size: int):
    """The train transform of train_exp.sh's recipe for this backbone (swin, r18, or dlib_resnet: r18's with
    dlib's input normalisation, models.dlib_resnet.DLIB_NORM)."""
    from data.transforms import AugmentConfig

    if backbone.startswith("dlib_resnet"):
        from models.dlib_resnet import DLIB_NORM

        return AugmentConfig(img_size=img_size, mean=DLIB_NORM[0], std=DLIB_NORM[1], reprob=0.5, re_max_area=0.25,
                             remode="const")
    if is_transformer(backbone):
        return AugmentConfig(img_size=img_size, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic",
                             auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4, reprob=0.25, remode="pixel",
                             re_max_area=1 / 3)
    return AugmentConfig(img_size=img_size, reprob=0.5, re_max_area=0.25, remode="const")


# ----------------------------------------------------------------------------- one form (child)
class NoSchedule:
    """The lr schedule is irrelevant to speed; train_one_epoch only needs step_update."""

    def step_update(self, step: int) -> None:
        pass


def run_form(form: str, args: argparse.Namespace, payload_path: str) -> dict:
    import engine
    from methods.mirror import resolve_flip_forward
    from models import build_model
    from utils.optim import build_optimizer

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the same random draws (e.g. Swin's stochastic depth) in both forms
    payload = torch.load(payload_path)
    model = build_model(args.backbone, num_classes=7, img_size=args.img_size)
    model.load_state_dict(payload["state"])
    model.to(device)
    del payload["state"]
    optimised = form == "optimised"
    amp = args.amp if optimised else "off"
    images, labels = payload["images"].to(device), payload["labels"].to(device)
    if optimised:
        # The probe trains the model for a few steps: BatchNorm statistics and random draws restored after.
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        channels_last, channels_last_reason = choose_channels_last(args.channels_last, model, images, args, device)
        model.load_state_dict(saved)
        torch.manual_seed(args.seed)
    else:
        channels_last, channels_last_reason = False, "naive: contiguous"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # train.py's --flip-forward (default auto: one pass where exact, i.e. without BatchNorm).
    flip_forward = resolve_flip_forward(args.flip_forward, model) if optimised else "two-pass"
    options = engine.StepOptions(amp=amp, channels_last=channels_last)
    method = make_mek(flip_forward, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    # Inference first (it needs less memory than training, so a caching allocator's retained
    # eval memory does not inflate the training peak), from the RSS of the idle process.
    gc_collect()
    idle = reset_peak(device)
    model.eval()
    # Loss in eval mode (running BatchNorm statistics): isolates the numeric precision effect.
    with torch.no_grad():
        eval_terms = engine.compute_loss(model, method, images.contiguous(memory_format=memory_format), labels,
                                         device, options)
    # engine.predict at train.py's default eval batch (2x --batch-size).
    eval_images = torch.cat([images, torch.flip(images, dims=[3])])
    eval_loader = [(eval_images, torch.cat([labels, labels]), torch.arange(len(eval_images)))]
    # Evaluation must not compute what it does not use: record whether predict asks for attention maps.
    eval_calls: list[bool] = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: eval_calls.append(bool(kw.get("with_maps"))),
                                           with_kwargs=True)
    engine.predict(model, eval_loader * max(args.warmup, 1), device, amp, channels_last, show_progress=False)
    hook.remove()
    eval_times = []
    for _ in range(args.eval_batches):
        sync(device)
        t0 = time.perf_counter()
        engine.predict(model, eval_loader, device, amp, channels_last, show_progress=False)
        sync(device)
        eval_times.append(time.perf_counter() - t0)
    eval_peak = peak_mb(device)

    model.train()
    # Counted before the optimiser exists, and BatchNorm's running statistics are restored after,
    # so the timed steps start from the same state in both forms.
    saved_buffers = {k: v.clone() for k, v in model.named_buffers()}
    gflop = step_gflop(model, images, labels, device) if form == "naive" else None
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(saved_buffers[k])
    torch.manual_seed(args.seed)  # the counting step drew random numbers (drop path) in one form only
    optimizer = build_optimizer(model, args.opt, 1e-4, 0.05 if args.opt == "adamw" else 1e-4, fused=optimised)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and device.type == "cuda" else None
    total = args.warmup + args.steps
    stamps: list[float] = []
    cpu_stamps: list[float] = []  # process CPU time (all threads): less sensitive to other jobs' load
    first_terms: dict[str, float] = {}

    def on_step(progress) -> None:
        sync(device)
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())
        if progress.step == 1:  # the first step's loss, on the saved weights and batch
            first_terms.update(progress.averages())

    # Contiguous images in: train_one_epoch converts them to channels-last itself when asked.
    loader = [(images, labels, None)] * total
    gc_collect()
    reset_peak(device)
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    # --compile: train.py's --compile (torch.compile of the whole model) in the optimised form; the
    # warm-up steps absorb the compilation.
    train_model = torch.compile(model) if optimised and args.compile else model
    engine.train_one_epoch(train_model, method, loader, optimizer, NoSchedule(), scaler, device, options,
                           engine.TrainProgress(), total, on_step, show_progress=False)
    train_peak = peak_mb(device)
    times = [b - a for a, b in zip([start, *stamps[:-1]], stamps)][args.warmup:]
    cpu_times = [b - a for a, b in zip([cpu_start, *cpu_stamps[:-1]], cpu_stamps)][args.warmup:]
    return {
        "form": form, "amp": amp, "channels_last": channels_last, "channels_last_reason": channels_last_reason,
        "flip_forward": flip_forward, "eval_with_maps": any(eval_calls) if eval_calls else None,
        "step_times": times, "train_images_per_s": args.batch_size / statistics.median(times),
        "step_cpu_times": cpu_times,
        "idle_mb": idle, "train_peak_mb": train_peak, "eval_peak_mb": eval_peak,
        "first_step_terms": first_terms, "eval_mode_terms": {k: float(v) for k, v in eval_terms.items()},
        "eval_images_per_s": len(eval_images) / statistics.median(eval_times),
        "threads": torch.get_num_threads(), "step_gflop": gflop,
        "matmul_gflops": {name: matmul_peak_gflops(device, dtype) for name, dtype in ceiling_dtypes(device, args.amp)}
        if form == "naive" else None,
    }


def gc_collect() -> None:
    import gc

    gc.collect()


# ----------------------------------------------------------------------------- data pipeline
def data_pipeline(args: argparse.Namespace, root: Path) -> dict:
    """Images/s of decode + train transform through ImageListDataset, without and with the cache."""
    from data import build_dataset
    from data.sampler import sample_seed
    from data.transforms import build_train_transform

    dataset = build_dataset("demo", root, "train", build_train_transform(recipe_augment(args.backbone, args.img_size)))
    result = {}
    # One torch thread, as in a DataLoader worker: the transforms' small tensor ops (normalise,
    # random erasing) only lose time to thread synchronisation with more.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for mode in ("decode", "cached"):
        if mode == "cached":
            dataset.cache_images()
        dataset[(0, 1)]  # warm-up (imports, first-call costs)
        t0 = time.perf_counter()
        for index in range(len(dataset)):
            dataset[(index, sample_seed(0, 0, index))]
        result[mode] = len(dataset) / (time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return result


def make_batch(args: argparse.Namespace, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of generated faces through the recipe's train transform (realistic statistics,
    so BatchNorm's statistics of images and of mirrors are as close as in real training)."""
    from data import build_dataset
    from data.sampler import sample_seed
    from data.transforms import build_train_transform

    dataset = build_dataset("demo", root, "train", build_train_transform(recipe_augment(args.backbone, args.img_size)))
    items = [dataset[(i % len(dataset), sample_seed(args.seed, 0, i))] for i in range(args.batch_size)]
    return torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items])


# ----------------------------------------------------------------------------- driver
def main(args: argparse.Namespace) -> int:
    from data.demo import generate_demo_dataset
    from models import build_model

    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); python {platform.python_version()}", flush=True)
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}", flush=True)
    else:
        print(f"native bf16 on this CPU: {'yes' if cpu_has_native_bf16() else 'no (bf16 is emulated, slower than fp32)'}",
              flush=True)
    print(f"precision of the optimised form: {args.amp_reason}", flush=True)
    print(tcmalloc_status(), flush=True)
    print(f"load average at start: {load_average()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
        tmp_path = Path(tmp)
        # 100 px JPEG faces, the size of RAF-DB's aligned images.
        root = generate_demo_dataset(tmp_path / "faces", num_train=args.data_images, num_test=21, image_size=100)
        torch.manual_seed(args.seed)
        images, labels = make_batch(args, root)
        model = build_model(args.backbone, num_classes=7, img_size=args.img_size)
        payload_path = tmp_path / "payload.pt"
        torch.save({"state": model.state_dict(), "images": images, "labels": labels}, payload_path)
        del model

        results = {}
        for form in FORMS:
            out = tmp_path / f"{form}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", form, "--payload", str(payload_path),
                   "--result", str(out), *sys.argv[1:], "--amp", args.amp]  # resolved once, here
            subprocess.run(cmd, check=True)
            results[form] = json.loads(out.read_text())
            r = results[form]
            if form == "optimised":
                print(f"memory format of the optimised form: {r['channels_last_reason']}", flush=True)
            print(f"{form:9s}: {r['train_images_per_s']:7.1f} img/s train (median of "
                  f"{len(r['step_times'])} steps: {', '.join(f'{t:.3f}' for t in r['step_times'])} s; "
                  f"CPU time {statistics.median(r['step_cpu_times']):.3f} s/step)", flush=True)
        data = data_pipeline(args, root) if not args.skip_data else None
    print(f"load average at end: {load_average()}", flush=True)
    return report(args, results, data)


def report(args: argparse.Namespace, results: dict, data: dict | None) -> int:
    naive, fast = results["naive"], results["optimised"]
    print()
    print(f"{args.backbone} @ {args.img_size}px, batch {args.batch_size} (+ its mirrors), {args.opt}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, device {args.device}; images/s count each source image once")
    print(f"naive:     two-pass, fp32, contiguous, for-loop {args.opt}")
    precision = "fp32" if fast["amp"] == "off" else f"{fast['amp']} autocast"
    print(f"optimised: {fast['flip_forward']}, {precision}, {'channels-last' if fast['channels_last'] else 'contiguous'}, "
          f"fused {args.opt}{', torch.compile' if args.compile else ''}")
    print(f"evaluation (engine.predict) computes attention maps: "
          f"{ {True: 'YES (wasted work)', False: 'no', None: 'not measured'}[fast['eval_with_maps']] }")
    print(f"{'':24s}{'naive':>12s}{'optimised':>12s}{'ratio':>8s}")
    mem = "peak RSS MB" if args.device == "cpu" else "peak allocated MB"
    rows = [
        ("train images/s", naive["train_images_per_s"], fast["train_images_per_s"]),
        ("eval images/s", naive["eval_images_per_s"], fast["eval_images_per_s"]),
        (f"train {mem}", naive["train_peak_mb"], fast["train_peak_mb"]),
        ("  above idle process", naive["train_peak_mb"] - naive["idle_mb"], fast["train_peak_mb"] - fast["idle_mb"]),
        (f"eval {mem}", naive["eval_peak_mb"], fast["eval_peak_mb"]),
        ("  above idle process", naive["eval_peak_mb"] - naive["idle_mb"], fast["eval_peak_mb"] - fast["idle_mb"]),
    ]
    for name, a, b in rows:
        print(f"{name:24s}{a:12.1f}{b:12.1f}{b / a if a > 0 else float('nan'):8.2f}")
    if utilisation(naive, naive, args.batch_size):
        print(f"work per training step (image + mirror, forward + backward, matmuls and convolutions): "
              f"{naive['step_gflop']:.0f} GFLOP; large-matmul ceiling of this device: "
              + ", ".join(f"{v:.0f} GFLOP/s {k}" for k, v in naive["matmul_gflops"].items()))
        for name, r in (("naive", naive), ("optimised", fast)):
            achieved, precision, share, bound = utilisation(naive, r, args.batch_size)
            print(f"  {name:9s} {achieved:6.0f} GFLOP/s = {share:5.1%} of the {precision} ceiling")
        print(f"  upper bound on any speedup that keeps this arithmetic (the step at the best ceiling): {bound:.2f}x")
    if data is not None:
        print(f"data pipeline (1 process, 1 thread, decode + train transform): {data['decode']:.0f} img/s; "
              f"cached (--cache-images): {data['cached']:.0f} img/s")
        slowest = min(("model (optimised train step)", fast["train_images_per_s"]),
                      ("data pipeline, per loader process", data["decode"]), key=lambda x: x[1])
        print(f"bound: {slowest[0]} at {slowest[1]:.0f} img/s")

    ok = True
    for label, key in (("first train step", "first_step_terms"), ("eval mode", "eval_mode_terms")):
        a, b = naive[key], fast[key]
        rel = abs(b["loss"] - a["loss"]) / abs(a["loss"])
        ok &= rel <= args.loss_tol
        terms = ", ".join(f"{k} {a[k]:.5f} / {b[k]:.5f}" for k in ("loss", "rsl", "rac") if k in a)
        print(f"loss ({label}), naive / optimised: {terms}; relative difference {rel:.2%} "
              f"(tolerance {args.loss_tol:.0%}) {'OK' if rel <= args.loss_tol else 'FAILED'}")
    speedup = fast["train_images_per_s"] / naive["train_images_per_s"]
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "data": data,
                                               "speedup": speedup, "loss_ok": ok,
                                               "tcmalloc": tcmalloc_status(), "torch": torch.__version__,
                                               "cpu": cpu_model()}, indent=2) + "\n")
    print(f"speedup: {speedup:.2f}")
    return 0 if ok else 1


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per form")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--eval-batches", type=int, default=5, help="timed evaluation batches (of 2x --batch-size)")
    p.add_argument("--data-images", type=int, default=128, help="generated images for the data-pipeline timing (>= 21)")
    p.add_argument("--skip-data", action="store_true", help="do not time the data pipeline")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                   help="optimised form's autocast, as train.py's --amp: auto = CUDA: bf16 if supported, else "
                        "fp16; CPU: bf16 only where a timed probe finds it faster than fp32 (utils/device.py)")
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                   help="optimised form's memory format: auto = contiguous for transformers; for CNNs "
                        "channels-last only where a timed probe of this model and batch finds it faster")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model in the optimised form, as train.py --compile (training steps only)")
    p.add_argument("--flip-forward", choices=["auto", "one-pass", "two-pass"], default="auto",
                   help="optimised form's mirror pass, as train.py's flag (auto: one pass where exact, no BatchNorm)")
    p.add_argument("--opt", default="auto", help="auto = adamw for transformers, adam for CNNs (train_exp.sh)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--loss-tol", type=float, default=0.02, help="relative loss tolerance, naive vs optimised")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", choices=FORMS, help=argparse.SUPPRESS)
    p.add_argument("--payload", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    cli_args = resolve(get_parser().parse_args())
    if cli_args.worker:
        result = run_form(cli_args.worker, cli_args, cli_args.payload)
        Path(cli_args.result).write_text(json.dumps(result))
    else:
        sys.exit(main(cli_args))

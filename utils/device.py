"""What the compute device can do fast: the precision (``--amp auto``) and memory format
(channels-last) of the optimised training step, chosen by measurement on this machine.

    python -m utils.device --choose-amp          # prints off | bf16 | fp16 (the reason on stderr)

On CUDA, ``--amp auto`` is bf16 where the GPU computes it in hardware (compute capability 8.0+:
Ampere and later; ROCm), else fp16 with a gradient scaler: V100 and T4 only emulate bf16. On a CPU it is bf16 only
where a short timed probe (fp32 against bf16 autocast, a convolution block and a transformer
MLP, forward + backward) finds bf16 faster; the probe's result is cached per machine (CPU model,
its bf16-related flags, torch version) under ``$XDG_CACHE_HOME/fer-mek`` (default
``~/.cache/fer-mek``). A Linux CPU with none of those flags computes bf16 by emulation, several
times slower than fp32 (0.31x for ResNet-18 on an Ice Lake Xeon, bench/RESULTS.md); it is not
probed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

# /proc/cpuinfo flags of CPUs that compute bf16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# The flags that can change how fast bf16 runs (part of the probe cache's key; any of them: probe).
BF16_RELATED_FLAGS = NATIVE_BF16_FLAGS | {"amx_tile", "avx_ne_convert", "avx512_fp16"}
# bf16 must be measured at least this much faster than fp32 to be chosen (a margin for the
# probe's noise: choosing a precision that is not faster would make training slower).
BF16_MIN_SPEEDUP = 1.10
AMP_CHOICES = ("auto", "off", "bf16", "fp16")


class DeviceError(ValueError):
    """The requested device does not exist here; the message names the flag."""


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``--device`` auto | cpu | cuda -> a device (CUDA device ``local_rank`` under torchrun)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda, but CUDA is not available on this machine")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def cuda_has_native_bf16(device: torch.device | str | int) -> bool:
    """Whether this GPU computes bf16 in hardware: compute capability 8.0+ (Ampere and later), or
    ROCm. ``torch.cuda.is_bf16_supported()``'s default also counts emulation (V100, T4), where
    bf16 autocast is slower than fp16 with a scaler."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def _read_cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return None


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 arithmetic. Without it oneDNN emulates bf16, and bf16 autocast
    trains several times slower than fp32 (measured: 0.31x for ResNet-18 on an Ice Lake Xeon, bench/RESULTS.md)."""
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
        if cpuinfo is None:  # do not guess
            return True
    return bool(NATIVE_BF16_FLAGS & set(cpuinfo.split()))


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name (/proc/cpuinfo's "model name"; platform.processor() elsewhere)."""
    cpuinfo = _read_cpuinfo() if cpuinfo is None else cpuinfo
    for line in (cpuinfo or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The bf16-related flags this CPU reports; None where there is no /proc/cpuinfo to read."""
    cpuinfo = _read_cpuinfo() if cpuinfo is None else cpuinfo
    if cpuinfo is None:
        return None
    return frozenset(BF16_RELATED_FLAGS & set(cpuinfo.split()))


def probe_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fer-mek"
    return Path(cache_dir) / "device_probe.json"


def probe_key(kind: str, cpuinfo: str | None = None, device: torch.device | str | None = None) -> str:
    """Cache key of a probe on this machine: what it measured, the CPU, its bf16 flags, torch; for a
    probe run on a GPU (``device``), the GPU, its compute capability and CUDA instead of the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return (f"{kind} | {torch.cuda.get_device_name(device)} | compute capability {major}.{minor} | "
                f"CUDA {torch.version.cuda} | torch {torch.__version__}")
    flags = cpu_bf16_flags(cpuinfo)
    flag_text = "flags unknown" if flags is None else ",".join(sorted(flags)) or "no bf16 flags"
    return f"{kind} | {cpu_name(cpuinfo)} | {flag_text} | torch {torch.__version__} | {os.cpu_count()} CPUs"


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable or corrupt: measure again
        return {}
    return data if isinstance(data, dict) else {}


def _store(path: Path, key: str, value: dict) -> None:
    """Add ``key`` to the cache file (atomically: a concurrent reader sees the old or the new file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _load_cache(path)
        data[key] = value
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:  # a read-only home: the choice still holds for this run
        pass


def cached_probe(kind: str, probe: Callable[[], float], cache_dir: str | os.PathLike | None = None,
                 cpuinfo: str | None = None, device: torch.device | str | None = None) -> tuple[float, bool]:
    """(the probe's ratio, whether it came from the cache); measures and stores it when not cached.
    ``device``: where the probe runs (its key names that GPU; default: the CPU)."""
    path, key = probe_cache_path(cache_dir), probe_key(kind, cpuinfo, device)
    entry = _load_cache(path).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("ratio"), (int, float)) and entry["ratio"] > 0:
        return float(entry["ratio"]), True
    ratio = float(probe())
    _store(path, key, {"ratio": ratio, "measured": time.strftime("%Y-%m-%d %H:%M:%S")})
    return ratio, False


# ----------------------------------------------------------------------------- the probes
def _no_sync() -> None:
    pass


def _time_pair(run_a: Callable[[], None], run_b: Callable[[], None], budget_s: float, min_repeats: int = 2,
               max_repeats: int = 5, sync: Callable[[], None] = _no_sync) -> float:
    """Speed of b relative to a (a's time / b's time, medians), alternating a and b so that
    load from other processes falls on both; stops after ``budget_s`` once ``min_repeats`` each.
    ``sync`` waits for the device's queued work (``torch.cuda.synchronize``: a CUDA call returns
    before its kernels have run), before each clock start and stop."""
    run_a(), run_b()  # warm-up: oneDNN primitive creation, cuDNN autotuning, allocator
    sync()
    times_a, times_b = [], []
    start = time.perf_counter()
    while len(times_a) < max_repeats and (len(times_a) < min_repeats or time.perf_counter() - start < budget_s):
        for run, times in ((run_a, times_a), (run_b, times_b)):
            t0 = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a) / statistics.median(times_b)


def bf16_probe(budget_s: float = 0.5) -> float:
    """bf16-autocast speed over fp32 speed on this CPU (> 1: bf16 is faster) for a workload like
    the training step's: a 3x3 convolution block (ResNet stage 2, channels-last, as the
    optimised step runs CNNs) and a transformer MLP (Swin-T stage 1), forward and backward."""
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1, bias=False), torch.nn.BatchNorm2d(64),
                               torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1, bias=False))
    conv = conv.to(memory_format=torch.channels_last)
    mlp = torch.nn.Sequential(torch.nn.LayerNorm(96), torch.nn.Linear(96, 384), torch.nn.GELU(), torch.nn.Linear(384, 96))
    images = torch.randn(2, 64, 28, 28).contiguous(memory_format=torch.channels_last)
    tokens = torch.randn(2 * 28 * 28, 96)

    def step(dtype: torch.dtype | None) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = conv(images).float().mean() + mlp(tokens).float().mean()
        loss.backward()

    return _time_pair(lambda: step(None), lambda: step(torch.bfloat16), budget_s)


def channels_last_probe(model: torch.nn.Module, images: torch.Tensor, budget_s: float = 3.0) -> float:
    """Channels-last speed over contiguous speed for ``model``'s forward + backward on ``images``
    (> 1: channels-last is faster), on the images' device. The model is left in contiguous format."""
    sync = (lambda: torch.cuda.synchronize(images.device)) if images.device.type == "cuda" else _no_sync
    was_training = model.training
    model.train()

    def step(memory_format: torch.memory_format) -> None:
        model.to(memory_format=memory_format)
        out = model(images.contiguous(memory_format=memory_format))
        getattr(out, "logits", out).float().sum().backward()
        model.zero_grad(set_to_none=True)

    try:
        return _time_pair(lambda: step(torch.contiguous_format), lambda: step(torch.channels_last), budget_s, sync=sync)
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.train(was_training)


# ----------------------------------------------------------------------------- the choices
def resolve_amp(requested: str, device: torch.device | str, probe: Callable[[], float] | None = None,
                cache_dir: str | os.PathLike | None = None, cpuinfo: str | None = None) -> tuple[str, str]:
    """The autocast precision to train with ('off' | 'bf16' | 'fp16') and a one-line reason for the log.

    An explicit ``requested`` (off, bf16, fp16) always wins. 'auto': CUDA -> bf16 where
    native (:func:`cuda_has_native_bf16`), else fp16; CPU -> bf16 only where ``probe`` (default :func:`bf16_probe`; cached
    per machine in ``cache_dir``) measures it at least ``BF16_MIN_SPEEDUP`` times fp32's speed;
    a Linux CPU without any bf16 flag is not probed (bf16 is emulated there); other devices: off.
    """
    device = torch.device(device)
    if requested != "auto":
        if requested not in AMP_CHOICES:
            raise ValueError(f"--amp {requested!r}: expected one of {', '.join(AMP_CHOICES)}")
        return requested, f"--amp {requested} as requested"
    if device.type == "cuda":
        name, (major, minor) = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
        if cuda_has_native_bf16(device):
            return "bf16", f"--amp auto: bf16 (native on {name}, compute capability {major}.{minor})"
        return "fp16", (f"--amp auto: fp16 with a gradient scaler ({name}, compute capability {major}.{minor}, "
                        "has no native bf16)")
    if device.type != "cpu":
        return "off", f"--amp auto: fp32 on {device.type}"
    name = cpu_name(cpuinfo)
    flags = cpu_bf16_flags(cpuinfo)
    if flags is not None and not flags:
        return "off", (f"--amp auto: fp32; {name} has no bf16 instructions (no avx512_bf16/amx_bf16/bf16 "
                       f"in /proc/cpuinfo), bf16 would be emulated and slower; not probed")
    ratio, cached = cached_probe("bf16 autocast / fp32", probe or bf16_probe, cache_dir, cpuinfo)
    amp = "bf16" if ratio >= BF16_MIN_SPEEDUP else "off"
    source = "cached bf16 probe" if cached else "bf16 probe"
    return amp, (f"--amp auto: {source}: {ratio:.2f}x fp32 speed on {name}; using "
                 f"{'bf16' if amp == 'bf16' else 'fp32'} (bf16 needs >= {BF16_MIN_SPEEDUP:.2f}x)")


def configure_backends(device: torch.device, amp: str, deterministic: bool = False) -> list[str]:
    """CUDA's backend settings for this run, and the log line saying which.

    On CUDA: cuDNN autotuning (``cudnn.benchmark``: the fastest convolution algorithm for each
    input shape, timed on first use; the shapes of a training run are fixed) and, with ``--amp
    off``, TF32 for fp32 matmuls and convolutions (Ampere and later; 10 mantissa bits instead of
    23, as the cuDNN default already does for convolutions). ``deterministic``
    (``--deterministic``): the same numbers on every rerun on the same machine instead:
    deterministic algorithms only (an error names an operation that has none), no autotuning,
    cuBLAS with a fixed workspace. A CPU run needs none of it: its kernels are deterministic
    already (the bit-exact resume tests run there).
    """
    if device.type != "cuda":
        return ["--deterministic: a CPU run is deterministic already"] if deterministic else []
    if deterministic:
        # cuBLAS reads this when its handle is created, i.e. at the first matmul, after this.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = not deterministic
    tf32 = amp == "off"
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    parts = ["deterministic algorithms, no cuDNN autotuning (--deterministic)" if deterministic
             else "cuDNN autotuning (cudnn.benchmark)",
             "TF32 matmuls and convolutions (--amp off)" if tf32 else f"{amp} autocast"]
    return ["CUDA backends: " + ", ".join(parts)]


def slow_amp_warning(device: torch.device, amp: str) -> str | None:
    """A warning for a precision choice that makes training slower than fp32, else None."""
    if device.type == "cpu" and amp == "bf16" and not cpu_has_native_bf16():
        return ("warning: --amp bf16 on a CPU without native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo): "
                "bf16 is emulated and trains several times slower than fp32 here; --amp off (or auto) is faster")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Choose the training precision for this machine (see utils/device.py).")
    parser.add_argument("--choose-amp", action="store_true",
                        help="print the --amp that 'auto' resolves to here (off, bf16 or fp16); the reason on stderr")
    parser.add_argument("--amp", choices=AMP_CHOICES, default="auto")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda")
    args = parser.parse_args(argv)
    if not args.choose_amp:
        parser.error("nothing to do: pass --choose-amp")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    amp, reason = resolve_amp(args.amp, torch.device(device))
    print(reason, file=sys.stderr)
    print(amp)
    return 0


if __name__ == "__main__":
    sys.exit(main())

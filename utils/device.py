"""What the compute device can do fast."""
from __future__ import annotations

from pathlib import Path

import torch

# /proc/cpuinfo flags of CPUs that compute bf16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 arithmetic. Without it oneDNN emulates bf16, and bf16 autocast
    trains several times slower than fp32 (measured: 0.31x for ResNet-18 on an Ice Lake Xeon, bench/RESULTS.md)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: do not guess
            return True
    return bool(NATIVE_BF16_FLAGS & set(cpuinfo.split()))


def slow_amp_warning(device: torch.device, amp: str) -> str | None:
    """A warning for a precision choice that makes training slower than fp32, else None."""
    if device.type == "cpu" and amp == "bf16" and not cpu_has_native_bf16():
        return ("warning: --amp bf16 on a CPU without native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo): "
                "bf16 is emulated and trains several times slower than fp32 here; --amp off is faster")
    return None

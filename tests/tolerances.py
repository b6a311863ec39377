"""Float comparisons whose tolerance follows from float32 rounding, not from one machine.

Two float32 computations of the same quantity in a different order (one process vs two DDP
ranks, one forward pass over [images; mirrors] vs two, oneDNN's AVX2 vs AVX-512 vs AMX kernels)
differ by rounding that grows with the magnitude of the terms summed, which for a gradient or a
loss is of the order of the largest element of the tensor compared. The tolerance is therefore
``ulps`` units in the last place (float32 eps) of that largest element, relative and absolute.
256 ulps (about 3e-5 of the largest element) is ~7x the largest such difference measured in the
DDP test (4.6e-6 of the tensor's maximum on an Intel Xeon with AMX) and still ~30x below a 0.1%
error, which every real bug these tests are named after exceeds by orders of magnitude.
"""
from __future__ import annotations

import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2^-23, about 1.19e-7
DEFAULT_ULPS = 256


def float32_tolerance(expected: torch.Tensor, ulps: int = DEFAULT_ULPS) -> dict[str, float]:
    """``rtol``/``atol`` for ``torch.testing.assert_close``: ``ulps`` float32 ulps of max |expected|."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return {"rtol": ulps * FLOAT32_EPS, "atol": ulps * FLOAT32_EPS * scale}


def assert_float32_close(actual: torch.Tensor, expected: torch.Tensor, ulps: int = DEFAULT_ULPS,
                         what: str = "") -> None:
    """``actual`` equals ``expected`` up to float32 rounding of a quantity of ``expected``'s size."""
    torch.testing.assert_close(actual, expected, **float32_tolerance(expected, ulps),
                               msg=lambda m: f"{what}: {m}" if what else m)

"""The image and its exact horizontal mirror through the model, for attention-consistency terms.

One forward pass over [images; mirrors] equals two passes when no layer mixes samples
(LayerNorm backbones such as Swin); BatchNorm in train mode normalises with the statistics
of the batch it sees, so there the paper's two passes differ from one. ``--flip-forward auto``
picks one pass where it is exact and two otherwise.
"""
from __future__ import annotations

import torch
from torch import nn

from models import ModelOutput



def has_batch_statistics(model: nn.Module) -> bool:
    """Whether any layer normalises with statistics over the batch (BatchNorm, SyncBatchNorm)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def resolve_flip_forward(choice: str, model: nn.Module) -> str:
    """'auto' -> 'one-pass' where exact (no BatchNorm), else 'two-pass' (the paper's procedure)."""
    if choice != "auto":
        return choice
    return "two-pass" if has_batch_statistics(model) else "one-pass"


def mirror(images: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of (B, C, H, W) images: the width axis."""
    return torch.flip(images, dims=[3])


def forward_with_mirror(model: nn.Module, images: torch.Tensor, one_pass: bool) -> tuple[ModelOutput, torch.Tensor]:
    """(output of the images with their maps, attention maps of their mirrors)."""
    mirrored = mirror(images)
    if one_pass:
        out = model(torch.cat([images, mirrored], dim=0), with_maps=True)
        batch = images.shape[0]
        maps, mirror_maps = out.attention_maps.chunk(2, dim=0)
        features = None if out.features is None else out.features[:batch]
        return ModelOutput(out.logits[:batch], maps, features), mirror_maps
    out = model(images, with_maps=True)
    return out, model(mirrored, with_maps=True).attention_maps


def relative_flip_error(maps: torch.Tensor, mirror_maps: torch.Tensor) -> torch.Tensor:
    """Per image, how far its maps are from the mirror of its mirror's maps, relative to their size:

        E = || M(x) - flip(M(flip x)) ||_F / || M(x) ||_F   over (K, H, W), for (B, K, H, W) maps.

    0 for a network equivariant to mirroring. A strided layer on an even-sized input samples the
    mirror on a grid shifted by half a cell (its output centres s*j - p + (k-1)/2 mirror onto the
    grid only when s divides n + 2p - k), so E stays above 0 even with mirror-symmetric kernels;
    an attention-consistency term (EAC, MEK's RAC) then asks the network to undo that shift.
    """
    aligned = mirror(mirror_maps).float()
    diff = (maps.float() - aligned).flatten(1).norm(dim=1)
    return diff / maps.float().flatten(1).norm(dim=1).clamp_min(torch.finfo(torch.float32).tiny)


def mirror_grid_offsets(size: int, layers: list[tuple[int, int, int]]) -> list[tuple[int, float]]:
    """For an input of ``size`` pixels through ``layers`` = [(kernel, stride, padding), ...]: each layer's
    (output size, offset of its mirrored sampling grid in output cells): 0 where the layer samples an image
    and its mirror at mirrored positions, 0.5 where a stride-2 layer is off by half a cell."""
    out = []
    for kernel, stride, padding in layers:
        span = size + 2 * padding - kernel
        size = span // stride + 1
        out.append((size, (span % stride) / stride))
    return out

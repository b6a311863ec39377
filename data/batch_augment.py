"""``--batch-augment``: the training augmentation applied to whole batches of uint8 images on the
training device, instead of per image with PIL in the loader.

At 48-64 px the PIL path (timm's random resized crop, flip, rotation, normalisation, erasing) costs
0.5-2 ms per image on one CPU thread, as much as the network's step on a small backbone
(bench/fast_regime.md); here one ``affine_grid`` / ``grid_sample`` call does crop, rotation and flip for
the batch, and erasing is one masked fill. The same code runs on a GPU.

Each sample's random parameters come from its own seed, ``data.sampler.sample_seed(seed, epoch,
index)`` (the seed the PIL path uses), through a counter-based hash (SplitMix64), so a sample's
augmentation does not depend on its batch, the device or a resume. For output pixel coordinates
u in [-1, 1]^2 the sampled input point is

    x = c + R(theta) diag(f * s_x, s_y) u

with the crop's half-extent s = (sqrt(A r), sqrt(A / r)) (area A in [--scale-min, 1] of the face,
aspect r log-uniform in [3/4, 4/3], as timm's RandomResizedCrop), its centre c uniform where the
crop fits, theta uniform in [-DEG, DEG] (--rotate), f = -1 with probability --hflip. Bilinear,
zeros outside the face. Then (x / 255 - mean) / std, and with probability --reprob one rectangle
of area in [0.02, --re-max-area] of the image and aspect log-uniform in [0.3, 3.3] set to 0 (timm's
RandomErasing, 'const' mode). The PIL path draws the same distributions from other generators,
so the two paths give different (equally distributed) images.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .sampler import sample_seed
from .transforms import AugmentConfig


def build_batch_augment(args, train_set) -> "BatchAugment | None":
    """``--batch-augment``: the batch transform, after giving ``train_set`` its uint8 per-sample transform
    (None, and the PIL transforms left alone, when the flag is off)."""
    if not getattr(args, "batch_augment", False):
        return None
    from .loaders import augment_config

    augment = BatchAugment(augment_config(args), args.seed)
    first = train_set._decode(0)  # the faces' own size: no resize for a dataset of one size (FERPlus: 48)
    train_set.transform = Uint8Image(max(first.size))
    return augment

# Flags the batch path does not implement: refused with --batch-augment (data/loaders.py).
UNSUPPORTED = {"auto_augment": "--auto-augment", "color_jitter": "--color-jitter", "noise_prob": "--noise-prob"}
_DRAWS = 11  # uniforms per sample (the order is fixed: see BatchAugment.parameters)


def splitmix64_uniform(seeds: np.ndarray, count: int) -> np.ndarray:
    """``count`` uniforms in [0, 1) per seed (N,) -> (N, count): SplitMix64 of seed + k * golden gamma."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = seeds.astype(np.uint64)[:, None] + gamma * np.arange(1, count + 1, dtype=np.uint64)[None, :]
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53  # the top 53 bits: exact float64 in [0, 1)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without a host synchronisation (pinned, asynchronous copy on CUDA)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class Uint8Image:
    """The per-sample transform of the batch path: the decoded face as a (3, S, S) uint8 tensor, resized
    only where it is not S x S (S: the size of the training set's first face), no randomness."""

    random = False

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    def __repr__(self) -> str:
        return f"Uint8Image({self.size})"


class BatchAugment:
    """The training augmentation of a batch of uint8 faces (module docstring)."""

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        unsupported = [flag for key, flag in UNSUPPORTED.items() if getattr(cfg, key)]
        if unsupported:
            raise ValueError(f"--batch-augment does not implement {', '.join(unsupported)}; drop it or use the "
                             "per-image path")
        if cfg.remode != "const":
            raise ValueError("--batch-augment erases with zeros (--remode const) only")
        self.cfg, self.seed, self.rotate = cfg, seed, cfg.rotate

    def parameters(self, indices: torch.Tensor, epoch: int) -> np.ndarray:
        """(B, 11) uniforms per sample: area, aspect, centre x, centre y, angle, flip; erase or not, the
        erased area, its aspect, top, left."""
        seeds = np.array([sample_seed(self.seed, epoch, int(i)) for i in indices.tolist()], dtype=np.uint64)
        return splitmix64_uniform(seeds, _DRAWS)

    def affine(self, u: np.ndarray) -> np.ndarray:
        """(B, 2, 3) ``affine_grid`` matrices: output coordinates -> input coordinates (docstring formula)."""
        lo, hi = self.cfg.scale
        area = lo + (hi - lo) * u[:, 0]
        log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
        ratio = np.exp(log_r) if (lo, hi) != (1.0, 1.0) else np.ones_like(area)
        sx, sy = np.minimum(np.sqrt(area * ratio), 1.0), np.minimum(np.sqrt(area / ratio), 1.0)
        cx, cy = (1 - sx) * (2 * u[:, 2] - 1), (1 - sy) * (2 * u[:, 3] - 1)
        theta = np.deg2rad(self.rotate * (2 * u[:, 4] - 1))
        flip = np.where(u[:, 5] < self.cfg.hflip, -1.0, 1.0)
        cos, sin = np.cos(theta), np.sin(theta)
        matrix = np.empty((len(u), 2, 3))
        matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2] = cos * flip * sx, -sin * sy, cx
        matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2] = sin * flip * sx, cos * sy, cy
        return matrix

    def erase_boxes(self, u: np.ndarray, size: int) -> np.ndarray:
        """(B, 4) rectangles [top, left, height, width] in pixels; height 0 where nothing is erased."""
        boxes = np.zeros((len(u), 4), dtype=np.int64)
        if self.cfg.reprob <= 0:
            return boxes
        area = size * size * (0.02 + (self.cfg.re_max_area - 0.02) * u[:, 7])
        aspect = np.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[:, 8])
        h = np.clip(np.round(np.sqrt(area * aspect)), 1, size).astype(np.int64)
        w = np.clip(np.round(np.sqrt(area / aspect)), 1, size).astype(np.int64)
        top = np.floor(u[:, 9] * (size - h + 1)).astype(np.int64)
        left = np.floor(u[:, 10] * (size - w + 1)).astype(np.int64)
        erase = u[:, 6] < self.cfg.reprob
        boxes[erase] = np.stack([top, left, h, w], axis=1)[erase]
        return boxes

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """uint8 (B, C, H, W) on any device -> normalised float (B, C, S, S) on that device."""
        u = self.parameters(indices, epoch)
        size, device = self.cfg.img_size, images.device
        theta = _to_device(torch.as_tensor(self.affine(u), dtype=torch.float32), device)
        grid = F.affine_grid(theta, [len(u), images.shape[1], size, size], align_corners=False)
        out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mean = _to_device(torch.tensor(self.cfg.mean).view(1, -1, 1, 1) * 255, device)
        std = _to_device(torch.tensor(self.cfg.std).view(1, -1, 1, 1) * 255, device)
        out = (out - mean) / std
        boxes = self.erase_boxes(u, size)
        if boxes[:, 2].any():
            rows = torch.arange(size, device=device)
            b = _to_device(torch.as_tensor(boxes), device)
            inside_y = (rows[None, :] >= b[:, 0:1]) & (rows[None, :] < b[:, 0:1] + b[:, 2:3])
            inside_x = (rows[None, :] >= b[:, 1:2]) & (rows[None, :] < b[:, 1:2] + b[:, 3:4])
            mask = inside_y[:, None, :, None] & inside_x[:, None, None, :]
            out = out.masked_fill(mask, 0.0)
        return out

    def __repr__(self) -> str:
        c = self.cfg
        return (f"BatchAugment(size {c.img_size}, area [{c.scale[0]}, {c.scale[1]}], rotate {self.rotate}, "
                f"hflip {c.hflip}, erase p {c.reprob} up to {c.re_max_area})")

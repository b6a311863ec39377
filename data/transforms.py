"""Train and eval transforms, built with timm's transform factory.

Also makes timm's RandAugment posterize safe under Pillow >= 13, which refuses
``ImageOps.posterize(img, 0)``: the MEK recipe ``rand-m9-mstd0.5-inc1`` asks for 0 bits at
magnitude 10. Older Pillow returned a black image there, which is what we return too, so
the recipe runs unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from timm.data import auto_augment, create_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ``--norm`` name -> (mean, std); recorded in every checkpoint's model_config so that test.py,
# predict.py, visualize.py and export.py normalise as training did.
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "half": ((0.5,) * 3, (0.5,) * 3),
    # dlib's face-recognition ResNet (--backbone dlib_resnet): dlib/dnn/input.h's input_rgb_image_sized
    # computes (p - (122.782, 117.001, 104.298)) / 256 on 0..255 RGB pixels, i.e. on 0..1 pixels a mean
    # of those / 255 and a std of 256 / 255 (models/dlib_resnet.py: DLIB_NORM, checked equal in its tests).
    "dlib": (tuple(m / 255.0 for m in (122.782, 117.001, 104.298)), (256.0 / 255.0,) * 3),
}


def default_norm(backbone: str) -> str:
    """``--norm`` when none is given: the input convention the backbone's pretrained weights expect
    (dlib's for the dlib face-recognition ResNets), else ImageNet's."""
    return "dlib" if backbone.startswith("dlib_resnet") else "imagenet"


def safe_posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """Posterize as Pillow < 13 did: >= 8 bits is a no-op, <= 0 bits gives zeros."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _install_safe_posterize() -> None:
    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        if name in auto_augment.NAME_TO_OP:
            auto_augment.NAME_TO_OP[name] = safe_posterize


_install_safe_posterize()


@dataclass
class AugmentConfig:
    img_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: tuple[float, float] = (1.0, 1.0)  # RandomResizedCrop area range; (1, 1) = plain resize
    hflip: float = 0.5
    color_jitter: float = 0.0
    auto_augment: str | None = None  # e.g. "rand-m9-mstd0.5-inc1"
    interpolation: str = "bilinear"
    reprob: float = 0.25  # random erasing probability
    remode: str = "const"  # "const" (zeros, torchvision-style) or "pixel" (per-pixel noise)
    re_max_area: float = 0.25  # EAC/RUL use scale (0.02, 0.25)
    noise_prob: float = 0.0  # Gaussian pixel noise on the decoded image (EAC's/RUL's add_g), probability
    noise_var: float = 30.0  # its variance in 0-255 pixel units (official: 30)
    rotate: float = 0.0  # random rotation in [-rotate, rotate] degrees about the centre (0 = off)


class GaussianPixelNoise:
    """With probability ``p`` add N(0, var) noise to every 0-255 pixel and clip to uint8: the
    ``add_g`` augmentation of EAC's and RUL's official loaders (src/utils.py; applied to half
    of the training images, before resizing). Draws from NumPy's global generator, which
    ``data/base.py`` seeds per sample."""

    def __init__(self, p: float, var: float) -> None:
        self.p, self.std = p, var**0.5

    def __call__(self, image: Image.Image) -> Image.Image:
        if np.random.random_sample() >= self.p:
            return image
        pixels = np.asarray(image, dtype=np.float64)
        noisy = pixels + np.random.normal(0.0, self.std, pixels.shape)
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))

    def __repr__(self) -> str:
        return f"GaussianPixelNoise(p={self.p}, std={self.std:.3f})"


def build_train_transform(cfg: AugmentConfig):
    """Optional rotation, random resized crop, flip, optional RandAugment/colour jitter, normalise,
    random erasing."""
    base = create_transform(
        input_size=cfg.img_size,
        is_training=True,
        scale=cfg.scale,
        ratio=(1.0, 1.0) if cfg.scale == (1.0, 1.0) else (3 / 4, 4 / 3),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter if cfg.color_jitter > 0 else None,
        auto_augment=cfg.auto_augment,
        interpolation=cfg.interpolation,
        mean=cfg.mean,
        std=cfg.std,
        re_prob=0.0,  # added below so its area range can be set
    )
    steps = list(base.transforms)
    if cfg.rotate > 0:  # on the decoded face, before the crop and resize
        interpolation = T.InterpolationMode.BICUBIC if cfg.interpolation == "bicubic" else T.InterpolationMode.BILINEAR
        steps.insert(0, T.RandomRotation(cfg.rotate, interpolation=interpolation))
    if cfg.noise_prob > 0:
        steps.insert(0, GaussianPixelNoise(cfg.noise_prob, cfg.noise_var))
    if cfg.reprob > 0:
        steps.append(
            RandomErasing(probability=cfg.reprob, min_area=0.02, max_area=cfg.re_max_area, mode=cfg.remode, device="cpu")
        )
    return T.Compose(steps)


def build_eval_transform(cfg: AugmentConfig):
    """Resize the whole face to a square (no crop: faces are aligned), normalise."""
    interpolation = T.InterpolationMode.BICUBIC if cfg.interpolation == "bicubic" else T.InterpolationMode.BILINEAR
    return T.Compose(
        [
            T.Resize((cfg.img_size, cfg.img_size), interpolation=interpolation),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ]
    )

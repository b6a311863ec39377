"""An unlabelled image stream with a weak and a strong view of each image (Face2Exp, UDA, MPL).

``--unlabeled-root`` is a directory (every image file under it, recursively, in sorted order;
class folders, if any, are ignored) or a list file (one path per line, relative to the list's
folder or absolute; blank lines and ``#`` comments skipped; anything after the first
whitespace-separated field, such as a label, is ignored).

Views, as the official ``TransformMPL`` (``data.py``) makes them: the weak view is a resize of
the short side to 256/224 of the input size, a random crop to the input size and a random
horizontal flip; the strong view is the same followed by the official RandAugment
(``augmentation.py``: ``n`` operations drawn with replacement from AutoContrast, Brightness,
Color, Equalize, Invert, Posterize, Sharpness, Solarize and Cover, all at magnitude ``m``;
``n, m = 10, 10`` when ``--randaug`` is not given, the README's command uses ``2 16``). Both views
are then normalised like the labelled images (``--norm``; the official code uses AffectNet's
own mean and std).

The stream is resumable like the labelled one: a :class:`data.sampler.ResumableSampler` with its
own seed, per-sample seeded augmentation (``data/base.py``), and :class:`UnlabeledStream` counts
its epoch and the batches consumed in it (``state_dict``), which the checkpoint keeps.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from .base import ImageListDataset, Sample, load_rgb
from .errors import BadImageError, DatasetError
from .sampler import ResumableSampler

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"})
SEED_OFFSET = 7_919  # the unlabelled permutation differs from the labelled one of the same --seed
PARAMETER_MAX = 10  # the official magnitude scale


# ------------------------------------------------------------------ the official RandAugment

def _float(v: float, max_v: float) -> float:
    return float(v) * max_v / PARAMETER_MAX


def _int(v: float, max_v: float) -> int:
    return int(v * max_v / PARAMETER_MAX)


def _auto_contrast(img: Image.Image, m: int) -> Image.Image:
    return PIL.ImageOps.autocontrast(img)


def _brightness(img: Image.Image, m: int) -> Image.Image:
    return PIL.ImageEnhance.Brightness(img).enhance(_float(m, 1.8) + 0.1)


def _color(img: Image.Image, m: int) -> Image.Image:
    return PIL.ImageEnhance.Color(img).enhance(_float(m, 1.8) + 0.1)


def _equalize(img: Image.Image, m: int) -> Image.Image:
    return PIL.ImageOps.equalize(img)


def _invert(img: Image.Image, m: int) -> Image.Image:
    return PIL.ImageOps.invert(img)


def _posterize(img: Image.Image, m: int) -> Image.Image:
    bits = _int(m, 4)  # 4 bits at m 10, 6 at m 16
    if bits >= 8:
        return img
    if bits <= 0:
        return img.point(lambda _: 0)  # Pillow >= 13 refuses 0 bits; older Pillow gave black
    return PIL.ImageOps.posterize(img, bits)


def _sharpness(img: Image.Image, m: int) -> Image.Image:
    return PIL.ImageEnhance.Sharpness(img).enhance(_float(m, 1.8) + 0.1)


def _solarize(img: Image.Image, m: int) -> Image.Image:
    return PIL.ImageOps.solarize(img, 256 - _int(m, 256))


def _cover(img: Image.Image, m: int) -> Image.Image:
    # Official: a black box over the top 50 rows of a 224-pixel face (the forehead band),
    # whatever the magnitude; scaled here to the image's size.
    img = img.copy()
    width, height = img.size
    PIL.ImageDraw.Draw(img).rectangle((0, 0, width, round(height * 50 / 224)), fill=(0, 0, 0))
    return img


OPS = (_auto_contrast, _brightness, _color, _equalize, _invert, _posterize, _sharpness, _solarize, _cover)


class Face2ExpRandAugment:
    """``n`` ops drawn with replacement (Python's ``random``, seeded per sample), each at magnitude ``m``."""

    def __init__(self, n: int, m: int) -> None:
        if n < 1 or m < 1:
            raise ValueError(f"--randaug needs N >= 1 and M >= 1, got {n} {m}")
        self.n, self.m = n, m

    def __call__(self, img: Image.Image) -> Image.Image:
        for op in random.choices(OPS, k=self.n):
            img = op(img, self.m)
        return img

    def __repr__(self) -> str:
        return f"Face2ExpRandAugment(n={self.n}, m={self.m})"


class TwoViews:
    """(weak, strong) tensors of one image."""

    def __init__(self, img_size: int, mean: Sequence[float], std: Sequence[float], randaug: Sequence[int] = (10, 10),
                 interpolation: str = "bilinear") -> None:
        mode = T.InterpolationMode.BICUBIC if interpolation == "bicubic" else T.InterpolationMode.BILINEAR
        resize = round(img_size * 256 / 224)
        weak = [T.Resize(resize, interpolation=mode), T.RandomCrop(img_size), T.RandomHorizontalFlip()]
        self.weak = T.Compose(weak)
        self.strong = T.Compose([*weak, Face2ExpRandAugment(*randaug)])
        self.normalize = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        weak = self.weak(img)
        strong = self.strong(img)
        return self.normalize(weak), self.normalize(strong)


# -------------------------------------------------------------------------------- the set

def unlabeled_paths(root: str | Path) -> list[Path]:
    """Image files of a directory tree (sorted) or of a list file; raises DatasetError if none is readable."""
    root = Path(root)
    if root.is_dir():
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        where = f"directory {root}"
    elif root.is_file():
        paths = []
        for line in root.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                path = Path(line.split()[0])
                paths.append(path if path.is_absolute() else root.parent / path)
        where = f"list file {root}"
    else:
        raise DatasetError(f"--unlabeled-root {root} does not exist")
    if not paths:
        raise DatasetError(f"--unlabeled-root: no image files in {where} "
                           f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    for path in paths:  # stops at the first readable one
        try:
            load_rgb(path)
            return paths
        except BadImageError:
            continue
    raise DatasetError(f"--unlabeled-root: none of the {len(paths)} image files in {where} can be read "
                       f"(first: {paths[0]})")


def unlabeled_dataset(root: str | Path | None, transform, skip_bad_images: bool = False,
                      paths: list[Path] | None = None) -> ImageListDataset:
    """Items are ((weak, strong), 0, index): the one 'class' is a placeholder. ``paths`` (the
    training images left unlabelled, ``--unlabeled-rest``) replaces ``root``'s listing."""
    if paths is not None and not paths:
        raise DatasetError("--unlabeled-rest: --labelled-fraction leaves no training image unlabelled")
    samples = [Sample(path, 0) for path in (unlabeled_paths(root) if paths is None else paths)]
    return ImageListDataset(samples, ["unlabeled"], transform, skip_bad_images=skip_bad_images,
                            source="unlabeled:the training images without labels" if paths is not None else f"unlabeled:{root}")


class UnlabeledStream:
    """Endless batches of (weak, strong) views, resumable: ``state_dict`` = (epoch, batches used in it)."""

    def __init__(self, dataset: ImageListDataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 workers: int = 0, pin_memory: bool = False) -> None:
        if len(dataset) < batch_size * world_size:
            raise DatasetError(f"{dataset.source} has {len(dataset)} images, fewer than one unlabelled batch of "
                               f"{batch_size * world_size} (--mu x --batch-size); lower --mu or add images")
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = ResumableSampler(len(dataset), seed + SEED_OFFSET, True, rank, world_size)
        # A generator of its own: creating an iterator must not draw from torch's global one. Persistent
        # workers: the stream starts a new epoch every few hundred steps, and restarting them costs seconds.
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
                                 generator=torch.Generator().manual_seed(seed + SEED_OFFSET))
        self.batches_per_epoch = self.sampler.per_rank // batch_size
        self.epoch = 0
        self.batch = 0
        self._iterator = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (weak, strong) batch, starting a new epoch (a new permutation) when one ends."""
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch, self._iterator = self.epoch + 1, 0, None
        if self._iterator is None:
            self.sampler.set_epoch(self.epoch, self.batch * self.batch_size)
            self._iterator = iter(self.loader)
        (weak, strong), _, _ = next(self._iterator)
        self.batch += 1
        return weak, strong

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "size": len(self.dataset)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("size", len(self.dataset)) != len(self.dataset):
            raise DatasetError(f"the checkpoint's unlabelled set had {state['size']} images, "
                               f"{self.dataset.source} has {len(self.dataset)}; an exact resume needs the same set")
        self.epoch, self.batch, self._iterator = int(state["epoch"]), int(state["batch"]), None

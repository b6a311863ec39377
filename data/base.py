"""A labelled list of image files: decoding, per-sample seeded augmentation, optional cache.

Every dataset in ``data/`` parses its own layout into a list of (path, label) and a class
list, and hands them to :class:`ImageListDataset`, which does the rest the same way for all.

Augmentation randomness is seeded per sample: the sampler passes ``(index, seed)`` and the
transform runs with Python's, torch's and NumPy's global generators seeded from it, so a
sample's augmentation does not depend on the number of workers, the batch it lands in, or
whether the run was resumed mid-epoch.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .errors import BadImageError, DatasetError


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def load_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully as RGB (grayscale FER2013 images become 3-channel)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise BadImageError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise BadImageError(f"expected an image file but found a directory: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"cannot decode image {path}: {exc}") from None


class ImageListDataset(Dataset):
    """Images with integer labels in ``range(len(classes))``; items are (image, label, index)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        transform: Callable | None = None,
        skip_bad_images: bool = False,
        source: str = "",
        bad_image_log: str | Path | None = None,
    ) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.source = source
        self._cache: list[np.ndarray | None] | None = None
        # Skipped files are appended here by whichever process (worker) meets them.
        self.bad_image_log = Path(bad_image_log) if bad_image_log else None
        for sample in self.samples:
            if not 0 <= sample.label < len(self.classes):
                raise DatasetError(f"{source}: label {sample.label} of {sample.path} is outside 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for sample in self.samples:
            counts[sample.label] += 1
        return counts

    def subset(self, indices: Sequence[int], transform: Callable | None = None, source: str | None = None
               ) -> "ImageListDataset":
        """The samples at ``indices`` (in that order) as a dataset of their own, e.g. a validation split."""
        return ImageListDataset([self.samples[i] for i in indices], self.classes,
                                self.transform if transform is None else transform,
                                skip_bad_images=self.skip_bad_images, source=source or self.source,
                                bad_image_log=self.bad_image_log)

    def cache_images(self) -> None:
        """Decode every image once into memory (uint8 HWC) so epochs only augment."""
        self._cache = [np.asarray(self._decode(i)) for i in range(len(self.samples))]

    def _decode(self, index: int) -> Image.Image:
        if self._cache is not None and self._cache[index] is not None:
            return Image.fromarray(self._cache[index])
        return load_rgb(self.samples[index].path)

    def _decode_or_substitute(self, index: int) -> tuple[Image.Image, int]:
        try:
            return self._decode(index), index
        except BadImageError as exc:
            if not self.skip_bad_images:
                raise
            print(f"warning: skipping bad image ({exc})", flush=True)
            if self.bad_image_log is not None:
                with open(self.bad_image_log, "a", encoding="utf-8") as handle:
                    handle.write(f"{self.samples[index].path}\t{exc}\n")
        # Substitute the next readable sample so the batch keeps its size and order.
        for offset in range(1, len(self.samples)):
            other = (index + offset) % len(self.samples)
            try:
                return self._decode(other), other
            except BadImageError:
                continue
        raise BadImageError(f"{self.source}: no readable image in the dataset")

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, used = self._decode_or_substitute(index)
        if self.transform is not None:
            # A transform with no randomness (--batch-augment's uint8 conversion) skips the seeding.
            random_transform = getattr(self.transform, "random", True)
            image = _seeded(self.transform, image, seed if random_transform else None)
        return image, self.samples[used].label, used


def _seeded(transform: Callable, image: Image.Image, seed: int | None):
    if seed is None:
        return transform(image)
    # The transforms draw from three global generators: Python's (timm's crop, RandAugment's
    # op probability and magnitude noise, random erasing's box), torch's CPU one (flips,
    # colour jitter, erasing's pixel noise) and NumPy's legacy one (RandAugment's choice of
    # ops: np.random.choice). DataLoader workers seed all three from the loader's base seed,
    # so each is run under the sample's seed here and the caller's streams are restored after.
    # (None of timm's or torchvision's transforms uses NumPy's Generator API, whose unseeded
    # default_rng() could not be reached from here.)
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: leave CUDA streams alone
        random.seed(seed)
        np.random.seed(_numpy_seed(seed))
        try:
            return transform(image)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _numpy_seed(seed: int) -> list[int]:
    """NumPy's legacy seeding takes 32-bit words: all 64 bits of the sample seed, low word first."""
    return [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF]

"""Datasets (one per file) behind one registry, plus transforms and the resumable sampler.

Add a dataset by writing ``my_dataset_samples(root, split, label_file, num_classes)``
returning ``(samples, classes)`` and registering it: ``DATASETS.add("name", factory)`` or
``@DATASETS.register("name")`` (``utils/registry.py``). A factory that knows an official
validation split answers ``split="val"``; others raise :class:`DatasetError` for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .affectnet import affectnet_samples
from .base import ImageListDataset, Sample, load_rgb
from .classes import CANONICAL_CLASSES
from .errors import BadImageError, DatasetError
from .ferplus import ferplus_private_samples, ferplus_samples
from .folder import EVAL_SPLIT_NAMES, folder_samples
from .label_modes import LABEL_MODES
from .raf_db import raf_db_samples
from utils.registry import Registry

SampleListFactory = Callable[..., tuple[list[Sample], list[str]]]


def _demo_samples(root: Path, split: str, label_file: Path | None = None, num_classes: int | None = None):
    # The demo set is generated on first use (default size), then read through the real
    # RAF-DB loader; a set generated beforehand with other parameters is used as it is.
    from .demo import generate_demo_dataset
    from .raf_db import LABEL_LIST

    if not (root / LABEL_LIST).is_file():
        generate_demo_dataset(root)
    return raf_db_samples(root, split, label_file, num_classes)


def _folder_samples(root: Path, split: str, label_file: Path | None = None, num_classes: int | None = None):
    if split != "val":
        return folder_samples(root, split, label_file, num_classes)
    # The official validation split: val/ (valid/, validation/) when a test/ beside it is the test split.
    names = [n for n in EVAL_SPLIT_NAMES if n != "test" and (root / n).is_dir()]
    if not names or not (root / "test").is_dir():
        raise DatasetError(f"--val-split official needs {root}/val/ beside {root}/test/ (val/ alone is the test "
                           "split); use --val-fraction F to hold out training images instead")
    return folder_samples(root, names[0], label_file, num_classes)


def _ferplus_private_samples(root: Path, split: str, label_file: Path | None = None, num_classes: int | None = None):
    # --val-split official: PublicTest (FER2013Valid) validates while PrivateTest (FER2013Test) tests.
    return ferplus_private_samples(root, "public" if split == "val" else split, label_file, num_classes)


_folder_samples.official_val = True  # type: ignore[attr-defined]
_ferplus_private_samples.official_val = True  # type: ignore[attr-defined]

DATASETS: Registry[SampleListFactory] = Registry("dataset", error=DatasetError)
DATASETS.add("raf-db", raf_db_samples)
DATASETS.add("folder", _folder_samples)
DATASETS.add("demo", _demo_samples)
DATASETS.add("ferplus", ferplus_samples)  # test = PublicTest (FER2013Valid)
DATASETS.add("ferplus-private", _ferplus_private_samples)  # test = PrivateTest (FER2013Test)
DATASETS.add("affectnet", affectnet_samples)  # test = the validation set

DEFAULT_ROOTS = {
    "raf-db": "dataset/raf-basic",
    "demo": "dataset/demo",
    "ferplus": "dataset/ferplus",
    "ferplus-private": "dataset/ferplus",
    "affectnet": "dataset/affectnet",
}


def register_dataset(name: str, factory: SampleListFactory, default_root: str | None = None) -> None:
    DATASETS.add(name, factory, replace=True)
    if default_root:
        DEFAULT_ROOTS[name] = default_root


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    transform: Callable | None = None,
    label_file: str | Path | None = None,
    num_classes: int | None = None,
    skip_bad_images: bool = False,
) -> ImageListDataset:
    """Build split ``split`` ('train', 'test', or 'val' where the dataset has one) of ``name`` at ``root``."""
    factory = DATASETS.lookup(name)
    if split == "val" and not getattr(factory, "official_val", False):
        raise DatasetError(f"--val-split official: --dataset {name} has no validation split of its own "
                           "(its test split is the one it has); use --val-fraction F to hold out training images")
    root = Path(root)
    samples, classes = factory(root, split, Path(label_file) if label_file else None, num_classes)
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing and not skip_bad_images:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BadImageError(f"image not found: {missing[0]}{more}; use --skip-bad-images to train without them")
    if missing:
        print(f"warning: {len(missing)} listed images are missing; they are skipped", flush=True)
        samples = [s for s in samples if s.path.is_file()]
    return ImageListDataset(samples, classes, transform, skip_bad_images=skip_bad_images, source=f"{name}:{root}:{split}")


__all__ = [
    "BadImageError",
    "CANONICAL_CLASSES",
    "DATASETS",
    "DEFAULT_ROOTS",
    "DatasetError",
    "ImageListDataset",
    "LABEL_MODES",
    "Sample",
    "build_dataset",
    "load_rgb",
    "register_dataset",
]

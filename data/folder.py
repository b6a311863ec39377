"""Generic image-folder layout: ``ROOT/train/<class>/*.jpg`` and ``ROOT/test/<class>/`` or ``ROOT/val/<class>/``.

Folder names map onto the canonical class order (``data/classes.py``): angry/anger,
happy/happiness, sad/sadness, surprise, fear, disgust, neutral, contempt, in any case and
optionally numbered ("0_angry"). FER2013's image-folder release works as it is.
"""
from __future__ import annotations

from pathlib import Path

from .base import Sample
from .classes import CANONICAL_CLASSES, canonical_name
from .errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
EVAL_SPLIT_NAMES = ("test", "val", "valid", "validation")


def split_dir(root: Path, split: str) -> Path:
    """The directory of ``split``; 'test' falls back to val/ and vice versa."""
    names = [split] if split == "train" else [split] + [n for n in EVAL_SPLIT_NAMES if n != split]
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"no {' or '.join(n + '/' for n in names)} directory under {root}")


def _class_dirs(directory: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        name = canonical_name(sub.name)
        if name is None:
            raise DatasetError(
                f"{sub}: folder name {sub.name!r} is not a known expression "
                f"(known: {', '.join(CANONICAL_CLASSES)} and common aliases)"
            )
        if name in found:
            raise DatasetError(f"{directory}: folders {found[name].name!r} and {sub.name!r} both mean {name!r}")
        found[name] = sub
    if not found:
        raise DatasetError(f"{directory}: no class folders")
    return found


def folder_classes(root: Path, num_classes: int | None = None) -> list[str]:
    """Classes of the dataset: those present in train/, in canonical order (``num_classes`` keeps the first N)."""
    present = _class_dirs(split_dir(root, "train"))
    classes = [c for c in CANONICAL_CLASSES if c in present]
    if num_classes is not None:
        if num_classes > len(classes):
            raise DatasetError(f"--num-classes {num_classes}, but {root / 'train'} has only {len(classes)} classes")
        classes = classes[:num_classes]
    return classes


def folder_samples(root: Path, split: str, label_file: Path | None = None, num_classes: int | None = None):
    """Return (samples, classes) of ``split``; classes absent from train/ are refused in other splits."""
    if label_file is not None:
        raise DatasetError("--label-file applies to list-based datasets (raf-db), not to the folder layout")
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root}")
    directory = split_dir(root, split)
    if split != "train" and not (root / "train").is_dir():
        # An evaluation-only root (test/ or val/ alone, e.g. test.py on another dataset): its own classes.
        present = _class_dirs(directory)
        classes = [c for c in CANONICAL_CLASSES if c in present][:num_classes]
    else:
        classes = folder_classes(root, num_classes)
    samples = []
    for name, sub in _class_dirs(directory).items():
        if name not in classes:
            if num_classes is not None and name in CANONICAL_CLASSES[len(classes):]:
                continue  # dropped by --num-classes (e.g. contempt in the 7-class protocol)
            raise DatasetError(f"{sub}: class {name!r} has no training folder under {root / 'train'}")
        label = classes.index(name)
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        samples.extend(Sample(p, label) for p in files)
    if not samples:
        raise DatasetError(f"{directory}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return samples, classes

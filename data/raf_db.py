"""RAF-DB basic expression set.

Layout (as distributed)::

    ROOT/EmoLabel/list_patition_label.txt   lines "train_00001.jpg 5" / "test_0001.jpg 1", labels 1..7
    ROOT/Image/aligned/train_00001_aligned.jpg

Also accepted: a list that names the image files directly (``train_00001_aligned.jpg 5`` or a
path relative to ROOT), and ``--label-file`` with the same format (e.g. noisy-label lists)
replacing the training labels. Label order: 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness,
5 Sadness, 6 Anger, 7 Neutral (the canonical order of ``data/classes.py``).
"""
from __future__ import annotations

from pathlib import Path

from .base import Sample
from .classes import CANONICAL_CLASSES
from .errors import DatasetError

RAF_DB_CLASSES = CANONICAL_CLASSES[:7]
LABEL_LIST = Path("EmoLabel") / "list_patition_label.txt"


def parse_label_list(list_file: Path, num_classes: int) -> list[tuple[str, int]]:
    """Parse ``name label`` lines (labels 1..num_classes) into (name, 0-based label)."""
    if not list_file.is_file():
        raise DatasetError(f"label file not found: {list_file}")
    entries = []
    with open(list_file, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise DatasetError(f"{list_file}:{line_no}: expected 'image_name label', got {line.strip()!r}")
            name, label_text = fields
            try:
                label = int(label_text)
            except ValueError:
                raise DatasetError(f"{list_file}:{line_no}: label {label_text!r} is not an integer") from None
            if not 1 <= label <= num_classes:
                raise DatasetError(f"{list_file}:{line_no}: label {label} is outside 1..{num_classes}")
            entries.append((name, label - 1))
    if not entries:
        raise DatasetError(f"label file {list_file} holds no entries")
    return entries


def _image_path(root: Path, name: str) -> Path:
    stem = Path(name).stem
    candidates = [
        root / "Image" / "aligned" / f"{stem}_aligned.jpg",  # the official list names train_00001.jpg
        root / "Image" / "aligned" / name,  # list names the aligned file directly
        root / name,  # list holds paths relative to the root
        root / "Image" / "original" / name,
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]  # reported as missing when loaded


def raf_db_samples(root: Path, split: str, label_file: Path | None = None, num_classes: int | None = None):
    """Return (samples, classes) of the ``train`` or ``test`` split."""
    if num_classes not in (None, 7):
        raise DatasetError(f"RAF-DB basic has 7 classes; --num-classes {num_classes} does not apply")
    if not root.is_dir():
        raise DatasetError(f"RAF-DB root not found: {root} (expected {root / LABEL_LIST})")
    list_file = root / LABEL_LIST
    if split == "train" and label_file is not None:
        list_file = label_file if label_file.is_absolute() or label_file.exists() else root / label_file
    prefix = "train" if split == "train" else "test"
    entries = [(n, y) for n, y in parse_label_list(list_file, 7) if Path(n).name.startswith(prefix)]
    if not entries:
        raise DatasetError(f"{list_file}: no '{prefix}_*' entries for split {split!r}")
    return [Sample(_image_path(root, name), label) for name, label in entries], list(RAF_DB_CLASSES)

"""AffectNet (manually annotated part), 8 classes or the 7-class protocol without contempt.

Layouts, tried in this order (the validation set is the test split; AffectNet's test set is not public):

(a) The official annotation CSVs ::

        ROOT/training.csv     header "subDirectory_filePath,face_x,face_y,face_width,face_height,
        ROOT/validation.csv   facial_landmarks,expression,valence,arousal"; only subDirectory_filePath and
                              expression are used (found by name, any order); a file without the header
                              row is read in this official column order
        ROOT/Manually_Annotated_Images/<subDirectory_filePath>   e.g. .../1/0b1f1b...e6.jpg

    CSV paths are relative to the first existing of ``ROOT/Manually_Annotated_Images/`` and
    ``ROOT/Manually_Annotated/Manually_Annotated_Images/``, else to ``ROOT`` itself.

(b) Lists, as shipped with the common pre-cropped releases ::

        ROOT/train.txt                    lines "path label" or "path,label"; label in AffectNet's numbering
        ROOT/val.txt (or ROOT/test.txt)   path relative to ROOT (or absolute), e.g. "train/1/0001.jpg 1"

    A first line whose label field reads "label", "expression" or "class" is taken as a header.

Labels use AffectNet's numbering in both layouts: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear,
5 Disgust, 6 Anger, 7 Contempt, 8 None, 9 Uncertain, 10 No-Face. 8-10 are dropped, and so is 7 with
``--num-classes 7``; 0-7 map onto the canonical order of ``data/classes.py``. The default is 8 classes.
``--label-file FILE`` (either format) replaces the training labels; test labels stay official.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .base import Sample
from .classes import CANONICAL_CLASSES
from .errors import DatasetError

# AffectNet's expression codes 0..7, stated once; they map by name onto CANONICAL_CLASSES.
AFFECTNET_EMOTIONS: tuple[str, ...] = (
    "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt",
)
TO_CANONICAL: tuple[int, ...] = tuple(CANONICAL_CLASSES.index(name) for name in AFFECTNET_EMOTIONS)
DROPPED_CODES = {8: "None", 9: "Uncertain", 10: "No-Face"}
OFFICIAL_COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
    "facial_landmarks", "expression", "valence", "arousal",
)
CSV_FILES = {"train": "training.csv", "test": "validation.csv"}
LIST_FILES = {"train": ("train.txt",), "test": ("val.txt", "test.txt")}
IMAGE_DIRS = (Path("Manually_Annotated_Images"), Path("Manually_Annotated") / "Manually_Annotated_Images")
_HEADER_LABELS = {"label", "expression", "class"}


def _code(text: str, where: str) -> int:
    try:
        code = int(text)
    except ValueError:
        raise DatasetError(f"{where}: expression {text!r} is not an integer") from None
    if not 0 <= code <= 10:
        raise DatasetError(f"{where}: expression {code} is outside AffectNet's 0..10")
    return code


def _is_header(fields: list[str]) -> bool:
    # A header names a known column, or has no integer where the official order puts expression.
    if {f.strip().lower() for f in fields} & {c.lower() for c in OFFICIAL_COLUMNS}:
        return True
    position = OFFICIAL_COLUMNS.index("expression")
    return len(fields) <= position or not fields[position].strip().lstrip("-").isdigit()


def read_annotation_csv(path: Path) -> list[tuple[str, int, int]]:
    """(path, AffectNet code, line) of each row of an official-format CSV."""
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        first = next((row for row in reader if any(f.strip() for f in row)), None)
        if not first:
            raise DatasetError(f"{path}:1: empty file; expected the columns {','.join(OFFICIAL_COLUMNS)}")
        if not _is_header(first):
            # No header row: the official column order.
            width, path_col, label_col = len(first), 0, OFFICIAL_COLUMNS.index("expression")
            pending = [(reader.line_num, first)]
        else:
            names = [f.strip().lower() for f in first]
            missing = [c for c in ("subDirectory_filePath", "expression") if c.lower() not in names]
            if missing:
                raise DatasetError(f"{path}:1: missing column(s) {', '.join(missing)} (header: {','.join(first)})")
            width, path_col, label_col = len(first), names.index("subdirectory_filepath"), names.index("expression")
            pending = []
        for line, fields in [*pending, *((reader.line_num, f) for f in reader)]:
            if not any(f.strip() for f in fields):
                continue
            where = f"{path}:{line}"
            if len(fields) != width:
                raise DatasetError(f"{where}: expected {width} comma-separated fields, got {len(fields)}")
            name = fields[path_col].strip()
            if not name:
                raise DatasetError(f"{where}: empty image path")
            rows.append((name, _code(fields[label_col].strip(), where), line))
    return rows


def read_list(path: Path) -> list[tuple[str, int, int]]:
    """(path, AffectNet code, line) of each ``path label`` / ``path,label`` line."""
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            text = text.strip()
            if not text:
                continue
            where = f"{path}:{line}"
            # Split off the label last, so paths may contain spaces (or commas, in the spaced form).
            fields = text.rsplit(",", 1) if "," in text else text.rsplit(None, 1)
            if len(fields) != 2 or not fields[0].strip():
                raise DatasetError(f"{where}: expected 'image_path label', got {text!r}")
            name, label = fields[0].strip(), fields[1].strip()
            if line == 1 and label.lower() in _HEADER_LABELS:
                continue
            rows.append((name, _code(label, where), line))
    return rows


def read_labels(path: Path) -> tuple[list[tuple[str, int, int]], bool]:
    """Rows of ``path`` and whether it is an official CSV (first line has more than two fields) or a list."""
    if not path.is_file():
        raise DatasetError(f"AffectNet label file not found: {path}")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = next((row for row in csv.reader(handle) if any(f.strip() for f in row)), [])
    official = len(first) > 2
    rows = read_annotation_csv(path) if official else read_list(path)
    if not rows:
        raise DatasetError(f"{path}: no entries")
    return rows, official


def _image_base(root: Path) -> Path:
    for sub in IMAGE_DIRS:
        if (root / sub).is_dir():
            return root / sub
    return root


def _find_label_file(root: Path, split: str) -> Path:
    for name in (CSV_FILES[split], *LIST_FILES[split]):
        if (root / name).is_file():
            return root / name
    names = " or ".join([CSV_FILES[split], *LIST_FILES[split]])
    raise DatasetError(f"AffectNet {split} labels not found: expected {names} under {root}; see dataset/README.md")


def affectnet_samples(
    root: Path, split: str, label_file: Path | None = None, num_classes: int | None = None
) -> tuple[list[Sample], list[str]]:
    """Return (samples, classes) of ``train`` (training set) or ``test`` (validation set)."""
    if split not in CSV_FILES:
        raise DatasetError(f"AffectNet split {split!r} is unknown; choose from train, test")
    if num_classes is None:
        num_classes = 8
    if num_classes not in (7, 8):
        raise DatasetError(f"AffectNet has 8 classes (7 without contempt); --num-classes {num_classes} does not apply")
    if not root.is_dir():
        raise DatasetError(f"AffectNet root not found: {root} (expected {root / 'training.csv'} or {root / 'train.txt'})")
    if split == "train" and label_file is not None:
        path = label_file if label_file.is_absolute() or label_file.exists() else root / label_file
    else:
        path = _find_label_file(root, split)
    rows, official = read_labels(path)
    # Official CSV paths are relative to the image directory; list paths to ROOT.
    base = _image_base(root) if official else root
    samples = []
    for name, code, _ in rows:
        if code in DROPPED_CODES:
            continue
        label = TO_CANONICAL[code]
        if label >= num_classes:  # contempt in the 7-class protocol
            continue
        samples.append(Sample(base / name, label))
    if not samples:
        raise DatasetError(f"{path}: no sample with an expression among the first {num_classes} classes")
    return samples, list(CANONICAL_CLASSES[:num_classes])


"""FERPlus: FER2013's 48x48 grayscale faces relabelled by 10 annotators each (majority-vote labels).

Layouts, tried in this order:

(a) The Microsoft FERPlus release: one vote file next to the image folders ::

        ROOT/fer2013new.csv        header "Usage,Image name,neutral,happiness,surprise,sadness,anger,
                                   disgust,fear,contempt,unknown,NF"; one row per FER2013 image, vote counts
        ROOT/FER2013Train/fer0000000.png   rows with Usage "Training"
        ROOT/FER2013Valid/fer0028638.png   rows with Usage "PublicTest"
        ROOT/FER2013Test/fer0032220.png    rows with Usage "PrivateTest"

    Columns are found by name (any order, any case). Rows with an empty "Image name" are the
    FER2013 images FERPlus removed (not faces); they have no PNG and are skipped.

(b) The per-folder label files that Microsoft's ``generate_training_data.py`` writes (no header) ::

        ROOT/FER2013Train/label.csv  "fer0000000.png,4,0,0,1,3,2,0,0,0,0": the image name and the 10
                                     vote counts in the column order above; a face-box field after the
                                     name ("fer0000000.png,"(0, 0, 48, 48)",4,0,...") is accepted too
        ROOT/FER2013Valid/label.csv, ROOT/FER2013Test/label.csv, images next to them

(c) An image-folder release ``ROOT/train/<class>/*.png`` with ``ROOT/val/<class>/`` (or ``valid/``,
    ``validation/``) and/or ``ROOT/test/<class>/``, read by the generic folder loader
    (``data/folder.py``; folder names such as neutral, happiness/happy, contempt).

Splits. ``train`` is Training / FER2013Train / train/. ``--dataset ferplus`` tests on PublicTest
(FER2013Valid; in layout (c) val/ when present, else test/); ``--dataset ferplus-private`` tests on
PrivateTest (FER2013Test; in layout (c) test/).

Majority vote (layouts a, b). A sample's label is the emotion with the most votes among the eight
emotions, kept only if that emotion has strictly more votes than every other emotion *and* than
"unknown" and "NF" (not a face). Ties and samples where unknown/NF get the most votes are dropped.
(Microsoft's own "majority" training mode is stricter: it first zeroes single votes and then needs
more than half of the remaining votes.)

Classes: the canonical order of ``data/classes.py``. ``--num-classes 8`` (the default) keeps
contempt as label 7; ``--num-classes 7`` is the usual 7-class protocol and drops the samples whose
majority is contempt. ``--label-file FILE`` (layouts a, b) replaces the training labels with the
"Training" rows of FILE, a vote file in the format of ``fer2013new.csv``; test labels stay official.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Sample
from .classes import CANONICAL_CLASSES
from .errors import DatasetError
from .folder import folder_samples

VOTE_FILE = "fer2013new.csv"
# The class order of FERPlus's vote columns, stated once; labels map by name onto CANONICAL_CLASSES.
FERPLUS_EMOTIONS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
VOTE_COLUMNS: tuple[str, ...] = FERPLUS_EMOTIONS + ("unknown", "NF")
TO_CANONICAL: tuple[int, ...] = tuple(CANONICAL_CLASSES.index(name) for name in FERPLUS_EMOTIONS)

# Usage value and image folder of each split of the Microsoft release.
USAGE_DIRS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
SPLIT_USAGE = {"train": "Training", "test": "PublicTest", "public": "PublicTest", "private": "PrivateTest"}


@dataclass(frozen=True)
class VotedSample(Sample):
    """A FERPlus sample with its annotators' 10 vote counts (``VOTE_COLUMNS`` order)."""

    votes: tuple[float, ...] = ()


def class_vote_counts(samples: Sequence[Sample], num_classes: int) -> np.ndarray | None:
    """(N, num_classes) vote counts over the dataset's classes (canonical order; contempt dropped
    at 7 classes; unknown/NF never), or None when a sample carries no votes."""
    if not samples or not all(isinstance(s, VotedSample) and s.votes for s in samples):
        return None
    counts = np.zeros((len(samples), num_classes), dtype=np.float64)
    for row, sample in enumerate(samples):
        for emotion, canonical in enumerate(TO_CANONICAL):
            if canonical < num_classes:
                counts[row, canonical] = sample.votes[emotion]
    return counts


def majority_vote(votes: Sequence[float]) -> int | None:
    """Index into ``FERPLUS_EMOTIONS`` of the strict majority of 10 votes (VOTE_COLUMNS order), or None.

    None when the top emotion count is shared with another emotion, or is not above both the
    unknown and the NF counts, or is zero.
    """
    emotions, unknown, not_face = list(votes[:8]), votes[8], votes[9]
    top = max(emotions)
    if top <= 0 or top <= unknown or top <= not_face or emotions.count(top) > 1:
        return None
    return emotions.index(top)


def _parse_votes(fields: Sequence[str], where: str) -> list[float]:
    votes = []
    for column, text in zip(VOTE_COLUMNS, fields):
        try:
            value = float(text)
        except ValueError:
            raise DatasetError(f"{where}: {column} vote {text!r} is not a number") from None
        if value < 0 or not math.isfinite(value):
            raise DatasetError(f"{where}: {column} vote {text!r} is not a count >= 0")
        votes.append(value)
    return votes


def _open_rows(path: Path):
    if not path.is_file():
        raise DatasetError(f"FERPlus label file not found: {path}")
    handle = open(path, encoding="utf-8-sig", newline="")  # -sig: tolerate a BOM from spreadsheet exports
    return handle, csv.reader(handle)


def read_vote_file(path: Path) -> list[tuple[str, str, list[float], int]]:
    """Rows of a ``fer2013new.csv``-format file as (usage, image name, votes, line number)."""
    handle, reader = _open_rows(path)
    with handle:
        header = next((row for row in reader if any(f.strip() for f in row)), None)
        if not header:
            raise DatasetError(f"{path}:1: empty file; expected the header Usage,Image name,{','.join(VOTE_COLUMNS)}")
        names = [h.strip().lower() for h in header]
        wanted = ("Usage", "Image name") + VOTE_COLUMNS
        missing = [w for w in wanted if w.lower() not in names]
        if missing:
            raise DatasetError(f"{path}:{reader.line_num}: missing column(s) {', '.join(missing)}; expected the header "
                               f"Usage,Image name,{','.join(VOTE_COLUMNS)}")
        index = [names.index(w.lower()) for w in wanted]
        rows = []
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            where = f"{path}:{line}"
            if len(fields) != len(header):
                raise DatasetError(f"{where}: expected {len(header)} comma-separated fields, got {len(fields)}")
            usage, name, *vote_text = (fields[i].strip() for i in index)
            if usage not in USAGE_DIRS:
                raise DatasetError(f"{where}: unknown Usage {usage!r} (expected {', '.join(USAGE_DIRS)})")
            rows.append((usage, name, _parse_votes(vote_text, where), line))
    if not rows:
        raise DatasetError(f"{path}: no rows after the header")
    return rows


def read_folder_label_file(path: Path) -> list[tuple[str, list[float], int]]:
    """Rows of a header-less per-folder ``label.csv`` as (image name, votes, line number)."""
    handle, reader = _open_rows(path)
    rows = []
    with handle:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            where = f"{path}:{line}"
            if len(fields) == 1 + len(VOTE_COLUMNS):
                name, vote_text = fields[0], fields[1:]
            elif len(fields) == 2 + len(VOTE_COLUMNS):  # name, face box, votes
                name, vote_text = fields[0], fields[2:]
            else:
                raise DatasetError(f"{where}: expected 'image name,[face box,]' and {len(VOTE_COLUMNS)} vote counts, "
                                   f"got {len(fields)} fields")
            name = name.strip()
            if not name or name.lower() == "image name":
                raise DatasetError(f"{where}: expected an image name in the first field, got {fields[0]!r}")
            rows.append((name, _parse_votes([t.strip() for t in vote_text], where), line))
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return rows


def _check_num_classes(num_classes: int | None) -> int:
    if num_classes is None:
        return 8
    if num_classes not in (7, 8):
        raise DatasetError(f"FERPlus has 8 classes (7 without contempt); --num-classes {num_classes} does not apply")
    return num_classes


def _labelled(entries, num_classes: int, image_dir: Path) -> list[Sample]:
    samples = []
    for name, votes in entries:
        winner = majority_vote(votes)
        if winner is None:
            continue
        label = TO_CANONICAL[winner]
        if label >= num_classes:  # contempt in the 7-class protocol
            continue
        samples.append(VotedSample(image_dir / name, label, tuple(votes)))
    return samples


def _folder_split(root: Path, split: str) -> str:
    # The folder loader names splits by directory; pick the one matching FERPlus's split.
    if split == "train":
        return "train"
    if split == "private":
        if not (root / "test").is_dir():
            raise DatasetError(f"--dataset ferplus-private reads the PrivateTest set from {root / 'test'}, which is missing")
        return "test"
    for name in ("val", "valid", "validation", "test"):
        if (root / name).is_dir():
            return name
    raise DatasetError(f"no val/, valid/, validation/ or test/ directory under {root}")


def ferplus_samples(
    root: Path, split: str, label_file: Path | None = None, num_classes: int | None = None
) -> tuple[list[Sample], list[str]]:
    """Return (samples, classes) of FERPlus ``split``: train, test (= public), public or private."""
    if split not in SPLIT_USAGE:
        raise DatasetError(f"FERPlus split {split!r} is unknown; choose from {', '.join(SPLIT_USAGE)}")
    if not root.is_dir():
        raise DatasetError(f"FERPlus root not found: {root} (expected {root / VOTE_FILE} and {root / 'FER2013Train'}/)")
    vote_file = root / VOTE_FILE
    usage = SPLIT_USAGE[split]
    folder_labels = root / USAGE_DIRS[usage] / "label.csv"
    if not vote_file.is_file() and not folder_labels.is_file() and (root / "train").is_dir():
        return folder_samples(root, _folder_split(root, split), label_file, num_classes)
    classes_n = _check_num_classes(num_classes)
    image_dir = root / USAGE_DIRS[usage]
    if split == "train" and label_file is not None:
        vote_file = label_file if label_file.is_absolute() or label_file.exists() else root / label_file
    if vote_file.is_file() or (split == "train" and label_file is not None):
        rows = read_vote_file(vote_file)
        entries = [(name, votes) for use, name, votes, _ in rows if use == usage and name]
        source = vote_file
    elif folder_labels.is_file():
        entries = [(name, votes) for name, votes, _ in read_folder_label_file(folder_labels)]
        source = folder_labels
    else:
        raise DatasetError(
            f"no FERPlus labels under {root}: expected {vote_file} (Microsoft release), "
            f"{folder_labels} (per-folder labels) or train/<class>/ image folders; see dataset/README.md")
    samples = _labelled(entries, classes_n, image_dir)
    if not samples:
        raise DatasetError(f"{source}: no {usage} sample has a majority label among the first {classes_n} classes")
    return samples, list(CANONICAL_CLASSES[:classes_n])


def ferplus_private_samples(
    root: Path, split: str, label_file: Path | None = None, num_classes: int | None = None
) -> tuple[list[Sample], list[str]]:
    """FERPlus with PrivateTest (FER2013Test) as the test split."""
    return ferplus_samples(root, "private" if split == "test" else split, label_file, num_classes)

"""Tests for the synthetic RAF-DB-layout demo dataset (data/demo.py)."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.classes import CANONICAL_CLASSES
from data.demo import (
    CLASS_NAMES,
    CLEAN_LABEL_FILE,
    CONFIG_FILE,
    IMAGE_DIR,
    LABEL_FILE,
    MIN_PER_CLASS,
    RAFDB_TRAIN_COUNTS,
    class_counts,
    draw_face,
    generate_demo_dataset,
)

# Small enough to generate in a fraction of a second.
SMALL = dict(num_train=140, num_test=42, image_size=32)
HAPPINESS, FEAR = CLASS_NAMES.index("Happiness"), CLASS_NAMES.index("Fear")


def read_labels(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        name, label = line.split(" ")
        rows.append((name, int(label)))
    return rows


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "rafdb", seed=0, **SMALL)


def test_same_seed_gives_identical_files(small_root: Path, tmp_path: Path) -> None:
    again = generate_demo_dataset(tmp_path / "again", seed=0, **SMALL)
    assert all_files(again) == all_files(small_root)


def test_different_seed_differs(small_root: Path, tmp_path: Path) -> None:
    other = generate_demo_dataset(tmp_path / "other", seed=1, **SMALL)
    assert (other / LABEL_FILE).read_bytes() != (small_root / LABEL_FILE).read_bytes()
    name = "train_00001_aligned.jpg"
    assert (other / IMAGE_DIR / name).read_bytes() != (small_root / IMAGE_DIR / name).read_bytes()


def test_draw_face_is_deterministic_and_sized() -> None:
    first = draw_face(4, np.random.default_rng(7), image_size=48)
    second = draw_face(4, np.random.default_rng(7), image_size=48)
    assert first.mode == "RGB" and first.size == (48, 48)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    with pytest.raises(ValueError):
        draw_face(8, np.random.default_rng(0))


def test_label_file_layout(small_root: Path) -> None:
    rows = read_labels(small_root / LABEL_FILE)
    train = [name for name, _ in rows if name.startswith("train_")]
    test = [name for name, _ in rows if name.startswith("test_")]
    # RAF-DB order and padding: train_00001.jpg ... then test_0001.jpg ...
    assert train == [f"train_{i:05d}.jpg" for i in range(1, SMALL["num_train"] + 1)]
    assert test == [f"test_{i:04d}.jpg" for i in range(1, SMALL["num_test"] + 1)]
    assert [name for name, _ in rows] == train + test
    line_format = re.compile(r"^(train_\d{5}|test_\d{4})\.jpg [1-7]$")
    assert all(line_format.match(line) for line in (small_root / LABEL_FILE).read_text().splitlines())


def test_images_exist_and_decode(small_root: Path) -> None:
    for name, _ in read_labels(small_root / LABEL_FILE):
        path = small_root / IMAGE_DIR / name.replace(".jpg", "_aligned.jpg")
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (SMALL["image_size"], SMALL["image_size"])


def test_class_order_matches_the_canonical_order() -> None:
    assert [name.lower() for name in CLASS_NAMES] == list(CANONICAL_CLASSES[:7])


def test_class_counts_follow_rafdb() -> None:
    assert class_counts(sum(RAFDB_TRAIN_COUNTS)) == list(RAFDB_TRAIN_COUNTS)
    for total in (42, 140, 420, 1400):
        counts = class_counts(total)
        assert sum(counts) == total
        assert min(counts) >= MIN_PER_CLASS
        assert int(np.argmax(counts)) == HAPPINESS
        assert counts[FEAR] == min(counts)
    counts = np.array(class_counts(1400))
    expected = 1400 * np.array(RAFDB_TRAIN_COUNTS) / sum(RAFDB_TRAIN_COUNTS)
    assert np.all(np.abs(counts - expected) <= 1)
    with pytest.raises(ValueError):
        class_counts(MIN_PER_CLASS * len(CLASS_NAMES) - 1)


def test_generated_proportions_and_all_classes_in_both_splits(small_root: Path) -> None:
    clean = read_labels(small_root / CLEAN_LABEL_FILE)
    for split, total in (("train", SMALL["num_train"]), ("test", SMALL["num_test"])):
        counts = Counter(label for name, label in clean if name.startswith(split))
        assert [counts[label] for label in range(1, 8)] == class_counts(total)
    written = read_labels(small_root / LABEL_FILE)
    for split in ("train", "test"):
        assert {label for name, label in written if name.startswith(split)} == set(range(1, 8))


def test_label_noise_only_in_train_at_requested_rate(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "noisy", num_train=300, num_test=42,
                                 image_size=16, label_noise=0.1, seed=3)
    written = dict(read_labels(root / LABEL_FILE))
    clean = dict(read_labels(root / CLEAN_LABEL_FILE))
    assert written.keys() == clean.keys()
    flipped = [name for name in written if written[name] != clean[name]]
    assert all(name.startswith("train_") for name in flipped)
    assert len(flipped) == 30  # exactly round(0.1 * 300)
    config = json.loads((root / CONFIG_FILE).read_text())
    assert config["num_noisy_train"] == 30


def test_zero_label_noise_keeps_labels_clean(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "clean", label_noise=0.0, **SMALL)
    assert (root / LABEL_FILE).read_text() == (root / CLEAN_LABEL_FILE).read_text()


def test_complete_dataset_with_same_parameters_is_reused(small_root: Path) -> None:
    image = small_root / IMAGE_DIR / "test_0001_aligned.jpg"
    before = image.stat().st_mtime_ns
    assert generate_demo_dataset(small_root, seed=0, **SMALL) == small_root
    assert image.stat().st_mtime_ns == before


def test_interrupted_generation_is_redone(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "partial", **SMALL)
    reference = all_files(root)
    (root / IMAGE_DIR / "train_00007_aligned.jpg").unlink()
    generate_demo_dataset(root, **SMALL)
    assert all_files(root) == reference


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    root = tmp_path / "foreign"
    root.mkdir()
    (root / "notes.txt").write_text("not a demo dataset")
    with pytest.raises(ValueError, match=re.escape(str(root))):
        generate_demo_dataset(root, **SMALL)
    assert not (root / LABEL_FILE).exists()

    generate_demo_dataset(root, overwrite=True, **SMALL)
    assert (root / LABEL_FILE).is_file()
    assert (root / "notes.txt").read_text() == "not a demo dataset"  # unrelated files are kept


def test_refuses_demo_with_other_parameters_unless_overwrite(small_root: Path, tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", **SMALL)
    with pytest.raises(ValueError, match="different parameters"):
        generate_demo_dataset(root, seed=5, **SMALL)
    generate_demo_dataset(root, seed=5, overwrite=True, **{**SMALL, "num_train": 70})
    names = sorted(p.name for p in (root / IMAGE_DIR).iterdir())
    assert len(names) == 70 + SMALL["num_test"]  # images of the larger old run are gone


def test_rejects_file_as_root(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate_demo_dataset(path, **SMALL)

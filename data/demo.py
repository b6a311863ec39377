"""Synthetic cartoon-face demo dataset written in RAF-DB "basic" layout.

It lets someone without RAF-DB run the whole pipeline: the train/eval code reads
the output through the real RAF-DB loader. Each image is a face ellipse whose
eyebrows, eyes and mouth show one of RAF-DB's seven basic expressions. Pose,
scale, rotation, colours, line width, background clutter and pixel noise vary
so the task is not trivial, while class cues stay clear to a small CNN. Class
cues are mirror-symmetric (disgust's asymmetric cues mirror to disgust), so
horizontal-flip consistency training keeps labels valid.

Layout under ``root`` (label numbers 1..7 as in RAF-DB)::

    EmoLabel/list_patition_label.txt   "train_00001.jpg 5" ... "test_0001.jpg 1" ...
    Image/aligned/train_00001_aligned.jpg, test_0001_aligned.jpg, ...  (RGB JPEG)
    demo_clean_labels.txt              same format, labels before label noise
    demo_config.json                   generation parameters and a completion flag

Label noise only touches the train split: exactly ``round(label_noise * num_train)``
train samples get a uniformly drawn *other* label in the label file; the images
and ``demo_clean_labels.txt`` keep the true expression.

Usage::

    python -m data.demo ROOT [--num-train N --num-test N --image-size N
                              --seed N --label-noise X --overwrite]
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# RAF-DB basic-expression order; index i holds label i + 1.
CLASS_NAMES: tuple[str, ...] = (
    "Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral",
)
# RAF-DB basic train-split counts, used as class proportions for both splits.
RAFDB_TRAIN_COUNTS: tuple[int, ...] = (1290, 281, 717, 4772, 1982, 705, 2524)
MIN_PER_CLASS = 3  # every class appears at least this often in each split

# Bump when the drawing changes so cached datasets are not silently reused.
GENERATOR_VERSION = 1

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGE_DIR = Path("Image") / "aligned"
CLEAN_LABEL_FILE = Path("demo_clean_labels.txt")
CONFIG_FILE = Path("demo_config.json")
_IMAGE_NAME = re.compile(r"^(train|test)_\d+_aligned\.jpg$")

_SUPERSAMPLE = 2  # draw at 2x and downscale, for anti-aliased thin lines
_JPEG_QUALITY = 90
_SKIN_TONES = (
    (255, 224, 189), (255, 205, 148), (234, 192, 134), (224, 172, 105),
    (198, 134, 66), (161, 102, 52), (141, 85, 36), (125, 80, 48),
)


# ---------------------------------------------------------------- class counts

def class_counts(total: int, min_per_class: int = MIN_PER_CLASS) -> list[int]:
    """Split ``total`` samples over the 7 classes in RAF-DB train proportions.

    Largest-remainder rounding, with every class raised to ``min_per_class``.
    Returns counts in label order 1..7 summing to ``total``.
    """
    if total < min_per_class * len(CLASS_NAMES):
        raise ValueError(
            f"need at least {min_per_class * len(CLASS_NAMES)} samples per split "
            f"({min_per_class} per class), got {total}"
        )
    weights = np.asarray(RAFDB_TRAIN_COUNTS, dtype=np.float64)
    ideal = total * weights / weights.sum()
    counts = np.maximum(np.floor(ideal).astype(np.int64), min_per_class)
    while counts.sum() < total:
        counts[np.argmax(ideal - counts)] += 1
    while counts.sum() > total:
        surplus = counts - ideal
        surplus[counts <= min_per_class] = -np.inf
        counts[np.argmax(surplus)] -= 1
    return counts.tolist()


# --------------------------------------------------------------------- drawing

def _ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _curve(half_width: float, y_corner: float, sag: float, n: int = 13,
           wave: float = 0.0, tilt: float = 0.0) -> np.ndarray:
    """Mouth-like polyline: corners at ``y_corner``, middle lowered by ``sag``.

    Positive ``sag`` is a smile (corners up), negative a frown. ``wave`` adds a
    ripple and ``tilt`` raises one corner (used for disgust's asymmetry).
    """
    t = np.linspace(-1.0, 1.0, n)
    y = y_corner + sag * (1.0 - t**2) + wave * np.sin(2.5 * math.pi * t) - tilt * (t + 1.0) / 2.0
    return np.stack([half_width * t, y], axis=1)


def _brow(side: int, inner_y: float, outer_y: float, arch: float) -> np.ndarray:
    """Eyebrow for ``side`` (-1 left, +1 right) from inner to outer end.

    Face units are y-down, so raising a brow means a more negative y.
    """
    inner, outer = np.array([side * 0.10, inner_y]), np.array([side * 0.52, outer_y])
    middle = (inner + outer) / 2.0 + np.array([0.0, -arch])
    return np.stack([inner, middle, outer])


def _expression(label: int, rng: np.random.Generator) -> dict:
    """Feature geometry (face units, face half-height = 1) for one expression.

    Each value is jittered so a class is a family of faces rather than a
    template; the jitter is smaller than the gaps between classes.
    """
    def j(amount: float) -> float:
        return float(rng.uniform(-amount, amount))

    def k(low: float = 0.8, high: float = 1.2) -> float:
        return float(rng.uniform(low, high))

    brows: list[np.ndarray]
    mouth: dict
    extra: list[np.ndarray] = []  # additional strokes (wrinkles)
    name = CLASS_NAMES[label - 1]
    if name == "Surprise":  # raised arched brows, wide round eyes, open O mouth
        y = -0.62 + j(0.04)
        brows = [_brow(s, y, y + 0.02, 0.09 * k()) for s in (-1, 1)]
        eye = (0.15 * k(0.9, 1.1), 0.15 * k(0.9, 1.1))
        mouth = {"open": _ellipse_points(0.0, 0.48 + j(0.03), 0.12 * k(), 0.19 * k(0.85, 1.15))}
    elif name == "Fear":  # inner brows raised and slanted, wide eyes, wide flat open mouth
        inner, outer = -0.66 + j(0.03), -0.52 + j(0.03)  # higher than sadness's
        brows = [_brow(s, inner, outer, 0.0) for s in (-1, 1)]
        eye = (0.15 * k(0.9, 1.1), 0.14 * k(0.9, 1.1))
        mouth_y = 0.52 + j(0.03)
        mouth = {"open": _ellipse_points(0.0, mouth_y, 0.34 * k(0.9, 1.1), 0.12 * k(0.9, 1.1)),
                 # a row of clenched teeth across the stretched mouth
                 "teeth": np.array([[-0.26, mouth_y], [0.26, mouth_y]])}
    elif name == "Disgust":  # one brow lowered, squinted eyes, wavy mouth with a raised corner
        side = int(rng.choice([-1, 1]))  # which side sneers; mirroring keeps it disgust
        high = -0.44 + j(0.03)
        brows = [_brow(s, -0.26 + j(0.02), -0.30 + j(0.02), 0.0) if s == side
                 else _brow(s, high, high, 0.02) for s in (-1, 1)]
        eye = (0.15 * k(0.9, 1.1), 0.035 * k())
        mouth = {"line": _curve(0.30 * k(0.9, 1.1), 0.54, 0.0, wave=0.06 * k(),
                                tilt=side * 0.12 * k())}
        # nose wrinkles beside the bridge, on both sides (mirror-safe)
        extra = [np.array([[s * 0.07, 0.02], [s * 0.15, 0.10]]) for s in (-1, 1)]
    elif name == "Happiness":  # relaxed brows, smile arc (sometimes open)
        y = -0.44 + j(0.03)
        brows = [_brow(s, y, y, 0.05 * k()) for s in (-1, 1)]
        eye = (0.14 * k(0.9, 1.1), 0.08 * k())
        half, corner, sag = 0.33 * k(0.9, 1.1), 0.36 + j(0.03), 0.17 * k()
        if rng.random() < 0.5:
            upper = _curve(half, corner, 0.05 * k())
            mouth = {"open": np.concatenate([upper, _curve(half, corner, sag)[::-1]])}
        else:
            mouth = {"line": _curve(half, corner, sag)}
    elif name == "Sadness":  # inner brows raised, slanting down outward; frown arc
        inner, outer = -0.48 + j(0.03), -0.28 + j(0.03)
        brows = [_brow(s, inner, outer, 0.0) for s in (-1, 1)]
        eye = (0.14 * k(0.9, 1.1), 0.06 * k(0.85, 1.15))  # drooping lids
        mouth = {"line": _curve(0.28 * k(0.9, 1.1), 0.60 + j(0.03), -0.15 * k())}
    elif name == "Anger":  # brows slanted down to the centre (V), narrow eyes, tight flat mouth
        inner, outer = -0.24 + j(0.03), -0.50 + j(0.03)
        brows = [_brow(s, inner, outer, 0.0) for s in (-1, 1)]
        eye = (0.14 * k(0.9, 1.1), 0.05 * k(0.85, 1.15))
        mouth = {"line": _curve(0.18 * k(0.9, 1.1), 0.52 + j(0.03), 0.0), "bold": True}
    else:  # Neutral: straight brows, normal eyes, straight mouth
        y = -0.42 + j(0.03)
        brows = [_brow(s, y, y, 0.0) for s in (-1, 1)]
        eye = (0.14 * k(0.9, 1.1), 0.08 * k(0.85, 1.15))
        mouth = {"line": _curve(0.27 * k(0.9, 1.1), 0.50 + j(0.03), 0.0)}
    return {"brows": brows, "eye": eye, "mouth": mouth, "extra": extra}


def _random_colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def draw_face(label: int, rng: np.random.Generator, image_size: int = 64) -> Image.Image:
    """Draw one ``image_size`` x ``image_size`` RGB face showing expression ``label`` (1..7).

    All randomness comes from ``rng``, so the same generator state gives the same image.
    """
    if not 1 <= label <= len(CLASS_NAMES):
        raise ValueError(f"label must be in 1..{len(CLASS_NAMES)}, got {label}")
    size = image_size * _SUPERSAMPLE
    image = Image.new("RGB", (size, size), _random_colour(rng))
    draw = ImageDraw.Draw(image)

    # Background clutter the face is drawn over, so "not background" must be learned.
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
        w, h = rng.uniform(0.1, 0.5, size=2) * size
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=_random_colour(rng))

    # Pose: face units (half-height 1, y down) -> pixels via scale, rotation, shift.
    scale = rng.uniform(0.38, 0.46) * size
    angle = math.radians(rng.uniform(-12.0, 12.0))
    centre = size / 2.0 + rng.uniform(-0.06, 0.06, size=2) * size
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def px(points: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in (points * scale) @ rotation.T + centre]

    unit = size / 64.0  # line widths scale with the canvas
    width = max(1, round(rng.uniform(2.0, 3.4) * unit))
    ink = _random_colour(rng, 0, 60)
    tone = np.asarray(_SKIN_TONES[rng.integers(len(_SKIN_TONES))]) + rng.integers(-18, 19, size=3)
    skin = tuple(int(c) for c in np.clip(tone, 0, 255))

    aspect = rng.uniform(0.74, 0.9)
    draw.polygon(px(_ellipse_points(0.0, 0.0, aspect, 1.0, n=48)), fill=skin, outline=ink, width=width)

    features = _expression(label, rng)
    eye_w, eye_h = features["eye"]
    sclera = _random_colour(rng, 225, 256)
    eye_line = max(1, round(width * 0.6))  # thinner, so wide eyes still show white
    for side in (-1, 1):
        eye_x, eye_y = side * 0.32, -0.14
        eye = px(_ellipse_points(eye_x, eye_y, eye_w, eye_h))
        draw.polygon(eye, fill=sclera, outline=ink, width=eye_line)
        pupil = min(eye_w, eye_h) * 0.45
        if pupil > 0.03:  # squinted eyes show no pupil
            draw.polygon(px(_ellipse_points(eye_x, eye_y, pupil, pupil, n=16)), fill=ink)

    brow_width = max(1, round(width * rng.uniform(1.2, 1.7)))
    for brow in features["brows"]:
        draw.line(px(brow), fill=ink, width=brow_width, joint="curve")

    nose = np.array([[-0.07, 0.22], [0.0, 0.27], [0.07, 0.22]])
    draw.line(px(nose), fill=ink, width=width)
    for stroke in features["extra"]:
        draw.line(px(stroke), fill=ink, width=width)

    mouth = features["mouth"]
    if "open" in mouth:
        inside = (int(rng.integers(50, 110)), int(rng.integers(5, 30)), int(rng.integers(10, 40)))
        draw.polygon(px(mouth["open"]), fill=inside, outline=ink, width=width)
        if "teeth" in mouth:
            draw.line(px(mouth["teeth"]), fill=sclera, width=max(1, round(width * 1.2)))
    else:
        mouth_width = brow_width if mouth.get("bold") else width
        draw.line(px(mouth["line"]), fill=ink, width=mouth_width, joint="curve")

    image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(2.0, 9.0), size=pixels.shape)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


# -------------------------------------------------------------------- dataset

def _sample_name(split: str, index: int) -> str:
    # RAF-DB pads train indices to 5 digits and test indices to 4.
    return f"train_{index:05d}.jpg" if split == "train" else f"test_{index:04d}.jpg"


def _image_path(root: Path, sample_name: str) -> Path:
    return root / IMAGE_DIR / sample_name.replace(".jpg", "_aligned.jpg")


def _params(num_train: int, num_test: int, image_size: int, seed: int, label_noise: float) -> dict:
    return {
        "generator": "data.demo",
        "version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_test": int(num_test),
        "image_size": int(image_size),
        "seed": int(seed),
        "label_noise": float(label_noise),
    }


def _read_config(root: Path) -> dict | None:
    try:
        config = json.loads((root / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("params", {}).get("generator") != "data.demo":
        return None
    return config


def _write_config(root: Path, params: dict, complete: bool, extra: dict | None = None) -> None:
    config = {"params": params, "complete": complete, **(extra or {})}
    (root / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def _is_complete(root: Path, config: dict) -> bool:
    params = config["params"]
    if not config.get("complete") or not (root / LABEL_FILE).is_file():
        return False
    names = [_sample_name("train", i) for i in range(1, params["num_train"] + 1)]
    names += [_sample_name("test", i) for i in range(1, params["num_test"] + 1)]
    return all(_image_path(root, name).is_file() for name in names)


def _remove_generated_files(root: Path) -> None:
    """Delete only files this generator writes; anything else under root stays."""
    for relative in (LABEL_FILE, CLEAN_LABEL_FILE, CONFIG_FILE):
        (root / relative).unlink(missing_ok=True)
    image_dir = root / IMAGE_DIR
    if image_dir.is_dir():
        for path in image_dir.iterdir():
            if _IMAGE_NAME.match(path.name) and path.is_file():
                path.unlink()


def _shuffled_labels(counts: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    labels = np.repeat(np.arange(1, len(counts) + 1), counts)
    return rng.permutation(labels)


def _add_label_noise(labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Replace exactly ``round(rate * n)`` labels with a uniformly drawn other class."""
    noisy = labels.copy()
    flipped = rng.choice(len(labels), size=round(rate * len(labels)), replace=False)
    offsets = rng.integers(1, len(CLASS_NAMES), size=len(flipped))
    noisy[flipped] = (labels[flipped] - 1 + offsets) % len(CLASS_NAMES) + 1
    return noisy


def _write_label_file(path: Path, rows: Sequence[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{name} {label}\n" for name, label in rows))
    tmp.replace(path)  # the label file appears whole or not at all


def generate_demo_dataset(
    root: str | Path,
    num_train: int = 1400,
    num_test: int = 420,
    image_size: int = 64,
    seed: int = 0,
    label_noise: float = 0.03,
    overwrite: bool = False,
) -> Path:
    """Generate the synthetic 7-expression demo dataset under ``root`` in RAF-DB layout.

    Class proportions follow RAF-DB's train counts (at least ``MIN_PER_CLASS`` per
    class per split). ``label_noise`` is the fraction of train labels replaced by
    another class; test labels are clean. True labels go to ``demo_clean_labels.txt``.
    The output is a pure function of the arguments (byte-identical files).

    If ``root`` already holds a complete dataset made with the same parameters it
    is returned untouched; an unfinished one with the same parameters is redone.
    A non-empty ``root`` holding anything else raises ``ValueError`` unless
    ``overwrite`` is true, which deletes the files this generator would write
    (label files, config, ``Image/aligned/{train,test}_*_aligned.jpg``) and
    leaves everything else in place.

    Returns ``root`` as a ``Path``.
    """
    root = Path(root)
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
    train_counts, test_counts = class_counts(num_train), class_counts(num_test)
    params = _params(num_train, num_test, image_size, seed, label_noise)

    if root.exists():
        if not root.is_dir():
            raise ValueError(f"demo dataset root {root} exists and is not a directory")
        config = _read_config(root)
        same_params = config is not None and config["params"] == params
        if same_params and _is_complete(root, config):
            return root
        if not same_params and any(root.iterdir()) and not overwrite:
            what = ("a demo dataset generated with different parameters "
                    f"({config['params']})" if config else "files that are not a demo dataset")
            raise ValueError(
                f"refusing to write the demo dataset into {root}: it holds {what}; "
                "choose another directory or pass overwrite=True (--overwrite)"
            )
        _remove_generated_files(root)

    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    # Mark the directory as ours first, so an interrupted run is recognised and redone.
    _write_config(root, params, complete=False)

    rng = np.random.default_rng(seed)
    train_clean = _shuffled_labels(train_counts, rng)
    test_labels = _shuffled_labels(test_counts, rng)
    train_noisy = _add_label_noise(train_clean, label_noise, rng)

    clean_rows: list[tuple[str, int]] = []
    rows: list[tuple[str, int]] = []
    for split_code, (split, clean, written) in enumerate(
        (("train", train_clean, train_noisy), ("test", test_labels, test_labels))
    ):
        for index, (true_label, label) in enumerate(zip(clean, written), start=1):
            name = _sample_name(split, index)
            # A per-image stream keeps each image independent of how others were drawn.
            image_rng = np.random.default_rng([seed, split_code, index])
            face = draw_face(int(true_label), image_rng, image_size)
            face.save(_image_path(root, name), format="JPEG", quality=_JPEG_QUALITY)
            clean_rows.append((name, int(true_label)))
            rows.append((name, int(label)))

    _write_label_file(root / CLEAN_LABEL_FILE, clean_rows)
    _write_label_file(root / LABEL_FILE, rows)
    _write_config(root, params, complete=True, extra={
        "class_names": list(CLASS_NAMES),
        "train_counts_clean": train_counts,
        "test_counts": test_counts,
        "num_noisy_train": int((train_noisy != train_clean).sum()),
        "clean_label_file": str(CLEAN_LABEL_FILE),
    })
    return root


# ------------------------------------------------------------- unlabelled faces (Face2Exp)

UNLABELED_DIR = Path("unlabeled")
UNLABELED_LIST = Path("unlabeled.txt")
_UNLABELED_SPLIT_CODE = 2  # per-image streams [seed, 2, i]: apart from train (0) and test (1)


def generate_demo_unlabeled(root: str | Path, num_extra: int = 1400) -> Path:
    """Add an unlabelled set to the demo dataset at ``root``; returns its list file.

    The list ``ROOT/unlabeled.txt`` (the ``--unlabeled-root`` of ``train_exp.sh face2exp-demo``)
    names every train image of the demo set, without its label, plus ``num_extra`` more faces
    drawn the same way (RAF-DB's class proportions, the set's seed and size) under
    ``ROOT/unlabeled/``, whose expressions are recorded nowhere the training reads
    (``unlabeled/params.json`` keeps only the generation parameters). Reuses a complete set
    made with the same parameters; the labelled files are left untouched.
    """
    root = Path(root)
    config = _read_config(root)
    if config is None or not config.get("complete"):
        raise ValueError(f"{root} holds no complete demo dataset; generate it first (python -m data.demo ROOT)")
    params = config["params"]
    extra_params = {"num_extra": int(num_extra), "seed": params["seed"], "image_size": params["image_size"],
                    "version": GENERATOR_VERSION}
    folder = root / UNLABELED_DIR
    marker = folder / "params.json"
    names = [f"extra_{i:05d}.jpg" for i in range(1, num_extra + 1)]
    listed = [str(IMAGE_DIR / _sample_name("train", i).replace(".jpg", "_aligned.jpg"))
              for i in range(1, params["num_train"] + 1)] + [str(UNLABELED_DIR / name) for name in names]
    done = (marker.is_file() and json.loads(marker.read_text()) == extra_params
            and all((folder / name).is_file() for name in names))
    if not done:
        folder.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        if num_extra:
            labels = _shuffled_labels(class_counts(num_extra), np.random.default_rng([params["seed"], _UNLABELED_SPLIT_CODE]))
        for index, name in enumerate(names, start=1):
            image_rng = np.random.default_rng([params["seed"], _UNLABELED_SPLIT_CODE, index])
            draw_face(int(labels[index - 1]), image_rng, params["image_size"]).save(
                folder / name, format="JPEG", quality=_JPEG_QUALITY)
        marker.write_text(json.dumps(extra_params) + "\n")
    tmp = root / (str(UNLABELED_LIST) + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in listed))
    tmp.replace(root / UNLABELED_LIST)
    return root / UNLABELED_LIST


# ------------------------------------------------------------------------ CLI

def _read_labels(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        name, label = line.split()
        rows.append((name, int(label)))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data.demo",
        description="Generate the synthetic facial-expression demo dataset in RAF-DB basic layout.",
    )
    parser.add_argument("root", type=Path, help="output directory (RAF-DB basic root)")
    parser.add_argument("--num-train", type=int, default=1400)
    parser.add_argument("--num-test", type=int, default=420)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-noise", type=float, default=0.03,
                        help="fraction of train labels replaced by another class")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace generator-owned files in a non-empty ROOT")
    parser.add_argument("--unlabeled", type=int, default=None, metavar="N",
                        help="also write ROOT/unlabeled.txt: the train images without labels plus N more faces")
    args = parser.parse_args(argv)
    try:
        root = generate_demo_dataset(
            args.root, num_train=args.num_train, num_test=args.num_test,
            image_size=args.image_size, seed=args.seed,
            label_noise=args.label_noise, overwrite=args.overwrite,
        )
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")

    rows = _read_labels(root / LABEL_FILE)
    clean = dict(_read_labels(root / CLEAN_LABEL_FILE))
    print(f"{'label':<5} {'class':<10} {'train':>6} {'test':>6}")
    for label, name in enumerate(CLASS_NAMES, start=1):
        train = sum(1 for n, lab in rows if n.startswith("train") and lab == label)
        test = sum(1 for n, lab in rows if n.startswith("test") and lab == label)
        print(f"{label:<5} {name:<10} {train:>6} {test:>6}")
    num_train = sum(1 for n, _ in rows if n.startswith("train"))
    noisy = sum(1 for n, lab in rows if clean[n] != lab)
    print(f"total train {num_train} ({noisy} noisy labels), test {len(rows) - num_train}")
    print(f"demo dataset at {root.resolve()}")
    if args.unlabeled is not None:
        listed = generate_demo_unlabeled(root, args.unlabeled)
        count = len(listed.read_text().splitlines())
        print(f"unlabelled set: {count} images listed in {listed.resolve()}")


if __name__ == "__main__":
    main()

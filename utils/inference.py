"""Running a trained checkpoint on photos: load it, read images safely, find and crop faces.

Shared by predict.py, visualize.py and export.py so all three see a face exactly as the
checkpoint's evaluation did: the checkpoint's own image size, normalisation and interpolation,
the whole face crop resized to a square.

Face crops imitate RAF-DB's aligned faces, which show the whole face from forehead to chin with a
little background around it. OpenCV's frontal-face Haar cascade (shipped inside the
opencv-python-headless wheel, nothing downloaded) returns a tighter square, from the eyebrows to
just below the mouth, so each box is grown by ``FACE_MARGIN`` = 20% of its side on every side
(a crop 1.4x the box, centred on it); parts outside the photo are filled with black.

A checkpoint trained on aligned faces records its framing (``model_config["align"]``, a template
of data/align.py); the scripts then align each face to that template with dlib's detector and
landmarks (``locate_faces``), and fall back to the Haar box for a photo where dlib finds no face,
saying which framing each face got.
"""
from __future__ import annotations

import functools
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from utils.checkpoint import CheckpointError, check_model_fits, inference_weights, load_checkpoint

if TYPE_CHECKING:
    from data.align import FaceAligner

FACE_MARGIN = 0.2  # fraction of the detected box's side added on each side
MIN_FACE = 24  # pixels: the Haar cascade's window; smaller faces are not detected
MIN_CROP = 8  # pixels: a face crop (--no-detect) smaller than this is refused
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
Box = tuple[int, int, int, int]  # x, y, width, height in photo pixels


class ImageError(ValueError):
    """An input image cannot be used; the message names the file and why."""


@dataclass
class Predictor:
    """A checkpoint's model with the preprocessing it was evaluated with."""

    model: nn.Module
    classes: list[str]
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    norm: str
    backbone: str
    path: Path
    device: torch.device
    align: str | None = None  # the framing the checkpoint was trained on (data/align.py), None: Haar box

    def preprocess(self, faces: Sequence[Image.Image]) -> torch.Tensor:
        """RGB face crops -> a normalised (B, 3, S, S) batch, as the evaluation transform does."""
        from data.transforms import AugmentConfig, build_eval_transform

        transform = build_eval_transform(AugmentConfig(img_size=self.img_size, mean=self.mean, std=self.std,
                                                       interpolation=self.interpolation))
        return torch.stack([transform(face.convert("RGB")) for face in faces]).to(self.device)

    @torch.no_grad()
    def run(self, faces: Sequence[Image.Image], with_maps: bool = False):
        """The model's output (logits, and attention maps when asked and the head has them)."""
        return self.model(self.preprocess(faces), with_maps=with_maps)

    def probabilities(self, faces: Sequence[Image.Image]) -> torch.Tensor:
        """Softmax class probabilities, (B, K), on the CPU."""
        return torch.softmax(self.run(faces).logits.float(), dim=1).cpu()


def load_predictor(path: str | Path, device: str = "cpu") -> Predictor:
    """Rebuild a checkpoint's model in eval mode; raises CheckpointError naming the file."""
    from data.transforms import NORMALISATIONS
    from models import build_model_from_config
    from utils.device import DeviceError, resolve_device

    state = load_checkpoint(path)
    config = state["model_config"]
    missing = [k for k in ("backbone", "num_classes", "img_size", "classes") if k not in config]
    if missing:
        raise CheckpointError(f"{path}: model_config lacks {', '.join(missing)}; it is incomplete or from another tool")
    norm = config.get("norm", "imagenet")
    if norm not in NORMALISATIONS:
        raise CheckpointError(f"{path}: unknown normalisation {norm!r} (known: {', '.join(sorted(NORMALISATIONS))})")
    model = build_model_from_config(config)
    weights, _ = inference_weights(state)  # the weight average of a --ema run, else the trained model
    check_model_fits(weights, model, path, config)
    model.load_state_dict(weights)
    try:
        dev = resolve_device(device)
    except DeviceError as exc:
        raise CheckpointError(str(exc)) from None
    model.to(dev).eval()
    mean, std = NORMALISATIONS[norm]
    return Predictor(model=model, classes=list(config["classes"]), img_size=int(config["img_size"]),
                     mean=tuple(mean), std=tuple(std), interpolation=config.get("interpolation", "bilinear"),
                     norm=norm, backbone=str(config["backbone"]), path=Path(path), device=dev,
                     align=config.get("align"))


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (searched recursively for image files) and glob patterns -> image paths.

    Returns (paths, problems): one problem line per input that names nothing usable.
    """
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{item}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                problems.append(f"{item}: pattern matches no files")
            paths.extend(found)
        else:
            problems.append(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(paths))
    return unique, problems


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: grayscale, palette, CMYK, alpha (onto black), 16-bit and float."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        if mode.startswith("I;16") or top > 255:
            scale = 255.0 / 65535.0
        elif mode == "F" and top <= 1.0:
            scale = 255.0
        else:
            scale = 1.0
        image = Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8))
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """Open a photo upright (EXIF rotation applied) as RGB; raises ImageError naming the file."""
    try:
        with Image.open(path) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ImageError(f"{path}: cannot read image ({reason})") from None
    return to_rgb(upright)


@functools.lru_cache(maxsize=1)
def _face_cascade():
    import cv2

    file = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(file))
    if cascade.empty():
        raise RuntimeError(f"OpenCV's face detector {file} is missing; install opencv-python-headless<5")
    return cascade


def detect_faces(image: Image.Image, min_size: int = MIN_FACE) -> list[Box]:
    """Frontal faces in an RGB photo, left to right, as (x, y, w, h) boxes."""
    import cv2

    if min(image.size) < min_size:
        return []
    gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY))
    boxes = _face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: (b[0], b[1]))


def crop_box(box: Box, margin: float = FACE_MARGIN) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) around a detected box, grown by ``margin`` per side."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    return left, top, left + round(side), top + round(side)


def crop_face(image: Image.Image, box: Box, margin: float = FACE_MARGIN) -> Image.Image:
    """The face crop the model sees for a detected box (black outside the photo)."""
    return image.crop(crop_box(box, margin))


def whole_image_face(image: Image.Image, name: str | Path) -> Box:
    """With --no-detect the whole image is the face; refuse crops too small to show one."""
    width, height = image.size
    if min(width, height) < MIN_CROP:
        raise ImageError(f"{name}: image is {width}x{height} px, too small for a face (at least {MIN_CROP} px a side)")
    return 0, 0, width, height


def find_faces(image: Image.Image, name: str | Path, detect: bool = True) -> list[tuple[Box, Image.Image]]:
    """(box, crop) per face: detected faces with the margin, or the whole image with detect=False."""
    if not detect:
        return [(whole_image_face(image, name), image)]
    return [(box, crop_face(image, box)) for box in detect_faces(image)]


HAAR = "haar"  # the --align choice and the framing label of the Haar box with its margin


@dataclass
class FoundFace:
    """One face to predict: its detection box, the crop the model sees, and how it was framed."""

    box: Box
    crop: Image.Image
    framing: str  # a template name, "haar" or "whole image"
    corners: list[tuple[float, float]]  # the crop's corners in photo pixels (for drawing)
    score: float | None = None  # dlib's detection score


def resolve_framing(choice: str, predictor: Predictor):
    """(aligner or None, log line) for ``--align`` auto | haar | TEMPLATE, given the checkpoint's framing."""
    from data.align import FaceAligner

    recorded = predictor.align
    name = recorded if choice == "auto" else choice
    if name in (None, HAAR):
        why = ("the checkpoint records no alignment" if choice == "auto" else "--align haar")
        return None, f"framing: OpenCV Haar box + {FACE_MARGIN:.0%} per side ({why})"
    aligner = FaceAligner(name)  # AlignError names an unknown template or the missing package
    why = "recorded in the checkpoint" if choice == "auto" else (
        "--align" + ("" if recorded == name else f"; the checkpoint was trained on {recorded}" if recorded
                     else "; the checkpoint records no alignment"))
    return aligner, (f"framing: {name} alignment ({aligner.template.description}; {why}); the Haar box "
                     f"+ {FACE_MARGIN:.0%} where dlib finds no face")


def aligner_from_flags(align: str, detect: bool, predictor: Predictor) -> FaceAligner | None:
    """predict.py's and visualize.py's ``--align`` / ``--no-detect``: the aligner (None for the Haar box or
    the whole image), after printing the framing line; exits naming ``--align`` on an unknown template or a
    missing dlib."""
    from data.align import AlignError
    from utils.logging import error_exit

    if not detect:
        return None
    try:
        aligner, framing = resolve_framing(align, predictor)
    except AlignError as exc:
        error_exit(f"--align {align}: {exc}")
    print(framing)
    return aligner


def square_corners(left: float, top: float, right: float, bottom: float) -> list[tuple[float, float]]:
    return [(left, top), (right, top), (right, bottom), (left, bottom)]


def locate_faces(image: Image.Image, name: str | Path, detect: bool = True, aligner=None) -> list[FoundFace]:
    """Faces to predict: dlib-aligned when an aligner is given and dlib finds one, else the Haar
    box with its margin (``detect``), or the whole image (``detect=False``)."""
    if not detect:
        box = whole_image_face(image, name)
        return [FoundFace(box, image, "whole image", square_corners(0, 0, *image.size))]
    if aligner is not None:
        aligned = aligner.align(image)
        if aligned:
            found = [FoundFace(f.box, f.crop, aligner.template.name, f.crop_corners(), f.score) for f in aligned]
            return sorted(found, key=lambda f: (f.box[0], f.box[1]))
    return [FoundFace(box, crop_face(image, box), HAAR, square_corners(*crop_box(box))) for box in detect_faces(image)]


class FramingTransform:
    """A dataset transform's first step for raw photos: the best dlib face aligned to the template,
    else the largest Haar box with its margin, else the whole image (test.py on unaligned data).
    Picklable: the dlib models load in each DataLoader worker on first use."""

    def __init__(self, template: str) -> None:
        from data.align import FaceAligner

        self.aligner = FaceAligner(template)

    def __call__(self, image: Image.Image) -> Image.Image:
        image = to_rgb(image)
        crop = self.aligner(image)
        if crop is not None:
            return crop
        boxes = detect_faces(image)
        return crop_face(image, max(boxes, key=lambda b: b[2] * b[3])) if boxes else image

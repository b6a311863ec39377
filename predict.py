"""Predict the expression of every face in photos with a trained checkpoint.

    python predict.py output/demo/best.pth photo.jpg photos/ 'shots/*.png' [--out DIR]
    python predict.py CKPT crops/ --no-detect        # images that are already face crops
    python predict.py CKPT clip.mp4 --output DIR [--smooth 0.3] [--annotate]   # a video: DIR/clip.csv

Faces are framed as the checkpoint was trained: aligned to its template (``--align`` at training,
data/align.py) with dlib's detector and landmarks, or else OpenCV's Haar box with a 20% margin per
side (as RAF-DB's aligned faces are framed; see utils/inference.py), also the fallback where dlib
finds no face; the log says which. Each crop goes through the checkpoint's own preprocessing. Prints the top classes per face. ``--out DIR`` writes each photo with boxes and
labels drawn, ``predictions.csv`` (one row per face) and ``predictions.json`` (one entry per
image, with no-face and unreadable images too). A video file (utils/video.py) gives
``<stem>.csv`` with one row per face per frame (time, box, class probabilities; a frame without a
face has one row saying so), ``--annotate`` a copy of the video with the faces drawn, and
``--smooth A`` an exponential moving average of each tracked face's probabilities.

Exit status: 0 when every image was read, 1 when any image failed (unreadable, too small, or an
input that names nothing), 2 for a bad checkpoint or no images at all. A photo in which no face
is found is a result ("no face found"), not a failure.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from utils.checkpoint import CheckpointError
from data.align import TEMPLATES
from utils.inference import HAAR, ImageError, Predictor, aligner_from_flags, expand_inputs, load_predictor, locate_faces, read_image
from utils.logging import error_exit
from utils.video import VideoError, is_video, predict_video

DRAW_MIN_SIDE = 256  # small images are enlarged before drawing so the labels stay readable


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("predict.py", description="Predict facial expressions in photos and videos with a "
                                "trained checkpoint",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a .pth written by train.py")
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--no-detect", action="store_true", help="the images are face crops: use each whole image as one face")
    p.add_argument("--align", choices=["auto", HAAR, *TEMPLATES], default="auto",
                   help="face framing: auto = the checkpoint's (its --align template, else the Haar box); haar; "
                        "or a template of data/align.py")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per face")
    p.add_argument("--output", "--out", dest="output", default=None,
                   help="write annotated images, predictions.csv and predictions.json here (and a video's CSV; "
                        "--out is the old name)")
    p.add_argument("--smooth", type=float, default=None, metavar="A",
                   help="videos: per tracked face, the moving average A * p_t + (1 - A) * s_{t-1} of the class "
                        "probabilities (0 < A <= 1; utils/video.py states the tracking rule)")
    p.add_argument("--annotate", action="store_true", help="videos: also write OUTPUT/<stem>_annotated.mp4")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on videos")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    return p


def face_records(predictor: Predictor, faces: list) -> list[dict[str, Any]]:
    """Per found face: box, framing, crop corners, prediction and class probabilities."""
    if not faces:
        return []
    records = []
    for face, p in zip(faces, predictor.probabilities([f.crop for f in faces]).tolist()):
        best = max(range(len(p)), key=p.__getitem__)
        records.append({"box": [int(v) for v in face.box], "framing": face.framing,
                        "crop": [[round(x, 1), round(y, 1)] for x, y in face.corners],
                        "prediction": predictor.classes[best], "probabilities": dict(zip(predictor.classes, p))})
    return records


def predict_image(predictor: Predictor, path: Path, detect: bool, aligner=None) -> dict[str, Any]:
    """One image's record: its faces with boxes and class probabilities, or the error."""
    record: dict[str, Any] = {"image": str(path), "faces": [], "error": None}
    try:
        image = read_image(path)
        faces = locate_faces(image, path, detect=detect, aligner=aligner)
    except ImageError as exc:
        record["error"] = str(exc)
        return record
    record["size"] = list(image.size)
    record["faces"] = face_records(predictor, faces)
    record["_image"] = image
    return record


def describe(record: dict[str, Any], top: int) -> list[str]:
    """Human lines for one image."""
    if record["error"]:
        return []
    if not record["faces"]:
        return [f"{record['image']}: no face found"]
    count = len(record["faces"])
    lines = [f"{record['image']}: {count} face{'s' if count > 1 else ''}"]
    for i, face in enumerate(record["faces"], start=1):
        x, y, w, h = face["box"]
        ranked = sorted(face["probabilities"].items(), key=lambda kv: -kv[1])[:top]
        lines.append(f"  face {i} at x={x} y={y} {w}x{h} [{face['framing']}]: "
                     + "  ".join(f"{c} {p:.3f}" for c, p in ranked))
    return lines


def draw(record: dict[str, Any]) -> Image.Image:
    """The photo with each face's box and its top class drawn; a thin line shows the crop the model saw."""
    image: Image.Image = record["_image"].copy()
    scale = max(1, -(-DRAW_MIN_SIDE // max(1, min(image.size))))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    canvas = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, image.width // 28))
    line = max(2, image.width // 200)
    for face in record["faces"]:
        x, y, w, h = (v * scale for v in face["box"])
        name = face["prediction"]
        label = f"{name} {face['probabilities'][name]:.2f}"
        canvas.polygon([(cx * scale, cy * scale) for cx, cy in face["crop"]], outline=(255, 220, 0), width=1)
        canvas.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 220, 0), width=line)
        left, top, right, bottom = canvas.textbbox((0, 0), label, font=font)
        tx, ty = x, y - (bottom - top) - 2 * line if y - (bottom - top) - 2 * line >= 0 else y + line
        canvas.rectangle([tx, ty, tx + right - left + 2 * line, ty + bottom - top + 2 * line], fill=(255, 220, 0))
        canvas.text((tx + line - left, ty + line - top), label, fill=(0, 0, 0), font=font)
    return image


def write_outputs(records: list[dict[str, Any]], classes: list[str], out: Path) -> None:
    """Annotated images, predictions.csv and predictions.json under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for record in records:
        if record["error"]:
            continue
        stem = Path(record["image"]).stem
        name, n = f"{stem}.png", 1
        while name in used:
            n += 1
            name = f"{stem}_{n}.png"
        used.add(name)
        draw(record).save(out / name)
        record["annotated"] = name
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "face", "x", "y", "width", "height", "framing", "prediction",
                         *[f"p_{c}" for c in classes]])
        for record in records:
            for i, face in enumerate(record["faces"], start=1):
                writer.writerow([record["image"], i, *face["box"], face["framing"], face["prediction"],
                                 *[f"{face['probabilities'][c]:.5f}" for c in classes]])
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]
    (out / "predictions.json").write_text(json.dumps({"classes": classes, "images": clean}, indent=1) + "\n",
                                          encoding="utf-8")


def main(args: argparse.Namespace) -> int:
    if args.top < 1:
        error_exit(f"--top must be at least 1, got {args.top}")
    if args.smooth is not None and not 0 < args.smooth <= 1:
        error_exit(f"--smooth is the weight of the newest frame, in (0, 1]; got {args.smooth}")
    videos = [Path(item) for item in args.inputs if is_video(item)]
    others = [item for item in args.inputs if not is_video(item)]
    paths, problems = expand_inputs(others) if others else ([], [])
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not paths and not videos:
        error_exit("no images to predict: " + "; ".join(problems))
    if videos and not args.output:
        error_exit(f"{videos[0]}: a video's per-frame CSV needs --output DIR")
    try:
        predictor = load_predictor(args.checkpoint, args.device)
    except CheckpointError as exc:
        error_exit(str(exc))
    aligner = aligner_from_flags(args.align, not args.no_detect, predictor)
    records = []
    for path in paths:
        record = predict_image(predictor, path, detect=not args.no_detect, aligner=aligner)
        if record["error"]:
            print(f"error: {record['error']}; skipped", file=sys.stderr)
        for line in describe(record, args.top):
            print(line)
        records.append(record)
    if args.output and records:
        try:
            write_outputs(records, predictor.classes, Path(args.output))
        except OSError as exc:
            error_exit(f"--output {args.output}: cannot write ({exc.strerror or exc})")
        print(f"wrote annotated images, predictions.csv and predictions.json to {args.output}")
    failed = sum(1 for r in records if r["error"]) + len(problems)
    for video in videos:
        try:
            done = predict_video(predictor, video, Path(args.output), aligner, args.smooth, args.annotate,
                                 progress=not args.no_progress, detect=not args.no_detect)
        except VideoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        except OSError as exc:
            error_exit(f"--output {args.output}: cannot write ({exc.strerror or exc})")
        rate = f" at {done['fps']:.2f} fps" if done["fps"] else ""
        print(f"{video}: {done['frames']} frames{rate}, {done['faces']} face(s) in {done['tracks']} track(s); "
              f"wrote {done['csv']}" + (f" and {done['annotated']}" if done["annotated"] else ""))
    if records or problems:
        faces = sum(len(r["faces"]) for r in records)
        no_face = sum(1 for r in records if not r["error"] and not r["faces"])
        image_failed = sum(1 for r in records if r["error"]) + len(problems)
        print(f"{len(records)} images: {faces} face(s), {no_face} without a face, {image_failed} failed")
    return 1 if failed else 0


def cli(argv: list[str] | None = None) -> int:
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

"""Expressions through a video (predict.py on a video file): every frame read with OpenCV, its faces
found and framed as on photos (utils/inference.py), one CSV row per face per frame, optionally an
annotated copy of the video and a smoothed probability per tracked face.

Tracking rule (``FaceTracker``): the faces of a frame are matched to the live tracks by the
intersection-over-union of their box with the track's last box, greedily from the largest IoU
down; a pair is matched only when IoU >= ``MATCH_IOU`` (0.3). An unmatched face starts a new track
(numbered from 1 in order of appearance); a track not matched for more than ``MAX_MISSED`` (10)
consecutive frames ends. ``--smooth A`` keeps per track the exponential moving average
s_t = A * p_t + (1 - A) * s_{t-1} of the class probabilities (s = p on the track's first frame), so A = 1
is no smoothing and a smaller A remembers more frames (A = 0.3: a frame's weight halves in about two frames).
"""
from __future__ import annotations

import contextlib
import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
MATCH_IOU = 0.3
MAX_MISSED = 10  # frames


class VideoError(ValueError):
    """A video that cannot be opened or read; the message is one line naming it."""


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - w * h
    return w * h / union if union > 0 else 0.0


@dataclass
class Track:
    number: int
    box: tuple[int, int, int, int]
    smoothed: np.ndarray | None = None
    missed: int = 0


@dataclass
class FaceTracker:
    """Greedy IoU matching of each frame's faces to live tracks, and their probability EMA (``alpha``)."""

    alpha: float | None = None  # --smooth; None: no smoothing
    tracks: list[Track] = field(default_factory=list)
    count: int = 0

    def update(self, boxes: list[tuple[int, int, int, int]], probs: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(track number, smoothed probabilities) per box of this frame, in the boxes' order."""
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)),
                       reverse=True)
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < MATCH_IOU:
                break
            if ti in used or bi in assigned:
                continue
            used.add(ti)
            assigned[bi] = self.tracks[ti]
        for ti, track in enumerate(self.tracks):
            track.missed = 0 if ti in used else track.missed + 1
        out = []
        for bi, box in enumerate(boxes):
            track = assigned.get(bi)
            if track is None:
                self.count += 1
                track = Track(self.count, box)
                self.tracks.append(track)
            track.box = box
            p = np.asarray(probs[bi], np.float64)
            if self.alpha is None or track.smoothed is None:
                track.smoothed = p
            else:
                track.smoothed = self.alpha * p + (1 - self.alpha) * track.smoothed
            out.append((track.number, track.smoothed))
        self.tracks = [t for t in self.tracks if t.missed <= MAX_MISSED]
        return out


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what FFmpeg, inside OpenCV, prints straight to file descriptor 2 ("moov atom not
    found", decoder warnings): a bad video gets our one error line, not FFmpeg's too."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_video(path: str | Path):
    """(capture, frames per second, frame count or None); raises VideoError naming the file."""
    import cv2

    if not Path(path).is_file():
        raise VideoError(f"{path}: no such video file")
    with quiet_native_stderr():
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: cannot read video (OpenCV cannot open it: corrupt, truncated or an unknown codec)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return capture, (fps if fps and np.isfinite(fps) and fps > 0 else None), (count if count > 0 else None)


def predict_video(predictor, path: Path, out: Path, aligner=None, smooth: float | None = None,
                  annotate: bool = False, progress: bool = True, detect: bool = True) -> dict[str, Any]:
    """Write ``out/<stem>.csv`` (and ``<stem>_annotated.mp4``); returns a summary. Raises VideoError."""
    import cv2
    from tqdm import tqdm

    from utils.inference import locate_faces

    capture, fps, count = open_video(path)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"{path.stem}.csv"
    tracker = FaceTracker(alpha=smooth)
    classes = predictor.classes
    writer = None
    frames = faces_seen = 0
    header = ["frame", "time_s", "face", "track", "x", "y", "width", "height", "framing", "prediction",
              *[f"p_{c}" for c in classes], *([f"smooth_{c}" for c in classes] if smooth is not None else [])]
    bar = tqdm(total=count, desc=path.name, unit="frame", disable=None if progress else True, dynamic_ncols=True,
               leave=False)  # None: a bar on a terminal only
    try:
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            rows = csv.writer(handle)
            rows.writerow(header)
            while True:
                with quiet_native_stderr():
                    ok, bgr = capture.read()
                if not ok:
                    break
                seconds = frames / fps if fps else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
                image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                found = locate_faces(image, path, detect=detect, aligner=aligner)
                probs = predictor.probabilities([f.crop for f in found]).numpy() if found else np.zeros((0, len(classes)))
                tracked = tracker.update([tuple(int(v) for v in f.box) for f in found], probs)
                if not found:  # the frame still has its row: every frame is in the CSV
                    rows.writerow([frames, f"{seconds:.3f}", 0, "", "", "", "", "", "", "no face",
                                   *[""] * (len(header) - 10)])
                for n, (face, p, (track, smoothed)) in enumerate(zip(found, probs, tracked), start=1):
                    shown = smoothed if smooth is not None else p
                    rows.writerow([frames, f"{seconds:.3f}", n, track, *face.box, face.framing,
                                   classes[int(np.argmax(shown))], *[f"{v:.5f}" for v in p],
                                   *([f"{v:.5f}" for v in smoothed] if smooth is not None else [])])
                if annotate:
                    if writer is None:
                        writer = cv2.VideoWriter(str(out / f"{path.stem}_annotated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                                 fps or 25.0, (bgr.shape[1], bgr.shape[0]))
                    writer.write(draw_frame(bgr, found, [s if smooth is not None else p for p, (_, s) in
                                                         zip(probs, tracked)], [t for t, _ in tracked], classes))
                frames += 1
                faces_seen += len(found)
                bar.update(1)
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise VideoError(f"{path}: cannot read video (OpenCV opened it but decoded no frame)")
    return {"video": str(path), "frames": frames, "faces": faces_seen, "tracks": tracker.count,
            "fps": fps, "csv": str(csv_path), "annotated": str(out / f"{path.stem}_annotated.mp4") if annotate else None}


def draw_frame(bgr: np.ndarray, faces: list, probs: list, tracks: list[int], classes: list[str]) -> np.ndarray:
    """The frame with each face's crop outline, track number and top class."""
    import cv2

    frame = bgr.copy()
    thickness = max(1, frame.shape[1] // 320)
    for face, p, track in zip(faces, probs, tracks):
        corners = np.round(np.array(face.corners)).astype(np.int32)
        cv2.polylines(frame, [corners], True, (0, 220, 255), thickness)
        best = int(np.argmax(p))
        x, y = int(corners[:, 0].min()), int(corners[:, 1].min())
        cv2.putText(frame, f"#{track} {classes[best]} {p[best]:.2f}", (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, (0, 220, 255), thickness, cv2.LINE_AA)
    return frame

"""Show where a trained model looks: class activation maps overlaid on the face.

    python visualize.py output/demo/best.pth face.jpg photos/ --output maps/ [--classes pred,true]
    python visualize.py CKPT crops/ --no-detect --output maps/ --classes happiness,fear

For every face (found and framed as predict.py does: the checkpoint's alignment, else the Haar
box; or the whole image with --no-detect) it writes
``<image>[_faceN]_cam.png``: the face, then one panel per chosen class with that class's map
upsampled to the face and overlaid, titled with the class probability. The maps are the head's
class activation maps, whose spatial mean (plus the head's bias, for the ``cam`` head) is the
class logit (models/heads.py), so the predicted class's panel is the map its score comes from. All panels
of a figure share one colour scale, so their strengths compare.

``--classes``: ``all`` (default), ``pred``, ``true``, class names, or a comma-separated mix.
The true class comes from ``--labels FILE`` (RAF-DB list format, ``name label`` with labels
1..K) or from the image's folder name (``train/happy/x.jpg``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils.checkpoint import CheckpointError
from data.align import TEMPLATES
from utils.inference import HAAR, ImageError, Predictor, aligner_from_flags, expand_inputs, load_predictor, locate_faces, read_image
from utils.logging import error_exit

DISPLAY = 224  # pixels per panel


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("visualize.py", description="Class activation maps of a trained checkpoint",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a .pth written by train.py")
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--output", "--out", dest="output", required=True, help="folder for the PNG grids (--out: the old name)")
    p.add_argument("--classes", default="all", help="all, pred, true, class names, or a comma-separated mix")
    p.add_argument("--labels", default=None, help="true labels: a RAF-DB style list 'name label' (labels 1..K)")
    p.add_argument("--no-detect", action="store_true", help="the images are face crops: use each whole image")
    p.add_argument("--align", choices=["auto", HAAR, *TEMPLATES], default="auto",
                   help="face framing: auto = the checkpoint's (its --align template, else the Haar box); haar; "
                        "or a template of data/align.py")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    return p


def class_maps(predictor: Predictor, faces: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(maps (B, K, h, w), logits (B, K), probabilities (B, K)) on the CPU.

    Raises ValueError when the checkpoint's head gives no attention maps.
    """
    output = predictor.run(faces, with_maps=True)
    maps = getattr(output, "attention_maps", None)
    if maps is None:
        raise ValueError(f"{predictor.path}: the checkpoint's head gives no attention maps; nothing to visualise")
    logits = output.logits.float().cpu()
    return maps.float().cpu(), logits, torch.softmax(logits, dim=1)


def parse_class_spec(spec: str, classes: list[str]) -> list[str]:
    """Validate --classes into tokens: 'pred', 'true' or class names (in the order given)."""
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        error_exit("--classes is empty; use all, pred, true or class names")
    if tokens == ["all"]:
        return list(classes)
    lower = {c.lower(): c for c in classes}
    out = []
    for token in tokens:
        if token in ("pred", "true"):
            out.append(token)
        elif token.lower() in lower:
            out.append(lower[token.lower()])
        else:
            error_exit(f"--classes: unknown class {token!r}; the checkpoint's classes are {', '.join(classes)} "
                       "(or all, pred, true)")
    return out


def select_classes(tokens: list[str], probs: torch.Tensor, true_index: int | None,
                   classes: list[str]) -> list[tuple[int, str]]:
    """(class index, role) per panel for one face; 'pred' is the argmax, duplicates are merged."""
    pred = int(probs.argmax())
    panels: dict[int, list[str]] = {}
    for token in tokens:
        if token == "pred":
            panels.setdefault(pred, []).append("pred")
        elif token == "true":
            if true_index is not None:
                panels.setdefault(true_index, []).append("true")
        else:
            panels.setdefault(classes.index(token), [])
    for index, roles in panels.items():
        for role, match in (("pred", pred), ("true", true_index)):
            if index == match and role not in roles:
                roles.append(role)
    return [(index, ", ".join(roles)) for index, roles in panels.items()]


def read_labels(path: str, classes: list[str]) -> dict[str, int]:
    """A RAF-DB style list ``name label`` (1..K) -> {image stem without '_aligned': 0-based label}."""
    labels = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        error_exit(f"--labels {path}: cannot read ({exc})")
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(classes):
            error_exit(f"--labels {path}:{number}: expected 'image_name label' with label 1..{len(classes)}, "
                       f"got {line.strip()!r}")
        labels[Path(fields[0]).stem.removesuffix("_aligned")] = int(fields[1]) - 1
    return labels


def true_class(path: Path, labels: dict[str, int], classes: list[str]) -> int | None:
    """The image's true class from --labels, else from its folder's name; None if unknown."""
    from data.classes import canonical_name

    stem = path.stem.removesuffix("_aligned")
    if stem in labels:
        return labels[stem]
    name = canonical_name(path.parent.name)
    return classes.index(name) if name in classes else None


def overlay_figure(face: Image.Image, maps: torch.Tensor, probs: torch.Tensor,
                   panels: list[tuple[int, str]], classes: list[str], title: str, path: Path) -> Path:
    """Write the face and one overlaid map per panel as a PNG grid; the maps share one colour scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = maps[[i for i, _ in panels]]
    upsampled = F.interpolate(shown[None], size=(DISPLAY, DISPLAY), mode="bilinear", align_corners=False)[0].numpy()
    low, high = float(upsampled.min()), float(upsampled.max())
    picture = np.asarray(face.convert("RGB").resize((DISPLAY, DISPLAY), Image.Resampling.BILINEAR))
    count = len(panels) + 1
    columns = min(count, 4)
    rows = -(-count // columns)
    figure = Figure(figsize=(2.4 * columns, 2.6 * rows + 0.3))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    axes[0].imshow(picture)
    axes[0].set_title("face", fontsize=9)
    image = None
    for ax, (index, role), heat in zip(axes[1:], panels, upsampled):
        ax.imshow(picture)
        image = ax.imshow(heat, cmap="jet", alpha=0.5, vmin=low, vmax=high if high > low else low + 1e-6)
        ax.set_title(f"{classes[index]} {float(probs[index]):.2f}" + (f" ({role})" if role else ""), fontsize=9,
                     fontweight="bold" if "pred" in role else "normal")
    for ax in axes:
        ax.axis("off")
    if image is not None:
        figure.colorbar(image, ax=axes.tolist(), fraction=0.02, pad=0.01, label="map value",
                        format="%.3g")
    figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=80)
    return path


def main(args: argparse.Namespace) -> int:
    paths, problems = expand_inputs(args.inputs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not paths:
        error_exit("no images to visualise: " + "; ".join(problems))
    try:
        predictor = load_predictor(args.checkpoint, args.device)
    except CheckpointError as exc:
        error_exit(str(exc))
    tokens = parse_class_spec(args.classes, predictor.classes)
    labels = read_labels(args.labels, predictor.classes) if args.labels else {}
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error_exit(f"--output {out}: cannot create ({exc.strerror or exc})")
    aligner = aligner_from_flags(args.align, not args.no_detect, predictor)
    failed, written = len(problems), 0
    for path in paths:
        try:
            faces = locate_faces(read_image(path), path, detect=not args.no_detect, aligner=aligner)
        except ImageError as exc:
            print(f"error: {exc}; skipped", file=sys.stderr)
            failed += 1
            continue
        if not faces:
            print(f"{path}: no face found")
            continue
        try:
            maps, _, probs = class_maps(predictor, [face.crop for face in faces])
        except ValueError as exc:
            error_exit(str(exc))
        truth = true_class(path, labels, predictor.classes)
        if "true" in tokens and truth is None:
            print(f"{path}: true class unknown (no --labels entry, folder name not a class); showing the others")
        for n, (face, face_maps, face_probs) in enumerate(zip(faces, maps, probs), start=1):
            panels = select_classes(tokens, face_probs, truth, predictor.classes)
            suffix = f"_face{n}" if len(faces) > 1 else ""
            target = out / f"{path.stem}{suffix}_cam.png"
            pred = predictor.classes[int(face_probs.argmax())]
            title = (f"{path.name} [{face.framing}]: predicted {pred}"
                     + (f", true {predictor.classes[truth]}" if truth is not None else ""))
            overlay_figure(face.crop, face_maps, face_probs, panels, predictor.classes, title, target)
            print(f"{path}: wrote {target}")
            written += 1
    print(f"{written} figure(s) in {out}; {failed} failed")
    return 1 if failed else 0


def cli(argv: list[str] | None = None) -> int:
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())

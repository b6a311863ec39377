"""FERPlus as one small file for a machine that cannot read the dataset (bench/gpu_check.sh).

    python bench/ferplus_pack.py build ROOT PACK     # ROOT: a FERPlus release; PACK: e.g. gpu_pack/ferplus.pack
    python bench/ferplus_pack.py unpack PACK DIR     # DIR: the same release again, read by data/ferplus.py

A release in layout (a) or (b) of ``data/ferplus.py`` is packed whole: its vote files
(fer2013new.csv, each folder's label.csv) as text, and each FER2013* folder's 48x48 grayscale
PNGs as one uint8 array in file-name order. The array is stored as row deltas (each pixel minus
its left neighbour, mod 256: neighbouring face pixels are close, so the deltas compress far
better) through zlib: FERPlus's 35,711 faces are 70.6 MiB raw. The pack's SHA-256 goes to
``PACK.sha256`` (``sha256sum -c`` format), and each folder's raw pixels carry their own SHA-256,
checked on unpacking, so a truncated or altered pack is refused rather than trained on.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PACK_FORMAT = "fer-mek-ferplus-pack/1"
SIZE = 48
TEXT_FILES = ("fer2013new.csv", "label.csv")


class PackError(RuntimeError):
    """The release or the pack cannot be used; the message names the file."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def row_deltas(images: np.ndarray) -> np.ndarray:
    """Each pixel minus its left neighbour, mod 256 (the first column as it is)."""
    deltas = images.copy()
    deltas[..., 1:] = images[..., 1:] - images[..., :-1]  # uint8 arithmetic wraps: mod 256
    return deltas


def undo_row_deltas(deltas: np.ndarray) -> np.ndarray:
    return np.cumsum(deltas, axis=-1, dtype=np.uint64).astype(np.uint8)  # the running sum mod 256


def _read_face(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            face = np.asarray(image.convert("L"))
    except OSError as exc:
        raise PackError(f"cannot read {path}: {exc}") from None
    if face.shape != (SIZE, SIZE):
        raise PackError(f"{path} is {face.shape[1]}x{face.shape[0]}, not FERPlus's {SIZE}x{SIZE}")
    return face


def build(root: Path, pack: Path) -> dict:
    """Pack the release under ``root`` into ``pack`` (and ``pack.sha256``); returns the manifest."""
    folders = sorted(p for p in root.glob("FER2013*") if p.is_dir())
    if not folders:
        raise PackError(f"{root}: no FER2013Train/FER2013Valid/FER2013Test folder; set FERPLUS_ROOT to a FERPlus release")
    texts = {str(p.relative_to(root)): p.read_bytes()
             for p in [root / TEXT_FILES[0], *(f / TEXT_FILES[1] for f in folders)] if p.is_file()}
    if not texts:
        raise PackError(f"{root}: neither fer2013new.csv nor a FER2013*/label.csv; no labels to pack")
    manifest = {"format": PACK_FORMAT, "texts": {}, "folders": {}}
    blobs: dict[str, bytes] = {}
    for name, data in texts.items():
        key = f"text{len(blobs)}"
        blobs[key] = zlib.compress(data, 9)
        manifest["texts"][name] = {"blob": key, "sha256": _sha256(data)}
    for folder in folders:
        files = sorted(folder.glob("*.png"))
        images = np.stack([_read_face(f) for f in files]) if files else np.zeros((0, SIZE, SIZE), np.uint8)
        key = f"pixels{len(manifest['folders'])}"
        blobs[key] = zlib.compress(row_deltas(images).tobytes(), 9)
        manifest["folders"][folder.name] = {"blob": key, "names": [f.name for f in files], "count": len(files),
                                            "sha256": _sha256(images.tobytes())}
    buffer = io.BytesIO()
    np.savez(buffer, manifest=np.frombuffer(json.dumps(manifest).encode(), np.uint8),
             **{k: np.frombuffer(v, np.uint8) for k, v in blobs.items()})
    data = buffer.getvalue()
    pack.parent.mkdir(parents=True, exist_ok=True)
    pack.write_bytes(data)
    Path(f"{pack}.sha256").write_text(f"{_sha256(data)}  {pack.name}\n")
    return manifest


def verify(pack: Path) -> bytes:
    """The pack's bytes, after checking them against ``pack.sha256``."""
    checksum = Path(f"{pack}.sha256")
    if not pack.is_file():
        raise PackError(f"pack not found: {pack} (build it: python bench/ferplus_pack.py build FERPLUS_ROOT {pack})")
    if not checksum.is_file():
        raise PackError(f"{checksum} is missing: the pack cannot be checked")
    data = pack.read_bytes()
    expected = checksum.read_text().split()[0] if checksum.read_text().split() else ""
    if _sha256(data) != expected:
        raise PackError(f"{pack} does not match {checksum} (truncated or altered in transit); build it again")
    return data


def unpack(pack: Path, out: Path) -> dict:
    """Write the release back under ``out``; returns the manifest."""
    with np.load(io.BytesIO(verify(pack))) as arrays:
        manifest = json.loads(arrays["manifest"].tobytes())
        if manifest.get("format") != PACK_FORMAT:
            raise PackError(f"{pack} is not a FERPlus pack of this codebase (format {manifest.get('format')!r})")
        for name, entry in manifest["texts"].items():
            data = zlib.decompress(arrays[entry["blob"]].tobytes())
            if _sha256(data) != entry["sha256"]:
                raise PackError(f"{pack}: {name} does not match its checksum")
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        for folder, entry in manifest["folders"].items():
            raw = zlib.decompress(arrays[entry["blob"]].tobytes())
            images = undo_row_deltas(np.frombuffer(raw, np.uint8).reshape(entry["count"], SIZE, SIZE))
            if _sha256(images.tobytes()) != entry["sha256"]:
                raise PackError(f"{pack}: the faces of {folder} do not match their checksum")
            (out / folder).mkdir(parents=True, exist_ok=True)
            for name, face in zip(entry["names"], images):
                Image.fromarray(face, mode="L").save(out / folder / name)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="pack a FERPlus release")
    b.add_argument("root", type=Path)
    b.add_argument("pack", type=Path)
    u = sub.add_parser("unpack", help="write a pack back as a FERPlus release")
    u.add_argument("pack", type=Path)
    u.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            manifest = build(args.root, args.pack)
            print(f"{args.pack}: {args.pack.stat().st_size / 2**20:.1f} MiB, "
                  + ", ".join(f"{k} {v['count']} faces" for k, v in manifest["folders"].items()))
        else:
            manifest = unpack(args.pack, args.out)
            print(f"{args.out}: " + ", ".join(f"{k} {v['count']} faces" for k, v in manifest["folders"].items()))
    except PackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

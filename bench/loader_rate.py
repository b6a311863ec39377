"""How fast the training loader delivers each recipe's augmented images, per worker count.

    python bench/loader_rate.py                                 # swin, mek-r18, rul, dan; 2, 8 and 16 workers
    python bench/loader_rate.py --recipes mek-r18 --workers 0,2 --batches 5 --json rate.json

Each recipe's training transform is the one train.py builds from that recipe's flags, read from
``train_exp.sh`` itself (run with a stand-in python that records the command), so it cannot drift:
resize or crop, flip, RandAugment, random erasing and EAC's and RUL's Gaussian pixel noise
(``--noise-prob``) included. The images are generated faces in RAF-DB's layout at RAF-DB's
aligned size (100 px; ``data/demo.py``), decoded from JPEG as in training. The loader is
train.py's (persistent workers, the resumable sampler's per-sample seeds); the rate counts the
batches after the first (worker start-up left out), 32 images each by default. Reported: images
per second, and per worker (with 0 workers the main process does the work and counts as one).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

DEFAULT_RECIPES = ("swin", "mek-r18", "rul", "dan")
RECORDER = '#!/bin/sh\nprintf \'%s\\n\' "$@" > "$RECIPE_RECORD"\n'


def recipe_flags(recipe: str, data_root: Path) -> list[str]:
    """The train.py flags ``sh train_exp.sh RECIPE`` would run with on one process."""
    with tempfile.TemporaryDirectory() as tmp:
        recorder, record = Path(tmp) / "python", Path(tmp) / "argv.txt"
        recorder.write_text(RECORDER)
        recorder.chmod(0o755)
        env = {**os.environ, "PYTHON": str(recorder), "RECIPE_RECORD": str(record), "DATA_ROOT": str(data_root),
               "CUDA_VISIBLE_DEVICES": "", "NGPUS": "1", "NNODES": "1", "UNLABELED_ROOT": str(data_root)}
        result = subprocess.run(["sh", str(ROOT / "train_exp.sh"), recipe], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0 or not record.exists():
            raise SystemExit(f"error: sh train_exp.sh {recipe} did not run: {result.stderr.strip()[-500:]}")
        argv = record.read_text().splitlines()
    return argv[argv.index("train.py") + 1:]


def recipe_dataset(recipe: str, data_root: Path):
    """The recipe's training set (its transform) over the generated faces, and what the transform does."""
    import train
    from data import build_dataset
    from data.loaders import augment_config
    from data.transforms import build_train_transform, default_norm

    flags = [f for f in recipe_flags(recipe, data_root) if f != "--cache-images"]
    args = train.parse_args([*flags, "--data-root", str(data_root), "--output", "unused"])
    args.norm = args.norm or default_norm(args.backbone)
    transform = build_train_transform(augment_config(args))
    what = (f"{args.img_size} px, flip {args.hflip}, noise {args.noise_prob}, erasing {args.reprob}, "
            f"{args.auto_augment or 'no RandAugment'}")
    return build_dataset("demo", data_root, "train", transform), what


def loader_rate(dataset, batch_size: int, workers: int, batches: int) -> float:
    """Images per second over ``batches`` batches after the first."""
    from data.sampler import ResumableSampler

    sampler = ResumableSampler(len(dataset), seed=0, shuffle=True)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    needed = batches + 1
    if len(loader) < needed:
        raise SystemExit(f"error: {len(dataset)} images give {len(loader)} batches of {batch_size}; "
                         f"--batches {batches} needs {needed} (raise --images)")
    iterator = iter(loader)
    next(iterator)  # workers started, first batch in
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    del iterator, loader
    return batches * batch_size / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="train_exp.sh recipes (RAF-DB ones)")
    parser.add_argument("--workers", default="2,8,16", help="worker counts to time")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="images per batch (the rate is per image: the recipes' own batches would only need more faces)")
    parser.add_argument("--data-root", type=Path, default=None, help="reuse generated faces here (made if missing)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers takes comma-separated counts, got {args.workers!r}")
    if any(w < 0 for w in workers) or args.batches < 1 or args.batch_size < 1:
        parser.error("--workers must be >= 0, --batches and --batch-size >= 1")
    torch.set_num_threads(1)  # the main process only hands batches over, as in training

    from data.demo import generate_demo_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_root = args.data_root or Path(tmp) / "faces"
        if not (data_root / "EmoLabel" / "list_patition_label.txt").is_file():
            generate_demo_dataset(data_root, num_train=max(21, (args.batches + 2) * args.batch_size), num_test=21,
                                  image_size=100, seed=0)
        for recipe in args.recipes.split(","):
            dataset, what = recipe_dataset(recipe, data_root)
            for count in workers:
                rate = loader_rate(dataset, args.batch_size, count, args.batches)
                rows.append({"recipe": recipe, "transform": what, "workers": count, "batch_size": args.batch_size,
                             "images_per_s": round(rate, 1), "per_worker": round(rate / max(count, 1), 1)})
                print(f"{recipe:8s} {count:3d} workers: {rate:8.1f} images/s, {rate / max(count, 1):7.1f} per worker "
                      f"({what})", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

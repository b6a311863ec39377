"""How much of a training step the data pipeline costs, per image, on this machine (docs/fast_regime.md).

    python bench/pipeline_share.py                      # the ferplus-fast recipe's backbone, batch and augmentation
    python bench/pipeline_share.py --backbone dlib_resnet --img-size 112 --threads 1

Times, on ``--threads`` threads and 48x48 faces (FERPlus's size; random pixels: the cost does not depend on
them), medians over ``--repeats`` batches after a warm-up:
- the network's training step (forward, cross-entropy, backward, AdamW) on an augmented batch, at ``--amp``;
- the per-image PIL path of the DataLoader (data/transforms.py: rotation, random resized crop, flip,
  normalisation, erasing, each image under its own seed as data/base.py runs it);
- the batch path of --batch-augment (data/batch_augment.py) on the same faces;
- one evaluation forward per image, without and with flip TTA.
The share is pipeline / (pipeline + step): the fraction of a single-process step spent preparing images
(with --workers > 0 the loader's processes take it from the same cores).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.base import _seeded  # noqa: E402
from data.batch_augment import BatchAugment  # noqa: E402
from data.transforms import AugmentConfig, NORMALISATIONS, build_train_transform  # noqa: E402
from engine import autocast, tta_probabilities  # noqa: E402
from models import build_model  # noqa: E402


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18_s2_w32")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--amp", choices=["off", "bf16"], default="bf16")
    p.add_argument("--scale-min", type=float, default=0.8)
    p.add_argument("--rotate", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    mean, std = NORMALISATIONS["imagenet"]
    cfg = AugmentConfig(img_size=args.img_size, mean=mean, std=std, scale=(args.scale_min, 1.0), rotate=args.rotate)
    n = args.batch_size
    faces = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, 48, 48), dtype=np.uint8))
    pil_faces = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in faces]
    transform = build_train_transform(cfg)
    batch_augment = BatchAugment(cfg, seed=0)
    indices = torch.arange(n)

    def pil_path() -> torch.Tensor:
        return torch.stack([_seeded(transform, face, i) for i, face in enumerate(pil_faces)])

    images = batch_augment(faces, indices, 0).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 8, (n,))
    model = build_model(args.backbone, 8, args.img_size).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step() -> None:
        with autocast(device, args.amp):
            loss = torch.nn.functional.cross_entropy(model(images).logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_forward(tta: str):
        def run() -> None:
            with torch.no_grad(), autocast(device, args.amp):
                tta_probabilities(model.eval(), images, tta)
            model.train()
        return run

    per_image = {
        "training step": median_seconds(train_step, args.repeats) / n,
        "PIL augmentation (per image, seeded)": median_seconds(pil_path, args.repeats) / n,
        "--batch-augment": median_seconds(lambda: batch_augment(faces, indices, 0), args.repeats) / n,
        "evaluation forward": median_seconds(eval_forward("none"), args.repeats) / n,
        "evaluation forward, flip TTA": median_seconds(eval_forward("flip"), args.repeats) / n,
    }
    step = per_image["training step"]
    print(f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}; {args.backbone} at {args.img_size} px, "
          f"batch {n}, amp {args.amp}, crops {args.scale_min}-1, rotation {args.rotate} degrees\n")
    print("| per image | ms | images/s | share of a step with it |")
    print("|---|---|---|---|")
    for name, seconds in per_image.items():
        share = f"{seconds / (seconds + step) * 100:.0f}%" if "augment" in name else ""
        print(f"| {name} | {seconds * 1e3:.3f} | {1 / seconds:,.0f} | {share} |")


if __name__ == "__main__":
    main()

"""Make a noisy-label training list, EAC's noisy-label protocol (Zhang et al., ECCV 2022).

    python -m data.make_noisy dataset/raf-basic/EmoLabel/list_patition_label.txt --rate 0.1 --seed 0 \\
        --output dataset/raf-basic/EmoLabel/noise10_seed0.txt

Each training line (``train_*``) keeps its label with probability 1 - rate and otherwise gets a
label drawn uniformly from the other K - 1 classes (the rule the EAC authors describe in their
issue tracker; the noise files they ship, noise01-03.txt, follow SCN's code). Test lines are
copied unchanged, so the file is a drop-in ``--label-file``. Prints the realised flip rate per
class. Deterministic in ``--seed``.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from utils.logging import error_exit

from .classes import CANONICAL_CLASSES
from .errors import DatasetError
from .raf_db import parse_label_list


def make_noisy(entries: list[tuple[str, int]], rate: float, seed: int, num_classes: int) -> list[tuple[str, int]]:
    """Flip training labels (0-based) with probability ``rate`` to a uniformly chosen other class."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--rate must be in [0, 1), got {rate}")
    rng = random.Random(seed)
    noisy = []
    for name, label in entries:
        if Path(name).name.startswith("train") and rng.random() < rate:
            label = rng.choice([k for k in range(num_classes) if k != label])
        noisy.append((name, label))
    return noisy


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("label_list", help="a RAF-DB-format list: 'name label' lines, labels 1..K")
    p.add_argument("--rate", type=float, required=True, help="flip probability in [0, 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-classes", type=int, default=7)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    if not 0.0 <= args.rate < 1.0:
        error_exit(f"--rate must be in [0, 1), got {args.rate}")
    try:
        entries = parse_label_list(Path(args.label_list), args.num_classes)
    except DatasetError as exc:
        error_exit(str(exc))
    noisy = make_noisy(entries, args.rate, args.seed, args.num_classes)
    out = Path(args.output)
    if out.resolve() == Path(args.label_list).resolve():
        error_exit(f"--output {out} is the input list; write the noisy list to another file")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{name} {label + 1}\n" for name, label in noisy), encoding="utf-8")
    classes = CANONICAL_CLASSES[: args.num_classes]
    print(f"wrote {out}: rate {args.rate}, seed {args.seed}")
    total = flipped = 0
    for k, name in enumerate(classes):
        pairs = [(a, b) for (n, a), (_, b) in zip(entries, noisy) if Path(n).name.startswith("train") and a == k]
        changed = sum(a != b for a, b in pairs)
        total, flipped = total + len(pairs), flipped + changed
        print(f"  {name:<10} {changed:5d} / {len(pairs):5d} flipped ({changed / max(len(pairs), 1) * 100:5.1f}%)")
    print(f"  {'all':<10} {flipped:5d} / {total:5d} flipped ({flipped / max(total, 1) * 100:5.1f}%)")


if __name__ == "__main__":
    main()

"""Scan a dataset before a long run: unreadable images, bad label lines, duplicates, class counts.

    python -m data.check ROOT [--dataset raf-db|folder|...] [--label-file FILE]

Unlike training, which stops at the first problem, the scan reports every problem it finds
and exits 1 if there is any (0 when the dataset is clean).
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

from .base import Sample, load_rgb
from .errors import BadImageError, DatasetError
from .raf_db import LABEL_LIST, RAF_DB_CLASSES, _image_path


def _scan_label_list(list_file: Path, num_classes: int) -> tuple[list[tuple[str, int]], list[str]]:
    """Every parsable (name, label) and every problem line of a RAF-DB style list."""
    entries, problems = [], []
    if not list_file.is_file():
        return entries, [f"label file not found: {list_file}"]
    for line_no, line in enumerate(list_file.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            problems.append(f"{list_file}:{line_no}: expected 'image_name label', got {line.strip()!r}")
            continue
        try:
            label = int(fields[1])
        except ValueError:
            problems.append(f"{list_file}:{line_no}: label {fields[1]!r} is not an integer")
            continue
        if not 1 <= label <= num_classes:
            problems.append(f"{list_file}:{line_no}: label {label} is outside 1..{num_classes}")
            continue
        entries.append((fields[0], label - 1))
    names = Counter(name for name, _ in entries)
    problems += [f"{list_file}: {name} is listed {n} times" for name, n in names.items() if n > 1]
    return entries, problems


def scan(root: str | Path, dataset: str = "raf-db", label_file: str | Path | None = None) -> dict:
    """Return {'splits': {split: counts by class}, 'problems': [...], 'images': n} for ``root``."""
    from . import DATASETS  # late import: the registry imports this package

    root = Path(root)
    problems: list[str] = []
    splits: dict[str, dict[str, int]] = {}
    list_based = dataset in ("raf-db", "demo")
    if list_based:
        _, list_problems = _scan_label_list(Path(label_file) if label_file else root / LABEL_LIST, 7)
        problems += list_problems
    if not root.is_dir():
        return {"splits": {}, "problems": [f"dataset root not found: {root}"], "images": 0}
    seen_names: dict[str, list[Path]] = defaultdict(list)
    images = 0
    for split in ("train", "test"):
        try:
            samples, classes = DATASETS[dataset](root, split, Path(label_file) if label_file and split == "train" else None, None)
        except DatasetError as exc:
            if list_based and "label" in str(exc):
                # Bad lines were already listed one by one above; count what parses.
                list_file = Path(label_file) if label_file and split == "train" else root / LABEL_LIST
                entries, _ = _scan_label_list(list_file, 7)
                prefix = "train" if split == "train" else "test"
                samples = [Sample(_image_path(root, n), y) for n, y in entries if Path(n).name.startswith(prefix)]
                classes = list(RAF_DB_CLASSES)
            else:
                problems.append(str(exc))
                continue
        counts = [0] * len(classes)
        for sample in samples:
            counts[sample.label] += 1
            seen_names[sample.path.name].append(sample.path)
            try:
                load_rgb(sample.path)
            except BadImageError as exc:
                problems.append(str(exc))
            images += 1
        splits[split] = dict(zip(classes, counts))
        if split == "train":
            problems += [f"{split}: class {c!r} has no samples" for c, n in zip(classes, counts) if n == 0]
    for name, paths in seen_names.items():
        distinct = sorted(set(paths))
        if len(distinct) > 1:
            problems.append(f"duplicate file name {name}: " + ", ".join(str(p) for p in distinct))
    return {"splits": splits, "problems": problems, "images": images}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m data.check", description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--dataset", default=None, help="default: raf-db if ROOT has EmoLabel/, else folder")
    parser.add_argument("--label-file", default=None)
    args = parser.parse_args(argv)
    dataset = args.dataset or ("raf-db" if (Path(args.root) / "EmoLabel").is_dir() else "folder")
    report = scan(args.root, dataset, args.label_file)
    print(f"{dataset} at {args.root}: {report['images']} images checked")
    for split, counts in report["splits"].items():
        print(f"  {split}: " + ", ".join(f"{c}={n}" for c, n in counts.items()) + f" (total {sum(counts.values())})")
    if report["problems"]:
        print(f"{len(report['problems'])} problem(s):")
        for problem in report["problems"]:
            print(f"  {problem}")
        return 1
    print("no problems found")
    return 0


if __name__ == "__main__":
    sys.exit(main())

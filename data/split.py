"""The validation split: a stratified, seeded fraction of the training images held out.

``--val-fraction F`` holds out ``round(F * n_k)`` images of each class k (at most ``n_k - 1``, so
every class keeps a training image), chosen by one seeded permutation of the training list: the
same on every rank, on resume and in test.py. ``config.json`` records the held-out indices into
the training list and a fingerprint of their paths, so test.py rebuilds exactly that set and
refuses a dataset whose listing has changed. ``--val-split official`` uses the dataset's own
validation split instead, where it has one (``build_dataset(..., "val")``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

_SALT = 0x5EED_0FF5  # keeps the split's permutation apart from the sampler's (seed, epoch) streams


def stratified_holdout(targets: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Sorted indices of the held-out images: ``round(fraction * n_k)`` per class, at most ``n_k - 1``."""
    if not 0 < fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {fraction}")
    counts: dict[int, int] = {}
    for label in targets:
        counts[label] = counts.get(label, 0) + 1
    quota = {label: min(round(fraction * n), n - 1) for label, n in counts.items()}
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed * 1_000_003 + _SALT)).tolist()
    held: list[int] = []
    for index in order:
        label = targets[index]
        if quota[label] > 0:
            quota[label] -= 1
            held.append(index)
    return sorted(held)


def fingerprint(paths: Sequence[str | Path], root: str | Path | None = None) -> str:
    """SHA-1 of the held-out paths (relative to ``root`` where they lie under it), in order."""
    digest = hashlib.sha1()
    for path in paths:
        path = Path(path)
        if root is not None:
            try:
                path = path.relative_to(root)
            except ValueError:
                pass
        digest.update(path.as_posix().encode() + b"\n")
    return digest.hexdigest()


def split_record(mode: str, fraction: float | None, seed: int, indices: list[int] | None, paths: Sequence[Path],
                 root: str | Path, source: str) -> dict:
    """What config.json keeps of the split: enough to rebuild it exactly, and to check it."""
    return {"mode": mode, "fraction": fraction, "seed": seed, "indices": indices, "count": len(paths),
            "source": source, "sha1": fingerprint(paths, root)}

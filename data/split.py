"""The validation split: a stratified, seeded fraction of the training images held out.

``--val-fraction F`` holds out ``round(F * n_k)`` images of each class k (at most ``n_k - 1``, so
every class keeps a training image), chosen by one seeded permutation of the training list: the
same on every rank, on resume and in test.py. ``config.json`` records the held-out indices into
the training list and a fingerprint of their paths, so test.py rebuilds exactly that set and
refuses a dataset whose listing has changed. ``--val-split official`` uses the dataset's own
validation split instead, where it has one (``build_dataset(..., "val")``).

``--labelled-fraction F`` (semi-supervised protocols: Face2Exp's 10% of the labels) keeps the labels
of ``round(F * n)`` training images, spread as evenly over the classes as their sizes allow
(:func:`balanced_fraction`); the validation split is then held out of that labelled part, and its
recorded indices still index the whole training list, so test.py rebuilds it unchanged.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

_SALT = 0x5EED_0FF5  # keeps the split's permutation apart from the sampler's (seed, epoch) streams
_LABELLED_SALT = 0x1ABE_11ED  # and the labelled fraction's apart from both


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


def balanced_quotas(counts: Sequence[int], total: int) -> list[int]:
    """Images to keep per class: ``total`` in all, as even as the classes allow. Every class gets
    ``min(n_k, c)`` for the largest cap ``c`` that fits; what is left goes one image each to the
    classes above the cap, in class order. E.g. counts (2, 10, 10), total 9: (2, 4, 3)."""
    if not 0 <= total <= sum(counts):
        raise ValueError(f"cannot keep {total} of {sum(counts)} images")
    cap = 0
    while cap < max(counts, default=0) and sum(min(n, cap + 1) for n in counts) <= total:
        cap += 1
    quotas = [min(n, cap) for n in counts]
    for k, n in enumerate(counts):
        if sum(quotas) == total:
            break
        if n > cap:
            quotas[k] += 1
    return quotas


def balanced_fraction(targets: Sequence[int], fraction: float, seed: int, num_classes: int) -> list[int]:
    """Sorted indices of the images whose labels are kept: ``round(fraction * n)`` of them with
    :func:`balanced_quotas` per class, the first ones of one seeded permutation."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--labelled-fraction must be in (0, 1], got {fraction}")
    counts = [0] * num_classes
    for label in targets:
        counts[label] += 1
    quota = balanced_quotas(counts, round(fraction * len(targets)))
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed * 1_000_003 + _LABELLED_SALT))
    kept: list[int] = []
    for index in order.tolist():
        label = targets[index]
        if quota[label] > 0:
            quota[label] -= 1
            kept.append(index)
    return sorted(kept)


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

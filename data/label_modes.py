"""Training targets from annotators' votes: the four training modes of the FERPlus paper.

Barsoum et al., "Training Deep Networks for Facial Expression Recognition with Crowd-Sourced
Label Distribution" (ICMI 2016), and their official code (microsoft/FERPlus, src/ferplus.py
``_process_data`` / ``_process_target``, src/train.py ``cost_func``):

- ``majority``: the majority label, cross-entropy (this project's default for every dataset).
- ``draw`` (the paper's "probability"): each epoch a label drawn from the image's vote
  distribution, then cross-entropy; drawn from the per-(seed, epoch, sample) seed that also fixes
  the augmentation (``data/sampler.py``), so a resumed run draws the same labels.
- ``soft`` (the paper's "crossentropy"): cross-entropy against the vote distribution q,
  ``-sum_k q_k log p_k``.
- ``multi-target``: every emotion with enough votes counts as right:
  ``-log max_k t_k p_k`` with ``t = (1 - 0.001) 1[q_k > 0] + 0.001``.

The distributions follow the official pre-processing of the 10 vote counts (8 emotions, unknown,
not-a-face): votes of 1 are removed as outliers; for draw/soft the largest counts are taken (ties
together) until they hold 75% of the remaining votes, at most 3 emotions, stopping at unknown/NF;
for multi-target every count with at least 30% of the remaining votes; unknown/NF are then
dropped and the rest renormalised. Where the official rules discard an image (under half the
votes kept, or unknown/NF ahead) this project keeps it with its one-hot majority label, so every
mode trains on the same images (those of ``data/ferplus.py``'s majority rule) and the modes differ
only in their targets. Evaluation always uses majority labels, as in the paper.
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import torch

from .base import ImageListDataset
from .errors import DatasetError

LABEL_MODES: tuple[str, ...] = ("majority", "draw", "soft", "multi-target")
# Modes whose targets are distributions (a (K,) float tensor per sample) instead of class indices.
SOFT_MODES: tuple[str, ...] = ("soft", "multi-target")
MULTI_TARGET_EPSILON = 0.001  # official src/ferplus.py: avoids log(0) for emotions without votes
_DRAW_SALT = 0x5DEECE66D  # decorrelates the label draw from the augmentation drawn from the same seed


def official_distribution(votes: Sequence[float], mode: str) -> list[float] | None:
    """The official target distribution over the first 8 entries (emotions) of 10 vote counts
    (emotions, unknown, NF), or None where the official code discards the image."""
    raw = [0.0 if v < 1.0 + sys.float_info.epsilon else float(v) for v in votes]  # single votes: outliers
    total = sum(raw)
    kept = [0.0] * len(raw)
    if mode in ("draw", "soft"):
        part, count, valid = 0.0, 0, True
        while part < 0.75 * total and count < 3 and valid:
            top = max(raw)
            for i, value in enumerate(raw):
                if value != top:
                    continue
                kept[i], raw[i] = value, 0.0
                part += value
                count += 1
                if i >= 8:  # unknown or NF among the largest counts: stop here
                    valid = False
                    if sum(kept) > top:  # emotions were taken before it: drop unknown/NF itself
                        kept[i] = 0.0
                        count -= 1
                    break
        if sum(kept) <= 0.5 * total or count > 3:
            return None
    elif mode == "multi-target":
        kept = [v if v >= 0.3 * total else 0.0 for v in raw]
        if sum(kept) <= 0.5 * total:
            return None
    else:
        raise ValueError(f"no vote distribution for label mode {mode!r}")
    if int(np.argmax(kept)) >= 8:  # unknown or NF wins: discarded
        return None
    emotions = kept[:8]
    mass = sum(emotions)
    return [v / mass for v in emotions]


def draw_label(distribution: Sequence[float], seed: int) -> int:
    """A class drawn from ``distribution`` with the sample's seed (same seed, same label)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, _DRAW_SALT])
    p = np.asarray(distribution, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


def training_target(mode: str, label: int, distribution: Sequence[float] | None, seed: int | None
                    ) -> int | torch.Tensor:
    """The target a training sample contributes in ``mode``: a class index (majority, draw) or a
    (K,) float32 tensor over the dataset's classes (soft, multi-target). Without a seed (no
    sampler, e.g. a plain DataLoader) draw gives the majority label."""
    if mode == "majority":
        return label
    if mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {mode!r} (known: {', '.join(LABEL_MODES)})")
    if distribution is None:
        raise ValueError(f"label mode {mode!r} needs each training sample's vote distribution")
    if mode == "draw":
        return label if seed is None else draw_label(distribution, seed)
    q = torch.tensor(distribution, dtype=torch.float32)
    if mode == "soft":
        return q
    return (1.0 - MULTI_TARGET_EPSILON) * (q > 0).float() + MULTI_TARGET_EPSILON


class VoteTargetDataset(ImageListDataset):
    """A training set whose items carry the target of a label mode instead of the majority label.

    Only the training set is wrapped: ``subset`` (a validation split) and the test set stay
    plain ``ImageListDataset``s with majority labels.
    """

    def __init__(self, dataset: ImageListDataset, mode: str, distributions: Sequence[Sequence[float]]) -> None:
        super().__init__(dataset.samples, dataset.classes, dataset.transform, skip_bad_images=dataset.skip_bad_images,
                         source=dataset.source, bad_image_log=dataset.bad_image_log)
        self._cache = dataset._cache
        self.mode = mode
        self.distributions = [tuple(float(v) for v in d) for d in distributions]

    def __getitem__(self, key: int | tuple[int, int]):
        image, _, used = super().__getitem__(key)
        seed = key[1] if isinstance(key, tuple) else None
        return image, training_target(self.mode, self.samples[used].label, self.distributions[used], seed), used


def apply_label_mode(dataset: ImageListDataset, mode: str) -> ImageListDataset:
    """``dataset`` with the targets of ``mode`` (``--ferplus-labels``); majority returns it as it is.

    Needs FERPlus vote counts on every sample (``data/ferplus.VotedSample``); a sample the
    official pre-processing would discard trains on its one-hot majority label.
    """
    if mode == "majority":
        return dataset
    if mode not in LABEL_MODES:
        raise DatasetError(f"--ferplus-labels {mode!r} is unknown (known: {', '.join(LABEL_MODES)})")
    from .ferplus import TO_CANONICAL, VotedSample  # FERPlus's vote layout is the only one with votes

    missing = next((s for s in dataset.samples if not (isinstance(s, VotedSample) and s.votes)), None)
    if missing is not None:
        raise DatasetError(f"--ferplus-labels {mode} needs the annotators' votes (FERPlus's fer2013new.csv or "
                           f"label.csv layouts); {dataset.source or 'the training set'} has none for {missing.path}")
    num_classes = len(dataset.classes)
    distributions = []
    for sample in dataset.samples:
        official = official_distribution(sample.votes, mode)
        q = [0.0] * num_classes
        if official is not None:
            for emotion, canonical in enumerate(TO_CANONICAL):
                if canonical < num_classes:  # contempt dropped at 7 classes
                    q[canonical] = official[emotion]
        total = sum(q)
        if total > 0:
            q = [v / total for v in q]
        else:  # discarded by the official rules (or all its mass on contempt): its majority label
            q[sample.label] = 1.0
        distributions.append(q)
    return VoteTargetDataset(dataset, mode, distributions)


def vote_counts(dataset, num_classes: int) -> np.ndarray | None:
    """(N, num_classes) annotators' vote counts of ``dataset``'s samples over its classes, or None
    when its samples carry no votes (every dataset but FERPlus's vote-file layouts)."""
    from .ferplus import class_vote_counts

    samples = getattr(dataset, "samples", None)
    return None if samples is None else class_vote_counts(samples, num_classes)

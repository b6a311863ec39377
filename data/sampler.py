"""Samplers that make training resumable mid-epoch and evaluation exact across ranks.

:class:`ResumableSampler` yields ``(index, seed)`` pairs: the order is a permutation drawn
from (seed, epoch), sharded over ranks like ``DistributedSampler``, and it can start at any
position of the epoch. The per-sample seed fixes that sample's augmentation (see
``data/base.py``), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, epoch, index) over 63 bits


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Deterministic augmentation seed of ``index`` in ``epoch``."""
    return ((seed * 1_000_003 + epoch) * _MIX + index * 2_654_435_761) % (2**63)


class ResumableSampler(Sampler):
    """Shuffled (or ordered), rank-sharded, epoch-seeded sampler that can start mid-epoch."""

    def __init__(
        self, num_samples: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        # Every rank gets the same count: pad by repeating the start of the permutation.
        self.per_rank = -(-num_samples // world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start`` samples of this rank."""
        self.epoch = epoch
        self.start = start

    def _rank_indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        order = (order * (total // len(order) + 1))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._rank_indices()[self.start :]:
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return self.per_rank - self.start


class ShardSampler(Sampler):
    """Evaluation sampler: rank r takes indices r, r + W, ... with no padding, so gathering
    the shards covers the set exactly once."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

"""Class-balanced sampling of the labelled set (``train.py --balanced-sampler``, any method).

An epoch has as many draws as the set has images. The draws go round the classes in a
shuffled order, a fresh shuffle of all classes for every block of ``C`` draws, so every
class is equally likely and any ``B >= C`` consecutive draws hold each class ``floor(B/C)``
or ``ceil(B/C)`` times. Within a class the images are taken from a shuffled permutation of
that class, reshuffled each time it is used up (minor classes repeat, major ones are
sub-sampled: as in Face2Exp's class-balanced base network, where a balanced subset is used).

Like :class:`data.sampler.ResumableSampler` it yields ``(index, seed)`` pairs, its order is a
pure function of ``(seed, epoch)``, it is sharded over DDP ranks (rank ``r`` takes draws
``r, r + W, ...``) and ``set_epoch(epoch, start)`` skips the first ``start`` draws of the rank,
so a run resumed mid-epoch sees the same batches. The augmentation seed is derived from the
draw's position in the epoch, so an image drawn twice in an epoch is augmented differently.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .errors import DatasetError
from .sampler import sample_seed

_STREAM = 0x5BD1E995  # keeps this sampler's permutations apart from ResumableSampler's


class BalancedSampler(Sampler):
    def __init__(self, labels: Sequence[int], num_classes: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.by_class: list[list[int]] = [[] for _ in range(num_classes)]
        for index, label in enumerate(labels):
            self.by_class[label].append(index)
        empty = [k for k, members in enumerate(self.by_class) if not members]
        if empty:
            raise DatasetError(f"--balanced-sampler: class(es) {empty} have no labelled image")
        self.num_samples = len(labels)
        self.num_classes = num_classes
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        self.per_rank = -(-self.num_samples // world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def epoch_order(self) -> list[int]:
        """Every rank's draws of the epoch, in order (before sharding)."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) ^ _STREAM)
        total = self.per_rank * self.world_size
        queues: list[list[int]] = [[] for _ in range(self.num_classes)]
        order: list[int] = []
        while len(order) < total:
            for label in torch.randperm(self.num_classes, generator=generator).tolist():
                if not queues[label]:
                    members = self.by_class[label]
                    queues[label] = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
                order.append(queues[label].pop())
        return order[:total]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order()
        positions = range(self.rank, len(order), self.world_size)
        for position in list(positions)[self.start:]:
            yield order[position], sample_seed(self.seed, self.epoch, self.num_samples + position)

    def __len__(self) -> int:
        return self.per_rank - self.start

"""Augmentation is a function of (seed, epoch, sample index), whatever the number of workers.

The Swin recipe's augmentation (``SWIN`` in train_exp.sh) draws from three generators:
Python's ``random`` (crop, RandAugment's per-op probability and magnitude noise, random
erasing's box), torch's (flip, erasing's pixel noise) and NumPy's global one (RandAugment's
choice of ops). DataLoader workers seed all three from the loader's base seed, so any draw
not taken under the sample's own seed changes with the worker count and on resume.
"""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_raf_db
from data import build_dataset
from data.sampler import ResumableSampler
from data.transforms import AugmentConfig, build_train_transform

# train_exp.sh SWIN: --norm half --interpolation bicubic --scale-min 1.0
# --auto-augment rand-m9-mstd0.5-inc1 --color-jitter 0.4 --reprob 0.25 --remode pixel --re-max-area 0.3333
SWIN_AUGMENT = AugmentConfig(
    img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, scale=(1.0, 1.0), color_jitter=0.4,
    auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", reprob=0.25, remode="pixel", re_max_area=0.3333,
)
SEED, NUM_IMAGES, BATCH = 7, 24, 8


@pytest.fixture(scope="module")
def swin_train_set(tmp_path_factory):
    root = make_raf_db(tmp_path_factory.mktemp("raf"), [1, 2, 3, 4, 5, 6, 7, 4] * 3, [1], size=40)
    return build_dataset("raf-db", root, "train", build_train_transform(SWIN_AUGMENT))


def _batches(dataset, workers: int, epoch: int = 0, start: int = 0, loader_seed: int = 0) -> list[torch.Tensor]:
    sampler = ResumableSampler(len(dataset), seed=SEED)
    sampler.set_epoch(epoch, start)
    # A different loader generator stands for a fresh process (a resumed run): it changes the
    # workers' base seed, which must not matter.
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=workers,
                        generator=torch.Generator().manual_seed(loader_seed))
    np.random.seed(1000 + loader_seed)  # nor may the main process's NumPy state (0 workers)
    return [images for images, _, _ in loader]


def test_same_seed_same_batches_with_0_and_2_workers_and_after_a_resume(swin_train_set):
    serial = _batches(swin_train_set, workers=0)
    assert len(serial) == NUM_IMAGES // BATCH
    parallel = _batches(swin_train_set, workers=2, loader_seed=1)
    for a, b in zip(serial, parallel):
        assert torch.equal(a, b)
    # Resumed at the second batch of the epoch, in a "new process" with two workers.
    resumed = _batches(swin_train_set, workers=2, start=BATCH, loader_seed=2)
    assert len(resumed) == len(serial) - 1
    for a, b in zip(serial[1:], resumed):
        assert torch.equal(a, b)


def test_another_epoch_gives_other_augmentations_of_the_same_images(swin_train_set):
    epoch0 = torch.cat(_batches(swin_train_set, workers=0))
    epoch1 = torch.cat(_batches(swin_train_set, workers=2, epoch=1))
    sampler = ResumableSampler(NUM_IMAGES, SEED)
    order0 = [index for index, _ in sampler]
    sampler.set_epoch(1)
    position1 = {index: p for p, (index, _) in enumerate(sampler)}
    # Compare each image with itself. An image can come out the same by chance (no flip or
    # no-op twice, both RandAugment ops skipped, no erasing: about 2% a pair), so not all.
    differs = [not torch.equal(epoch0[p], epoch1[position1[index]]) for p, index in enumerate(order0)]
    assert sum(differs) >= NUM_IMAGES * 3 // 4, differs


def test_the_callers_random_states_neither_matter_nor_change(swin_train_set):
    key = (3, 123456789012345)
    first = swin_train_set[key][0]
    for reseed in range(5):  # RandAugment picks its two ops from NumPy's global generator
        np.random.seed(reseed)
        np.random.random(reseed)
        numpy_state = np.random.get_state()
        assert torch.equal(swin_train_set[key][0], first)
        after = np.random.get_state()
        assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]

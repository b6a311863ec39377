"""The data layer Face2Exp adds: the unlabelled two-view stream and the class-balanced sampler."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from conftest import write_image
from data.balanced_sampler import BalancedSampler
from data.errors import DatasetError
from data.unlabeled import TwoViews, UnlabeledStream, unlabeled_dataset, unlabeled_paths

VIEWS = TwoViews(16, (0.5,) * 3, (0.5,) * 3, (2, 16))


def test_a_directory_tree_is_read_whatever_its_class_folders_and_a_list_file_too(tmp_path):
    write_image(tmp_path / "faces" / "happy" / "a.png", seed=1)
    write_image(tmp_path / "faces" / "b.jpg", seed=2)
    (tmp_path / "faces" / "notes.txt").write_text("not an image")
    assert [p.name for p in unlabeled_paths(tmp_path / "faces")] == ["b.jpg", "a.png"]  # sorted by path
    listing = tmp_path / "list.txt"
    listing.write_text("# unlabelled faces\nfaces/b.jpg 3\n\nfaces/happy/a.png\n")
    assert unlabeled_paths(listing) == [tmp_path / "faces" / "b.jpg", tmp_path / "faces" / "happy" / "a.png"]


def test_a_root_without_a_readable_image_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        unlabeled_paths(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match="none of the 1 image files"):
        unlabeled_paths(tmp_path / "bad")
    with pytest.raises(DatasetError, match="does not exist"):
        unlabeled_paths(tmp_path / "missing")


def test_weak_and_strong_views_differ_and_are_seeded_per_sample(tmp_path):
    write_image(tmp_path / "u" / "a.png", size=24, seed=3)
    data = unlabeled_dataset(tmp_path / "u", VIEWS)
    (weak, strong), label, index = data[(0, 123)]
    assert weak.shape == strong.shape == (3, 16, 16) and label == 0 and index == 0
    (weak2, strong2), _, _ = data[(0, 123)]
    assert torch.equal(weak, weak2) and torch.equal(strong, strong2)
    assert not torch.equal(weak, strong)  # RandAugment (2 ops at 16) changes the strong view


def _stream(root, seed=0):
    return UnlabeledStream(unlabeled_dataset(root, VIEWS), batch_size=3, seed=seed)


def test_the_stream_cycles_epochs_and_resumes_at_its_position(tmp_path):
    for i in range(7):
        write_image(tmp_path / "u" / f"{i}.png", size=20, seed=i)
    stream = _stream(tmp_path / "u")
    assert len(stream) == 2  # 7 images, batches of 3, the last partial one dropped
    batches = [stream.next() for _ in range(5)]  # crosses two epoch boundaries
    assert stream.state_dict()["epoch"] == 2 and stream.state_dict()["batch"] == 1
    resumed = _stream(tmp_path / "u")
    fresh = _stream(tmp_path / "u")
    for _ in range(3):
        fresh.next()
    resumed.load_state_dict(fresh.state_dict())
    for expected in batches[3:]:
        weak, strong = resumed.next()
        assert torch.equal(weak, expected[0]) and torch.equal(strong, expected[1])
    assert not torch.equal(batches[0][0], batches[2][0])  # a new permutation / augmentation each epoch
    with pytest.raises(DatasetError, match="fewer than one unlabelled batch"):
        UnlabeledStream(unlabeled_dataset(tmp_path / "u", VIEWS), batch_size=8, seed=0)


def test_with_a_worker_the_stream_keeps_it_across_epochs_and_draws_the_same_batches(tmp_path):
    for i in range(7):
        write_image(tmp_path / "u" / f"{i}.png", size=20, seed=i)
    in_process = UnlabeledStream(unlabeled_dataset(tmp_path / "u", VIEWS), batch_size=3, seed=0)
    with_worker = UnlabeledStream(unlabeled_dataset(tmp_path / "u", VIEWS), batch_size=3, seed=0, workers=1)
    assert with_worker.loader.persistent_workers  # not restarted at each of the stream's epochs
    for _ in range(5):  # across two epoch boundaries
        (a, b), (c, d) = in_process.next(), with_worker.next()
        assert torch.equal(a, c) and torch.equal(b, d)


def test_balanced_sampler_draws_every_class_equally_from_seed_and_epoch():
    labels = [0] * 50 + [1] * 5 + [2] * 2  # 25:2.5:1 imbalance
    sampler = BalancedSampler(labels, 3, seed=4)
    sampler.set_epoch(1)
    order = [index for index, _ in sampler]
    assert len(order) == len(labels)
    counts = Counter(labels[i] for i in order)
    assert counts == {0: 19, 1: 19, 2: 19}
    for block in range(0, 57, 3):  # every block of C draws holds each class once
        assert sorted(labels[i] for i in order[block:block + 3]) == [0, 1, 2]
    again = BalancedSampler(labels, 3, seed=4)
    again.set_epoch(1)
    assert [pair for pair in again] == [pair for pair in sampler]
    again.set_epoch(2)
    assert [i for i, _ in again] != order
    seeds = [seed for _, seed in sampler]
    assert len(set(seeds)) == len(seeds)  # repeated images get their own augmentation


def test_balanced_sampler_resumes_mid_epoch_and_shards_over_ranks():
    labels = [0] * 9 + [1] * 3 + [2] * 4
    full = BalancedSampler(labels, 3, seed=0)
    full.set_epoch(3)
    pairs = list(full)
    full.set_epoch(3, start=5)
    assert list(full) == pairs[5:] and len(full) == len(pairs) - 5
    shards = [BalancedSampler(labels, 3, seed=0, rank=r, world_size=2) for r in range(2)]
    for shard in shards:
        shard.set_epoch(3)
    merged = [p for pair in zip(*(list(s) for s in shards)) for p in pair]
    assert merged == pairs
    with pytest.raises(DatasetError, match="no labelled image"):
        BalancedSampler([0, 0, 2], 3, seed=0)

"""data/sampler.py: the per-sample augmentation seeds and the resumable order."""
from __future__ import annotations

from data.sampler import ResumableSampler, ShardSampler, sample_seed


def test_sample_seed_hand_computed():
    # ((seed * 1_000_003 + epoch) * 0x9E3779B97F4A7C15 + index * 2_654_435_761) mod 2^63
    assert sample_seed(0, 0, 0) == 0
    assert sample_seed(0, 0, 1) == 2_654_435_761
    assert sample_seed(0, 1, 0) == 0x9E3779B97F4A7C15 % 2**63
    assert sample_seed(1, 2, 3) == (1_000_005 * 0x9E3779B97F4A7C15 + 3 * 2_654_435_761) % 2**63


def test_every_sample_of_an_epoch_gets_its_own_seed_and_epochs_differ():
    sampler = ResumableSampler(500, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        pairs = list(sampler)
        assert sorted(index for index, _ in pairs) == list(range(500))
        seeds = [seed for _, seed in pairs]
        assert len(set(seeds)) == 500, f"epoch {epoch}: samples share augmentation seeds"
        epochs.append(dict(pairs))
    # The same image is augmented differently in every epoch, and differently under another run seed.
    assert all(len({e[i] for e in epochs}) == 3 for i in range(500))
    other = ResumableSampler(500, seed=4)
    other.set_epoch(0)
    assert all(seed != epochs[0][index] for index, seed in other)


def test_resuming_mid_epoch_yields_the_rest_of_the_same_pairs():
    sampler = ResumableSampler(37, seed=1, rank=1, world_size=2)
    sampler.set_epoch(5)
    whole = list(sampler)
    assert len(whole) == len(sampler) == 19  # 37 padded to 38 over two ranks
    sampler.set_epoch(5, start=7)
    assert list(sampler) == whole[7:] and len(sampler) == 12


def test_shard_sampler_covers_the_set_exactly_once():
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))

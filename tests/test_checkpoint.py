import errno
import random

import numpy as np
import pytest
import torch

from models import build_model
from utils.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_model_fits,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def test_atomic_save_roundtrip_and_rng_state(tmp_path):
    path = tmp_path / "ck.pth"
    state = {"model": {"w": torch.arange(3.0)}, "model_config": {}, "rng": capture_rng_state()}
    expected = torch.rand(4)
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0))
    restore_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(4), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]  # no temporary files left behind


def test_rng_round_trip_restores_python_numpy_and_torch_generators(tmp_path):
    # Each generator is checked on its own: restoring only torch's (or only two of the three)
    # must fail here, since augmentation (RandAugment) and methods draw from all three.
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    save_checkpoint({"model": {}, "model_config": {}, "rng": capture_rng_state()}, tmp_path / "ck.pth")
    expected = (random.random(), np.random.rand(3).tolist(), np.random.normal(), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng_state(load_checkpoint(tmp_path / "ck.pth")["rng"])
    assert random.random() == expected[0]
    assert np.random.rand(3).tolist() == expected[1]
    assert np.random.normal() == expected[2]
    assert torch.equal(torch.rand(3), expected[3])


def test_rng_round_trip_keeps_numpys_cached_gaussian(tmp_path):
    # NumPy's legacy normal() draws pairs and caches the second; the cache is part of its state.
    np.random.seed(5)
    np.random.normal()
    save_checkpoint({"model": {}, "model_config": {}, "rng": capture_rng_state()}, tmp_path / "ck.pth")
    expected = np.random.normal()
    np.random.seed(6)
    restore_rng_state(load_checkpoint(tmp_path / "ck.pth")["rng"])
    assert np.random.normal() == expected


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}, "model_config": {}}, path)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; any previous last.pth is unchanged"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "model_config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint({"model": {}, "model_config": {}}, blocker / "sub" / "last.pth")


def test_refuses_foreign_truncated_and_incomplete_checkpoints(tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a training checkpoint of this codebase"):
        load_checkpoint(foreign)
    truncated = tmp_path / "trunc.pth"
    save_checkpoint({"model": {"w": torch.ones(1000)}, "model_config": {}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(truncated)
    incomplete = tmp_path / "incomplete.pth"
    save_checkpoint({"model": {}}, incomplete)
    with pytest.raises(CheckpointError, match="missing the key 'model_config'"):
        load_checkpoint(incomplete)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_model_mismatch_message_names_the_difference():
    model = build_model("resnet18", num_classes=7, img_size=32)
    other = build_model("resnet18", num_classes=8, img_size=32).state_dict()
    with pytest.raises(CheckpointError, match=r"num_classes=8.*shape mismatches, e.g. head.weight"):
        check_model_fits(other, model, "ck.pth", {"backbone": "resnet18", "num_classes": 8, "img_size": 32})
    partial = dict(model.state_dict())
    partial.pop("head.bias")
    with pytest.raises(CheckpointError, match="missing from the checkpoint, e.g. head.bias"):
        check_model_fits(partial, model, "ck.pth")


class FakeGPUs:
    """torch.cuda as seen by a process training on GPU ``current`` of ``count`` visible GPUs: each
    generator's state is a tensor holding its index; setting one that does not exist fails, as
    torch's does."""

    def __init__(self, monkeypatch, count: int, current: int) -> None:
        self.count, self.current, self.restored = count, current, []
        for name, value in {"is_available": lambda: True, "is_initialized": lambda: True,
                            "device_count": lambda: self.count, "current_device": lambda: self.current,
                            "get_rng_state": self.get, "get_rng_state_all": lambda: [self.get(i) for i in range(self.count)],
                            "set_rng_state": self.set,
                            "set_rng_state_all": lambda states: [self.set(s, i) for i, s in enumerate(states)]}.items():
            monkeypatch.setattr(torch.cuda, name, value)

    def get(self, device=None) -> torch.Tensor:
        return torch.tensor([self.current if device is None else int(device)], dtype=torch.uint8)

    def set(self, state: torch.Tensor, device=None) -> None:
        device = self.current if device is None else int(device)
        if device >= self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {device}")
        self.restored.append((int(state[0]), device))


def test_rng_state_holds_the_training_gpus_generator_only(monkeypatch):
    FakeGPUs(monkeypatch, count=4, current=1)
    state = capture_rng_state()
    assert "cuda" not in state and state["cuda_device"].tolist() == [1]


def test_resume_on_a_machine_with_fewer_gpus_restores_the_training_gpus_generator(monkeypatch):
    FakeGPUs(monkeypatch, count=4, current=2)
    state = capture_rng_state()  # saved on GPU 2 of 4
    gpus = FakeGPUs(monkeypatch, count=1, current=0)  # resumed on the only GPU of another machine
    restore_rng_state(state)
    assert gpus.restored == [(2, 0)]


def test_an_older_checkpoint_with_every_gpus_state_restores_this_processs_one(monkeypatch):
    gpus = FakeGPUs(monkeypatch, count=2, current=1)
    state = {**capture_rng_state(), "cuda": [torch.tensor([i], dtype=torch.uint8) for i in range(4)]}
    state.pop("cuda_device")
    restore_rng_state(state)
    assert gpus.restored == [(1, 1)]

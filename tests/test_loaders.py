"""data/loaders.py: the run's DataLoaders keep their workers across epochs and evaluations, and
the default worker count follows the cores a GPU machine gives each process."""
from __future__ import annotations

import os

import pytest

import train
from data.loaders import build_data, loader_workers
from utils.distributed import DistInfo


@pytest.mark.parametrize("cores,local_processes,expected", [(16, 1, 15), (16, 4, 3), (64, 1, 16), (2, 1, 2), (8, 8, 2)])
def test_default_workers_on_a_gpu_share_the_cores_between_the_local_processes(monkeypatch, cores, local_processes,
                                                                                expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))
    assert loader_workers(None, "cuda") == expected


def test_default_workers_on_a_cpu_and_an_explicit_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader_workers(None, "cpu") == 2
    assert loader_workers(0, "cuda") == 0 and loader_workers(5, "cuda") == 5


def test_the_workers_persist_across_epochs_and_evaluations(demo_root):
    args = train.parse_args(["--dataset", "demo", "--data-root", str(demo_root), "--img-size", "32", "--batch-size", "32",
                             "--workers", "1", "--output", "unused"])
    args.device_type, args.dry_run = "cpu", True
    data = build_data(args, DistInfo())
    for loader in (data.train_loader, data.test_loader):
        assert loader.persistent_workers
        pids = []
        for epoch in range(2):
            data.train_sampler.set_epoch(epoch)
            for _ in loader:
                pass
            pids.append([w.pid for w in loader._iterator._workers])
        assert pids[0] == pids[1] and len(pids[0]) == 1  # the same worker process, not a new one per pass
        loader._iterator._shutdown_workers()


def test_no_workers_means_no_persistent_workers(demo_root):
    args = train.parse_args(["--dataset", "demo", "--data-root", str(demo_root), "--img-size", "32", "--workers", "0",
                             "--output", "unused"])
    args.device_type, args.dry_run = "cpu", True
    assert not build_data(args, DistInfo()).train_loader.persistent_workers  # DataLoader refuses it with 0

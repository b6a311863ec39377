"""Shared fixtures: tiny datasets generated in the test, never real data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Threads per test process: at most 2, and under pytest-xdist (pytest.ini: -n auto) the cores
# shared between the workers, because OpenMP threads beyond the cores spin instead of working.
# Set before torch is imported, so the train.py subprocesses the tests start (which inherit
# OMP_NUM_THREADS) use the same count as this process: kill-and-resume tests compare the two
# bit for bit. Without xdist a value the user set is kept; an xdist worker always takes its
# share (it inherits the controller's environment, where this file has already run).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
_SHARE = str(max(1, min(2, (os.cpu_count() or 1) // max(1, _WORKERS))))
if _WORKERS or not os.environ.get("OMP_NUM_THREADS", "").isdigit():
    os.environ["OMP_NUM_THREADS"] = _SHARE
# The suite runs on the CPU even where a GPU is visible: the bit-exact resume tests compare runs
# whose kernels CUDA does not make deterministic, and their train.py subprocesses choose
# --device auto (they inherit this). FER_TEST_CUDA=1 keeps the GPUs for the tests marked
# ``cuda`` (``FER_TEST_CUDA=1 python -m pytest -m cuda``); without a GPU those are skipped.
CUDA_OPT_IN = os.environ.get("FER_TEST_CUDA") == "1"
if not CUDA_OPT_IN:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items) -> None:
    if torch.cuda.is_available():
        return
    why = ("needs a CUDA GPU (FER_TEST_CUDA=1 python -m pytest -m cuda)" if CUDA_OPT_IN
           else "the suite hides GPUs; FER_TEST_CUDA=1 python -m pytest -m cuda runs the GPU tests")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


def write_image(path: Path, size: int = 24, seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=None).convert(mode).save(path)
    return path


def make_raf_db(root: Path, labels_train: list[int], labels_test: list[int], direct_names: bool = False, size: int = 24) -> Path:
    """A RAF-DB basic tree; ``direct_names`` makes the list name the aligned files directly."""
    lines = []
    for split, labels, width in (("train", labels_train, 5), ("test", labels_test, 4)):
        for i, label in enumerate(labels, start=1):
            stem = f"{split}_{i:0{width}d}"
            write_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", size=size, seed=hash((split, i)) % 1000)
            name = f"{stem}_aligned.jpg" if direct_names else f"{stem}.jpg"
            lines.append(f"{name} {label}")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small generated demo dataset (RAF-DB layout), shared by the end-to-end tests."""
    from data.demo import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    return generate_demo_dataset(root, num_train=128, num_test=56, image_size=32, seed=0)

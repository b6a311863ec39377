"""The suite on a GPU machine: GPUs hidden by default (tests/conftest.py), and the tests that need
one, marked ``cuda``, skipped without one. ``FER_TEST_CUDA=1 python -m pytest -m cuda`` runs
those on the GPU (bench/gpu_check.sh does)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]


@pytest.mark.skipif(os.environ.get("FER_TEST_CUDA") == "1", reason="FER_TEST_CUDA=1 keeps the GPUs visible")
def test_the_suite_and_its_subprocesses_see_no_gpu():
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    # train.py subprocesses inherit the environment: --device auto picks the CPU there too.
    count = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert count == "0"


def test_a_cuda_marked_test_is_skipped_without_a_gpu(pytester):
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makeini((ROOT / "pytest.ini").read_text().replace("-n auto --maxprocesses 4", ""))
    pytester.makepyfile(test_needs_gpu="""
        import pytest, torch

        @pytest.mark.cuda
        def test_on_the_gpu():
            assert torch.cuda.is_available()
    """)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-q")
    if torch.cuda.is_available():  # FER_TEST_CUDA=1 on a GPU machine
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(skipped=1)

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


# --------------------------------------------------------------------------- on a GPU (FER_TEST_CUDA=1)
@pytest.mark.cuda
def test_amp_auto_is_bf16_exactly_where_this_gpu_has_it_natively():
    from utils.device import resolve_amp

    amp, reason = resolve_amp("auto", torch.device("cuda", 0))
    major, _ = torch.cuda.get_device_capability(0)
    assert amp == ("bf16" if major >= 8 else "fp16") and torch.cuda.get_device_name(0) in reason


@pytest.mark.cuda
def test_twenty_training_steps_make_no_host_synchronisation_between_guard_checks():
    # torch's sync debug mode warns at each synchronising call (an .item(), a device-to-host copy).
    import warnings

    import engine
    import methods
    from models.heads import ModelOutput

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 7)

        def forward(self, images):
            return ModelOutput(self.fc(self.conv(images).mean((2, 3))))

    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    model = Net().to(device)
    method = methods.make_method("ce", [10] * 7).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    loader = [(torch.randn(8, 3, 16, 16, device=device), torch.arange(8, device=device) % 7, None) for _ in range(20)]
    progress = engine.TrainProgress()
    options = engine.StepOptions(amp="bf16" if torch.cuda.get_device_capability(0)[0] >= 8 else "off",
                                 nonfinite_check_interval=50)

    class Schedule:
        def step_update(self, step):
            pass

    engine.train_one_epoch(model, method, loader[:1], optimizer, Schedule(), None, device, options, progress,
                           max_steps=1, show_progress=False)  # warm-up: allocator, kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.train_one_epoch(model, method, loader[1:], optimizer, Schedule(), None, device, options, progress,
                                   max_steps=20, show_progress=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) <= 1, [str(w.message) for w in syncs]  # the one guard read at the end of the loop
    assert progress.step == 20


@pytest.mark.cuda
def test_the_training_gpus_rng_state_round_trips():
    from utils.checkpoint import capture_rng_state, restore_rng_state

    torch.ones(1, device="cuda")  # CUDA initialised, as in a run
    state = capture_rng_state()
    first = torch.rand(4, device="cuda")
    restore_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), first) and "cuda" not in state


@pytest.mark.cuda
def test_the_channels_last_probe_times_the_gpu():
    from utils.device import channels_last_probe

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3)).cuda()
    ratio = channels_last_probe(model, torch.randn(16, 3, 64, 64, device="cuda"), budget_s=0.5)
    assert 0.05 < ratio < 20


@pytest.mark.cuda
def test_a_fused_adamw_resumed_channels_last_on_the_gpu_continues_the_run():
    import copy

    from utils.optim import build_optimizer, load_optimizer_state

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                   torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 3)).cuda()

    def steps(model, optimizer, memory_format):
        generator = torch.Generator(device="cuda").manual_seed(1)
        for _ in range(3):
            images = torch.randn(4, 3, 8, 8, device="cuda", generator=generator).contiguous(memory_format=memory_format)
            optimizer.zero_grad()
            model(images).square().mean().backward()
            optimizer.step()

    model = net()
    optimizer = build_optimizer(model, "adamw", 1e-2, 0.05, fused=True)
    steps(model, optimizer, torch.contiguous_format)
    weights, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    steps(model, optimizer, torch.contiguous_format)
    resumed = net()
    resumed.load_state_dict(weights)
    resumed.to(memory_format=torch.channels_last)
    resumed_optimizer = build_optimizer(resumed, "adamw", 1e-2, 0.05, fused=False)  # and --no-fused-opt
    load_optimizer_state(resumed_optimizer, {k: v for k, v in saved.items()})
    assert all(s["step"].device.type == "cpu" for s in resumed_optimizer.state.values())
    steps(resumed, resumed_optimizer, torch.channels_last)
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name], rtol=1e-4, atol=1e-5)

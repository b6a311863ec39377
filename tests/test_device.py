import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils import device as device_utils

ROOT = Path(__file__).resolve().parent.parent
MILAN = "model name\t: AMD EPYC 7763\nflags\t\t: fpu avx avx2 fma sha_ni vaes\n"
SAPPHIRE_RAPIDS = "model name\t: Intel Xeon Platinum 8480+\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
CPU = torch.device("cpu")


def test_native_bf16_from_cpuinfo_flags():
    ice_lake = "flags\t\t: fpu avx512f avx512_vnni avx512_bitalg avx512_vbmi2\n"
    graviton3 = "Features\t: fp asimd sve bf16 i8mm\n"
    assert not device_utils.cpu_has_native_bf16(ice_lake)
    assert not device_utils.cpu_has_native_bf16(MILAN)
    assert device_utils.cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    assert device_utils.cpu_has_native_bf16(graviton3)
    # A flag that merely contains the letters does not count.
    assert not device_utils.cpu_has_native_bf16("flags : avx512_bf16x\n")


def test_slow_amp_warning_only_for_emulated_bf16_on_cpu(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(device_utils, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    assert "emulated" in device_utils.slow_amp_warning(CPU, "bf16")
    assert device_utils.slow_amp_warning(CPU, "off") is None
    assert device_utils.slow_amp_warning(cuda, "bf16") is None
    monkeypatch.setattr(device_utils, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert device_utils.slow_amp_warning(CPU, "bf16") is None


def never(*_):
    raise AssertionError("the probe must not run")


def test_explicit_amp_always_wins(tmp_path):
    for amp in ("off", "bf16", "fp16"):
        chosen, reason = device_utils.resolve_amp(amp, CPU, probe=never, cache_dir=tmp_path, cpuinfo=SAPPHIRE_RAPIDS)
        assert chosen == amp and "requested" in reason
    with pytest.raises(ValueError):
        device_utils.resolve_amp("fp8", CPU)


def fake_gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    """A CUDA device as torch reports it: is_bf16_supported()'s default counts emulation (torch
    2.14.1 torch/cuda/__init__.py), so it is True on a V100 too."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability[0] >= 8)


@pytest.mark.parametrize("name,capability,expected", [
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16"), ("Tesla T4", (7, 5), "fp16"),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"), ("NVIDIA H100 80GB HBM3", (9, 0), "bf16")])
def test_auto_on_cuda_is_bf16_only_where_native(monkeypatch, name, capability, expected):
    fake_gpu(monkeypatch, name, capability)
    amp, reason = device_utils.resolve_amp("auto", torch.device("cuda", 0), probe=never)
    assert amp == expected
    assert name in reason and f"compute capability {capability[0]}.{capability[1]}" in reason


def test_auto_on_a_cpu_without_bf16_flags_is_fp32_without_probing(tmp_path):
    amp, reason = device_utils.resolve_amp("auto", CPU, probe=never, cache_dir=tmp_path, cpuinfo=MILAN)
    assert amp == "off" and "AMD EPYC 7763" in reason and "emulated" in reason
    assert not (tmp_path / "device_probe.json").exists()


@pytest.mark.parametrize("ratio, expected", [(0.45, "off"), (1.05, "off"), (1.6, "bf16")])
def test_auto_on_a_bf16_cpu_follows_the_probe_and_caches_it(tmp_path, ratio, expected):
    calls = []

    def probe():
        calls.append(1)
        return ratio

    amp, reason = device_utils.resolve_amp("auto", CPU, probe=probe, cache_dir=tmp_path, cpuinfo=SAPPHIRE_RAPIDS)
    assert amp == expected and f"{ratio:.2f}x fp32 speed on Intel Xeon Platinum 8480+" in reason
    assert ("using bf16" if expected == "bf16" else "using fp32") in reason
    # The second call reads the cache: same answer, no probe.
    amp2, reason2 = device_utils.resolve_amp("auto", CPU, probe=never, cache_dir=tmp_path, cpuinfo=SAPPHIRE_RAPIDS)
    assert amp2 == expected and "cached" in reason2 and len(calls) == 1


def test_probe_cache_is_per_machine_and_survives_corruption(tmp_path):
    other = SAPPHIRE_RAPIDS.replace("8480+", "8592+").replace(" amx_bf16 amx_tile", "")
    device_utils.resolve_amp("auto", CPU, probe=lambda: 2.0, cache_dir=tmp_path, cpuinfo=SAPPHIRE_RAPIDS)
    # Another CPU model (with other flags) is a cache miss: probed again.
    amp, _ = device_utils.resolve_amp("auto", CPU, probe=lambda: 0.5, cache_dir=tmp_path, cpuinfo=other)
    assert amp == "off"
    assert len(json.loads((tmp_path / "device_probe.json").read_text())) == 2
    for garbage in ("{not json", "[1, 2]", '{"bf16": "x"}', ""):
        (tmp_path / "device_probe.json").write_text(garbage)
        amp, reason = device_utils.resolve_amp("auto", CPU, probe=lambda: 1.5, cache_dir=tmp_path,
                                               cpuinfo=SAPPHIRE_RAPIDS)
        assert amp == "bf16" and "cached" not in reason
    # A cache entry with a nonsense ratio is measured again.
    path = tmp_path / "device_probe.json"
    path.write_text(json.dumps({k: {"ratio": -1} for k in json.loads(path.read_text())}))
    assert device_utils.resolve_amp("auto", CPU, probe=lambda: 0.9, cache_dir=tmp_path,
                                    cpuinfo=SAPPHIRE_RAPIDS)[0] == "off"


def test_cache_location_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert device_utils.probe_cache_path() == tmp_path / "fer-mek" / "device_probe.json"


def test_real_probe_returns_a_positive_ratio_quickly():
    # bf16 over fp32 speed on whatever CPU runs the tests; only its sanity is checkable here.
    ratio = device_utils.bf16_probe(budget_s=0.1)
    assert 0.01 < ratio < 100


def test_choose_amp_cli_prints_one_word(tmp_path):
    run = subprocess.run([sys.executable, "-m", "utils.device", "--choose-amp", "--device", "cpu", "--amp", "off"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stdout == "off\n" and "requested" in run.stderr


@pytest.fixture
def restored_backends():
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32, torch.are_deterministic_algorithms_enabled())
    yield
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved[:4]
    torch.use_deterministic_algorithms(saved[4])


CUDA = torch.device("cuda", 0)  # only the device's type is read: no GPU needed


def test_cuda_runs_autotune_cudnn_and_use_tf32_in_fp32(restored_backends):
    torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = False
    lines = device_utils.configure_backends(CUDA, "off")
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert not torch.are_deterministic_algorithms_enabled()
    assert lines == ["CUDA backends: cuDNN autotuning (cudnn.benchmark), TF32 matmuls and convolutions (--amp off)"]


def test_tf32_is_left_alone_under_autocast(restored_backends):
    torch.backends.cuda.matmul.allow_tf32 = False
    assert device_utils.configure_backends(CUDA, "bf16") == ["CUDA backends: cuDNN autotuning (cudnn.benchmark), bf16 autocast"]
    assert torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32


def test_deterministic_mode_is_opt_in(restored_backends, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    lines = device_utils.configure_backends(CUDA, "fp16", deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert "deterministic algorithms" in lines[0]


def test_a_cpu_run_changes_no_backend_setting(restored_backends):
    torch.backends.cudnn.benchmark = False
    assert device_utils.configure_backends(CPU, "off") == []
    assert not torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


class QueuedDevice:
    """A device that runs work after the call that launched it returns, as CUDA does: a run
    queues its seconds, and synchronize() waits for them, on a clock of its own (``perf_counter``)
    so that the test does not depend on how busy the machine is."""

    def __init__(self) -> None:
        self.queued = 0.0
        self.clock = 0.0

    def launcher(self, seconds: float):
        def run() -> None:
            self.queued += seconds
        return run

    def synchronize(self) -> None:
        self.clock += self.queued
        self.queued = 0.0

    def perf_counter(self) -> float:
        return self.clock


def test_the_timed_pair_waits_for_queued_device_work(monkeypatch):
    device = QueuedDevice()
    monkeypatch.setattr(device_utils.time, "perf_counter", device.perf_counter)
    ratio = device_utils._time_pair(device.launcher(0.04), device.launcher(0.02), budget_s=0.0, sync=device.synchronize)
    assert ratio == pytest.approx(2.0)  # a takes twice as long as b; unsynchronised, both would time 0 s


def test_the_channels_last_probe_synchronises_a_cuda_device(monkeypatch):
    seen = {}

    def fake_time_pair(run_a, run_b, budget_s, sync):
        seen["sync"] = sync
        return 1.0

    monkeypatch.setattr(device_utils, "_time_pair", fake_time_pair)
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    images = torch.zeros(2, 3, 8, 8, device="meta")
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: torch.device("cuda", 1)))
    device_utils.channels_last_probe(torch.nn.Conv2d(3, 4, 3), images)
    seen["sync"]()
    assert synced == [torch.device("cuda", 1)]


def test_a_gpu_probe_is_cached_under_the_gpus_name_not_the_cpus(monkeypatch, tmp_path):
    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0))
    key = device_utils.probe_key("channels-last / contiguous", SAPPHIRE_RAPIDS, torch.device("cuda", 0))
    assert "NVIDIA H100 80GB HBM3" in key and "compute capability 9.0" in key and "Xeon" not in key
    ratio, cached = device_utils.cached_probe("cl", lambda: 1.3, tmp_path, SAPPHIRE_RAPIDS, torch.device("cuda", 0))
    fake_gpu(monkeypatch, "Tesla T4", (7, 5))  # another GPU in the same machine: measured again
    assert device_utils.cached_probe("cl", lambda: 0.8, tmp_path, SAPPHIRE_RAPIDS, torch.device("cuda", 0)) == (0.8, False)

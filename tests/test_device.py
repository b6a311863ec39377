import torch

from utils import device as device_utils


def test_native_bf16_from_cpuinfo_flags():
    ice_lake = "flags\t\t: fpu avx512f avx512_vnni avx512_bitalg avx512_vbmi2\n"
    sapphire_rapids = "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    graviton3 = "Features\t: fp asimd sve bf16 i8mm\n"
    assert not device_utils.cpu_has_native_bf16(ice_lake)
    assert device_utils.cpu_has_native_bf16(sapphire_rapids)
    assert device_utils.cpu_has_native_bf16(graviton3)
    # A flag that merely contains the letters does not count.
    assert not device_utils.cpu_has_native_bf16("flags : avx512_bf16x\n")


def test_slow_amp_warning_only_for_emulated_bf16_on_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(device_utils, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    assert "emulated" in device_utils.slow_amp_warning(cpu, "bf16")
    assert device_utils.slow_amp_warning(cpu, "off") is None
    assert device_utils.slow_amp_warning(cuda, "bf16") is None
    monkeypatch.setattr(device_utils, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert device_utils.slow_amp_warning(cpu, "bf16") is None

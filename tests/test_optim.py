import copy

import pytest
import torch
from torch import nn

from utils.optim import build_optimizer, build_scheduler, load_optimizer_state


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def _train(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> None:
    torch.manual_seed(1)
    for _ in range(steps):
        loss = net(torch.randn(16, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_optimiser_takes_the_same_steps(name):
    plain, fused = _net(), _net()
    opt_plain = build_optimizer(plain, name, 1e-2, 0.05)
    opt_fused = build_optimizer(fused, name, 1e-2, 0.05, fused=True)
    assert opt_fused.param_groups[0]["fused"] and not opt_plain.param_groups[0].get("fused")
    _train(plain, opt_plain)
    _train(fused, opt_fused)
    for a, b in zip(plain.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_no_weight_decay_on_biases_and_norms():
    groups = build_optimizer(_net(), "adamw", 1e-3, 0.05).param_groups
    decay = {g["weight_decay"]: sum(p.numel() for p in g["params"]) for g in groups}
    # Decayed: the two Linear weights (4x8 + 8x3); not decayed: 2 biases + LayerNorm weight and bias.
    assert decay == {0.05: 32 + 24, 0.0: 8 + 3 + 8 + 8}


@pytest.mark.parametrize("name,cls,nesterov", [
    ("adam", torch.optim.Adam, None), ("adamw", torch.optim.AdamW, None), ("sgd", torch.optim.SGD, True),
    ("nesterov", torch.optim.SGD, True), ("momentum", torch.optim.SGD, False),
])
def test_fused_flag_reaches_torchs_adam_adamw_and_sgd(name, cls, nesterov):
    optimizer = build_optimizer(_net(), name, 1e-3, 0.01, fused=True)
    assert type(optimizer) is cls and optimizer.param_groups[0]["fused"] is True
    assert optimizer.defaults.get("nesterov") is nesterov
    assert not build_optimizer(_net(), name, 1e-3, 0.01).param_groups[0]["fused"]


@pytest.mark.parametrize("name", ["lamb", "adagrad", "rmsprop", "nadam"])
def test_fused_flag_is_not_passed_to_other_optimisers(name):
    # timm's Lamb has no `fused` argument (passing one raises TypeError); torch's Adagrad has
    # one too, but build_optimizer keeps `fused` to Adam, AdamW and SGD (FUSABLE).
    optimizer = build_optimizer(_net(), name, 1e-3, 0.01, fused=True)
    assert "fused" not in optimizer.defaults or optimizer.defaults["fused"] is None
    assert not any(group.get("fused") for group in optimizer.param_groups)


def test_cosine_schedule_with_warmup_is_a_function_of_the_step():
    optimizer = build_optimizer(_net(), "adamw", 1e-3, 0.05)
    scheduler = build_scheduler(optimizer, "cosine", total_steps=100, steps_per_epoch=10, warmup_steps=10,
                                warmup_lr=0.0, min_lr=1e-5)
    def lr_at(step: int) -> float:
        scheduler.step_update(step)
        return optimizer.param_groups[0]["lr"]
    assert lr_at(0) == pytest.approx(0.0)
    assert lr_at(5) == pytest.approx(5e-4)  # linear warm-up: 1e-3 * 5 / 10
    # Cosine over the whole run (timm: warm-up inside it): 1e-5 + 0.5 (1e-3 - 1e-5)(1 + cos(pi 50/100)).
    assert lr_at(50) == pytest.approx(5.05e-4)
    assert lr_at(5) == pytest.approx(5e-4)  # the same value when asked again: a function of the step
    assert lr_at(100) == pytest.approx(1e-5, abs=1e-9)


def test_resuming_keeps_the_moments_but_takes_the_implementation_from_the_command_line():
    net = _net()
    fused = build_optimizer(net, "adamw", 1e-2, 0.05, fused=True)
    _train(net, fused, steps=2)
    saved = fused.state_dict()
    resumed = build_optimizer(net, "adamw", 1e-2, 0.05, fused=False)  # resumed with --no-fused-opt
    load_optimizer_state(resumed, saved)
    assert not resumed.param_groups[0]["fused"]
    first = next(iter(net.parameters()))
    torch.testing.assert_close(resumed.state[first]["exp_avg"], fused.state[first]["exp_avg"])
    assert int(resumed.state[first]["step"]) == 2
    _train(net, resumed, steps=1)  # and it steps
    assert int(resumed.state[first]["step"]) == 3


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 3))


def _conv_steps(net: nn.Module, optimizer, steps: int, memory_format) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        images = torch.randn(4, 3, 8, 8, generator=generator).contiguous(memory_format=memory_format)
        optimizer.zero_grad()
        net(images).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("fused", [True, False])
def test_resuming_with_channels_last_gives_the_moments_the_parameters_layout(fused):
    # A run saved contiguous and resumed with --channels-last: Optimizer.load_state_dict keeps the
    # moments' saved (contiguous) strides, and the fused kernel pairs them element by element with
    # channels-last parameters, i.e. with the wrong weights.
    net = _conv_net()
    optimizer = build_optimizer(net, "adamw", 1e-2, 0.05, fused=fused)
    _conv_steps(net, optimizer, 3, torch.contiguous_format)
    saved_weights = {k: v.clone() for k, v in net.state_dict().items()}
    saved = copy.deepcopy(optimizer.state_dict())  # as a checkpoint holds it
    _conv_steps(net, optimizer, 3, torch.contiguous_format)  # the run that was never stopped
    expected = net.state_dict()

    resumed_net = _conv_net()
    resumed_net.load_state_dict(saved_weights)
    resumed_net.to(memory_format=torch.channels_last)
    resumed = build_optimizer(resumed_net, "adamw", 1e-2, 0.05, fused=fused)
    load_optimizer_state(resumed, saved)
    conv = resumed_net[0].weight
    assert conv.stride() != conv.contiguous().stride()  # the weights really are channels-last
    assert resumed.state[conv]["exp_avg"].stride() == conv.stride()
    _conv_steps(resumed_net, resumed, 3, torch.channels_last)
    for name, value in resumed_net.state_dict().items():
        # channels-last against contiguous: the same sums in another order (float32 rounding)
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("saved_fused,resumed_fused", [(True, False), (False, True)])
def test_resuming_with_another_fused_flag_puts_the_step_counter_where_this_run_needs_it(saved_fused, resumed_fused):
    # torch casts the saved state by the SAVED groups' flags: a fused run's step counter goes to the
    # parameters' device, a foreach run's stays on the CPU. The meta device stands in for a GPU.
    net = _net()
    optimizer = build_optimizer(net, "adamw", 1e-2, 0.05, fused=saved_fused)
    _train(net, optimizer, steps=2)
    saved = optimizer.state_dict()
    gpu_net = _net().to("meta")
    resumed = build_optimizer(gpu_net, "adamw", 1e-2, 0.05)  # torch refuses fused=True on meta: set below
    for group in resumed.param_groups:
        group["fused"] = resumed_fused
    load_optimizer_state(resumed, saved)
    for p in gpu_net.parameters():
        state = resumed.state[p]
        assert state["step"].device.type == ("meta" if resumed_fused else "cpu")
        assert state["exp_avg"].device.type == "meta"

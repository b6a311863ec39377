"""The optimised training step computes what the plain one does.

- one forward pass over [images; mirrors] equals two passes for LayerNorm backbones, and
  differs only slightly for BatchNorm in train mode (batch statistics over 2B vs B samples);
- bf16 autocast and channels-last give the fp32 / contiguous loss to tolerance;
- the non-finite guard names the step and the term, and skip mode leaves the weights alone.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import engine
import methods
from models import build_model
from utils.optim import build_optimizer

from tiny_models import small_swin
from tolerances import DEFAULT_ULPS, assert_float32_close

RAF_DB_COUNTS = [1290, 281, 717, 4772, 1982, 705, 2524]
CPU = torch.device("cpu")


class NoSchedule:
    """train_one_epoch steps a timm scheduler per update; these tests keep the lr fixed."""

    def step_update(self, step: int) -> None:
        pass


def mek(flip_forward: str = "one-pass") -> methods.Method:
    return methods.make_method("mek", RAF_DB_COUNTS, flip_forward=flip_forward, rsl_eps=0.3, rac_weight=0.1)


def batch(size: int, img: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, img, img, generator=generator)
    labels = torch.arange(size) % 7
    return images, labels


def loss_and_grads(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, options: engine.StepOptions,
                   flip_forward: str = "one-pass") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    terms = engine.compute_loss(model, mek(flip_forward), images, labels, CPU, options)
    terms["loss"].backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in terms.items()}, grads


def assert_grads_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], ulps: int = DEFAULT_ULPS) -> None:
    # Equal up to float32 summation order (tests/tolerances.py), on every CPU's kernels.
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert_float32_close(a[name], b[name], ulps=ulps, what=name)


def cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    flat_a = torch.cat([a[k].flatten() for k in sorted(a)])
    flat_b = torch.cat([b[k].flatten() for k in sorted(b)])
    return float(torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0))


def test_one_pass_equals_two_passes_for_layernorm_backbone():
    # Swin-T (the MEK backbone) normalises each token on its own: no sample sees another,
    # so concatenating the mirrors into the batch changes nothing but float summation order.
    torch.manual_seed(0)
    model = small_swin(32).train()
    images, labels = batch(4, 32)
    one, grads_one = loss_and_grads(model, images, labels, engine.StepOptions(), "one-pass")
    two, grads_two = loss_and_grads(model, images, labels, engine.StepOptions(), "two-pass")
    assert float(one["rac"]) > 0  # the mirror branch is exercised, not trivially zero
    for key in ("loss", "rsl", "rac"):
        assert_float32_close(one[key], two[key], what=key)
    assert_grads_close(grads_one, grads_two)


def test_two_passes_are_exact_for_batchnorm_in_train_mode_and_one_pass_equals_them_in_eval_mode():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=7, img_size=64)
    images, labels = batch(8, 64)

    # Train mode: BatchNorm normalises with the statistics of the batch it is given. Two passes
    # (the paper's procedure, and --flip-forward auto's choice for BatchNorm) see the images alone,
    # so the classification term is exactly that of a forward pass over the images; one pass over
    # [images; mirrors] sees other statistics and differs.
    one_model, two_model, alone = copy.deepcopy(model).train(), copy.deepcopy(model).train(), copy.deepcopy(model).train()
    one, _ = loss_and_grads(one_model, images, labels, engine.StepOptions(), "one-pass")
    two, _ = loss_and_grads(two_model, images, labels, engine.StepOptions(), "two-pass")
    rsl_alone = mek().rsl(alone(images).logits, labels)
    torch.testing.assert_close(two["rsl"], rsl_alone.detach(), rtol=0, atol=0)
    assert not torch.equal(one["rsl"], two["rsl"])

    # Eval mode: running statistics, no batch dependence, so the two forms agree exactly
    # up to float summation order.
    model.eval()
    one, grads_one = loss_and_grads(model, images, labels, engine.StepOptions(), "one-pass")
    two, grads_two = loss_and_grads(model, images, labels, engine.StepOptions(), "two-pass")
    for key in ("loss", "rsl", "rac"):
        assert_float32_close(one[key], two[key], what=key)
    assert_grads_close(grads_one, grads_two)


def test_bf16_autocast_step_on_cpu_matches_fp32_loss():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=7, img_size=32)
    images, labels = batch(8, 32)
    fp32_model, bf16_model = copy.deepcopy(model), copy.deepcopy(model)

    head_dtypes: list[torch.dtype] = []
    bf16_model.head.register_forward_hook(lambda module, inp, out: head_dtypes.append(out.logits.dtype))
    losses = {}
    for amp, net in (("off", fp32_model), ("bf16", bf16_model)):
        optimizer = build_optimizer(net, "adam", 1e-3, 1e-4)
        progress = engine.TrainProgress()
        before = net.backbone.conv1.weight.detach().clone()
        engine.train_one_epoch(net, mek(), [(images, labels, None)], optimizer, NoSchedule(), None, CPU,
                               engine.StepOptions(amp=amp), progress, max_steps=1, show_progress=False)
        assert progress.batches == 1 and progress.step == 1
        weight = net.backbone.conv1.weight.detach()
        assert torch.isfinite(weight).all() and not torch.equal(weight, before)  # the step updated fp32 weights
        assert weight.dtype == torch.float32
        losses[amp] = progress.averages()
    assert head_dtypes == [torch.bfloat16]  # autocast really ran the model in bf16
    # bf16 keeps 8 mantissa bits (relative rounding ~4e-3 per op); the losses are computed in fp32.
    for key in ("loss", "rsl"):
        assert math.isclose(losses["bf16"][key], losses["off"][key], rel_tol=2e-2), (key, losses)
    assert math.isclose(losses["bf16"]["rac"], losses["off"]["rac"], rel_tol=0.1, abs_tol=1e-3), losses


def test_channels_last_gives_the_contiguous_loss_and_gradients():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=7, img_size=32).train()
    images, labels = batch(8, 32)
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert cl_model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)

    plain, grads_plain = loss_and_grads(model, images, labels, engine.StepOptions())
    cl, grads_cl = loss_and_grads(cl_model, images.contiguous(memory_format=torch.channels_last), labels,
                                  engine.StepOptions(channels_last=True))
    # Channels-last runs other convolution kernels (another summation order), and train-mode
    # BatchNorm divides by each batch's standard deviation, which amplifies those differences
    # through 20 layers: 8x the default float32 tolerance (tests/tolerances.py).
    for key in ("loss", "rsl", "rac"):
        assert_float32_close(cl[key], plain[key], ulps=8 * DEFAULT_ULPS, what=key)
    # Gradient tensors may come back in either layout; compare values.
    assert_grads_close({k: v.contiguous() for k, v in grads_cl.items()}, grads_plain, ulps=8 * DEFAULT_ULPS)


class NaNTermAt(nn.Module):
    """MEK whose RAC term is NaN at the given steps (what an overflow in the maps looks like)."""

    manual_optimization = False

    def __init__(self, bad_steps: set[int]) -> None:
        super().__init__()
        self.inner = mek()
        self.bad_steps = bad_steps
        self.step = 0

    def set_step(self, step: int) -> None:
        self.step = step
        self.inner.set_step(step)

    def training_step(self, model, images, labels) -> dict[str, torch.Tensor]:
        terms = self.inner.training_step(model, images, labels)
        if self.step in self.bad_steps:
            terms["rac"] = terms["rac"] * float("nan")
            terms["loss"] = terms["rsl"] + self.inner.rac_weight * terms["rac"]
        return terms


def _tiny_run(model: nn.Module, skip: bool, on_step=None) -> engine.TrainProgress:
    optimizer = build_optimizer(model, "adam", 1e-3, 1e-4)
    loader = [(*batch(4, 32, seed=s), None) for s in range(3)]
    progress = engine.TrainProgress()
    engine.train_one_epoch(model, NaNTermAt({1}), loader, optimizer, NoSchedule(), None, CPU,
                           engine.StepOptions(skip_nonfinite=skip), progress, max_steps=3, on_step=on_step,
                           show_progress=False)
    return progress


def test_nonfinite_loss_stops_with_step_and_term():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=7, img_size=32)
    with pytest.raises(engine.NonFiniteLossError, match=r"step 1 in term\(s\) rac") as info:
        _tiny_run(model, skip=False)
    assert info.value.step == 1 and info.value.terms == ["rac"]


def test_skip_nonfinite_skips_the_update_and_counts_it():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=7, img_size=32)
    snapshots: list[torch.Tensor] = []
    progress = _tiny_run(model, skip=True,
                         on_step=lambda _: snapshots.append(model.backbone.conv1.weight.detach().clone()))
    assert progress.step == 3 and progress.batch_in_epoch == 3
    assert progress.skipped_nonfinite == 1 and progress.batches == 2
    assert all(math.isfinite(v) for v in progress.averages().values())
    assert torch.equal(snapshots[1], snapshots[0])  # the skipped step did not move the weights
    assert not torch.equal(snapshots[2], snapshots[1])  # the next one did


def test_elapsed_time_carries_over_a_resume(monkeypatch):
    """metrics.jsonl's "time" is TrainProgress.elapsed(): a resumed run continues the clock of the
    checkpoint it resumed from instead of starting again at 0 (times in s, from a fake clock)."""
    now = [1000.0]
    monkeypatch.setattr(engine.time, "time", lambda: now[0])
    first = engine.TrainProgress()
    assert first.elapsed() == 0.0  # clock not started
    first.start_clock()
    now[0] = 1250.0
    saved = first.state_dict()  # the checkpoint, 250 s into the loop
    assert saved["elapsed_s"] == 250.0
    now[0] = 5000.0  # killed after the checkpoint (the steps since are redone, not counted twice); a new process
    resumed = engine.TrainProgress(**saved)
    resumed.start_clock()
    now[0] = 5030.0  # 30 s into the second process
    assert resumed.elapsed() == 280.0
    assert engine.TrainProgress(**{k: v for k, v in saved.items() if k != "elapsed_s"}).elapsed() == 0.0  # old checkpoint


# --------------------------------------------------------------------------- host synchronisations
class HostReads:
    """Counts the calls that copy a tensor's value to the host (a host synchronisation on CUDA)."""

    METHODS = ("item", "__bool__", "__float__", "__int__", "tolist")

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _name=name, _original=original):
                self.calls.append(_name)
                return _original(tensor, *args)

            monkeypatch.setattr(torch.Tensor, name, counted)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 7)

    def forward(self, images: torch.Tensor):
        from models.heads import ModelOutput

        return ModelOutput(self.fc(images.flatten(1)))


def _twenty_steps(options: engine.StepOptions, method=None, nan_at: int | None = None) -> engine.TrainProgress:
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # no host reads of its own
    loader = [(*batch(4, 4, seed=s), None) for s in range(20)]
    if nan_at is not None:
        loader[nan_at] = (loader[nan_at][0] * float("nan"), loader[nan_at][1], None)
    progress = engine.TrainProgress()
    engine.train_one_epoch(model, method or methods.make_method("ce", RAF_DB_COUNTS), loader, optimizer,
                           NoSchedule(), None, CPU, options, progress, max_steps=20, show_progress=False)
    return progress


def test_the_nonfinite_guard_reads_the_device_once_per_interval_not_per_step(monkeypatch):
    method = methods.make_method("ce", RAF_DB_COUNTS)  # built before counting (its class weights are read)
    reads = HostReads(monkeypatch)
    _twenty_steps(engine.StepOptions(nonfinite_check_interval=10), method)
    # steps 10 and 20, and the end of the epoch (nothing recorded since: no read)
    assert reads.calls == ["item", "item"]
    reads.calls.clear()
    _twenty_steps(engine.StepOptions(nonfinite_check_interval=1), method)  # the per-step check, for comparison
    assert len(reads.calls) == 20


def test_the_deferred_guard_names_the_first_nonfinite_step_and_term():
    with pytest.raises(engine.NonFiniteLossError, match=r"step 3 in term\(s\) ce") as info:
        _twenty_steps(engine.StepOptions(nonfinite_check_interval=10), nan_at=3)
    assert info.value.step == 3 and info.value.terms == ["ce"]


def test_reading_the_sums_checks_the_guard_first():
    # A checkpoint or a log line reads the sums: a non-finite step before it stops the run there.
    progress = engine.TrainProgress()
    progress.nonfinite.record(4, torch.tensor(float("inf")), {"ce": torch.tensor(float("inf"))})
    progress.add_terms({"loss": torch.tensor(float("inf"))})
    with pytest.raises(engine.NonFiniteLossError, match="step 4"):
        progress.state_dict()
    assert math.isinf(progress.state_dict()["sums"]["loss"])  # the diagnostic save after it goes through


def test_check_interval_is_one_on_cpu_and_with_skip_fifty_on_a_gpu():
    cuda = torch.device("cuda", 0)
    assert engine.StepOptions().check_interval(CPU) == 1
    assert engine.StepOptions().check_interval(cuda) == 50
    assert engine.StepOptions(skip_nonfinite=True).check_interval(cuda) == 1
    assert engine.StepOptions(nonfinite_check_interval=7).check_interval(cuda) == 7


class _LeftRightModel(nn.Module):
    """Logits [left pixel, 2 x right pixel] of a 1x2 image: not mirror-symmetric, so the flip matters."""

    def forward(self, x: torch.Tensor, with_maps: bool = False):
        from models import ModelOutput

        return ModelOutput(torch.stack([x[:, 0, 0, 0], 2 * x[:, 0, 0, 1]], dim=1))


def test_flip_tta_averages_the_softmax_of_a_face_and_its_mirror_under_the_prediction_rule():
    image = torch.tensor([[[[1.0, 0.0]]]])  # logits [1, 0]; its mirror [0, 1] gives logits [0, 2]
    e = math.e
    plain = [e / (e + 1), 1 / (e + 1)]
    mirror = [1 / (1 + e**2), e**2 / (1 + e**2)]
    probs = engine.tta_probabilities(_LeftRightModel(), image, "flip")
    torch.testing.assert_close(probs, torch.tensor([[(plain[0] + mirror[0]) / 2, (plain[1] + mirror[1]) / 2]]))
    torch.testing.assert_close(engine.tta_probabilities(_LeftRightModel(), image, "none"), torch.tensor([plain]))
    # The method's prediction rule (here: subtract [0, 1], as post-hoc logit adjustment subtracts tau log prior)
    # is applied to each view before its softmax: softmax([1, -1]) and softmax([0, 1]).
    rule = lambda logits: logits - torch.tensor([0.0, 1.0])  # noqa: E731
    adjusted = engine.tta_probabilities(_LeftRightModel(), image, "flip", rule)
    a, b = [e**2 / (e**2 + 1), 1 / (e**2 + 1)], [1 / (1 + e), e / (1 + e)]
    torch.testing.assert_close(adjusted, torch.tensor([[(a[0] + b[0]) / 2, (a[1] + b[1]) / 2]]))


def test_predict_with_flip_tta_returns_the_averaged_probabilities_and_their_argmax():
    # Two faces: [1, 0] -> p(class 1) = 0.5 * (0.2689 + 0.8808) = 0.575, predicted 1 only with the mirror;
    # [0, -3] -> logits [0, -6] and, mirrored, [-3, 0]: p(class 0) = 0.5 * (0.9975 + 0.0474) = 0.522, class 0.
    images = torch.tensor([[[[1.0, 0.0]]], [[[0.0, -3.0]]]])
    loader = [(images, torch.tensor([0, 0]), torch.tensor([0, 1]))]
    _, _, plain_pred, _ = engine.predict(_LeftRightModel(), loader, torch.device("cpu"), show_progress=False)
    _, _, flip_pred, flip_probs = engine.predict(_LeftRightModel(), loader, torch.device("cpu"), show_progress=False,
                                                 tta="flip")
    assert plain_pred.tolist() == [0, 0] and flip_pred.tolist() == [1, 0]
    torch.testing.assert_close(flip_probs.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="--tta"):
        engine.predict(_LeftRightModel(), loader, torch.device("cpu"), show_progress=False, tta="five-crop")


def test_the_updates_the_fp16_scaler_skips_are_counted():
    # A scale near float32's limit overflows the first gradients (6 of 12 here): the scaler skips
    # those updates and halves its scale each time. The count is kept on the device, read with the sums.
    torch.manual_seed(0)
    model, method = TinyNet(), methods.make_method("ce", RAF_DB_COUNTS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1000)
    loader = [(images * 100, labels, None) for images, labels in (batch(4, 4, seed=s) for s in range(12))]
    weights = [model.fc.weight.detach().clone()]
    progress = engine.TrainProgress()
    engine.train_one_epoch(model, method, loader, optimizer, NoSchedule(), scaler, CPU,
                           engine.StepOptions(nonfinite_check_interval=100), progress, max_steps=12, show_progress=False,
                           on_step=lambda _: weights.append(model.fc.weight.detach().clone()))
    skipped = sum(torch.equal(a, b) for a, b in zip(weights, weights[1:]))
    assert 0 < skipped < 12
    assert progress.scaler_skipped == 0  # counted on the device, not read yet
    progress.averages()
    assert progress.scaler_skipped == skipped
    assert progress.state_dict()["scaler_skipped"] == skipped

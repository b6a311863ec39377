"""Training and evaluation loops, the same for every method.

One training step: the method's ``training_step`` runs the forwards it needs and returns its
loss terms (the total under ``"loss"``); the engine owns mixed precision, backward, gradient
scaling and clipping, the non-finite guard (the same decision on every DDP rank), the
running sums of the terms (kept on the device, synchronised only when logged) and progress.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from utils.distributed import all_gather_concat
from data.label_modes import vote_counts
from utils.metrics import evaluation_metrics

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, terms: list[str]) -> None:
        super().__init__(f"non-finite loss at step {step} in term(s) {', '.join(terms)}")
        self.step = step
        self.terms = terms


@dataclass
class StepOptions:
    amp: str = "off"  # off | bf16 | fp16
    channels_last: bool = False
    clip_grad: float | None = None
    skip_nonfinite: bool = False


@dataclass
class TrainProgress:
    """Where training is, and the running sums of the current epoch (saved in checkpoints).

    The loss terms of each step are added on the device (float64, so the sums equal those of
    Python floats) and copied to the host only when read: one sync per log, not per step.
    """

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    skipped_nonfinite: int = 0

    def __post_init__(self) -> None:
        self._pending: dict[str, torch.Tensor] = {}

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.batch_in_epoch, self.sums, self.batches = epoch, 0, {}, 0
        self._pending = {}

    def add_terms(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            value = value.detach().to(torch.float64)
            self._pending[name] = self._pending[name] + value if name in self._pending else value
        self.batches += 1

    def _sync(self) -> None:
        for name, value in self._pending.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self._pending = {}

    def averages(self) -> dict[str, float]:
        self._sync()
        return {k: v / max(self.batches, 1) for k, v in self.sums.items()}

    def state_dict(self) -> dict:
        self._sync()
        return {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                "sums": dict(self.sums), "batches": self.batches, "skipped_nonfinite": self.skipped_nonfinite}


def autocast(device: torch.device, amp: str):
    """Autocast context for ``--amp`` (a no-op for 'off')."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def compute_loss(model: nn.Module, method, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                 options: StepOptions) -> dict[str, torch.Tensor]:
    """The method's loss terms for one batch, under the run's mixed precision."""
    with autocast(device, options.amp):
        return method.training_step(model, images, labels)


@dataclass
class ManualUpdate:
    """The engine's update rule for methods that step their own optimisers (``manual_optimization``).

    ``update`` is the engine's own: the non-finite guard (same decision on every rank), zeroing,
    backward (scaled under fp16), clipping and the optimiser step, for any network.
    """

    device: torch.device
    options: StepOptions
    step: int

    def autocast(self):
        return autocast(self.device, self.options.amp)

    def update(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               parameters: Iterable[torch.Tensor], scaler: torch.amp.GradScaler | None = None) -> bool:
        """Backward ``loss`` and step ``optimizer``; False (nothing stepped) when skipped as non-finite."""
        if not _finite_on_all_ranks(loss):
            bad = [k for k, v in terms.items() if k != "loss" and not torch.isfinite(v)] or ["loss"]
            if not self.options.skip_nonfinite:
                raise NonFiniteLossError(self.step, bad)
            optimizer.zero_grad(set_to_none=True)
            return False
        parameters = list(parameters)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if self.options.clip_grad:
                torch.nn.utils.clip_grad_norm_(parameters, self.options.clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if self.options.clip_grad:
                torch.nn.utils.clip_grad_norm_(parameters, self.options.clip_grad)
            optimizer.step()
        return True


class StepReporter:
    """A tqdm bar on a terminal; one plain line every ``log_interval`` steps otherwise, so a
    run redirected to a file is not flooded with bar redraws."""

    def __init__(self, total: int | None, initial: int, desc: str, enabled: bool, log_interval: int = 50) -> None:
        self.enabled, self.log_interval, self.desc, self.total = enabled, log_interval, desc, total
        self.tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True) if self.tty else None
        self.start = time.time()

    def update(self, step: int, loss: torch.Tensor, lr: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if step % 10 == 0:  # a host sync for the displayed loss, not every step
                self.bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{lr:.2e}")
        elif self.log_interval and step % self.log_interval == 0:
            rate = self.log_interval / max(time.time() - self.start, 1e-9)
            self.start = time.time()
            print(f"{self.desc} step {step} loss {float(loss.detach()):.4f} lr {lr:.2e} ({rate:.2f} steps/s)", flush=True)

    def write(self, message: str) -> None:
        (self.bar.write if self.bar is not None else print)(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_one_epoch(
    model: nn.Module,
    method,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    options: StepOptions,
    progress: TrainProgress,
    max_steps: int,
    on_step: Callable[[TrainProgress], None] | None = None,
    show_progress: bool = True,
    total_batches: int | None = None,
    log_interval: int = 50,
) -> None:
    """Train from ``progress`` (possibly mid-epoch) to the end of the loader or ``max_steps``."""
    model.train()
    reporter = StepReporter(total_batches, progress.batch_in_epoch, f"train {progress.epoch}", show_progress, log_interval)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    for images, labels, _ in loader:
        if progress.step >= max_steps or (total_batches is not None and progress.batch_in_epoch >= total_batches):
            break
        scheduler.step_update(progress.step)
        method.set_step(progress.step)
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)

        if getattr(method, "manual_optimization", False):
            terms = method.manual_step(model, images, labels, optimizer, scaler, ManualUpdate(device, options, progress.step))
            if terms is None:
                progress.skipped_nonfinite += 1
                reporter.write(f"warning: skipped batch at step {progress.step}: non-finite loss")
            else:
                progress.add_terms(terms)
            progress.step += 1
            progress.batch_in_epoch += 1
            reporter.update(progress.step, terms["loss"] if terms else torch.zeros(()), method.current_lr(optimizer))
            if on_step is not None:
                on_step(progress)
            continue

        terms = compute_loss(model, method, images, labels, device, options)
        loss = terms["loss"]
        if not _finite_on_all_ranks(loss):
            bad = [k for k, v in terms.items() if k != "loss" and not torch.isfinite(v)] or ["loss"]
            if not options.skip_nonfinite:
                raise NonFiniteLossError(progress.step, bad)
            progress.skipped_nonfinite += 1
            optimizer.zero_grad(set_to_none=True)
            reporter.write(f"warning: skipped batch at step {progress.step}: non-finite {', '.join(bad)}")
        else:
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                _clip(model, options.clip_grad)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                _clip(model, options.clip_grad)
                optimizer.step()
            progress.add_terms(terms)
        progress.step += 1
        progress.batch_in_epoch += 1
        reporter.update(progress.step, loss, optimizer.param_groups[0]["lr"])
        if on_step is not None:
            on_step(progress)
    reporter.close()


def _finite_on_all_ranks(loss: torch.Tensor) -> bool:
    # Every rank must take the same branch, or DDP's gradient all-reduce would hang.
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def _clip(model: nn.Module, max_norm: float | None) -> None:
    if max_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device, amp: str = "off",
            channels_last: bool = False, show_progress: bool = True,
            eval_logits: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Return (indices, targets, predictions, probabilities) over the loader, gathered over ranks.

    ``eval_logits`` is the method's prediction rule (post-hoc logit adjustment); the
    probabilities are the softmax of what it returns. No attention maps are computed.
    """
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    indices, targets, probs = [], [], []
    for images, labels, index in tqdm(loader, desc="eval", disable=not (show_progress and sys.stderr.isatty()),
                                      leave=False, dynamic_ncols=True):
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with autocast(device, amp):
            logits = model(images).logits
        logits = logits.float()
        if eval_logits is not None:
            logits = eval_logits(logits)
        probs.append(torch.softmax(logits, dim=1))
        targets.append(labels.to(device))
        indices.append(index.to(device))
    num_classes = probs[0].shape[1] if probs else 0
    index_t = all_gather_concat(torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long, device=device))
    target_t = all_gather_concat(torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long, device=device))
    prob_t = all_gather_concat(torch.cat(probs) if probs else torch.zeros(0, num_classes, device=device))
    order = torch.argsort(index_t)
    return index_t[order].cpu(), target_t[order].cpu(), prob_t[order].argmax(1).cpu(), prob_t[order].cpu()


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int, amp: str = "off",
             channels_last: bool = False, show_progress: bool = True,
             eval_logits: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Overall, mean-class and per-class accuracy, macro-F1, confusion matrix and calibration (ECE)
    over the whole set; with the annotators' votes (FERPlus) also the KL from the votes to the
    predicted distribution and the votes' negative log-likelihood (``utils/metrics.py``)."""
    indices, targets, predictions, probs = predict(model, loader, device, amp, channels_last, show_progress,
                                                   eval_logits)
    votes = vote_counts(getattr(loader, "dataset", None), num_classes)
    return evaluation_metrics(targets.tolist(), predictions.tolist(), probs.cpu().numpy(), num_classes,
                              None if votes is None else votes[indices.cpu().numpy()])

"""Training and evaluation loops.

One training step: the batch and its exact horizontal mirror go through the model (in one
forward pass over the concatenated batch by default), the criterion returns the total loss
and each term, and the optimiser steps under optional mixed precision.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from utils.distributed import all_gather_concat
from utils.metrics import classification_metrics

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
    flip_forward: str = "one-pass"  # one-pass | two-pass
    clip_grad: float | None = None
    skip_nonfinite: bool = False


@dataclass
class TrainProgress:
    """Where training is, and the running sums of the current epoch (saved in checkpoints)."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    skipped_nonfinite: int = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.batch_in_epoch, self.sums, self.batches = epoch, 0, {}, 0

    def averages(self) -> dict[str, float]:
        return {k: v / max(self.batches, 1) for k, v in self.sums.items()}


def autocast(device: torch.device, amp: str):
    """Autocast context for ``--amp`` (a no-op for 'off')."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def forward_with_mirror(model: nn.Module, images: torch.Tensor, need_mirror: bool, one_pass: bool):
    """Return (logits of the images, their attention maps, attention maps of their mirrors or None)."""
    if not need_mirror:
        out = model(images, with_maps=True)
        return out.logits, out.attention_maps, None
    mirrored = torch.flip(images, dims=[3])
    if one_pass:
        # Equivalent to two passes for LayerNorm backbones; BatchNorm sees 2B samples at once.
        out = model(torch.cat([images, mirrored], dim=0), with_maps=True)
        maps, mirror_maps = out.attention_maps.chunk(2, dim=0)
        return out.logits[: images.shape[0]], maps, mirror_maps
    out = model(images, with_maps=True)
    mirror_out = model(mirrored, with_maps=True)
    return out.logits, out.attention_maps, mirror_out.attention_maps


def compute_loss(model, criterion, images, labels, device, options: StepOptions) -> dict[str, torch.Tensor]:
    with autocast(device, options.amp):
        logits, maps, mirror_maps = forward_with_mirror(
            model, images, criterion.needs_flipped_view, options.flip_forward == "one-pass"
        )
    # Losses in fp32 whatever the autocast dtype.
    return criterion(logits.float(), labels, maps.float(), None if mirror_maps is None else mirror_maps.float())


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
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
) -> None:
    """Train from ``progress`` (possibly mid-epoch) to the end of the loader or ``max_steps``."""
    model.train()
    bar = tqdm(loader, total=total_batches, desc=f"train {progress.epoch}", disable=not show_progress, leave=False,
               dynamic_ncols=True, initial=progress.batch_in_epoch)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    for images, labels, _ in bar:
        if progress.step >= max_steps or (total_batches is not None and progress.batch_in_epoch >= total_batches):
            break
        scheduler.step_update(progress.step)
        if hasattr(criterion, "set_step"):
            criterion.set_step(progress.step)
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)

        terms = compute_loss(model, criterion, images, labels, device, options)
        loss = terms["loss"]
        if not _finite_on_all_ranks(loss):
            bad = [k for k, v in terms.items() if k != "loss" and not torch.isfinite(v)] or ["loss"]
            if not options.skip_nonfinite:
                raise NonFiniteLossError(progress.step, bad)
            progress.skipped_nonfinite += 1
            optimizer.zero_grad(set_to_none=True)
            bar.write(f"warning: skipped batch at step {progress.step}: non-finite {', '.join(bad)}")
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
            for name, value in terms.items():
                progress.sums[name] = progress.sums.get(name, 0.0) + float(value.detach())
            progress.batches += 1
        progress.step += 1
        progress.batch_in_epoch += 1
        if show_progress:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if on_step is not None:
            on_step(progress)
    bar.close()


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
            channels_last: bool = False, show_progress: bool = True):
    """Return (indices, targets, predictions, probabilities) over the loader, gathered over ranks."""
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    indices, targets, probs = [], [], []
    for images, labels, index in tqdm(loader, desc="eval", disable=not show_progress, leave=False, dynamic_ncols=True):
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with autocast(device, amp):
            logits = model(images).logits
        probs.append(torch.softmax(logits.float(), dim=1))
        targets.append(labels.to(device))
        indices.append(index.to(device))
    num_classes = probs[0].shape[1] if probs else 0
    index_t = all_gather_concat(torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long, device=device))
    target_t = all_gather_concat(torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long, device=device))
    prob_t = all_gather_concat(torch.cat(probs) if probs else torch.zeros(0, num_classes, device=device))
    order = torch.argsort(index_t)
    return index_t[order].cpu(), target_t[order].cpu(), prob_t[order].argmax(1).cpu(), prob_t[order].cpu()


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int, amp: str = "off",
             channels_last: bool = False, show_progress: bool = True) -> dict:
    """Overall, mean-class and per-class accuracy, macro-F1 and confusion matrix over the whole set."""
    _, targets, predictions, _ = predict(model, loader, device, amp, channels_last, show_progress)
    return classification_metrics(targets.tolist(), predictions.tolist(), num_classes)


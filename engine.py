"""Training and evaluation loops, the same for every method.

One training step: the method's ``train_step`` runs the forwards it needs (by default its
``training_step``, whose loss terms carry the total under ``"loss"``) and updates through the
engine's :class:`Stepper`, the one place with mixed precision, backward, gradient scaling and
clipping and the non-finite guard (the same decision on every DDP rank). The engine keeps the
running sums of the terms (on the device, synchronised only when logged) and progress.

Host synchronisations: none per step on CUDA. The non-finite guard records each loss's
finiteness on the device and reads it every ``StepOptions.nonfinite_check_interval`` steps and
whenever the sums are read (:class:`NonFiniteGuard`); on a CPU, where reading costs nothing,
and with ``--skip-nonfinite``, which must decide before each update, it checks every step.
"""
from __future__ import annotations

import contextlib
from functools import partial
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
    # Steps between reads of the non-finite guard; None: every step on a CPU (a read costs
    # nothing there, and the error names the step before its update), 50 on an accelerator.
    nonfinite_check_interval: int | None = None

    def check_interval(self, device: torch.device) -> int:
        """1: check each loss before its update; N > 1: record on the device, read every N steps."""
        if self.skip_nonfinite:  # skipping an update needs the decision before it
            return 1
        if self.nonfinite_check_interval is not None:
            return max(1, self.nonfinite_check_interval)
        return 1 if device.type == "cpu" else 50


class NonFiniteGuard:
    """The non-finite check without a host synchronisation per step.

    :meth:`record` notes on the device whether a step's loss is finite (and, for the first step
    that is not, which terms); :meth:`check` reads that once, over every DDP rank, and raises
    :class:`NonFiniteLossError` naming that step. Updates between that step and the check have
    been applied: the run stops within the check interval, and its diagnostic checkpoint holds
    the state where it stopped. Every rank records and checks at the same steps.
    """

    NONE = torch.iinfo(torch.int64).max

    def __init__(self) -> None:
        self._first: torch.Tensor | None = None  # the first non-finite step, or NONE (a device scalar)
        self._terms: dict[str, torch.Tensor] = {}  # which terms were non-finite at that step

    def record(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        if self._first is None:
            self._first = torch.full((), self.NONE, dtype=torch.int64, device=loss.device)
        first_now = bad & (self._first == self.NONE)
        self._first = torch.where(first_now, torch.full_like(self._first, step), self._first)
        for name, value in terms.items():
            if name == "loss":
                continue
            term_bad = first_now & ~torch.isfinite(value.detach()).all()
            self._terms[name] = self._terms[name] | term_bad if name in self._terms else term_bad

    def check(self) -> None:
        """One host read (and one all-reduce under DDP); raises if a recorded loss was non-finite."""
        if self._first is None:
            return
        first, terms = self._first.reshape(1), self._terms
        self._first, self._terms = None, {}  # a diagnostic save after the raise checks nothing
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
        step = int(first.item())
        if step == self.NONE:
            return
        bad = [name for name, flag in terms.items() if bool(flag)] or ["loss"]
        raise NonFiniteLossError(step, bad)


@dataclass
class TrainProgress:
    """Where training is, and the running sums of the current epoch (saved in checkpoints).

    The loss terms of each step are added on the device (float64, so the sums equal those of
    Python floats) and copied to the host only when read: one sync per log, not per step.
    ``elapsed_s`` is the training loop's wall-clock before this process (restored by a resume), so
    :meth:`elapsed` counts a run stopped and resumed as if it had run through: each segment's
    start-up is left out, and the steps redone after a kill are counted once.
    """

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    skipped_nonfinite: int = 0
    elapsed_s: float = 0.0
    scaler_skipped: int = 0  # updates the fp16 gradient scaler skipped (inf/NaN gradients), whole run

    def __post_init__(self) -> None:
        self._pending: dict[str, torch.Tensor] = {}
        self.nonfinite = NonFiniteGuard()  # read with the sums: nothing non-finite is logged or saved
        self._scaler_skips: torch.Tensor | None = None  # on the device, added to scaler_skipped when read
        self.lr = float("nan")  # the logged learning rate of the last step (not saved: set by every step)
        self._clock_start: float | None = None

    def start_clock(self) -> None:
        """The training loop starts (or resumes) now."""
        self._clock_start = time.time()

    def elapsed(self) -> float:
        """Seconds of training loop so far, earlier segments of a resumed run included."""
        return self.elapsed_s + (0.0 if self._clock_start is None else time.time() - self._clock_start)

    def next_epoch(self, steps_per_epoch: int) -> None:
        """Start the next epoch, or the current one if it has not begun (a resume at an epoch's start)."""
        if self.batch_in_epoch >= steps_per_epoch:
            self.start_epoch(self.epoch + 1)
        elif self.batch_in_epoch == 0:
            self.start_epoch(self.epoch)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.batch_in_epoch, self.sums, self.batches = epoch, 0, {}, 0
        self._pending = {}

    def add_terms(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            value = value.detach().to(torch.float64)
            self._pending[name] = self._pending[name] + value if name in self._pending else value
        self.batches += 1

    def add_scaler_skips(self, skips: torch.Tensor) -> None:
        self._scaler_skips = skips if self._scaler_skips is None else self._scaler_skips + skips

    def _sync(self) -> None:
        self.nonfinite.check()
        if self._scaler_skips is not None:
            self.scaler_skipped += int(self._scaler_skips)
            self._scaler_skips = None
        for name, value in self._pending.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self._pending = {}

    def averages(self) -> dict[str, float]:
        self._sync()
        return {k: v / max(self.batches, 1) for k, v in self.sums.items()}

    def state_dict(self) -> dict:
        self._sync()
        return {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                "sums": dict(self.sums), "batches": self.batches, "skipped_nonfinite": self.skipped_nonfinite,
                "elapsed_s": self.elapsed(), "scaler_skipped": self.scaler_skipped}


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


class Stepper:
    """The one optimisation step of the codebase, for any network and optimiser.

    ``update(loss, terms, optimizer, parameters, scaler)``: the non-finite check (the same
    decision on every DDP rank), zeroing, backward (scaled under fp16), gradient unscale,
    clipping of ``parameters``, the optimiser step and the scaler update. Every method's update
    goes through it: a one-network method's (``Method.train_step``), each network of a method
    that trains several (a teacher and a student), and ``--dry-run``. ``lr`` is the learning
    rate of the first optimiser updated in this step (the one logged).

    With a ``guard`` the non-finite check is recorded on the device and read later
    (:class:`NonFiniteGuard`); without one each loss is checked before its update (a host sync).
    """

    def __init__(self, device: torch.device, options: StepOptions, step: int,
                 guard: NonFiniteGuard | None = None) -> None:
        self.device, self.options, self.step, self.guard = device, options, step, guard
        self.lr: float | None = None
        self.skipped: list[str] = []  # the non-finite terms of a skipped update
        self.scaler_skips: torch.Tensor | None = None  # updates the fp16 scaler skipped in this step (device)

    def autocast(self):
        return autocast(self.device, self.options.amp)

    def update(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               parameters: Iterable[torch.Tensor], scaler: torch.amp.GradScaler | None = None) -> bool:
        """Backward ``loss`` and step ``optimizer``; False (nothing stepped) when skipped as non-finite."""
        if self.lr is None:
            self.lr = optimizer.param_groups[0]["lr"]
        if self.guard is not None and not self.options.skip_nonfinite:
            self.guard.record(self.step, loss, terms)
        elif not _finite_on_all_ranks(loss):
            bad = [k for k, v in terms.items() if k != "loss" and not torch.isfinite(v)] or ["loss"]
            if not self.options.skip_nonfinite:
                raise NonFiniteLossError(self.step, bad)
            self.skipped = bad
            optimizer.zero_grad(set_to_none=True)
            return False
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if self.options.clip_grad:
            torch.nn.utils.clip_grad_norm_(list(parameters), self.options.clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            # The scaler skips an update with inf/NaN gradients and only then lowers its scale:
            # counted on the device (scaler.get_scale() would synchronise).
            before = scaler._get_scale_async().clone()
            scaler.update()
            skipped = (scaler._get_scale_async() < before).to(torch.int64)
            self.scaler_skips = skipped if self.scaler_skips is None else self.scaler_skips + skipped
        else:
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


def method_step(method, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer, scaler,
                stepper: Stepper) -> dict[str, torch.Tensor] | None:
    """``method.train_step``; an object with only ``training_step`` (the minimal method protocol,
    e.g. a test's wrapper) gets :meth:`methods.base.Method.train_step`, the default update."""
    from methods.base import Method

    step = getattr(method, "train_step", None) or partial(Method.train_step, method)
    return step(model, images, labels, optimizer, scaler, stepper)


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
    ema=None,
    batch_augment=None,
) -> None:
    """Train from ``progress`` (possibly mid-epoch) to the end of the loader or ``max_steps``.

    Per batch: the main schedule's lr, ``method.set_step``, then ``method.train_step`` with a
    :class:`Stepper` (the method's forwards, losses and updates), the weight average's update
    (``--ema``; ``utils/ema.py``), then progress and ``on_step``. With ``--batch-augment`` the loader
    gives uint8 faces, augmented here on the device (``data/batch_augment.py``).
    """
    model.train()
    reporter = StepReporter(total_batches, progress.batch_in_epoch, f"train {progress.epoch}", show_progress, log_interval)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    check_interval = options.check_interval(device)
    guard = progress.nonfinite if check_interval > 1 else None
    for images, labels, indices in loader:
        if progress.step >= max_steps or (total_batches is not None and progress.batch_in_epoch >= total_batches):
            break
        scheduler.step_update(progress.step)
        method.set_step(progress.step)
        images = images.to(device, non_blocking=True)
        if batch_augment is not None:
            images = batch_augment(images, indices, progress.epoch)
        images = images.contiguous(memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        stepper = Stepper(device, options, progress.step, guard)
        terms = method_step(method, model, images, labels, optimizer, scaler, stepper)
        if terms is None:
            progress.skipped_nonfinite += 1
            reporter.write(f"warning: skipped batch at step {progress.step}: non-finite {', '.join(stepper.skipped)}")
        else:
            progress.add_terms(terms)
            if ema is not None:
                ema.update(progress.step)
        if stepper.scaler_skips is not None:
            progress.add_scaler_skips(stepper.scaler_skips)
        progress.step += 1
        progress.batch_in_epoch += 1
        progress.lr = stepper.lr if stepper.lr is not None else optimizer.param_groups[0]["lr"]
        reporter.update(progress.step, terms["loss"] if terms else torch.zeros(()), progress.lr)
        if guard is not None and progress.step % check_interval == 0:
            guard.check()
        if on_step is not None:
            on_step(progress)
    reporter.close()
    progress.nonfinite.check()


def dry_run(model: nn.Module, method, train_loader, train_sampler, optimizer, scaler, device: torch.device,
            options: StepOptions, is_main: bool = True, batch_augment=None) -> None:
    """One batch through the method's whole step (forwards, losses, update), and its loss terms."""
    train_sampler.set_epoch(0)
    images, labels, indices = next(iter(train_loader))
    if batch_augment is not None:
        images = batch_augment(images, indices, 0)
    model.train()
    method.set_step(0)
    terms = method_step(method, model, images.to(device), labels.to(device), optimizer, scaler,
                        Stepper(device, options, 0))
    if is_main:
        print("dry run: one batch of", tuple(images.shape), "->",
              ", ".join(f"{k}={float(v.detach()):.4f}" for k, v in (terms or {}).items()), flush=True)


def _finite_on_all_ranks(loss: torch.Tensor) -> bool:
    # Every rank must take the same branch, or DDP's gradient all-reduce would hang.
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


TTA_MODES = ("none", "flip")


def tta_probabilities(model: nn.Module, images: torch.Tensor, tta: str = "none",
                      eval_logits: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Class probabilities of a batch under the method's prediction rule ``eval_logits``.

    ``tta="flip"`` (``--tta flip``) averages the softmax of each face and of its mirror image,
    p = (softmax(g(f(x))) + softmax(g(f(flip(x))))) / 2 with g the prediction rule (post-hoc logit
    adjustment; the identity otherwise): twice the evaluation forwards. The caller sets autocast.
    """
    views = [images] if tta == "none" else [images, torch.flip(images, dims=[3])]
    probs = None
    for view in views:
        logits = model(view).logits.float()
        if eval_logits is not None:
            logits = eval_logits(logits)
        p = torch.softmax(logits, dim=1)
        probs = p if probs is None else probs + p
    return probs / len(views)


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device, amp: str = "off",
            channels_last: bool = False, show_progress: bool = True,
            eval_logits: Callable[[torch.Tensor], torch.Tensor] | None = None, tta: str = "none"):
    """Return (indices, targets, predictions, probabilities) over the loader, gathered over ranks.

    ``eval_logits`` is the method's prediction rule (post-hoc logit adjustment); the
    probabilities are the softmax of what it returns, averaged over the ``tta`` views
    (:func:`tta_probabilities`). No attention maps are computed.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"--tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    indices, targets, probs = [], [], []
    for images, labels, index in tqdm(loader, desc="eval", disable=not (show_progress and sys.stderr.isatty()),
                                      leave=False, dynamic_ncols=True):
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with autocast(device, amp):
            probs.append(tta_probabilities(model, images, tta, eval_logits))
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
             eval_logits: Callable[[torch.Tensor], torch.Tensor] | None = None, tta: str = "none") -> dict:
    """Overall, mean-class and per-class accuracy, macro-F1, confusion matrix and calibration (ECE)
    over the whole set; with the annotators' votes (FERPlus) also the KL from the votes to the
    predicted distribution and the votes' negative log-likelihood (``utils/metrics.py``)."""
    indices, targets, predictions, probs = predict(model, loader, device, amp, channels_last, show_progress,
                                                   eval_logits, tta)
    votes = vote_counts(getattr(loader, "dataset", None), num_classes)
    return evaluation_metrics(targets.tolist(), predictions.tolist(), probs.cpu().numpy(), num_classes,
                              None if votes is None else votes[indices.cpu().numpy()])


class Evaluator:
    """One evaluation of the run: the validation split (when there is one) and the test split with
    the method's prediction rule, the method's extra networks on test, model selection
    (``best.pth``), the metrics.jsonl record, the log lines and the curves figure.

    With ``--ema`` the averaged model is the run's model: it is evaluated first and chooses
    ``best.pth``; the online (trained) model is evaluated beside it and recorded as ``online``.
    ``--tta flip`` applies to every evaluation (:func:`tta_probabilities`)."""

    def __init__(self, model: nn.Module, method, test_loader, val_loader, classes: list[str], device: torch.device,
                 args, logger, run, best, show_progress: bool, ema=None) -> None:
        self.model, self.method, self.test_loader, self.val_loader = model, method, test_loader, val_loader
        self.classes, self.device, self.args, self.logger, self.run, self.best = classes, device, args, logger, run, best
        self.show_progress, self.ema = show_progress, ema
        self.last: dict | None = None  # the test metrics of the last evaluation

    def _evaluate(self, model: nn.Module, loader, eval_logits=None, show_progress: bool = False) -> dict:
        return evaluate(model, loader, self.device, len(self.classes), self.args.amp,
                        self.args.channels_last, show_progress=show_progress, eval_logits=eval_logits,
                        tta=getattr(self.args, "tta", "none"))

    def _val_and_test(self, model: nn.Module) -> tuple[dict | None, dict]:
        val = None if self.val_loader is None else self._evaluate(model, self.val_loader, self.method.eval_logits,
                                                                  self.show_progress)
        return val, self._evaluate(model, self.test_loader, self.method.eval_logits, self.show_progress)

    def __call__(self, progress: TrainProgress) -> dict:
        from utils.evaluation import eval_lines, eval_record
        from utils.plot import plot_curves

        val, test = self._val_and_test(self.model if self.ema is None else self.ema.module)
        online_val, online_test = self._val_and_test(self.model) if self.ema is not None else (None, None)
        averages = progress.averages()
        networks = {name: self._evaluate(network, self.test_loader)
                    for name, (network, _) in self.method.networks().items()}
        if online_test is not None:
            networks = {"online": online_test, **networks}
        val_networks = {"online": online_val} if online_val is not None else {}
        is_best = self.best.update(progress.step, test, val)
        self.logger.write_metrics(eval_record(progress, averages, progress.lr, test, val, networks, self.classes,
                                              self.best, progress.elapsed(), val_networks))
        if self.logger.enabled:
            plot_curves(self.args.output)  # OUTPUT/curves.png: loss terms and accuracies so far
        for line in eval_lines(progress, averages, test, val, networks, self.classes, val_networks):
            self.logger.info(line)
        self.last = test
        if is_best:
            self.run.save("best.pth", progress, test)
        self.model.train()
        return test

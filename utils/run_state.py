"""A run's checkpoint: what it holds, how it is written, and how ``--resume`` restores it.

A checkpoint holds the model (``model``, ``model_config``), the method's state (``extra``: its
``state_dict``; ``networks``: the weights and configs of its extra networks, e.g. Face2Exp's
teacher, which ``test.py --network`` evaluates), the main optimiser, the fp16 scaler, progress,
the model selection so far (``best``), every rank's RNG state, the run's config, and with
``--ema`` the averaged weights (``ema``; ``utils/ema.py``), which the tools evaluate when present.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
from torch import nn

from utils.checkpoint import (CheckpointError, capture_rng_state, check_model_fits, load_checkpoint,
                              restore_rng_state, save_checkpoint)
from utils.optim import load_optimizer_state
from utils.stop import StopRequested

RESUME_KEYS = ("method", "batch_size", "world_size", "dataset", "seed", "val_fraction", "val_split", "labelled_fraction",
               "ema")


class RunState:
    """The objects a checkpoint is made of, and their writing and restoring."""

    def __init__(self, args: argparse.Namespace, model: nn.Module, method, optimizer, scaler, config: dict,
                 model_config: dict, dist_info, best, ema=None) -> None:
        self.args, self.model, self.method, self.optimizer, self.scaler = args, model, method, optimizer, scaler
        self.config, self.model_config, self.dist_info, self.best = config, model_config, dist_info, best
        self.ema = ema
        self.output = Path(args.output)

    def state(self, progress, metrics: dict | None = None) -> dict:
        """This rank's checkpoint (its own RNG state only)."""
        extra = {}
        networks = self.method.networks()
        if networks:  # a second network (Face2Exp's teacher), for --resume and test.py --network
            extra["networks"] = {name: {"model": network.state_dict(), "model_config": config}
                                 for name, (network, config) in networks.items()}
        method_state = self.method.state_dict()
        if method_state:
            extra["extra"] = method_state
        if self.ema is not None:
            extra["ema"] = self.ema.state_dict()
        return {
            **extra,
            "model": self.model.state_dict(), "model_config": self.model_config, "config": self.config,
            "backbone": self.args.backbone, "method": {"name": self.args.method, "settings": self.method.settings()},
            "code_version": self.config["code_version"], "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "progress": progress.state_dict(), "rng": capture_rng_state(), "best_mean_acc": self.best.score,
            "best": self.best.state_dict(), "metrics": metrics,
        }

    def save(self, name: str, progress, metrics: dict | None = None) -> None:
        """Write OUTPUT/name; every rank joins (the RNG states are gathered), the main rank writes."""
        state = {**self.state(progress, metrics), "rng": gather_rng(self.dist_info)}
        if self.dist_info.is_main:
            save_checkpoint(state, self.output / name)

    def save_diagnostic(self, step: int, progress) -> Path:
        """A non-finite loss: this rank's state, without collectives (the other ranks may be elsewhere)."""
        path = self.output / f"nonfinite_step{step}_rank{self.dist_info.rank}.pth"
        save_checkpoint(self.state(progress), path)
        return path

    def resume(self, path: str, progress_cls):
        """Restore everything from ``path``; returns the progress to continue from."""
        state = load_checkpoint(path)
        check_resumable(state, self.model, self.args, path)
        self.model.load_state_dict(state["model"])
        if (self.ema is None) != ("ema" not in state):
            raise CheckpointError(f"{path} was trained {'with' if 'ema' in state else 'without'} --ema, this run "
                                  f"{'has' if self.ema is not None else 'has no'} --ema; an exact resume needs the same")
        if self.ema is not None:
            check_model_fits(state["ema"], self.ema.module, path, state.get("model_config"))
            self.ema.load_state_dict(state["ema"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best.load_state_dict(state.get("best"), legacy_score=state.get("best_mean_acc", -1.0))
        for name, (network, _) in self.method.networks().items():
            saved = state.get("networks", {}).get(name)
            if saved is None:
                raise CheckpointError(f"{path} has no {name} network; it was not written by --method {self.args.method}")
            check_model_fits(saved["model"], network, path, saved.get("model_config"))
            network.load_state_dict(saved["model"])
        if state.get("extra"):
            self.method.load_state_dict(state["extra"])
        rng = state["rng"]
        restore_rng_state(rng[self.dist_info.rank] if isinstance(rng, list) else rng)
        return progress_cls(**state["progress"])


def check_resumable(state: dict, model: nn.Module, args: argparse.Namespace, path: str) -> None:
    if "progress" not in state or "optimizer" not in state:
        raise CheckpointError(f"{path} has no training state (optimizer/progress); it cannot be resumed")
    check_model_fits(state["model"], model, path, state.get("model_config"))
    saved = state.get("config", {})
    for key in RESUME_KEYS:
        if key.startswith(("val_", "labelled_")) and saved and saved.get(key) != getattr(args, key):
            raise CheckpointError(f"{path} was trained with --{key.replace('_', '-')} {saved.get(key)}, this "
                                  f"run has {getattr(args, key)}; the {'validation' if key.startswith('val_') else 'labelled'}"
                                  " split must stay the same")
        if saved.get(key, "mek" if key == "method" else None) not in (None, getattr(args, key)):
            raise CheckpointError(
                f"{path} was trained with --{key.replace('_', '-')} {saved[key]}, this run has {getattr(args, key)}; "
                "an exact resume needs the same value")
    if saved.get("val_record") != getattr(args, "val_record", None):
        raise CheckpointError(f"{path} held out other validation images than this run would (the training "
                              "list changed); an exact resume needs the same split")


def gather_rng(dist_info):
    """This rank's RNG states, or every rank's (a list in rank order) under DDP."""
    state = capture_rng_state()
    if not dist_info.enabled:
        return state
    # Sent as torch-serialised bytes: all_gather_object cannot carry tensors on every backend.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    gathered: list = [None] * dist_info.world_size
    torch.distributed.all_gather_object(gathered, buffer.getvalue())
    return [torch.load(io.BytesIO(blob), weights_only=True) for blob in gathered]


class StepHooks:
    """What happens after a training step inside an epoch: an evaluation every ``--eval-interval``
    steps, ``last.pth`` every ``--save-interval`` steps, and a stop signal honoured with a
    checkpoint of that step. An epoch's last step is handled by the epoch loop, after its evaluation."""

    def __init__(self, run: RunState, evaluate, stop, eval_interval: int, save_interval: int, total_steps: int,
                 steps_per_epoch: int) -> None:
        self.run, self.evaluate, self.stop = run, evaluate, stop
        self.eval_interval, self.save_interval = eval_interval, save_interval
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch

    def __call__(self, progress) -> None:
        if self.eval_interval and progress.step % self.eval_interval == 0 and progress.step < self.total_steps:
            self.evaluate(progress)
        mid_epoch = progress.batch_in_epoch < self.steps_per_epoch
        periodic = self.save_interval and progress.step % self.save_interval == 0
        signum = self.stop.requested(progress.step) if mid_epoch and progress.step < self.total_steps else None
        if mid_epoch and (periodic or signum is not None):
            self.run.save("last.pth", progress)
        if signum is not None:  # SIGINT/SIGTERM: this step is kept, then the run ends
            raise StopRequested(progress.step, signum)

    def end_of_epoch(self, progress) -> None:
        """After the epoch's evaluation and ``last.pth``: stop here if a signal asked to."""
        signum = self.stop.requested(progress.step) if progress.step < self.total_steps else None
        if signum is not None:
            raise StopRequested(progress.step, signum)

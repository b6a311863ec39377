"""Checkpoints: atomic writes, full training state (incl. every RNG: Python, numpy, torch's CPU
generator and the training GPU's), and compatibility checks.

A checkpoint is a dict with ``format`` and whatever train.py puts in it (its
``checkpoint_state``): ``model`` and ``model_config`` (enough to rebuild the model alone) are
required here; the rest (config, method, optimiser, progress, RNG states) is train.py's.
"""
from __future__ import annotations

import os
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CHECKPOINT_FORMAT = "fer-mek-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, read or used; the message says which and why."""


def code_version() -> str:
    """The git commit of the code (with '+dirty' if modified), or 'unknown'."""
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def capture_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # The training device's generator only (a process trains on one GPU): every visible GPU's
        # would not restore on a machine with fewer of them.
        device = torch.cuda.current_device()
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if not torch.cuda.is_available():
        return
    device = torch.cuda.current_device()
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif "cuda" in state and device < len(state["cuda"]):  # older checkpoints: every visible GPU's
        torch.cuda.set_rng_state(state["cuda"][device], device)


def _as_python_state(state):
    # torch.load may turn tuples into lists; random.setstate wants tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same directory, flushed
    and fsynced, then renamed over ``path``. On failure the previous file is untouched."""
    path = Path(path)
    state = {"format": CHECKPOINT_FORMAT, **state}
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise CheckpointError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}; any previous {path.name} is unchanged"
        ) from None
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.remove(tmp_name)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything else clearly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign pickles
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format", "no 'format' key") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a training checkpoint of this codebase (format {found!r}, expected {CHECKPOINT_FORMAT!r}); "
            "backbone weights from other sources go to --pretrained"
        )
    for key in ("model", "model_config"):
        if key not in state:
            raise CheckpointError(f"{path} is missing the key {key!r}; it is incomplete or from another tool")
    return state


def inference_weights(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The weights a tool evaluates from a checkpoint, and which they are: the averaged model of
    a ``--ema`` run (``"ema"``), else the trained model (``"model"``)."""
    if state.get("ema") is not None:
        return state["ema"], "ema"
    return state["model"], "model"


def check_model_fits(state_dict: dict[str, torch.Tensor], model: nn.Module, path: str | Path, model_config: dict | None = None) -> None:
    """Raise one message listing how ``state_dict`` differs from ``model`` (keys and shapes)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if model_config:
        parts.append(
            f"checkpoint was trained as backbone={model_config.get('backbone')!r}, "
            f"num_classes={model_config.get('num_classes')}, img_size={model_config.get('img_size')}"
        )
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches, e.g. {mismatched[0]}")
    if missing:
        parts.append(f"{len(missing)} model keys missing from the checkpoint, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
    raise CheckpointError(f"{path} does not fit the model: " + "; ".join(parts))

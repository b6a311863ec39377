"""Export a trained checkpoint to ONNX or TorchScript, usable without this codebase.

    python export.py output/demo/best.pth --format onnx --output fer.onnx
    python export.py output/demo/best.pth --format torchscript --output fer.pt

The exported model takes a normalised face batch ``image`` (B, 3, S, S), float32, with a dynamic
batch axis, and returns the class logits ``logits`` (B, K). Beside it, ``<output>.json`` holds
what is needed to feed it: class names in logit order, image size S, mean/std, interpolation.
Preprocessing is the checkpoint's evaluation transform: the RGB face crop resized to S x S,
scaled to [0, 1], minus mean, divided by std, channels first. After writing, the file is loaded
back (ONNX Runtime, or torch.jit.load) and compared with PyTorch on random input.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.checkpoint import CheckpointError
from utils.inference import Predictor, load_predictor
from utils.logging import error_exit

TOLERANCE = 1e-4


class LogitsOnly(nn.Module):
    """The model as a plain tensor -> tensor function (exporters want no NamedTuple)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image).logits


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("Export a checkpoint to ONNX or TorchScript",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a .pth written by train.py")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--output", required=True, help="the model file to write (.onnx or .pt)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version")
    p.add_argument("--no-check", action="store_true", help="skip comparing the exported model with PyTorch")
    return p


def sidecar(predictor: Predictor, fmt: str, model_file: Path) -> dict[str, Any]:
    """What a user of the exported file needs to prepare inputs and name outputs."""
    return {
        "model_file": model_file.name,
        "format": fmt,
        "input": {"name": "image", "shape": ["batch", 3, predictor.img_size, predictor.img_size], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", len(predictor.classes)]},
        "classes": predictor.classes,
        "img_size": predictor.img_size,
        "mean": list(predictor.mean),
        "std": list(predictor.std),
        "interpolation": predictor.interpolation,
        "preprocess": "RGB face crop resized to img_size x img_size, pixels / 255, (x - mean) / std, NCHW",
        "backbone": predictor.backbone,
        "source_checkpoint": str(predictor.path),
    }


def export_onnx(module: nn.Module, example: torch.Tensor, output: Path, opset: int) -> None:
    """torch.export-based ONNX export (torch >= 2.5, with onnxscript) with a dynamic batch axis."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset,
                                    verbose=False)
    program.save(str(output))


def export_torchscript(module: nn.Module, example: torch.Tensor, output: Path) -> None:
    """A traced TorchScript module (the model has no data-dependent control flow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example)
    traced.save(str(output))


def run_exported(path: Path, fmt: str, batch: np.ndarray) -> np.ndarray:
    """Logits from the written file, loaded the way a user without this codebase would."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"image": batch})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(torch.from_numpy(batch)).numpy()


def main(args: argparse.Namespace) -> Path:
    output = Path(args.output)
    if output.is_dir():
        error_exit(f"--output {output} is a folder; give a file name such as {output / 'model.onnx'}")
    try:
        predictor = load_predictor(args.checkpoint, "cpu")
    except CheckpointError as exc:
        error_exit(str(exc))
    module = LogitsOnly(predictor.model).eval()
    size = predictor.img_size
    example = torch.randn(2, 3, size, size)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "onnx":
            export_onnx(module, example, output, args.opset)
        else:
            export_torchscript(module, example, output)
        meta = output.with_suffix(".json") if output.suffix != ".json" else output.with_name(output.name + ".meta.json")
        meta.write_text(json.dumps(sidecar(predictor, args.format, output), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        error_exit(f"--output {output}: cannot write ({exc.strerror or exc})")
    except ImportError as exc:
        error_exit(f"--format {args.format} needs a missing package ({exc}); pip install -r requirements.txt")
    print(f"wrote {output} ({args.format}, input image (batch, 3, {size}, {size}), output logits "
          f"(batch, {len(predictor.classes)})) and {meta}")
    if not args.no_check:
        batch = torch.randn(3, 3, size, size)
        with torch.no_grad():
            expected = module(batch).numpy()
        got = run_exported(output, args.format, batch.numpy())
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:
            error_exit(f"{output}: exported model differs from PyTorch by {diff:.2e} (> {TOLERANCE:g})")
        print(f"checked: {args.format} and PyTorch agree to {diff:.1e} on a random batch of 3")
    return output


def cli(argv: list[str] | None = None) -> Path:
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
    sys.exit(0)

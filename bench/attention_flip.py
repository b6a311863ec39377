"""How far a network's class activation maps are from mirror-equivariant (docs/attention_consistency.md).

    python bench/attention_flip.py --backbone resnet18_s2_w32 --img-size 64 65 --symmetric
    python bench/attention_flip.py --checkpoint RUN/last.pth --img-size 64 65 --data-root ../shared/data/ferplus
    python bench/attention_flip.py --backbone dlib_resnet --pretrained dlib --img-size 112 113

EAC and MEK's RAC penalise || M(x) - flip(M(flip x)) ||^2 (methods/mirror.py). A network whose every layer
commutes with mirroring makes that 0, but a stride-2 layer on an even-sized input samples the mirror on a
grid shifted by half a cell, so even mirror-symmetric kernels leave an error the attention term then asks
the network to learn away. Per model and input size this prints:
- the final map's size and the strided layers' grid offsets (``mirror_grid_offsets``: 0.5 = half a cell), over the
  strided nn.Conv2d / nn.MaxPool2d / nn.AvgPool2d modules (dlib's trunk pools and pads its sums functionally,
  models/dlib_resnet.py, which this count does not see: its E is the measure there);
- the relative flip error E = || M(x) - flip(M(flip x)) || / || M(x) || of the CAM maps over every class
  (``relative_flip_error``), mean over ``--faces`` faces (FERPlus's PublicTest faces with ``--data-root``,
  else random pixels), in eval mode;
- the same for the predicted class's map alone;
- with ``--symmetric``, again with every convolution kernel replaced by its mirror average (w + flip w) / 2,
  which leaves only the sampling grid's share of the error.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data.transforms import NORMALISATIONS, AugmentConfig, build_eval_transform, default_norm  # noqa: E402
from methods.mirror import mirror, mirror_grid_offsets, relative_flip_error  # noqa: E402
from models import build_model  # noqa: E402


def symmetrise_kernels(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every Conv2d kernel averaged with its own left-right mirror."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_((module.weight + module.weight.flip(-1)) / 2)
    return model


def strided_layers(model: nn.Module, img_size: int) -> list[tuple[str, int, float]]:
    """(name, output size, grid offset in output cells) of every strided Conv2d/pooling layer, in forward order."""
    found: list[tuple[str, nn.Module, int]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: found.append((n, mod, inp[0].shape[-1])))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, img_size, img_size))
    finally:
        for hook in hooks:
            hook.remove()
    rows = []
    for name, module, size in found:
        stride = module.stride if isinstance(module.stride, int) else module.stride[-1]
        if stride == 1:
            continue
        kernel = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[-1]
        padding = module.padding if isinstance(module.padding, int) else module.padding[-1]
        (out, offset), = mirror_grid_offsets(size, [(kernel, stride, padding)])
        rows.append((name, out, offset))
    return rows


@torch.no_grad()
def flip_errors(model: nn.Module, images: torch.Tensor) -> tuple[float, float, tuple[int, int]]:
    """(mean E over every class's map, mean E of the predicted class's map, final map size)."""
    model.eval()
    out = model(images, with_maps=True)
    mirror_maps = model(mirror(images), with_maps=True).attention_maps
    maps = out.attention_maps
    predicted = out.logits.argmax(dim=1)
    pick = predicted.view(-1, 1, 1, 1).expand(-1, 1, *maps.shape[2:])
    top = relative_flip_error(maps.gather(1, pick), mirror_maps.gather(1, pick))
    return relative_flip_error(maps, mirror_maps).mean().item(), top.mean().item(), tuple(maps.shape[2:])


def load_faces(data_root: str | None, count: int, seed: int = 0) -> list[Image.Image]:
    """``count`` PublicTest faces of a FERPlus root (sorted, evenly spaced), else random grey faces."""
    if data_root:
        folder = Path(data_root) / "FER2013Valid"
        paths = sorted(folder.glob("*.png"))
        if not paths:
            raise SystemExit(f"error: --data-root: no PNG faces in {folder}")
        chosen = paths[:: max(1, len(paths) // count)][:count]
        return [Image.open(p).convert("RGB") for p in chosen]
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).convert("RGB") for _ in range(count)]


def batch(faces: list[Image.Image], img_size: int, norm: str) -> torch.Tensor:
    mean, std = NORMALISATIONS[norm]
    transform = build_eval_transform(AugmentConfig(img_size=img_size, mean=mean, std=std))
    return torch.stack([transform(face) for face in faces])


def build(args: argparse.Namespace, checkpoint: str | None) -> tuple[str, nn.Module, str]:
    """(label, model, normalisation) for one row."""
    if checkpoint:
        from utils.checkpoint import CheckpointError
        from utils.inference import load_predictor

        try:
            predictor = load_predictor(checkpoint)
        except (CheckpointError, OSError) as exc:
            raise SystemExit(f"error: --checkpoint {checkpoint}: {exc}") from None
        return f"{predictor.backbone} trained ({checkpoint})", predictor.model, predictor.norm
    torch.manual_seed(args.seed)
    try:
        model = build_model(args.backbone, num_classes=args.num_classes, img_size=max(args.img_size))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise SystemExit(f"error: --backbone {args.backbone}: {exc}") from None
    label = f"{args.backbone} at initialisation (seed {args.seed})"
    if args.pretrained:
        from models.pretrained import load_pretrained_backbone

        load_pretrained_backbone(model.backbone, args.pretrained, args.backbone, allow_partial=True)
        label = f"{args.backbone} from {args.pretrained}, head at initialisation"
    return label, model, args.norm or default_norm(args.backbone)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="a trained run's checkpoint (repeatable)")
    parser.add_argument("--backbone", default="resnet18_s2_w32", help="without --checkpoint: a registered backbone")
    parser.add_argument("--pretrained", default=None, help="without --checkpoint: backbone weights (e.g. dlib)")
    parser.add_argument("--num-classes", type=int, default=7)
    parser.add_argument("--norm", default=None, help="input normalisation (default: the backbone's)")
    parser.add_argument("--img-size", type=int, nargs="+", default=[64, 65], help="input sizes to measure")
    parser.add_argument("--symmetric", action="store_true", help="also with mirror-averaged kernels")
    parser.add_argument("--data-root", default=None, help="a FERPlus root: its PublicTest faces (else random pixels)")
    parser.add_argument("--faces", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.faces < 1:
        parser.error(f"--faces must be at least 1, got {args.faces}")
    if args.threads:
        torch.set_num_threads(args.threads)
    faces = load_faces(args.data_root, args.faces, args.seed)
    from compare_records import machine_line  # bench/, beside this file

    print(f"# {machine_line()}, {torch.get_num_threads()} threads, "
          f"{len(faces)} {'PublicTest' if args.data_root else 'random'} faces, eval mode, fp32")
    print("| model | input | final map | strided layers off by half a cell | E, every class | E, predicted class "
          "| E with mirror-averaged kernels |")
    print("|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoint or [None]:
        label, model, norm = build(args, checkpoint)
        symmetric = symmetrise_kernels(model) if args.symmetric else None
        for size in args.img_size:
            images = batch(faces, size, norm)
            every, top, map_size = flip_errors(model, images)
            layers = strided_layers(model, size)
            shifted = sum(offset > 0 for _, _, offset in layers)
            sym = f"{flip_errors(symmetric, images)[0]:.3f}" if symmetric is not None else "-"
            print(f"| {label} | {size} | {map_size[0]}x{map_size[1]} | {shifted} of {len(layers)} | {every:.3f} "
                  f"| {top:.3f} | {sym} |")


if __name__ == "__main__":
    main()

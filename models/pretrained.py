"""Load a local pretrained-weights file into a backbone, refusing loads that would silently go wrong.

``load_pretrained_backbone`` reads the file, finds the state dict inside its wrappers, detects the
format, converts names to the timm backbone's layout, drops classifier heads, checks that the weights
really fit (shapes, tensors the backbone lacks, fraction of parameters covered, Caffe vs torchvision
stride layout, recorded backbone name) and only then loads them. Supported formats (see ``pretrained/README.md``):

* ``state-dict``: timm / torchvision names, e.g. MS-Celeb-1M ``resnet18_msceleb.pth`` (``{'state_dict': ...}``
  with torchvision ResNet-18 names) or ImageNet weights, optionally wrapped in ``model`` / ``state_dict`` /
  ``state_dict_backbone`` and prefixed by ``module.`` (DDP). An ImageNet Swin-T (patch 4) is loaded into
  the patch-2 ``swin_t`` by resampling the patch embedding.
* ``project-checkpoint``: a backbone saved inside a bigger model, e.g. this project's checkpoints
  (``backbone.*`` loaded; ``head.*`` and anything else dropped) or MEK's full model (``encoder.*``).
* ``swin-original-layout``: Microsoft's Swin layout, e.g. MEK's face-pretrained ``start_0.pt``.
* ``vggface2-caffe-resnet50``: the VGGFace2 ResNet-50 pickle ``resnet50_ft_weight.pkl`` (numpy arrays).
* ``dlib-face-recognition-resnet``: dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (dlib's own
  serialisation, read by ``models.dlib_resnet.read_dlib_dat`` without dlib) into ``--backbone dlib_resnet*``;
  ``--pretrained dlib`` takes it from the installed PyPI package ``face-recognition-models``.
"""
from __future__ import annotations

import importlib
import pickle
import re
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.backbones import BACKBONES
from models.vggface2_resnet import has_caffe_strides

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"

FORMAT_STATE_DICT = "state-dict"
FORMAT_PROJECT = "project-checkpoint"
FORMAT_SWIN_ORIGINAL = "swin-original-layout"
FORMAT_VGGFACE2 = "vggface2-caffe-resnet50"
FORMAT_DLIB = "dlib-face-recognition-resnet"
DLIB_KEYWORD = "dlib"  # --pretrained dlib: the .dat inside the pip package face-recognition-models

VGGFACE2_NUM_IDENTITIES = 8631  # classes of the VGGFace2 training split: identifies resnet50_ft_weight.pkl
IMAGENET_NUM_CLASSES = 1000

# Dict keys that wrap the state dict, tried in this order (MEK's start_0.pt has state_dict_backbone
# next to other heads' state dicts, so it must win over the generic names).
WRAPPER_KEYS = ("state_dict_backbone", "state_dict", "model", "state_dict_model", "model_state_dict", "net")
# Key prefixes that mark a backbone inside a bigger model (this project's classifier, MEK's SwinTransFER).
SUBMODULE_PREFIXES = ("backbone.", "encoder.")
# Classifier / embedding heads that pretrained files carry and a feature-map backbone never has.
HEAD_PREFIXES = ("fc.", "head.", "feature.", "classifier.", "last_linear.")
# Buffers the model rebuilds from its own geometry; copying them from a file can only do harm.
NON_LEARNED_BUFFERS = ("relative_position_index", "attn_mask")

_LIST_LIMIT = 8
_MISSING = object()


class PretrainedLoadError(Exception):
    """The file cannot be loaded into this backbone; the message says what is wrong and how to fix it."""


@dataclass
class LoadReport:
    """What ``load_pretrained_backbone`` loaded (or would have loaded, when it refuses).

    ``loaded_fraction`` counts backbone *parameters by number of elements* (buffers such as BN running
    statistics are listed in ``matched`` / ``missing`` but not counted). ``shape_mismatch`` holds names;
    ``mismatch_shapes`` maps each to (file shape, model shape).
    """

    path: str
    format: str
    matched: list[str]
    missing: list[str]
    unexpected: list[str]
    dropped_head: list[str]
    shape_mismatch: list[str]
    loaded_fraction: float
    mismatch_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Tensors the backbone adds to the architecture the file was trained as (e.g. CBAM modules in
    # resnet18_cbam, ``backbone.pretrained_new_parameters``): left at init and not counted in
    # ``loaded_fraction``, so they never trip the partial-load refusal.
    new: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Multi-line human-readable account of the load."""
        # dropped_head also holds tensors outside the backbone that are no head: the stages a
        # truncated backbone cuts off (dlib_resnet_l3 drops level0-2) or the rest of a bigger
        # saved model. Listed apart, so the summary does not call them a head.
        head = [name for name in self.dropped_head if name.startswith(HEAD_PREFIXES)]
        cut = [name for name in self.dropped_head if not name.startswith(HEAD_PREFIXES)]
        lines = [
            f"Pretrained weights: {self.path}",
            f"  format: {self.format}",
            f"  matched: {len(self.matched)} tensors; backbone parameters loaded: "
            f"{100 * self.loaded_fraction:.1f}% (by element count)",
            f"  dropped classifier head: {_short_list(head)}",
            *([f"  dropped, outside this backbone (stages it cuts off, or the rest of a bigger "
                f"model): {_short_list(cut)}"] if cut else []),
            f"  missing from file (left at init): {_short_list(self.missing)}",
            f"  unexpected in file (ignored): {_short_list(self.unexpected)}",
        ]
        mismatches = [
            f"{name} file {list(self.mismatch_shapes[name][0])} vs model {list(self.mismatch_shapes[name][1])}"
            if name in self.mismatch_shapes else name
            for name in self.shape_mismatch
        ]
        lines.append(f"  shape mismatches (not loaded): {_short_list(mismatches)}")
        if self.new:
            lines.append(f"  new in this backbone (left at init, not counted above): {_short_list(self.new)}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def load_pretrained_backbone(
    backbone: nn.Module,
    path: str | Path,
    backbone_name: str,
    allow_partial: bool = False,
    min_fraction: float = 0.95,
) -> LoadReport:
    """Load the weights in ``path`` into ``backbone`` (the feature extractor, not the full classifier).

    ``backbone_name`` is the ``--backbone`` the model was built with (used in checks and messages).
    Raises ``PretrainedLoadError``, leaving ``backbone`` untouched, when the file is missing or unreadable,
    when nothing at all matches, when the weights fit but were trained with the other ResNet stride layout
    (VGGFace2 Caffe vs torchvision), and, unless ``allow_partial``, when shapes mismatch, when the file has
    non-head tensors the backbone lacks, when fewer than ``min_fraction`` of the backbone's parameter
    elements would load, or when the file records a different registered ``--backbone``.
    Prints and returns a ``LoadReport``.
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    if is_dlib_request(path):
        return _load_dlib(backbone, path, backbone_name, allow_partial, min_fraction)
    path = Path(path)
    raw, notes = _read_checkpoint(path)
    state, container, numpy_valued = _extract_state_dict(raw, path)
    if container:
        notes.insert(0, "state dict found under " + "".join(f"[{key!r}]" for key in container))
    state, stripped, outside_backbone = _strip_wrapping_prefixes(state, backbone)
    if stripped:
        notes.append("stripped key prefixes " + ", ".join(repr(p) for p in stripped))
    file_state = state  # before conversion: what the architecture guess looks at
    fmt = _detect_format(state, numpy_valued, stripped)
    if numpy_valued:
        notes.append("values were numpy arrays (pickle), converted to tensors")

    _check_stride_layout(fmt, state, backbone, backbone_name, path)
    state, skipped = _drop_non_learned_buffers(state)
    if skipped:
        notes.append(f"skipped {skipped} non-learned buffers ({'/'.join(NON_LEARNED_BUFFERS)}); "
                     "the model builds its own")
    state = _convert_to_backbone_layout(fmt, state, backbone, backbone_name, notes, file_state)

    report = _plan_load(state, backbone, str(path), fmt, notes, outside_backbone)
    _enforce(report, backbone, backbone_name, file_state, allow_partial, min_fraction)
    if not allow_partial:
        _check_recorded_backbone(_recorded_backbone_name(raw), backbone_name, report,
                                 getattr(backbone, "pretrained_base", None))

    to_load = {name: state[name] for name in report.matched}
    result = backbone.load_state_dict(to_load, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # _plan_load only passes backbone names
    print(report.summary())
    return report


# --------------------------------------------------------------------------- dlib .dat


def is_dlib_request(path: str | Path) -> bool:
    """``--pretrained dlib`` or any ``*.dat`` file: dlib's serialisation, read by models.dlib_resnet."""
    return str(path) == DLIB_KEYWORD or Path(path).suffix.lower() == ".dat"


def _load_dlib(backbone: nn.Module, path: str | Path, backbone_name: str, allow_partial: bool,
               min_fraction: float) -> LoadReport:
    """Load dlib's face-recognition ResNet; every refusal is one line naming the file (train.py: exit 2)."""
    from models.dlib_resnet import DlibFileError, DlibResNet, packaged_model_path, read_dlib_dat

    try:
        resolved = packaged_model_path() if str(path) == DLIB_KEYWORD else Path(path)
    except DlibFileError as err:
        raise PretrainedLoadError(str(err)) from None
    if not resolved.is_file():
        raise PretrainedLoadError(f"pretrained weights file not found: {resolved} (expected dlib's "
                                  "dlib_face_recognition_resnet_model_v1.dat; --pretrained dlib finds it in the "
                                  "pip package face-recognition-models)")
    start = time.perf_counter()
    try:
        net = read_dlib_dat(resolved)
    except DlibFileError as err:
        raise PretrainedLoadError(str(err)) from None
    seconds = time.perf_counter() - start
    if not isinstance(backbone, DlibResNet):
        raise PretrainedLoadError(
            f"{resolved} is dlib's face-recognition ResNet; it loads only into --backbone dlib_resnet "
            f"(or dlib_resnet_l0 .. dlib_resnet_l3), not --backbone {backbone_name}"
        )
    state = {name: torch.from_numpy(value) for name, value in net.state.items()}
    dropped = [name for name in state if name.startswith(backbone.dropped_prefixes)]
    kept = {name: value for name, value in state.items() if name not in dropped}
    versions = ", ".join(f"{k} x{v}" for k, v in net.layer_versions.items())
    notes = [
        f"read dlib's serialisation in {seconds:.2f} s without dlib (models/dlib_resnet.py; layers: {versions})",
        "input convention: RGB, (pixel - mean) / 256 in 0..255 units, mean "
        + "/".join(f"{m:.3f}" for m in net.input_mean)
        + " (models.dlib_resnet.DLIB_NORM in [0, 1] units), 150x150 chips as trained",
    ]
    if dropped:
        notes.append(f"feature_stage {backbone.feature_stage}: the file's later stages and its 128-D fc "
                     f"({len(dropped)} tensors) are listed as dropped and not loaded")
    report = _plan_load(kept, backbone, str(resolved), FORMAT_DLIB, notes, dropped)
    _enforce(report, backbone, backbone_name, {}, allow_partial, min_fraction)
    result = backbone.load_state_dict({name: kept[name] for name in report.matched}, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    print(report.summary())
    return report


# --------------------------------------------------------------------------- reading


def _read_checkpoint(path: Path) -> tuple[Any, list[str]]:
    """Read a torch file (weights_only first) or a plain pickle (numpy-only unpickler first)."""
    if not path.is_file():
        raise PretrainedLoadError(
            f"pretrained weights file not found: {path}. Put the weights in {PRETRAINED_DIR}/ "
            "(see pretrained/README.md for the supported files) and pass --pretrained pretrained/<file>."
        )
    if _is_torch_file(path):
        return _torch_load(path)
    try:
        with path.open("rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as refused:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
        return obj, [f"pickle holds Python objects ({refused}); read with full unpickling: only use files you trust"]
    except Exception as err:
        raise PretrainedLoadError(
            f"cannot read {path}: it is neither a torch checkpoint nor a pickle ({type(err).__name__}: {err})"
        ) from err
    if isinstance(obj, int) and obj == torch.serialization.MAGIC_NUMBER:
        return _torch_load(path)  # legacy torch file saved with a non-default pickle protocol
    return obj, []


def _torch_load(path: Path) -> tuple[Any, list[str]]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True), []
    except Exception as safe_error:
        # Old training scripts pickle argparse Namespaces, numpy scalars or whole modules next to the weights.
        reason = str(safe_error).strip().splitlines()[-1][:200]
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise PretrainedLoadError(f"cannot read {path} with torch.load: {type(err).__name__}: {err}") from err
        return obj, [f"file holds Python objects besides tensors ({reason}); read with weights_only=False: "
                     "only use files you trust"]


def _is_torch_file(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    legacy_magic = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)  # pre-1.6 torch.save header
    with path.open("rb") as f:
        return f.read(len(legacy_magic)) == legacy_magic


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays (e.g. Python-2 era Caffe conversions) without running other code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise _RefusedGlobal(f"{module}.{name}")
        return getattr(importlib.import_module(module), name)


def _extract_state_dict(raw: Any, path: Path) -> tuple[dict[str, torch.Tensor], list[str], bool]:
    """Unwrap known containers down to a flat name -> tensor dict; non-tensor entries are ignored."""
    obj, container = raw, []
    while True:
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
            container.append("<module>.state_dict()")
            continue
        if not isinstance(obj, Mapping):
            raise PretrainedLoadError(f"{path} holds a {type(obj).__name__}, not a state dict")
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), (Mapping, nn.Module))), None)
        if key is None:
            break
        container.append(key)
        obj = obj[key]
    tensors: dict[str, torch.Tensor] = {}
    numpy_valued = False
    for name, value in obj.items():
        if isinstance(value, torch.Tensor):
            tensors[str(name)] = value
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            tensors[str(name)] = torch.from_numpy(np.array(value))  # copy: pickled arrays may be read-only
            numpy_valued = True
    if not tensors:
        top = ", ".join(repr(k) for k in list(obj)[:10])
        raise PretrainedLoadError(
            f"no weight tensors found in {path} (keys: {top}). Expected a state dict, possibly wrapped in "
            f"one of {', '.join(WRAPPER_KEYS)}."
        )
    return tensors, container, numpy_valued


def _recorded_backbone_name(raw: Any) -> str | None:
    """The backbone name a checkpoint records about itself (``backbone``/``arch`` or ``args.backbone``)."""
    if not isinstance(raw, Mapping):
        return None
    for key in ("backbone", "arch"):
        if isinstance(raw.get(key), str):
            return raw[key]
    for key in ("args", "config", "cfg"):
        meta = raw.get(key)
        value = meta.get("backbone") if isinstance(meta, Mapping) else getattr(meta, "backbone", None)
        if isinstance(value, str):
            return value
    return None


# --------------------------------------------------------------------------- names and formats


def _strip_wrapping_prefixes(
    state: dict[str, torch.Tensor], backbone: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Remove the DDP ``module.`` prefix; for a backbone saved inside a bigger model (``backbone.*`` /
    ``encoder.*`` keys) keep only its keys, unprefixed. Returns (state, prefixes stripped, keys of the
    rest of the bigger model). Prefixes the backbone itself uses are left alone."""
    own_keys = backbone.state_dict().keys()

    def applies(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own_keys)

    stripped: list[str] = []
    outside: list[str] = []
    if applies("module."):
        renamed = {k.removeprefix("module."): v for k, v in state.items()}
        if len(renamed) != len(state):
            raise PretrainedLoadError("the file has the same keys both with and without the 'module.' prefix")
        state = renamed
        stripped.append("module.")
    for prefix in SUBMODULE_PREFIXES:
        if applies(prefix):
            # Only the backbone's own keys may load: the rest of the model (head, projector, ...) could
            # otherwise collide with backbone names (e.g. a top-level ``norm``).
            outside = [k for k in state if not k.startswith(prefix)]
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            stripped.append(prefix)
            break
    return state, stripped, outside


def _detect_format(state: Mapping[str, torch.Tensor], numpy_valued: bool, stripped: list[str]) -> str:
    if _is_vggface2(state, numpy_valued):
        return FORMAT_VGGFACE2
    if "layers.0.downsample.reduction.weight" in state:  # original Swin: patch merging ends stage 0
        return FORMAT_SWIN_ORIGINAL
    if any(p in stripped for p in SUBMODULE_PREFIXES):
        return FORMAT_PROJECT
    return FORMAT_STATE_DICT


def _is_vggface2(state: Mapping[str, torch.Tensor], numpy_valued: bool) -> bool:
    if "layer1.0.conv3.weight" not in state:  # not a bottleneck ResNet
        return False
    fc = state.get("fc.weight")
    return numpy_valued or (fc is not None and fc.shape[0] == VGGFACE2_NUM_IDENTITIES)


def _drop_non_learned_buffers(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    kept = {k: v for k, v in state.items() if not k.endswith(NON_LEARNED_BUFFERS)}
    return kept, len(state) - len(kept)


def _convert_to_backbone_layout(
    fmt: str, state: dict[str, torch.Tensor], backbone: nn.Module, backbone_name: str,
    notes: list[str], file_state: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

    if not isinstance(backbone, SwinTransformer):
        return state
    # timm's own converter: moves original-layout patch merging to the start of the next stage,
    # renames head -> head.fc, resamples the patch embedding and resizes relative position tables.
    file_patch = state.get("patch_embed.proj.weight")
    try:
        converted = checkpoint_filter_fn(state, backbone)
    except (AttributeError, KeyError, RuntimeError, ValueError) as err:
        raise PretrainedLoadError(
            f"cannot convert the checkpoint to --backbone {backbone_name}'s Swin layout ({type(err).__name__}: "
            f"{err}); the architectures differ.{_suggestion(file_state, backbone_name)}"
        ) from err
    if fmt == FORMAT_SWIN_ORIGINAL:
        mek = " (MEK face Swin: feature.* embedding head dropped)" if "feature.0.weight" in state else ""
        notes.append("converted original Swin layout to timm's: patch merging moved to the start of the "
                     "next stage" + mek)
    new_patch = converted.get("patch_embed.proj.weight")
    if file_patch is not None and new_patch is not None and file_patch.shape != new_patch.shape:
        notes.append(
            f"patch embedding resampled {list(file_patch.shape[-2:])} -> {list(new_patch.shape[-2:])} "
            "(timm resample_patch_embed)"
        )
    return converted


# --------------------------------------------------------------------------- checks


def _check_stride_layout(
    fmt: str, state: Mapping[str, torch.Tensor], backbone: nn.Module, backbone_name: str, path: Path
) -> None:
    """Refuse weights that fit the shapes but were trained with the other ResNet stride layout."""
    caffe_backbone = has_caffe_strides(backbone)
    if fmt == FORMAT_VGGFACE2 and not caffe_backbone:
        raise PretrainedLoadError(
            f"{path} is the VGGFace2 Caffe ResNet-50, whose downsampling bottlenecks stride in the 1x1 conv1 "
            f"and whose max pool has no padding with ceil_mode. --backbone {backbone_name} strides in the 3x3 "
            "conv2, so the weights would load and run but compute a different function from the one they "
            "were trained as. Use --backbone resnet50_vggface2."
        )
    fc = state.get("fc.weight")
    if caffe_backbone and fmt != FORMAT_VGGFACE2 and fc is not None and fc.shape[0] == IMAGENET_NUM_CLASSES:
        raise PretrainedLoadError(
            f"{path} looks like an ImageNet (1000-class) torchvision/timm ResNet, trained with the stride on "
            f"the 3x3 conv2; --backbone {backbone_name} uses the Caffe layout (stride on conv1), so it would "
            "compute a different function. Use --backbone resnet50 for these weights."
        )


def _plan_load(
    state: Mapping[str, torch.Tensor], backbone: nn.Module, path: str, fmt: str, notes: list[str],
    outside_backbone: list[str],
) -> LoadReport:
    """Sort file tensors into matched / shape mismatch / head / unexpected without touching the model."""
    own = backbone.state_dict()
    matched, unexpected, shape_mismatch = [], [], []
    dropped_head = list(outside_backbone)
    mismatch_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for name, tensor in state.items():
        target = own.get(name, _MISSING)
        if target is _MISSING:
            (dropped_head if name.startswith(HEAD_PREFIXES) else unexpected).append(name)
        elif tuple(tensor.shape) != tuple(target.shape):
            shape_mismatch.append(name)
            mismatch_shapes[name] = (tuple(tensor.shape), tuple(target.shape))
        else:
            matched.append(name)
    # num_batches_tracked is a step counter that older files lack; it does not affect the function.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    new_pattern = getattr(backbone, "pretrained_new_parameters", None)
    new = [k for k in missing if new_pattern is not None and new_pattern.search(k)]
    missing = [k for k in missing if k not in new]
    params = dict(backbone.named_parameters())
    total = sum(p.numel() for k, p in params.items() if k not in new)
    loaded = sum(params[k].numel() for k in matched if k in params)
    return LoadReport(
        path=path, format=fmt, matched=matched, missing=missing, unexpected=unexpected,
        dropped_head=dropped_head, shape_mismatch=shape_mismatch,
        loaded_fraction=loaded / total if total else 0.0, mismatch_shapes=mismatch_shapes, notes=notes, new=new,
    )


def _enforce(
    report: LoadReport, backbone: nn.Module, backbone_name: str, file_state: Mapping[str, torch.Tensor],
    allow_partial: bool, min_fraction: float,
) -> None:
    hint = _suggestion(file_state, backbone_name)
    if hasattr(backbone, "backbone") and hasattr(backbone, "head"):
        hint += " Pass the classifier's .backbone module, not the whole classifier."
    if not report.matched:
        raise PretrainedLoadError(
            f"no tensor of {report.path} matches --backbone {backbone_name}: the architectures differ.{hint}\n"
            + report.summary()
        )
    if allow_partial:
        return
    if report.shape_mismatch:
        raise PretrainedLoadError(
            f"{len(report.shape_mismatch)} tensors of {report.path} have other shapes than --backbone "
            f"{backbone_name}'s; the architectures differ.{hint} Mismatched tensors are never loaded; "
            "--allow-partial loads the rest.\n" + report.summary()
        )
    if report.unexpected:
        raise PretrainedLoadError(
            f"{len(report.unexpected)} tensors of {report.path} have no place in --backbone {backbone_name} "
            f"(e.g. {', '.join(report.unexpected[:3])}): the architectures differ, so the loaded model would "
            f"not compute what the file was trained as.{hint} --allow-partial ignores them.\n" + report.summary()
        )
    if report.loaded_fraction < min_fraction:
        raise PretrainedLoadError(
            f"only {100 * report.loaded_fraction:.1f}% of --backbone {backbone_name}'s parameters would load "
            f"from {report.path} (need {100 * min_fraction:.0f}%).{hint} If a partial load is intended, "
            "rerun with --allow-partial.\n" + report.summary()
        )


def _check_recorded_backbone(recorded: str | None, backbone_name: str, report: LoadReport,
                             base: str | None = None) -> None:
    """Refuse a checkpoint that names another registered backbone: shapes can fit while the function
    differs (resnet50 vs resnet50_vggface2 strides). Names outside the registry (other codebases'
    ``arch`` strings) are not comparable and are ignored."""
    if recorded is None or recorded == backbone_name or recorded == base or recorded not in BACKBONES:
        return  # base: the plain architecture a backbone extends (resnet18 for resnet18_cbam)
    raise PretrainedLoadError(
        f"{report.path} records that it was saved from --backbone {recorded}, but you built --backbone "
        f"{backbone_name}; the weights fit but may compute a different function. Use --backbone "
        f"{recorded}, or --allow-partial to load it anyway.\n" + report.summary()
    )


def _suggestion(file_state: Mapping[str, torch.Tensor], backbone_name: str) -> str:
    guess = guess_backbone(file_state)
    if guess is None:
        return ""
    if guess == backbone_name:
        return f" The file looks like a {guess} checkpoint, as expected."
    return f" The file looks like a {guess} checkpoint, not {backbone_name}: use --backbone {guess}."


def guess_backbone(state: Mapping[str, torch.Tensor]) -> str | None:
    """Best guess of the ``--backbone`` a state dict (names already unwrapped) was saved from."""
    if "layer1.0.conv1.weight" in state:
        blocks = tuple(_count_blocks(state, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
        fc = state.get("fc.weight")
        if "layer1.0.conv3.weight" in state:
            if fc is not None and fc.shape[0] == VGGFACE2_NUM_IDENTITIES:
                return "resnet50_vggface2"
            return {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101", (3, 8, 36, 3): "resnet152"}.get(blocks)
        return {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}.get(blocks)
    patch = state.get("patch_embed.proj.weight")
    if patch is not None and "layers.0.blocks.0.attn.qkv.weight" in state:
        depths = tuple(_count_blocks(state, rf"layers\.{i}\.blocks\.(\d+)\.") for i in range(4))
        return {
            (96, (2, 2, 6, 2)): "swin_t",
            (96, (2, 2, 18, 2)): "swin_small_patch4_window7_224",
            (128, (2, 2, 18, 2)): "swin_base_patch4_window7_224",
        }.get((patch.shape[0], depths))
    return None


def _count_blocks(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    indices = {int(m.group(1)) for k in state if (m := regex.match(k))}
    return max(indices) + 1 if indices else 0


def _short_list(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:_LIST_LIMIT])
    more = f", ... (+{len(names) - _LIST_LIMIT} more)" if len(names) > _LIST_LIMIT else ""
    return f"{len(names)} ({shown}{more})"

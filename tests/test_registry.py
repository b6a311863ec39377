"""The one registry helper (utils/registry.py) behind backbones, heads, datasets and methods, and imports pointing down."""
import subprocess
import sys
from pathlib import Path

import pytest

from utils.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def test_register_lookup_and_unknown_message():
    things = Registry("thing", error=KeyError)

    @things.register("b")
    def make_b():
        return "b"

    things.add("a", lambda: "a")
    assert things.lookup("b") is make_b and sorted(things) == ["a", "b"] == things.names()
    with pytest.raises(KeyError, match=r"--thing 'c' is unknown; choose from a, b"):
        things.lookup("c")
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        things.add("a", make_b)


def test_datasets_and_methods_use_it():
    from data import DATASETS, DatasetError
    from methods import METHODS, MethodArgumentError

    assert isinstance(DATASETS, Registry) and isinstance(METHODS, Registry)
    with pytest.raises(DatasetError, match="--dataset 'nope' is unknown; choose from "):
        DATASETS.lookup("nope")
    with pytest.raises(MethodArgumentError, match="--method 'nope' is unknown; choose from "):
        METHODS.lookup("nope")


def test_backbones_and_heads_use_it():
    from models import BACKBONES, HEADS, build_head, register_backbone

    assert isinstance(BACKBONES, Registry) and isinstance(HEADS, Registry)
    assert {"resnet18", "swin_t", "dlib_resnet"} <= set(BACKBONES) and {"cam", "rul", "dan"} <= set(HEADS)
    with pytest.raises(ValueError, match="--head 'nope' is unknown; choose from cam, dan, norm-linear, rul"):
        build_head("nope", 8, 2)
    with pytest.raises(ValueError, match="backbone 'resnet18' is registered twice"):
        register_backbone("resnet18")(lambda img_size: None)


def test_tools_and_utils_never_import_train():
    code = ("import sys, test, predict, visualize, export, engine, utils.inference, utils.checkpoint, "
            "utils.optim, utils.logging, utils.device\n"
            "assert 'train' not in sys.modules, 'train was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

"""EAC's/RUL's Gaussian pixel noise augmentation."""
import numpy as np
from PIL import Image

from data.transforms import AugmentConfig, GaussianPixelNoise, build_train_transform


def test_gaussian_pixel_noise_has_the_official_variance_and_probability():
    gray = Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8))
    np.random.seed(0)
    noisy = np.asarray(GaussianPixelNoise(p=1.0, var=30.0)(gray), dtype=np.float64)
    # Truncation to uint8 lowers the mean by ~0.5; the variance stays ~30 (+1/12 from truncation).
    assert abs((noisy - 128).var() - 30.0) < 2.0
    assert GaussianPixelNoise(p=0.0, var=30.0)(gray) is gray
    np.random.seed(1)
    applied = sum(GaussianPixelNoise(p=0.5, var=30.0)(gray) is not gray for _ in range(400))
    assert 160 < applied < 240  # binomial(400, 0.5): sd 10


def test_noise_comes_first_in_the_train_transform_only_when_asked():
    assert isinstance(build_train_transform(AugmentConfig(img_size=32, noise_prob=0.5)).transforms[0], GaussianPixelNoise)
    assert not any(isinstance(t, GaussianPixelNoise) for t in build_train_transform(AugmentConfig(img_size=32)).transforms)


def test_dlib_normalisation_is_dlibs_input_layer():
    # dlib/dnn/input.h: (p - avg) / 256 on 0..255 pixels; ToTensor gives p / 255.
    import pytest

    from data.transforms import NORMALISATIONS
    from models.dlib_resnet import DLIB_NORM

    mean, std = NORMALISATIONS["dlib"]
    assert (mean, std) == DLIB_NORM
    for channel, avg in enumerate((122.782, 117.001, 104.298)):
        assert (200 / 255 - mean[channel]) / std[channel] == pytest.approx((200 - avg) / 256, rel=1e-12)


def test_norm_defaults_to_the_backbones_input_convention(tmp_path, demo_root):
    import json

    import train

    for backbone, expected, extra in (("dlib_resnet", "dlib", []), ("resnet18", "imagenet", []),
                                      ("dlib_resnet", "half", ["--norm", "half"])):
        out = tmp_path / f"{backbone}{len(extra)}"
        train.cli(["--dataset", "demo", "--data-root", str(demo_root), "--backbone", backbone, "--img-size", "32",
                   "--batch-size", "8", "--workers", "0", "--steps", "1", "--no-progress", "--output", str(out), *extra])
        config = json.loads((out / "config.json").read_text())
        assert config["norm"] == expected, backbone


def test_rotate_adds_a_random_rotation_of_at_most_that_many_degrees_first():
    from torchvision import transforms as T

    from data.transforms import AugmentConfig, build_train_transform

    steps = build_train_transform(AugmentConfig(img_size=32, rotate=10.0)).transforms
    assert isinstance(steps[0], T.RandomRotation) and list(steps[0].degrees) == [-10.0, 10.0]
    assert not any(isinstance(s, T.RandomRotation) for s in build_train_transform(AugmentConfig(img_size=32)).transforms)

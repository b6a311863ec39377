"""data/batch_augment.py: --batch-augment's per-sample parameters and the affine resampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.batch_augment import BatchAugment, Uint8Image, splitmix64_uniform
from data.transforms import AugmentConfig

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), reprob=0.0, hflip=0.0)


def _faces(n: int = 4, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def test_splitmix64_matches_its_reference_values():
    # SplitMix64's first output from state 0 is 0xE220A8397B1DCDAF (Vigna's splitmix64.c with x = 0).
    u = splitmix64_uniform(np.array([0], dtype=np.uint64), 1)
    assert u[0, 0] == (0xE220A8397B1DCDAF >> 11) * 2.0**-53
    assert splitmix64_uniform(np.array([1, 2], dtype=np.uint64), 3).shape == (2, 3)


def test_identity_parameters_give_the_normalised_face():
    # No crop, no rotation, no flip, same size: grid_sample at the pixel centres returns the pixels.
    augment = BatchAugment(AugmentConfig(img_size=8, scale=(1.0, 1.0), **PLAIN), seed=0)
    faces = _faces()
    out = augment(faces, torch.arange(4), epoch=0)
    torch.testing.assert_close(out, faces.float() / 255, atol=1e-5, rtol=0)


def test_flip_probability_one_mirrors_every_face():
    augment = BatchAugment(AugmentConfig(img_size=8, scale=(1.0, 1.0), **{**PLAIN, "hflip": 1.0}), seed=0)
    faces = _faces()
    torch.testing.assert_close(augment(faces, torch.arange(4), 0), faces.flip(3).float() / 255, atol=1e-5, rtol=0)


def test_a_rotation_of_90_degrees_is_a_transpose_of_the_pixel_grid():
    # theta = +-90 degrees (u = 1 gives +DEG): x_in = R u rotates the sampling grid a quarter turn; for a
    # square image and pixel-centred grids this is exact: rot90 in one direction or the other.
    augment = BatchAugment(AugmentConfig(img_size=8, scale=(1.0, 1.0), rotate=90.0, **PLAIN), seed=0)
    u = np.zeros((1, 11))
    u[:, [0, 1, 2, 3]] = 0.5
    u[:, 4] = 1.0
    u[:, 5] = 1.0  # no flip (u >= hflip 0)
    theta = torch.as_tensor(augment.affine(u), dtype=torch.float32)
    face = _faces(1).float()
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 8, 8], align_corners=False)
    out = torch.nn.functional.grid_sample(face, grid, align_corners=False)
    # float32 rounding of the sampling coordinates (a few ulps of 1, times 4 px per unit, times a pixel step of
    # up to 255) moves a value by ~1e-4 at most; a wrong rotation moves whole pixels (tens of units).
    assert any(torch.allclose(out, torch.rot90(face, k, dims=(2, 3)), atol=1e-2, rtol=0) for k in (1, 3))


def test_the_crop_keeps_the_chosen_area_and_stays_inside_the_face():
    augment = BatchAugment(AugmentConfig(img_size=8, scale=(0.25, 0.25), **PLAIN), seed=0)
    u = np.random.default_rng(0).random((64, 11))
    m = augment.affine(u)
    sx, sy = m[:, 0, 0], m[:, 1, 1]  # no rotation: the diagonal holds the half-extents
    np.testing.assert_allclose(sx * sy, 0.25, rtol=1e-12)
    assert np.all(np.abs(m[:, 0, 2]) + sx <= 1 + 1e-12) and np.all(np.abs(m[:, 1, 2]) + sy <= 1 + 1e-12)


def test_erasing_zeroes_one_rectangle_of_the_drawn_size():
    augment = BatchAugment(AugmentConfig(img_size=16, scale=(1.0, 1.0), **{**PLAIN, "reprob": 1.0,
                                                                        "re_max_area": 0.25}), seed=3)
    faces = torch.full((8, 3, 16, 16), 255, dtype=torch.uint8)
    out = augment(faces, torch.arange(8), 0)
    boxes = augment.erase_boxes(augment.parameters(torch.arange(8), 0), 16)
    for image, (top, left, h, w) in zip(out, boxes):
        zero = image[0] == 0
        assert zero.sum() == h * w and zero[top:top + h, left:left + w].all()
        assert 0.02 * 256 - 16 <= h * w <= 0.25 * 256 + 16  # rounding of the sides


def test_a_samples_augmentation_depends_on_its_seed_not_its_batch():
    augment = BatchAugment(AugmentConfig(img_size=12, scale=(0.5, 1.0), rotate=15, hflip=0.5, reprob=0.5), seed=7)
    faces = _faces(6, 10)
    whole = augment(faces, torch.arange(6), epoch=2)
    part = augment(faces[[4, 1]], torch.tensor([4, 1]), epoch=2)
    torch.testing.assert_close(part, whole[[4, 1]])
    assert not torch.equal(augment(faces, torch.arange(6), epoch=3), whole)  # a new epoch, new draws


def test_uint8_image_resizes_only_other_sizes_and_unsupported_flags_are_refused():
    from PIL import Image

    image = Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8))
    assert Uint8Image(10)(image).shape == (3, 10, 10) and Uint8Image(10)(image).dtype == torch.uint8
    assert Uint8Image(8)(image).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="--auto-augment"):
        BatchAugment(AugmentConfig(auto_augment="rand-m9-mstd0.5"), seed=0)

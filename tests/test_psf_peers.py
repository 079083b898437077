"""Our PSFs next to kornia's and albumentations' on the same parameters.

Both libraries are optional (``pip install kornia albumentations``); each test skips when
its library is absent. docs/psf_conventions.md explains the differences asserted here.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
import torch

from fastdeblur import psf
from tests.test_psf import angle_diff, moments

F64 = torch.float64


@pytest.fixture(scope="module")
def kornia():  # the module
    return pytest.importorskip("kornia")


@pytest.fixture(scope="module")
def albu_functional():  # albumentations.augmentations.blur.functional
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("albumentations")
        from albumentations.augmentations.blur import functional
    return functional


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.3])
def test_kornia_gaussian_equal(kornia, sigma: float) -> None:
    ours = psf.gaussian(sigma, dtype=F64)
    n = ours.shape[0]
    theirs = kornia.filters.get_gaussian_kernel2d((n, n), (sigma, sigma), dtype=F64)[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-15)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.3])
def test_albumentations_gaussian_equal(albu_functional, sigma: float) -> None:
    ours = psf.gaussian(sigma, dtype=F64)
    theirs = albu_functional.create_gaussian_kernel(sigma, ours.shape[0])
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-15)


@pytest.mark.parametrize("angle", [0.0, 15.0, 30.0, 45.0, 60.0, 90.0, 135.0])
def test_kornia_motion_same_meaning(kornia, angle: float) -> None:
    length = 15
    theirs = moments(kornia.filters.get_motion_kernel2d(length, angle, 0.0, mode="bilinear")[0])
    ours = moments(psf.motion(float(length), angle, dtype=F64))
    # same angle convention (counter-clockwise as displayed), both centred
    assert abs(angle_diff(theirs["angle"], angle)) < 0.5
    assert abs(angle_diff(ours["angle"], angle)) < 0.1
    assert abs(theirs["cx"]) < 1e-5 and abs(theirs["cy"]) < 1e-5
    # kernel_size taps on a line: sqrt(12 var) is about sqrt(L^2 - 1), ours sqrt(L^2 + 2)
    assert abs(theirs["along"] - ours["along"]) < 0.3


def test_kornia_motion_nearest_is_aliased(kornia) -> None:
    # kornia's default 'nearest' rotation: the spread and the axis wander with the angle
    spreads = [moments(kornia.filters.get_motion_kernel2d(9, a, 0.0)[0])["along"]
               for a in (0.0, 15.0, 30.0, 45.0)]
    ours = [moments(psf.motion(9.0, a, dtype=F64))["along"] for a in (0.0, 15.0, 30.0, 45.0)]
    assert max(spreads) - min(spreads) > 0.8
    assert max(ours) - min(ours) < 0.01


@pytest.mark.parametrize("angle", [15.0, 30.0, 45.0, 60.0, 135.0])
def test_albumentations_motion_angle_turns_the_other_way(albu_functional, angle: float) -> None:
    kernel = albu_functional.create_motion_kernel(15, angle, 0.0, False, random.Random(0))
    theirs = moments(kernel / kernel.sum())
    # albumentations adds sin(angle) to the row index, which grows downwards: its angle
    # turns clockwise as displayed, ours counter-clockwise
    assert abs(angle_diff(theirs["angle"], -angle)) < 2.0
    ours = moments(psf.motion(15.0, -angle, dtype=F64))
    assert abs(angle_diff(theirs["angle"], ours["angle"])) < 2.0


@pytest.mark.parametrize("radius", [3, 5, 8])
def test_albumentations_defocus_radius_meaning(albu_functional, radius: int) -> None:
    impulse = np.zeros((41, 41), np.float32)
    impulse[20, 20] = 1.0
    kernel = albu_functional.defocus(impulse, radius, 0.1).astype(np.float64)
    kernel /= kernel.sum()
    theirs = math.sqrt(2 * (moments(kernel)["var"] - 1 / 6))
    ours = math.sqrt(2 * (moments(psf.defocus(radius, dtype=F64))["var"] - 1 / 6))
    assert abs(ours - radius) < 0.05
    assert abs(theirs - radius) < 0.15

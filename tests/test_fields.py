"""Tests of the built-in blur fields and the stored field format (fastdeblur.fields)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdeblur import fields, psf
from fastdeblur.fields import FIELD_TYPES, KernelField, load_field, make_field, save_field
from fastdeblur.ops import reference
from fastdeblur.ops.pc_conv import grid_to_pixel_kernels, pc_conv


def _centroid_and_axis(k: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """Centroid (row, col), principal-axis angle (display degrees) and spread of a kernel."""
    k = k.double().numpy()
    kh, kw = k.shape
    rows, cols = np.mgrid[0:kh, 0:kw]
    m = k.sum()
    cr, cc = (k * rows).sum() / m, (k * cols).sum() / m
    dr, dc = rows - cr, cols - cc
    crr, ccc, crc = (k * dr * dr).sum() / m, (k * dc * dc).sum() / m, (k * dr * dc).sum() / m
    evals, evecs = np.linalg.eigh(np.array([[crr, crc], [crc, ccc]]))
    v = evecs[:, 1]  # (row, col) of the major axis
    angle = math.degrees(math.atan2(-v[0], v[1])) % 180.0
    return np.array([cr, cc]), angle, math.sqrt(12 * evals[1])


@pytest.mark.parametrize("name", FIELD_TYPES)
def test_fields_are_valid_and_seeded(name):
    f = make_field(name, 48, 64, seed=3, strength=9.0, grid=(3, 4))
    assert f.dtype == torch.float32 and f.ndim == 4 and f.shape[:2] == (3, 4)
    ks = f.shape[-1]
    assert f.shape[-2] == ks and ks % 2 == 1 and ks >= 9
    assert bool(torch.isfinite(f).all()) and float(f.min()) >= -1e-7
    torch.testing.assert_close(f.sum((-1, -2)), torch.ones(3, 4), atol=1e-5, rtol=0)
    assert torch.equal(f, make_field(name, 48, 64, seed=3, strength=9.0, grid=(3, 4)))
    other = make_field(name, 48, 64, seed=4, strength=9.0, grid=(3, 4))
    assert not torch.equal(f, other)
    # The kernels do not shift the image (centroid at the centre pixel).
    for a in range(3):
        for b in range(4):
            centroid, _, _ = _centroid_and_axis(f[a, b])
            np.testing.assert_allclose(centroid, [ks // 2, ks // 2], atol=1e-3)
    # Usable with both models.
    x = torch.rand(1, 2, 48, 64)
    assert pc_conv(x, f).shape == x.shape
    assert grid_to_pixel_kernels(f, 48, 64).shape == (ks * ks, 48, 64)


def test_rotation_is_tangential_and_grows_with_radius():
    H = W = 90
    f = fields.rotation_field(H, W, strength=13.0, grid=5, seed=0)
    rng = np.random.default_rng(0)
    cy, cx = fields._random_centre(rng, H, W)
    rows, cols = fields._cell_centres(H, W, 5, 5)
    spreads = []
    for a in range(5):
        for b in range(5):
            _, angle, spread = _centroid_and_axis(f[a, b])
            d_row, d_col = rows[a, b] - cy, cols[a, b] - cx
            radius = math.hypot(d_row, d_col)
            spreads.append((radius, spread))
            if spread > 4:  # a clear streak: its axis is perpendicular to the radius
                radial = math.degrees(math.atan2(-d_row, d_col)) % 180.0
                diff = abs((angle - radial) % 180.0 - 90.0)
                assert diff < 8.0, (a, b, angle, radial)
    spreads.sort()
    assert spreads[-1][1] > spreads[0][1] + 5  # far cells are much more blurred


def test_zoom_is_radial():
    f = fields.zoom_field(80, 120, strength=15.0, grid=(3, 5), seed=1)
    rng = np.random.default_rng(1)
    cy, cx = fields._random_centre(rng, 80, 120)
    rows, cols = fields._cell_centres(80, 120, 3, 5)
    for a, b in [(0, 0), (2, 4), (0, 4), (2, 0)]:
        _, angle, spread = _centroid_and_axis(f[a, b])
        radial = math.degrees(math.atan2(-(rows[a, b] - cy), cols[a, b] - cx)) % 180.0
        assert spread > 6
        assert min(abs(angle - radial), 180 - abs(angle - radial)) < 8.0


def test_defocus_gradient_is_monotone_disks():
    f = fields.defocus_gradient_field(64, 64, strength=11.0, grid=4, seed=2)
    sizes = (f > 1e-6).sum((-1, -2)).float()
    assert float(sizes.max()) > 3 * float(sizes.min())
    # Each kernel is a disk: symmetric under flips.
    torch.testing.assert_close(f, f.flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(f, f.flip(-2), atol=1e-6, rtol=0)
    # The largest matches psf.defocus at strength / 2.
    largest = f.reshape(16, *f.shape[-2:])[int(sizes.argmax())]
    torch.testing.assert_close(largest, psf.defocus(5.5, size=f.shape[-1]), atol=0.03, rtol=0)


def test_motion_field_is_smooth():
    f = fields.motion_field(100, 100, strength=12.0, grid=6, seed=5)
    spreads = np.array([[_centroid_and_axis(f[a, b])[2] for b in range(6)] for a in range(6)])
    assert spreads.max() <= 14 and spreads.min() >= 2
    # Neighbouring cells differ much less than the whole range of the field.
    step = max(np.abs(np.diff(spreads, axis=0)).max(), np.abs(np.diff(spreads, axis=1)).max())
    assert step < 0.6 * (spreads.max() - spreads.min()) + 1.0


def test_zero_strength_is_identity():
    for name in FIELD_TYPES:
        f = make_field(name, 20, 20, strength=0.0, grid=2)
        x = torch.rand(1, 1, 20, 20)
        torch.testing.assert_close(reference.pc_conv(x, f), x, atol=1e-6, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="field name"):
        make_field("swirl", 10, 10)
    with pytest.raises(ValueError, match="strength"):
        make_field("zoom", 10, 10, strength=-1.0)
    with pytest.raises(ValueError, match="image size"):
        make_field("zoom", 0, 10)
    with pytest.raises(ValueError, match="kernel_size"):
        make_field("zoom", 10, 10, kernel_size=4)
    with pytest.raises(ValueError, match="grid"):
        make_field("zoom", 10, 10, grid=0)


# ---- stored format ----


def test_save_load_roundtrip(tmp_path):
    f = make_field("motion_field", 32, 40, strength=7.0, grid=(2, 3), seed=1)
    p = save_field(tmp_path / "field.npz", f)
    loaded = load_field(p)
    assert loaded.model == "pc" and loaded.kernel_size == tuple(f.shape[-2:])
    assert torch.equal(loaded.kernels, f)
    with np.load(p) as raw:
        assert set(raw.files) >= {"grid_kernels", "model"}
        assert raw["grid_kernels"].dtype == np.float32 and str(raw["model"]) == "pc"
    pixel = grid_to_pixel_kernels(torch.rand(2, 2, 3, 5), 6, 7)
    p2 = save_field(tmp_path / "pixel.npz", KernelField(pixel, "pixel", (3, 5)))
    loaded = load_field(p2)
    assert loaded.model == "pixel" and loaded.kernel_size == (3, 5)
    torch.testing.assert_close(loaded.kernels, pixel)
    # Square per-pixel kernels need no kernel_size; hand-written files load too.
    np.savez(tmp_path / "hand.npz", kernels=np.random.rand(9, 4, 5).astype(np.float32),
             model="pixel")
    assert load_field(tmp_path / "hand.npz").kernel_size == (3, 3)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_field(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_field(tmp_path / "junk.npz")
    cases = {
        "nomodel": ({"grid_kernels": np.ones((2, 2, 3, 3), np.float32)}, "model"),
        "badmodel": ({"grid_kernels": np.ones((2, 2, 3, 3), np.float32), "model": "grid"},
                     "model must be"),
        "nokey": ({"kernels": np.ones((9, 4, 4), np.float32), "model": "pc"}, "grid_kernels"),
        "ndim": ({"grid_kernels": np.ones((2, 3, 3), np.float32), "model": "pc"},
                 "gh, gw, kh, kw"),
        "nan": ({"grid_kernels": np.full((1, 1, 3, 3), np.nan, np.float32), "model": "pc"},
                "NaN"),
        "taps": ({"kernels": np.ones((8, 4, 4), np.float32), "model": "pixel"}, "kernel_size"),
        "taps2": ({"kernels": np.ones((8, 4, 4), np.float32), "model": "pixel",
                   "kernel_size": np.array([3, 3])}, "taps"),
        "int": ({"grid_kernels": np.ones((1, 1, 3, 3), np.int32), "model": "pc"}, "floating"),
    }
    for name, (arrays, match) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=match):
            load_field(path)
    with pytest.raises(ValueError, match="npz"):
        save_field(tmp_path / "f.npy", torch.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match="field must be"):
        save_field(tmp_path / "f.npz", torch.ones(3, 3))

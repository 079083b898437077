"""Tiled processing: exact partition of unity, tiled deconvolution equals untiled, no seams."""

from __future__ import annotations

import pytest
import torch

from fastdeblur.convolution import add_noise, convolve
from fastdeblur.restore import wiener
from fastdeblur.restore.tiling import tile_starts, tiled


def test_tile_starts_cover_the_axis() -> None:
    assert tile_starts(50, 64, 16) == [0]
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    for size, tile, overlap in ((101, 32, 8), (64, 32, 31), (300, 128, 64)):
        starts = tile_starts(size, tile, overlap)
        assert starts[0] == 0 and starts[-1] == size - tile
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.parametrize("shape", [(1, 1, 70, 90), (2, 3, 33, 64), (3, 50, 41)])
def test_identity_and_pointwise_are_exact(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, dtype=torch.float64)
    torch.testing.assert_close(tiled(lambda t: t, x, 24, 8), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tiled(torch.sqrt, x, 20, 12), x.sqrt(), rtol=1e-12, atol=1e-12)


def test_single_tile_calls_fn_once() -> None:
    calls = []
    x = torch.rand(1, 1, 10, 12)
    out = tiled(lambda t: t * 2, x, 16, 4, progress=lambda d, n: calls.append((d, n)))
    torch.testing.assert_close(out, x * 2)
    assert calls == [(1, 1)]


def test_progress_and_channel_change() -> None:
    calls = []
    x = torch.rand(1, 3, 50, 50)
    out = tiled(lambda t: t.mean(1, keepdim=True), x, 20, 6,
                progress=lambda d, n: calls.append((d, n)))
    torch.testing.assert_close(out, x.mean(1, keepdim=True), rtol=1e-5, atol=1e-6)
    expected = len(tile_starts(50, 20, 6)) ** 2
    assert calls[-1] == (expected, expected) and len(calls) == expected


def test_tiled_wiener_equals_untiled_in_the_interior_without_seams() -> None:
    torch.manual_seed(0)
    # a smooth random scene with edges
    x = torch.rand(1, 1, 16, 16)
    x = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    x[..., 40:90, 30:70] += 0.3
    k = torch.zeros(9, 9)
    k[4, :] = 1.0
    k[:, 4] += 0.5
    k = k / k.sum()
    y = add_noise(convolve(x, k), 0.01, seed=0)

    def restore(t: torch.Tensor) -> torch.Tensor:
        return wiener(t, k, noise_sigma=0.02)

    whole = restore(y)
    parts = tiled(restore, y, 96, 48)
    diff = (parts - whole)[..., 10:-10, 10:-10]
    assert float(diff.square().mean().sqrt()) < 0.005
    assert float(diff.abs().max()) < 0.03
    # no seam: the difference has no step anywhere (it varies as smoothly as the content)
    step_x = (diff[..., :, 1:] - diff[..., :, :-1]).abs().max()
    step_y = (diff[..., 1:, :] - diff[..., :-1, :]).abs().max()
    assert float(max(step_x, step_y)) < 0.01


def test_bad_arguments() -> None:
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="overlap"):
        tiled(lambda t: t, x, 8, 8)
    with pytest.raises(ValueError, match="image"):
        tiled(lambda t: t, torch.rand(8, 8), 4, 1)
    with pytest.raises(ValueError, match="spatial size"):
        tiled(lambda t: t[..., :-1, :], torch.rand(1, 1, 20, 20), 8, 2)

"""fastdeblur.blur / convolution: against scipy, FFT against direct, boundaries, input kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import signal

from fastdeblur import blur
from fastdeblur.convolution import BOUNDARIES, add_noise, boundary_index, convolve, pad
from tests._tol import assert_close


def _levin(shared_data, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sharp = np.asarray(Image.open(shared_data / "levin" / "sharp" / f"im_{i}.png"), np.float64)
    blurred = np.asarray(
        Image.open(shared_data / "levin" / "blurred" / f"im_{i}_ker_{j}.png"), np.float64
    )
    kernel = np.load(shared_data / "kernels" / "levin09.npz")[f"k{j}"]
    return sharp / 255.0, blurred / 255.0, kernel


@pytest.mark.parametrize("i", [1, 2, 3, 4])
@pytest.mark.parametrize("j", range(1, 9))
def test_blur_matches_levin_and_scipy(shared_data, i: int, j: int) -> None:
    sharp, blurred, kernel = _levin(shared_data, i, j)
    ours = blur(torch.from_numpy(sharp)[None], torch.from_numpy(kernel), boundary="zero")[0]
    ref = signal.convolve2d(sharp, kernel, mode="same", boundary="fill")
    if kernel.shape[0] % 2 and kernel.shape[1] % 2:
        # scipy's 'same' centres odd kernels as we do.
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)
    m = max(kernel.shape)
    interior = (slice(m, -m), slice(m, -m))
    rmse = np.sqrt(np.mean((ours.numpy()[interior] - blurred[interior]) ** 2))
    assert rmse <= 0.002, f"interior RMSE {rmse:.4f} against the shipped blurred image"


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("ksize", [(1, 1), (3, 5), (7, 7), (15, 9), (4, 6)])
def test_fft_equals_direct(boundary: str, ksize: tuple[int, int]) -> None:
    x = torch.rand(2, 3, 23, 31, dtype=torch.float64)
    k = torch.rand(*ksize, dtype=torch.float64)
    direct = convolve(x, k, boundary, method="direct")
    fft = convolve(x, k, boundary, method="fft")
    assert_close(fft, direct)
    x32, k32 = x.float(), k.float()
    assert_close(convolve(x32, k32, boundary, "fft"), convolve(x32, k32, boundary, "direct"))


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_against_scipy_boundaries(boundary: str) -> None:
    x = np.random.default_rng(0).random((19, 24))
    k = np.random.default_rng(1).random((5, 7))
    mode = {"zero": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    xp = np.pad(x, ((2, 2), (3, 3)), mode=mode[boundary])
    ref = signal.convolve2d(xp, k, mode="valid")
    ours = convolve(torch.from_numpy(x)[None, None], torch.from_numpy(k), boundary)[0, 0]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_kernel_larger_than_image() -> None:
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64)
    k = torch.rand(21, 21, dtype=torch.float64)
    for boundary in BOUNDARIES:
        assert_close(convolve(x, k, boundary, "fft"), convolve(x, k, boundary, "direct"))
    # Reflection keeps mirroring beyond one period: equals numpy's reflect at any width.
    np.testing.assert_array_equal(
        pad(x, (9, 9, 9, 9), "reflect")[0, 0].numpy(),
        np.pad(x[0, 0].numpy(), 9, mode="reflect"),
    )


def test_boundary_index_modes() -> None:
    idx = torch.arange(-5, 9)
    assert boundary_index(idx, 4, "reflect").tolist() == [1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert boundary_index(idx, 4, "replicate").tolist() == [0] * 5 + [0, 1, 2, 3] + [3] * 5
    assert boundary_index(idx, 4, "circular").tolist() == [3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert boundary_index(idx, 1, "reflect").tolist() == [0] * 14


def test_per_sample_kernels_and_gradients() -> None:
    x = torch.rand(3, 2, 12, 13, dtype=torch.float64, requires_grad=True)
    k = torch.rand(3, 5, 5, dtype=torch.float64, requires_grad=True)
    y = convolve(x, k, "reflect", "direct")
    for b in range(3):
        assert_close(y[b : b + 1], convolve(x[b : b + 1], k[b], "reflect", "fft"))
    torch.autograd.gradcheck(
        lambda a, b: convolve(a, b, "reflect", "fft"),
        (x[:1, :1, :7, :8].detach().requires_grad_(), k[:1, :3, :3].detach().requires_grad_()),
    )
    torch.autograd.gradcheck(
        lambda a, b: convolve(a, b, "circular", "direct"),
        (x[:2, :1, :6, :5].detach().requires_grad_(), k[:2, :3, :3].detach().requires_grad_()),
    )


def test_symmetric_kernel_does_not_shift() -> None:
    x = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    x[..., 10, 10] = 1
    k = torch.rand(7, 7, dtype=torch.float64)
    k = k + k.flip(0, 1)
    y = convolve(x, k, "zero")[0, 0]
    ii, jj = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    total = y.sum()
    assert abs((y * ii).sum() / total - 10) < 1e-12
    assert abs((y * jj).sum() / total - 10) < 1e-12


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(20, 17), (20, 17, 3)])
def test_numpy_in_numpy_out(dtype, shape) -> None:
    rng = np.random.default_rng(0)
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    img = (rng.random(shape) * top).astype(dtype)
    k = np.ones((3, 3)) / 9
    out = blur(img, k)
    assert out.dtype == img.dtype and out.shape == img.shape
    as_float = torch.from_numpy(img.astype(np.float64) / top)
    as_float = as_float[None] if as_float.ndim == 2 else as_float.permute(2, 0, 1)
    expected = blur(as_float, torch.from_numpy(k))
    expected = expected[0] if len(shape) == 2 else expected.permute(1, 2, 0)
    tol = 0.51 / top if top > 1 else 1e-6
    np.testing.assert_allclose(out / top, expected.numpy(), atol=tol + 1e-6)


def test_tensor_shapes_and_noise_seed() -> None:
    x = torch.rand(3, 16, 16)
    k = torch.ones(3, 3) / 9
    assert blur(x, k).shape == (3, 16, 16)
    assert blur(x[None], k).shape == (1, 3, 16, 16)
    a = blur(x, k, noise_sigma=0.05, seed=7)
    b = blur(x, k, noise_sigma=0.05, seed=7)
    c = blur(x, k, noise_sigma=0.05, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = (a - blur(x, k)).std().item()
    assert 0.04 < noise < 0.06
    with pytest.raises(ValueError, match="noise_sigma"):
        add_noise(x, -1.0)


def test_bad_inputs() -> None:
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="boundary"):
        blur(x, torch.ones(3, 3), boundary="mirror")
    with pytest.raises(ValueError, match="psf"):
        blur(x, torch.ones(3, 3, 3))
    with pytest.raises(ValueError, match="NaN"):
        blur(x, torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="floating point"):
        blur(torch.ones(1, 8, 8, dtype=torch.uint8), torch.ones(3, 3))
    with pytest.raises(TypeError):
        blur([[0.0]], torch.ones(1, 1))
    assert convolve(torch.rand(0, 1, 4, 4), torch.ones(3, 3)).shape == (0, 1, 4, 4)

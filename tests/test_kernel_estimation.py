"""Blind free-form (camera-shake) kernel estimation, and how blind ``auto`` uses it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastdeblur import psf
from fastdeblur.convolution import _fast_fft_size, convolve
from fastdeblur.restore import kernel_estimation as ke
from fastdeblur.restore import pipeline
from fastdeblur.restore.pipeline import deblur_with_details
from fastdeblur.restore.uniform import hyper_laplacian


def _astronaut(size: int = 192) -> torch.Tensor:
    """Grey crop ``(size, size)`` of skimage's astronaut (installed, no download)."""
    import skimage.data

    rgb = np.asarray(skimage.data.astronaut(), dtype=np.float32).mean(-1) / 255.0
    return torch.from_numpy(rgb[100 : 100 + size, 100 : 100 + size].copy())


def _shaken(seed: int = 0, size: int = 15, image_size: int = 192) -> tuple[torch.Tensor, ...]:
    """(sharp, blurred to 8 bits, kernel) for a camera-shake kernel."""
    sharp = _astronaut(image_size)
    k = psf.camera_shake(size, seed=seed, speed_variation=0.5)
    y = convolve(sharp[None, None], k, boundary="reflect")[0, 0]
    return sharp, (y * 255).round() / 255, k


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(-10 * torch.log10((x.clamp(0, 1) - ref).pow(2).mean()))


def _similarity(a: torch.Tensor, b: torch.Tensor, shift: int = 2) -> float:
    """Largest normalised correlation of two same-size kernels over shifts of ±``shift`` px."""
    a, b = a / a.norm(), b / b.norm()
    return float(F.conv2d(F.pad(a[None, None], (shift,) * 4), b[None, None]).max())


def _embed(k: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.zeros(size, size, dtype=k.dtype)
    o = (size - k.shape[0]) // 2
    out[o : o + k.shape[0], o : o + k.shape[1]] = k
    return out


def test_recovers_a_camera_shake_kernel() -> None:
    sharp, y, k = _shaken()
    est = ke.estimate_kernel(y, 21)
    truth = _embed(k, 21)
    delta = _embed(torch.ones(1, 1), 21)
    assert _similarity(est, truth) > 0.9
    assert _similarity(est, truth) > _similarity(delta, truth) + 0.3
    restored = hyper_laplacian(y[None, None], est)[0, 0]
    # noise-free 8-bit input 26.9 dB; the estimate gives about 33 dB
    assert _psnr(restored, sharp) > _psnr(y, sharp) + 3


def test_kernel_properties_and_determinism() -> None:
    _, y, _ = _shaken(seed=3, size=11, image_size=96)
    colour = y[None].expand(3, -1, -1)
    k = ke.estimate_kernel(colour, 15)
    assert k.shape == (15, 15) and k.dtype == torch.float32
    assert bool((k >= 0).all())
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-5)
    cy, cx = ke._centroid(k)
    assert abs(cy) < 0.02 and abs(cx) < 0.02
    torch.testing.assert_close(ke.estimate_kernel(colour[None], 15), k)  # (1, C, H, W), again
    # grey = the mean of the channels (equal up to rounding, which the thresholds can amplify)
    torch.testing.assert_close(ke.estimate_kernel(y, 15), k, atol=2e-3, rtol=0)


def test_large_image_is_estimated_on_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = ke.l0_latent

    def spy(y: torch.Tensor, K: torch.Tensor, lam: float) -> torch.Tensor:
        seen.append(tuple(y.shape))
        return original(y, K, lam)

    monkeypatch.setattr(ke, "l0_latent", spy)
    image = torch.rand(150, 200, generator=torch.Generator().manual_seed(0))
    ke.estimate_kernel(image, 7, window=64)
    # the window plus its periodic extension, up to an FFT-friendly size
    assert max(h for h, _ in seen) == _fast_fft_size(64 + 2 * 7) == 80
    seen.clear()
    ke.estimate_kernel(image, 7, window=None)
    assert max(w for _, w in seen) == _fast_fft_size(200 + 2 * 7) == 216


def test_progress_reports_each_level() -> None:
    _, y, _ = _shaken(image_size=64, size=7)
    calls = []
    ke.estimate_kernel(y, 11, progress=lambda done, total: calls.append((done, total)))
    total = len(ke._levels(11))
    assert calls == [(i + 1, total) for i in range(total)]
    assert ke._levels(11)[-1] == 11 and ke._levels(31) == [7, 9, 11, 17, 23, 31]
    assert all(s % 2 == 1 for s in ke._levels(31))


@pytest.mark.parametrize(("image", "size", "message"), [
    (torch.rand(64, 64), 4, "odd integer"),
    (torch.rand(64, 64), 3, "odd integer"),
    (torch.rand(64, 64), 103, "odd integer"),
    (torch.rand(64, 64), True, "odd integer"),
    (torch.rand(40, 64), 21, "needs at least 42x42"),
    (torch.rand(2, 3, 64, 64), 7, "must be"),
    (torch.zeros(64, 64, dtype=torch.uint8), 7, "floating point"),
    (torch.full((64, 64), float("nan")), 7, "NaN"),
])
def test_bad_input(image: torch.Tensor, size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ke.estimate_kernel(image, size)


def test_numpy_input_and_not_an_image() -> None:
    import fastdeblur

    _, y, _ = _shaken(image_size=64, size=7)
    pixels = (y.numpy() * 255).round().astype(np.uint8)
    grey = ke.estimate_kernel(torch.from_numpy(pixels) / 255.0, 9)
    torch.testing.assert_close(fastdeblur.estimate_kernel(pixels, 9), grey, atol=0, rtol=0)
    # colour is averaged to grey: the same image up to float rounding, which the method's
    # thresholds can amplify, so the kernels agree in shape rather than bit for bit
    colour = fastdeblur.estimate_kernel(pixels[..., None].repeat(3, -1), 9)
    assert float((colour * grey).sum() / (colour.norm() * grey.norm())) > 0.97
    with pytest.raises(TypeError, match="torch.Tensor or a numpy array"):
        ke.estimate_kernel([[0.0] * 64] * 64, 7)


def test_latent_step_with_a_delta_kernel_keeps_the_edges() -> None:
    y = torch.zeros(32, 32)
    y[:, 16:] = 1.0
    y[8:12, 4:8] = 0.5
    K = ke._otf(_embed(torch.ones(1, 1), 5), y.shape)
    x = ke.l0_latent(y, K, 1e-4)
    torch.testing.assert_close(x, y, atol=1e-3, rtol=0)
    # a large λ removes the small square (its edges cost more than its data) but not the step
    x = ke.l0_latent(y, K, 0.5)
    assert float(x[10, 6]) < 0.25 and float(x[:, 20].mean() - x[:, 10].mean()) > 0.8


def test_periodic_extension_wraps_smoothly() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.rand(20, 30, generator=g)
    e, (top, left) = ke.periodic_extension(y, 6)
    # at least 6 on each side, up to FFT-friendly sizes (2, 3, 5-smooth): 32 and 45
    assert e.shape == (32, 45) and (top, left) == (6, 7)
    torch.testing.assert_close(e[top:top + 20, left:left + 30], y)
    # the jump where the period wraps is no larger than a step across the band
    wrap_rows = (e[0] - e[-1]).abs().max()
    wrap_cols = (e[:, 0] - e[:, -1]).abs().max()
    assert float(wrap_rows) <= 1.0 / 13 + 1e-6 and float(wrap_cols) <= 1.0 / 16 + 1e-6


def test_kernel_step_operator_matches_the_fft_form() -> None:
    """The CG's normal operator (a correlation with the gradients' autocorrelation) equals
    ``P (|Lx|² + |Ly|²) Pᵀ`` computed with image-sized FFTs, P the support's crop."""
    g = torch.Generator().manual_seed(1)
    lx, ly = torch.randn(40, 50, generator=g), torch.randn(40, 50, generator=g)
    bx, by = torch.randn(40, 50, generator=g), torch.randn(40, 50, generator=g)
    size = 7
    k = ke._kernel_step(lx, ly, bx, by, size, torch.zeros(size, size))
    # the solution satisfies the normal equations written with full FFTs
    Lx, Ly = torch.fft.rfft2(lx), torch.fft.rfft2(ly)
    gram = Lx.abs().square() + Ly.abs().square()
    lhs = ke._psf(gram * ke._otf(k, lx.shape), lx.shape, size) + ke.KERNEL_WEIGHT * k
    rhs = ke._psf(Lx.conj() * torch.fft.rfft2(bx) + Ly.conj() * torch.fft.rfft2(by),
                  lx.shape, size)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-3 * float(rhs.abs().max()))


def test_centre_subpixel_moves_the_centroid_to_the_centre() -> None:
    k = torch.zeros(9, 9)
    k[2, 6], k[3, 6] = 0.7, 0.3  # centroid (2.3, 6): off by (-1.7, +2)
    centred = ke.centre_subpixel(k)
    cy, cx = ke._centroid(centred)
    assert abs(cy) < 1e-6 and abs(cx) < 1e-6
    assert float(centred.sum()) == pytest.approx(1.0)


def test_drop_small_pieces() -> None:
    k = torch.zeros(9, 9)
    k[4, 2:7] = 0.19  # the kernel
    k[0, 0] = 0.05  # a speck: 5 % of the mass
    cleaned = ke._drop_small_pieces(k)
    assert float(cleaned[0, 0]) == 0 and float(cleaned.sum()) == pytest.approx(1.0)
    assert math.isclose(float(cleaned[4, 4]), 0.2, rel_tol=1e-5)


# ---- blind auto ------------------------------------------------------------------------------


def _estimate(confidence: float) -> SimpleNamespace:
    return SimpleNamespace(blur_type="motion", params={"length": 5.0, "angle": 0.0},
                           confidence=confidence, map=None, warnings=[])


def test_auto_tries_the_free_form_kernel_first_when_the_estimate_is_not_trusted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, y, _ = _shaken()
    monkeypatch.setattr(pipeline, "_estimate", lambda image, compressed=False: _estimate(0.3))
    result = deblur_with_details(y[None], shake_size=21)
    first = result.details["candidates"][0]
    assert first["kernel"].startswith("free-form kernel (21 px")
    assert first["accepted"] and result.kernel.shape == (21, 21)
    assert "free-form kernel" in result.details["reason"]
    torch.testing.assert_close(result.kernel, ke.estimate_kernel(y[None], 21))
    # trusted: the parametric verdict only
    monkeypatch.setattr(pipeline, "_estimate", lambda image, compressed=False: _estimate(0.9))
    result = deblur_with_details(y[None])
    assert not any(c["kernel"].startswith("free-form") for c in result.details["candidates"])


def test_blind_kernel_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    _, y, _ = _shaken(image_size=96, size=9)
    monkeypatch.setattr(pipeline, "_estimate", lambda image, compressed=False: _estimate(0.3))
    parametric = deblur_with_details(y[None], blind_kernel="parametric")
    assert not any(c["kernel"].startswith("free-form")
                   for c in parametric.details["candidates"])
    monkeypatch.setattr(pipeline, "_estimate", lambda image, compressed=False: _estimate(0.9))
    shake = deblur_with_details(y[None], blind_kernel="shake", shake_size=15)
    assert shake.details["candidates"][0]["kernel"].startswith("free-form kernel (15 px")
    # an explicit method uses the free-form kernel when asked, else the verdict's
    explicit = deblur_with_details(y[None], method="wiener", blind_kernel="shake", shake_size=15)
    assert explicit.kernel.shape == (15, 15) and "free-form" in explicit.details["reason"]
    explicit = deblur_with_details(y[None], method="wiener")
    assert "motion (length 5.0" in explicit.details["reason"]
    # an image too small for the kernel: the parametric kernels only
    small = deblur_with_details(y[None, :40, :40], blind_kernel="shake")
    assert not any(c["kernel"].startswith("free-form") for c in small.details["candidates"])


def test_kernel_extent() -> None:
    assert pipeline.kernel_extent(psf.motion(10.0, 0.0)) == 11
    assert pipeline.kernel_extent(psf.gaussian(1.0)) == 7  # taps above 1 % of the peak
    grid = torch.zeros(2, 2, 9, 9)
    grid[..., 4, 4] = 1
    grid[1, 1, 2, 1:8] = 1
    assert pipeline.kernel_extent(grid) == 7


def test_auto_skips_a_free_form_kernel_smaller_than_the_verdict(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, y, _ = _shaken(image_size=96, size=9)
    long = SimpleNamespace(blur_type="motion", params={"length": 25.0, "angle": 0.0},
                           confidence=0.3, map=None, warnings=[])
    monkeypatch.setattr(pipeline, "_estimate", lambda image, compressed=False: long)
    tried = deblur_with_details(y[None], shake_size=21).details["candidates"]
    assert not any(c["kernel"].startswith("free-form") for c in tried)
    tried = deblur_with_details(y[None], shake_size=29).details["candidates"]
    assert tried[0]["kernel"].startswith("free-form kernel (29 px")


def test_free_form_kernel_has_its_own_overshoot_limit() -> None:
    assert pipeline.FALLBACK_OVERSHOOT < pipeline.SHAKE_OVERSHOOT
    share = (pipeline.FALLBACK_OVERSHOOT + pipeline.SHAKE_OVERSHOOT) / 2
    assert pipeline.fallback_reason(None, 1.0, share) is not None
    assert pipeline.fallback_reason(None, 1.0, share, pipeline.SHAKE_OVERSHOOT) is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"blind_kernel": "free"}, "blind_kernel must be one of"),
    ({"shake_size": 8}, "odd integer"),
])
def test_pipeline_rejects_bad_choices(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deblur_with_details(torch.rand(1, 64, 64), **kwargs)


def test_free_form_kernel_is_deconvolved_with_its_noise_floor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The free-form kernel's own error acts as noise: it is deconvolved (screening and whole
    image) with the noise level raised to SHAKE_NOISE_FLOOR; parametric kernels, the given
    kernel and the residual check keep the estimate."""
    _, y, _ = _shaken(image_size=96, size=9)  # noise-free: the estimate is below the floor
    seen: list[tuple[int, float]] = []  # (kernel width, smallest noise level) per call
    original = pipeline._deconvolve_uniform

    def spy(image: torch.Tensor, k: torch.Tensor, method: str,
            sigma: torch.Tensor) -> torch.Tensor:
        seen.append((k.shape[-1], float(sigma.min())))
        return original(image, k, method, sigma)

    residual_levels: list[float] = []
    original_residual = pipeline.blur_residual

    def residual_spy(image: torch.Tensor, x: torch.Tensor, k: torch.Tensor,
                     sigma: torch.Tensor) -> float:
        residual_levels.append(float(sigma.min()))
        return original_residual(image, x, k, sigma)

    monkeypatch.setattr(pipeline, "_deconvolve_uniform", spy)
    monkeypatch.setattr(pipeline, "blur_residual", residual_spy)
    monkeypatch.setattr(pipeline, "_estimate", lambda image, compressed=False: _estimate(0.3))
    result = deblur_with_details(y[None], shake_size=21)
    assert result.details["candidates"][0]["accepted"]
    # the residual check measures against the level the deconvolution assumed (against the
    # image's own, a noise-free image's regularised deconvolution always failed it)
    assert residual_levels == [pytest.approx(pipeline.SHAKE_NOISE_FLOOR)]
    assert float(result.noise_sigma.min()) < pipeline.SHAKE_NOISE_FLOOR
    # the free-form kernel was the first (and accepted) candidate: every deconvolution was its
    assert seen and all(s == pytest.approx(pipeline.SHAKE_NOISE_FLOOR) for _, s in seen)
    seen.clear()
    deblur_with_details(y[None], blind_kernel="parametric")
    assert seen and all(s < pipeline.SHAKE_NOISE_FLOOR for _, s in seen)
    seen.clear()
    deblur_with_details(y[None], method="hyperlaplacian", blind_kernel="shake", shake_size=21)
    assert seen and all(s == pytest.approx(pipeline.SHAKE_NOISE_FLOOR) for _, s in seen)

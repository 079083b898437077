"""Quality and calibration of the uniform non-blind solvers (``fastdeblur.restore.uniform``)
and the noise estimator, against scikit-image on images that are not in any benchmark."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdeblur import psf
from fastdeblur.convolution import convolve
from fastdeblur.restore import estimate_noise, hyper_laplacian, richardson_lucy, uniform, wiener

QUANT_NOISE = 1 / (255 * math.sqrt(12))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a.double().clamp(0, 1) - b.double()).square().mean()))


def photo(name: str, size: int) -> torch.Tensor:
    """A centre crop of a scikit-image photo, ``(1, 1, size, size)`` float64 in [0, 1]."""
    from skimage import color, data

    a = getattr(data, name)()
    a = color.rgb2gray(a) if a.ndim == 3 else a / 255.0
    H, W = a.shape
    a = a[(H - size) // 2 : (H + size) // 2, (W - size) // 2 : (W + size) // 2]
    return torch.from_numpy(np.ascontiguousarray(a))[None, None].double()


def observe(x: torch.Tensor, k: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Circular blur, white noise, 8-bit quantisation."""
    g = torch.Generator().manual_seed(seed)
    y = convolve(x, k, "circular") + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
    return (y.clamp(0, 1) * 255).round() / 255


def skimage_wiener_hindsight(ys: list[torch.Tensor], xs: list[torch.Tensor],
                             k: torch.Tensor) -> list[float]:
    """scikit-image's wiener with the balance (half-decade grid) best on average, in hindsight."""
    from skimage import restoration

    best: list[float] = []
    for balance in 10.0 ** np.arange(-4.0, 0.01, 0.5):
        scores = [psnr(torch.from_numpy(restoration.wiener(y[0, 0].numpy(), k.numpy(), balance)),
                       x[0, 0]) for y, x in zip(ys, xs, strict=True)]
        if not best or np.mean(scores) > np.mean(best):
            best = scores
    return best


@pytest.fixture(scope="module")
def shake() -> torch.Tensor:
    return psf.camera_shake(19, seed=7, dtype=torch.float64)


@pytest.fixture(scope="module")
def noisy_set(shake: torch.Tensor) -> dict:
    xs = [photo(n, 96) for n in ("camera", "astronaut", "coffee")]
    ys = [observe(x, shake, 0.01, seed) for seed, x in enumerate(xs)]
    return {"xs": xs, "ys": ys, "k": shake}


# ---------------------------------------------------------------------------------------------
# noise estimation


@pytest.mark.parametrize(("sigma", "tol"), [(0.005, 0.25), (0.01, 0.1), (0.02, 0.05)])
def test_noise_estimate_on_blurred_8bit(sigma: float, tol: float, shake: torch.Tensor) -> None:
    # cameraman's grass leaks into the finest band: the relative error grows as σ falls.
    x = photo("camera", 192)
    y = observe(x, shake, sigma, seed=3)
    true = math.hypot(sigma, QUANT_NOISE)
    est = float(estimate_noise(y)[0])
    assert abs(est / true - 1) < tol, (est, true)


def test_noise_estimate_is_not_stuck_on_the_8bit_lattice(shake: torch.Tensor) -> None:
    # The Haar band of an 8-bit image takes multiples of 1/510 only: its estimate moves in steps
    # of 0.0029. The db4 band is continuous, so nearby noise levels give distinct estimates.
    x = photo("camera", 128)
    ests = {round(float(estimate_noise(observe(x, shake, s, seed=1))[0]), 6)
            for s in (0.009, 0.0095, 0.010, 0.0105)}
    assert len(ests) == 4
    # The Haar estimates are multiples of the lattice step (hence the need for db4).
    step = 1 / 510 / 0.6744897501960817
    for s in (0.009, 0.0095, 0.010, 0.0105):
        haar = float(estimate_noise(observe(x, shake, s, seed=1), method="haar")[0]) / step
        assert abs(haar - round(haar)) < 1e-6, haar


def test_noise_estimate_small_images_and_errors() -> None:
    y = torch.rand(2, 1, 5, 5, dtype=torch.float64)  # below the db4 support: the Haar band
    torch.testing.assert_close(estimate_noise(y), estimate_noise(y, method="haar"))
    with pytest.raises(ValueError, match="method"):
        estimate_noise(y, method="db2")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# hyper-Laplacian prior


def test_lambda_curve() -> None:
    s = torch.tensor([0.002, 0.005, uniform.HL_SIGMA_REF, 0.02])
    lam = uniform.hl_lambda(s)
    assert bool((lam.diff() < 0).all())
    assert math.isclose(float(lam[2]), uniform.HL_LAMBDA_AT_REF, rel_tol=1e-6)


@pytest.mark.parametrize("second_order", [0.0, 0.5])
def test_prior_filters_match_their_transfer_functions_and_adjoints(second_order: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 12, 15, generator=g, dtype=torch.float64)
    w = torch.rand(2, 1, 12, 15, generator=g, dtype=torch.float64)
    filters = uniform.prior_filters((12, 15), x, second_order)
    assert len(filters) == (5 if second_order else 2)
    for f in filters:
        via_fft = torch.fft.irfft2(f.transfer * torch.fft.rfft2(x), s=(12, 15))
        torch.testing.assert_close(f.apply(x), via_fft)
        lhs = (f.apply(x) * w).sum()
        rhs = (x * f.adjoint(w)).sum()
        assert abs(float(lhs - rhs)) <= 1e-10 * float(f.apply(x).norm() * w.norm())


def test_first_order_prior_matches_the_frequency_domain_splitting() -> None:
    """second_order=0 is Krishnan & Fergus' scheme, written directly in the Fourier domain."""
    from fastdeblur.restore.shrink import shrink_lut

    g = torch.Generator().manual_seed(1)
    y = torch.rand(1, 1, 20, 24, generator=g, dtype=torch.float64)
    k = psf.camera_shake(7, seed=2, dtype=torch.float64)
    lam, alpha = 800.0, 2.0 / 3.0
    K = uniform.otf(k[None], (20, 24))
    gx, gy = uniform.gradient_otfs((20, 24), y)
    x, beta = y, 1.0
    while beta < uniform.HL_BETA_MAX:
        wx = shrink_lut(x - torch.roll(x, 1, -1), beta, alpha)
        wy = shrink_lut(x - torch.roll(x, 1, -2), beta, alpha)
        num = lam * K.conj() * torch.fft.rfft2(y) + beta * (
            gx.conj() * torch.fft.rfft2(wx) + gy.conj() * torch.fft.rfft2(wy))
        den = lam * K.abs().square() + beta * (gx.abs().square() + gy.abs().square())
        x = torch.fft.irfft2(num / den, s=(20, 24))
        beta *= uniform.HL_BETA_RATE
    ours = hyper_laplacian(y, k, lam=lam, alpha=alpha, boundary="circular", second_order=0.0,
                           inner_iterations=1)
    torch.testing.assert_close(ours, x, rtol=1e-9, atol=1e-9)


def test_second_order_terms_keep_smooth_shading() -> None:
    # A smooth ramp with a disc: first differences alone make the ramp piecewise flat.
    H = W = 96
    r = torch.arange(H, dtype=torch.float64)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    x = 0.2 + 0.5 * (xx + 0.5 * yy) / (1.5 * W) + 0.15 * torch.sin(yy / 9.0)
    x = x + 0.2 * ((xx - 48) ** 2 + (yy - 40) ** 2 < 20**2).double()
    x = x[None, None]
    k = psf.camera_shake(15, seed=3, dtype=torch.float64)
    y = observe(x, k, 0.01, seed=4)
    first = psnr(hyper_laplacian(y, k, boundary="circular", second_order=0.0), x)
    default = psnr(hyper_laplacian(y, k, boundary="circular"), x)
    assert default > first + 1.0, (default, first)


def test_hyper_laplacian_beats_skimage_wiener_with_hindsight_balance(noisy_set: dict) -> None:
    xs, ys, k = noisy_set["xs"], noisy_set["ys"], noisy_set["k"]
    theirs = skimage_wiener_hindsight(ys, xs, k)
    ours = [psnr(hyper_laplacian(y.float(), k.float(), boundary="circular"), x)
            for y, x in zip(ys, xs, strict=True)]
    margins = [a - b for a, b in zip(ours, theirs, strict=True)]
    assert min(margins) > 0.5, margins


def test_hyper_laplacian_noise_free_8bit(shake: torch.Tensor) -> None:
    """Only quantisation noise: the estimate is near 0.0011 and λ must not over-smooth."""
    x = photo("astronaut", 96)
    y = observe(x, shake, 0.0, seed=0)
    theirs = skimage_wiener_hindsight([y], [x], shake)[0]
    ours = psnr(hyper_laplacian(y.float(), shake.float(), boundary="circular"), x)
    assert ours > theirs + 0.5, (ours, theirs)


def test_taper_handles_an_unobserved_border(shake: torch.Tensor) -> None:
    big = photo("camera", 128)
    r = shake.shape[0] // 2
    y = convolve(big, shake, "reflect")[..., r:-r, r:-r]
    x = big[..., r:-r, r:-r]
    y = (y * 255).round() / 255
    taper = psnr(hyper_laplacian(y.float(), shake.float()), x)
    circular = psnr(hyper_laplacian(y.float(), shake.float(), boundary="circular"), x)
    assert taper > circular + 3 and taper > psnr(y, x) + 5, (taper, circular)


def test_second_order_argument_is_checked() -> None:
    with pytest.raises(ValueError, match="second_order"):
        hyper_laplacian(torch.rand(1, 8, 8), torch.ones(3, 3), second_order=-1.0)


# ---------------------------------------------------------------------------------------------
# Wiener and Richardson–Lucy defaults


def test_wiener_default_is_near_skimage_hindsight(noisy_set: dict) -> None:
    # A single σ-driven balance, no oracle: within 0.5 dB of scikit-image's best balance
    # chosen in hindsight (31.1 against 31.4 dB here; not yet better, see the Levin results).
    xs, ys, k = noisy_set["xs"], noisy_set["ys"], noisy_set["k"]
    theirs = skimage_wiener_hindsight(ys, xs, k)
    ours = [psnr(wiener(y.float(), k.float(), boundary="circular"), x)
            for y, x in zip(ys, xs, strict=True)]
    assert np.mean(ours) >= np.mean(theirs) - 0.5, (ours, theirs)


def test_richardson_lucy_beats_skimage(noisy_set: dict) -> None:
    from skimage import restoration

    xs, ys, k = noisy_set["xs"], noisy_set["ys"], noisy_set["k"]
    for x, y in zip(xs, ys, strict=True):
        theirs = psnr(torch.from_numpy(restoration.richardson_lucy(y[0, 0].numpy(), k.numpy())),
                      x[0, 0])
        ours = psnr(richardson_lucy(y.float(), k.float(), boundary="circular"), x)
        assert ours > theirs + 1.0, (ours, theirs)


@pytest.mark.parametrize("second_order", [0.0, 0.5])
def test_shrunk_prior_is_the_sum_over_the_filters(second_order: float) -> None:
    from fastdeblur.restore.shrink import shrink_lut

    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 10, 13, generator=g, dtype=torch.float64)
    filters = uniform.prior_filters((10, 13), x, second_order)
    expected = sum(f.weight * f.adjoint(shrink_lut(f.apply(x), 4.0, 2.0 / 3.0)) for f in filters)
    got = uniform.shrunk_prior(x, 4.0, 2.0 / 3.0, 2.0 / 3.0, second_order)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)

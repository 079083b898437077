"""The image-level marginal-likelihood stage of the blur estimator."""

from __future__ import annotations

import math

import pytest
import torch

from fastdeblur import psf
from fastdeblur.convolution import convolve
from fastdeblur.estimate import likelihood as lk
from fastdeblur.synth import BLUR_TYPES


def power_law_image(
    h: int = 256, w: int = 256, alpha: float = 2.2, seed: int = 0, anisotropy: float = 0.0
) -> torch.Tensor:
    """A Gaussian random field with spectrum ``|f|^-alpha · exp(anisotropy · cos 2θ)`` (more
    power along the horizontal frequencies: vertical structures), scaled into [0, 1], ``(H, W)``."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    amp = (fy**2 + fx**2 + (1.0 / h) ** 2).pow(-alpha / 4)
    amp = amp * torch.exp(0.5 * anisotropy * torch.cos(2 * torch.atan2(fy, fx)))
    spec = torch.complex(torch.randn(h, w // 2 + 1, generator=g, dtype=torch.float64),
                         torch.randn(h, w // 2 + 1, generator=g, dtype=torch.float64))
    x = torch.fft.irfft2(spec * amp, s=(h, w))
    x = (x - x.mean()) / (6 * x.std()) + 0.5
    return x.clamp(0, 1).float()


def blurred(blur_type: str, params: dict, noise: float = 0.005, seed: int = 1) -> torch.Tensor:
    x = power_law_image(seed=seed)
    k = psf.from_params(blur_type, params, dtype=torch.float32)
    y = convolve(x[None, None], k, boundary="reflect")[0, 0]
    g = torch.Generator().manual_seed(seed + 100)
    return y + noise * torch.randn(y.shape, generator=g)


def test_tile_spectrum_of_white_noise_is_its_variance() -> None:
    g = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(256, 256, generator=g)
    power, n = lk.tile_spectrum(noise, 64, 16)
    assert n == 16
    assert power.shape == (64, 33)
    assert float(power[1:, 1:].mean()) == pytest.approx(1e-4, rel=0.1)


def test_tile_spectrum_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 64x64"):
        lk.tile_spectrum(torch.rand(40, 80), 64)


def test_window_smooth_on_the_half_plane_equals_the_full_grid() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 16, generator=g, dtype=torch.float64)
    full = torch.fft.fft2(x).abs().pow(2)  # symmetric under f -> -f
    smoothed = (torch.roll(full, 1, -1) + 4 * full + torch.roll(full, -1, -1)) / 6
    smoothed = (torch.roll(smoothed, 1, -2) + 4 * smoothed + torch.roll(smoothed, -1, -2)) / 6
    half = lk.window_smooth(full[..., :9])
    torch.testing.assert_close(half, smoothed[..., :9])
    ones = torch.ones(16, 9, dtype=torch.float64)
    torch.testing.assert_close(lk.window_smooth(ones), ones)


def test_otf_power_is_shift_free_and_one_at_dc() -> None:
    k = psf.motion(9.0, 30.0, dtype=torch.float64)
    q = lk.otf_power([k], 64)
    assert q.shape == (1, 64, 33)
    assert float(q[0, 0, 0]) == pytest.approx(1.0, abs=1e-5)
    assert float(q.max()) <= 1.0 + 1e-5
    shifted = torch.zeros(40, 40, dtype=torch.float64)
    shifted[5 : 5 + k.shape[0], 7 : 7 + k.shape[1]] = k
    torch.testing.assert_close(lk.otf_power([shifted], 64), q, atol=1e-5, rtol=0)


def test_otf_power_of_a_stack_equals_that_of_the_list() -> None:
    lengths, angles = [3.0, 12.5, 31.0], [0.0, 37.0, 101.0]
    stack = psf.motion_batch(lengths, angles)
    single = [psf.motion(length, angle) for length, angle in zip(lengths, angles, strict=True)]
    for tile in (64, 24):  # 24: the longest kernel is cropped to the tile
        torch.testing.assert_close(lk.otf_power(stack, tile), lk.otf_power(single, tile),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("blur_type", "params", "tol"),
    [
        ("gaussian", {"sigma": 2.0}, {"sigma": 0.15}),
        ("motion", {"length": 13.0, "angle": 35.0}, {"length": 1.0, "angle": 3.0}),
        ("defocus", {"radius": 4.5}, {"radius": 0.3}),
    ],
)
def test_fit_likelihood_finds_type_and_parameters(blur_type, params, tol) -> None:
    y = blurred(blur_type, params)
    fit = lk.fit_likelihood(y, 0.005)
    assert fit.best == blur_type
    assert fit.margin > 0
    found = fit.fits[blur_type].params
    for name, value in params.items():
        err = abs(found[name] - value)
        if name == "angle":
            err = min(err % 180, 180 - err % 180)
        assert err <= tol[name], (name, found, params)
    excess = fit.excess()
    assert excess.shape == (3,) and float(excess.min()) == 0.0
    assert int(excess.argmin()) == BLUR_TYPES.index(blur_type)


def test_profiled_nll_prefers_the_true_kernel() -> None:
    y = blurred("defocus", {"radius": 3.0})
    full, _ = lk.tile_spectrum(y, 64, 16)
    flat, _, _ = lk._half_grid(64)
    power = full.reshape(-1)[flat].float()
    otf2 = lk.smoothed_otf_power("defocus", [{"radius": r} for r in (2.0, 3.0, 4.0)], 64)
    nll, alpha = lk.profiled_nll(power, otf2, 0.005**2, 64)
    assert int(nll.argmin()) == 1
    assert alpha.shape == (3,)


def test_angular_amplitude_recovers_an_exact_model_spectrum() -> None:
    # p = c(θ)·|K|²·S + σ² exactly: the profiled NLL reaches its floor Σ w (1 + log p) for the
    # true kernel (m = p), and the one-amplitude model cannot
    tile = 64
    _, weight, f2 = lk._half_grid(tile)
    basis, _ = lk._angular_basis(tile)
    coef = torch.tensor([math.log(2e-4), 0.8, -0.5, 0.3, 0.2])
    otf2 = lk.smoothed_otf_power("defocus", [{"radius": r} for r in (2.5, 3.0)], tile)
    s = (f2 + 1.0 / tile**2).pow(-2.2 / 2)
    noise_var = 1e-6
    power = (coef @ basis).exp() * otf2[0] * s + noise_var
    floor = float((weight * (1 + power.log())).sum())
    nll, alpha = lk.profiled_nll(power, otf2, noise_var, tile)
    assert float(nll[0]) == pytest.approx(floor, rel=1e-6, abs=1e-2)
    assert float(alpha[0]) == pytest.approx(2.2)
    assert float(nll[1]) > float(nll[0]) + 100
    iso, _ = lk.profiled_nll(power, otf2[:1], noise_var, tile, angular=False)
    assert float(iso[0]) > floor + 100


def test_an_anisotropic_image_is_not_read_as_motion() -> None:
    # vertical structures leave little power at vertical frequencies, as a vertical streak does;
    # the direction-dependent amplitude of the prior tells the two apart
    x = power_law_image(anisotropy=2.5, seed=3)
    y = convolve(x[None, None], psf.defocus(4.0, dtype=torch.float32), boundary="reflect")[0, 0]
    fit = lk.fit_likelihood(y, 0.0)
    assert fit.best == "defocus", fit.excess()
    assert fit.fits["defocus"].params["radius"] == pytest.approx(4.0, abs=0.3)


def test_combiner_fit_posterior_and_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    excess = torch.rand(60, 3, generator=g) * 5
    excess[torch.arange(60), labels] = 0.0  # the true family is always the best
    probs = torch.full((60, 3), 1 / 3)
    comb = lk.Combiner.fit(probs, excess, labels)
    post = comb.posterior(probs, excess)
    assert torch.allclose(post.sum(1), torch.ones(60, dtype=torch.float64))
    assert bool((post.argmax(1) == labels).all())
    again = lk.Combiner.from_dict(comb.to_dict())
    assert torch.allclose(again.posterior(probs, excess), post)


def test_combiner_log_excess_lets_the_patch_classifier_overrule_a_far_off_likelihood() -> None:
    """One family far off (hundreds of nats, the prior fitting badly) against a confident patch
    classifier: on the linear scale the likelihood wins, on the log scale the patches can."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(90) % 3
    probs = torch.full((90, 3), 0.1, dtype=torch.float64)
    probs[torch.arange(90), labels] = 0.8
    excess = torch.rand(90, 3, generator=g, dtype=torch.float64) * 0.5 + 1
    excess[torch.arange(90), labels] = 0.0
    # half: the patches lean slightly to a wrong family and the likelihood has to decide
    unsure = torch.arange(1, 90, 2)
    probs[unsure] = 0.32
    probs[unsure, (labels[unsure] + 2) % 3] = 0.36
    wrong = torch.arange(0, 90, 10)  # every 10th: the likelihood prefers a wrong family by far
    excess[wrong, labels[wrong]] = 300.0
    excess[wrong, (labels[wrong] + 1) % 3] = 0.0
    right = {}
    for scale in ("linear", "log1p"):
        comb = lk.Combiner.fit(probs, excess, labels, excess_scale=scale)
        right[scale] = int((comb.scores(probs, excess).argmax(1) == labels).sum())
        assert lk.Combiner.from_dict(comb.to_dict()).excess_scale == scale
    assert right["log1p"] > right["linear"]
    assert right["log1p"] == 90
    with pytest.raises(ValueError, match="excess_scale"):
        lk.Combiner(excess_scale="sqrt")


def test_combiner_without_the_likelihood_ignores_the_excess() -> None:
    """``excess_scale="none"``: a likelihood that is no guide (random excess) is left out; the
    verdict follows the classifier and does not move with the excess."""
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(90) % 3
    probs = torch.full((90, 3), 0.25, dtype=torch.float64)
    probs[torch.arange(90), labels] = 0.5
    excess = torch.rand(90, 3, generator=g, dtype=torch.float64) * 50
    comb = lk.Combiner.fit(probs, excess, labels, excess_scale="none")
    assert comb.w_nll == 0.0 and comb.w_patch > 0
    assert bool((comb.scores(probs, excess).argmax(1) == labels).all())
    torch.testing.assert_close(comb.scores(probs, excess), comb.scores(probs, excess * 0 + 7))
    assert lk.Combiner.from_dict(comb.to_dict()).excess_scale == "none"


def test_coarse_grid_covers_the_supported_range() -> None:
    from fastdeblur.synth import DEFAULT_RANGES

    for t in BLUR_TYPES:
        grid = lk.coarse_grid(t)
        for name, (low, high) in DEFAULT_RANGES[t].items():
            values = [p[name] for p in grid]
            assert min(values) <= low and max(values) >= high - (9 if name == "angle" else 0)
    with pytest.raises(ValueError, match="blur_type"):
        lk.coarse_grid("box")
    assert math.isfinite(lk.NOISE_FLOOR)

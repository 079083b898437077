"""The blind ``fastdeblur.deblur`` pipeline: what ``auto`` runs and why, the fallback to NAFNet,
the residual test, and the per-stage timings in ``details``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fastdeblur import psf
from fastdeblur.convolution import convolve
from fastdeblur.restore import pipeline
from fastdeblur.restore.pipeline import (
    blur_residual,
    deblur_with_details,
    fallback_reason,
    overshoot,
)
from fastdeblur.restore.uniform import noise_level


def _photo(size: int = 72) -> torch.Tensor:
    """A gray natural image ``(1, size, size)`` (skimage's camera, no download)."""
    import skimage.data

    cam = torch.from_numpy(skimage.data.camera()[200:200 + size, 200:200 + size].copy())
    return (cam.float() / 255.0)[None]


def _blurred(kernel: torch.Tensor, size: int = 72, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = convolve(_photo(size)[None], kernel, boundary="reflect")[0]
    return (y + 0.01 * torch.randn(y.shape, generator=g)).clamp(0, 1)


def _fake_estimate(confidence: float, blur_type: str = "gaussian",
                   params: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(blur_type=blur_type, params=params or {"sigma": 1.5},
                           confidence=confidence, map=None, warnings=[])


@pytest.fixture
def estimate_as(monkeypatch: pytest.MonkeyPatch):
    """Make the pipeline's blur estimation return a given estimate."""

    def use(est: SimpleNamespace) -> None:
        monkeypatch.setattr(pipeline, "_estimate", lambda y, compressed=False: est)

    return use


def test_residual_separates_true_from_too_large_kernels() -> None:
    k = psf.from_params("defocus", {"radius": 2.0}, dtype=torch.float32)
    y = _blurred(k, size=96)[None]
    sigma = noise_level(y, None)
    ratios = {}
    for name, kernel in {"true": k, "small": psf.from_params("defocus", {"radius": 1.0}),
                         "large": psf.from_params("defocus", {"radius": 5.0})}.items():
        kernel = kernel.float()
        x = deblur_with_details(y[0], kernel=kernel).image[None]
        ratios[name] = blur_residual(y, x, kernel, sigma)
    assert ratios["true"] < pipeline.FALLBACK_RESIDUAL
    assert ratios["small"] < pipeline.FALLBACK_RESIDUAL  # too small still explains y
    assert ratios["large"] > pipeline.FALLBACK_RESIDUAL


def test_overshoot_of_true_and_too_large_kernels() -> None:
    from fastdeblur.restore import uniform

    k = psf.from_params("motion", {"length": 9.0, "angle": 30.0}, dtype=torch.float32)
    y = _blurred(k, size=96)[None]
    big = psf.from_params("motion", {"length": 21.0, "angle": 30.0}, dtype=torch.float32)
    assert overshoot(uniform.hyper_laplacian(y, k), k) <= pipeline.FALLBACK_OVERSHOOT
    assert overshoot(uniform.hyper_laplacian(y, big), big) > pipeline.FALLBACK_OVERSHOOT
    x = torch.full((1, 1, 40, 40), 0.5)
    x[..., 20, 20] = 2.0  # one pixel far outside [0, 1], inside the border margin
    assert overshoot(x, torch.ones(3, 3) / 9) == pytest.approx(1 / (40 - 2 * 9) ** 2)


def test_fallback_reason_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "FALLBACK_CONFIDENCE", 0.5)
    assert "confidence" in fallback_reason(_fake_estimate(0.2))
    assert fallback_reason(_fake_estimate(0.9)) is None
    assert fallback_reason(_fake_estimate(0.9), residual=0.9) is None
    reason = fallback_reason(_fake_estimate(0.9), residual=pipeline.FALLBACK_RESIDUAL + 1)
    assert "does not explain" in reason
    reason = fallback_reason(_fake_estimate(0.9), overshoot_share=0.5)
    assert "rings" in reason


def test_auto_falls_back_to_nafnet_on_low_confidence(
        estimate_as, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "FALLBACK_CONFIDENCE", 0.5)
    estimate_as(_fake_estimate(0.1))
    y = _blurred(psf.gaussian(1.5, dtype=torch.float32))
    result = deblur_with_details(y)
    assert result.method == "nafnet"
    assert "confidence 0.10" in result.details["reason"]
    assert "nafnet" in result.details["reason"]
    assert result.details["kernel_model"] == "none"
    assert result.estimate is not None and result.kernel.numel() == 0
    assert result.image.shape == y.shape and bool(torch.isfinite(result.image).all())


def test_auto_falls_back_when_the_kernel_does_not_explain_the_image(estimate_as) -> None:
    # the image is barely blurred; the "estimate" claims a large defocus
    estimate_as(_fake_estimate(0.99, "defocus", {"radius": 6.0}))
    y = _blurred(psf.gaussian(0.6, dtype=torch.float32))
    result = deblur_with_details(y)
    assert (result.details["residual"] > pipeline.FALLBACK_RESIDUAL
            or result.details["overshoot"] > pipeline.FALLBACK_OVERSHOOT)
    assert result.method == "nafnet"
    assert "estimated kernel" in result.details["reason"]
    assert result.details["reason"].endswith("fell back to nafnet")


def test_auto_keeps_a_fitting_estimate(estimate_as) -> None:
    estimate_as(_fake_estimate(0.99, "gaussian", {"sigma": 1.5}))
    y = _blurred(psf.gaussian(1.5, dtype=torch.float32))
    result = deblur_with_details(y)
    assert result.method == "hyperlaplacian"
    assert result.details["kernel_model"] == "uniform"
    assert result.details["residual"] <= pipeline.FALLBACK_RESIDUAL
    assert result.details["overshoot"] <= pipeline.FALLBACK_OVERSHOOT
    assert "gaussian (sigma 1.5)" in result.details["reason"]
    assert result.kernel.shape == psf.gaussian(1.5).shape


def test_explicit_method_never_falls_back(estimate_as, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "FALLBACK_CONFIDENCE", 0.5)
    estimate_as(_fake_estimate(0.1))
    y = _blurred(psf.gaussian(1.5, dtype=torch.float32))
    result = deblur_with_details(y, method="hyperlaplacian")
    assert result.method == "hyperlaplacian"
    assert "residual" in result.details


def test_given_kernel_details_and_timings() -> None:
    k = psf.gaussian(1.5, dtype=torch.float32)
    y = _blurred(k)
    result = deblur_with_details(y, kernel=k)
    assert result.method == "hyperlaplacian"
    assert result.details["reason"] == "hyperlaplacian, given kernel"
    assert "residual" not in result.details  # no test of a kernel the caller gave
    timings = result.details["timings"]
    assert {"kernel", "noise", "deconvolution", "output", "total"} <= set(timings)
    assert all(v >= 0 for v in timings.values())
    assert timings["total"] >= timings["deconvolution"]


def test_nafnet_details() -> None:
    y = _blurred(psf.gaussian(1.0, dtype=torch.float32), size=40)
    result = deblur_with_details(y, method="nafnet")
    assert result.method == "nafnet" and "asked for" in result.details["reason"]
    assert "nafnet" in result.details["timings"]
    with pytest.raises(ValueError, match="takes no kernel"):
        deblur_with_details(y, method="nafnet", kernel=psf.gaussian(1.0))


def test_real_estimate_runs_end_to_end() -> None:
    if not pipeline.estimation_available():
        pytest.skip("blur estimation is not installed")
    y = _blurred(psf.from_params("motion", {"length": 9.0, "angle": 30.0},
                                 dtype=torch.float32), size=96)
    result = deblur_with_details(y)
    assert result.method in ("hyperlaplacian", "nafnet")
    assert result.estimate is not None
    assert {"estimate", "kernel", "total"} <= set(result.details["timings"])
    assert result.image.shape == y.shape and bool(torch.isfinite(result.image).all())


def _estimate_with_fits(verdict: str, fits: dict[str, dict], probs: dict[str, float],
                        confidence: float = 0.9) -> SimpleNamespace:
    """A fake estimate with an image-level likelihood fit per family (the runner-ups)."""
    est = _fake_estimate(confidence, verdict, dict(fits[verdict]))
    est.likelihood = {t: {"params": p, "nll": 0.0} for t, p in fits.items()}
    est.probs = probs
    return est


def test_candidate_kernels_order() -> None:
    est = _estimate_with_fits(
        "motion", {"gaussian": {"sigma": 1.5}, "motion": {"length": 21.0, "angle": 90.0},
                   "defocus": {"radius": 3.0}},
        {"gaussian": 0.02, "motion": 0.9, "defocus": 0.08})
    candidates = pipeline.candidate_kernels(est)
    assert [c[0].split(" ")[0] for c in candidates] == ["motion", "defocus", "gaussian"]
    assert "next family" in candidates[1][0]
    for (_, k), (t, p) in zip(candidates, [("motion", est.params), ("defocus", {"radius": 3.0}),
                                           ("gaussian", {"sigma": 1.5})], strict=True):
        torch.testing.assert_close(k, psf.from_params(t, p, dtype=torch.float64))
    # the paper's configuration (no likelihood fit): the verdict only
    assert len(pipeline.candidate_kernels(_fake_estimate(0.9))) == 1


@pytest.mark.parametrize("screen_size", [None, 64])
def test_auto_tries_the_next_family_before_nafnet(
        estimate_as, monkeypatch: pytest.MonkeyPatch, screen_size: int | None) -> None:
    # a small Gaussian blur that the "estimate" reads as a long motion; with a small
    # SCREEN_SIZE the kernels are screened on a window and the whole image deconvolved once
    if screen_size is not None:
        monkeypatch.setattr(pipeline, "SCREEN_SIZE", screen_size)
    est = _estimate_with_fits(
        "motion", {"gaussian": {"sigma": 1.5}, "motion": {"length": 21.0, "angle": 90.0},
                   "defocus": {"radius": 6.0}},
        {"gaussian": 0.3, "motion": 0.6, "defocus": 0.1})
    estimate_as(est)
    k = psf.gaussian(1.5, dtype=torch.float32)
    y = _blurred(k, size=128)
    result = deblur_with_details(y)
    tried = result.details["candidates"]
    assert [c["accepted"] for c in tried] == [False, True]
    where = "whole image" if screen_size is None else "screening window"
    assert all(c["tested_on"] == where for c in tried)
    assert ("screening" in result.details["timings"]) == (screen_size is not None)
    assert result.method == "hyperlaplacian"
    assert result.kernel.shape == k.shape
    assert result.details["reason"].startswith("hyperlaplacian, motion (length 21.0")
    assert "estimated gaussian (sigma 1.5), the next family" in result.details["reason"]
    torch.testing.assert_close(result.image, deblur_with_details(y, kernel=k).image)


def test_auto_falls_back_when_no_family_fits(estimate_as) -> None:
    est = _estimate_with_fits(
        "motion", {"gaussian": {"sigma": 4.5}, "motion": {"length": 25.0, "angle": 90.0},
                   "defocus": {"radius": 7.0}},
        {"gaussian": 0.3, "motion": 0.6, "defocus": 0.1})
    estimate_as(est)
    y = _blurred(psf.gaussian(0.6, dtype=torch.float32), size=96)
    result = deblur_with_details(y)
    assert result.method == "nafnet"
    assert len(result.details["candidates"]) == pipeline.MAX_CANDIDATES
    assert not any(c["accepted"] for c in result.details["candidates"])
    assert result.details["reason"].endswith("fell back to nafnet")
    assert result.details["reason"].count("estimated kernel") == pipeline.MAX_CANDIDATES


def test_screening_window_finds_the_texture() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.full((1, 3, 100, 140), 0.5)
    y[..., 60:90, 100:130] = torch.rand(3, 30, 30, generator=g)
    rows, cols = pipeline.screening_window(y, size=40)
    assert rows.stop - rows.start == 40 and cols.stop - cols.start == 40
    assert rows.start <= 60 and rows.stop >= 90 and cols.start <= 100 and cols.stop >= 130
    assert pipeline.screening_window(y, size=140) is None
    rows, cols = pipeline.screening_window(y, size=120)  # taller than the image: all rows
    assert (rows.start, rows.stop) == (0, 100) and cols.stop - cols.start == 120


def test_overshoot_leaves_out_pixels_next_to_clipping() -> None:
    from fastdeblur.restore import uniform

    k = torch.ones(9, 9) / 81  # border margin 4 + 8 = 12 px, clipping reach 4 px
    y = torch.full((1, 1, 80, 80), 0.5)
    y[..., 30, 30] = 1.0  # one clipped pixel of the input
    x = torch.full((1, 1, 80, 80), 0.5)
    x[..., 30, 33] = 2.0  # overshoot within a kernel of it: left out
    x[..., 30, 60] = 2.0  # far from it: counted
    inner = (80 - 2 * 12) ** 2
    assert overshoot(x, k) == pytest.approx(2 / inner)
    assert overshoot(x, k, y) == pytest.approx(1 / (inner - 81))
    # an input clipped nearly everywhere: nothing is left out
    assert overshoot(x, k, torch.ones_like(y)) == overshoot(x, k)
    # on a photo with an over-exposed patch the true kernel overshoots less once the pixels
    # next to the clipping are left out
    kernel = psf.from_params("motion", {"length": 9.0, "angle": 0.0}, dtype=torch.float32)
    scene = _photo(96)[None] * 0.8
    scene[..., 40:56, 40:56] = 1.2
    blurred = convolve(scene, kernel, boundary="reflect").clamp(0, 1)
    restored = uniform.hyper_laplacian(blurred, kernel)
    assert overshoot(restored, kernel, blurred) < overshoot(restored, kernel)


def test_noise_floor_raises_only_an_estimated_noise_level() -> None:
    k = psf.gaussian(1.5, dtype=torch.float32)
    y = convolve(_photo(64)[None], k, boundary="reflect")[0]  # noise-free: estimate ~0.001
    floored = deblur_with_details(y, kernel=k, noise_floor=0.005)
    assert float(floored.noise_sigma[0]) == pytest.approx(0.005)
    assert floored.details["noise_floor"] == 0.005
    assert floored.details["reason"].endswith("noise level raised to 0.005")
    torch.testing.assert_close(floored.image, deblur_with_details(y, kernel=k,
                                                                  noise_sigma=0.005).image)
    # a given noise level, or an estimate above the floor, is used as it is
    given = deblur_with_details(y, kernel=k, noise_sigma=0.002, noise_floor=0.005)
    assert float(given.noise_sigma[0]) == pytest.approx(0.002)
    low = deblur_with_details(y, kernel=k, noise_floor=1e-6)
    assert "noise_floor" not in low.details
    torch.testing.assert_close(low.image, deblur_with_details(y, kernel=k).image)


@pytest.mark.parametrize("compressed", [False, True])
def test_trusted_jpeg_verdict_gets_the_looser_checks(
        monkeypatch: pytest.MonkeyPatch, compressed: bool) -> None:
    """On a compressed image, a trusted verdict whose rivals are improbable is checked only for
    heavy ringing (SHAKE_OVERSHOOT) and not for its residual; on a clean image, and when a rival
    family is plausible or the verdict not trusted, the usual checks apply."""
    fits = {"gaussian": {"sigma": 1.5}, "motion": {"length": 9.0, "angle": 30.0},
            "defocus": {"radius": 2.0}}
    sure = _estimate_with_fits("gaussian", fits, {"gaussian": 0.97, "motion": 0.02,
                                                  "defocus": 0.01})
    rival = _estimate_with_fits("gaussian", fits, {"gaussian": 0.9, "motion": 0.02,
                                                   "defocus": 0.08})
    unsure = _estimate_with_fits("gaussian", fits, {"gaussian": 0.97, "motion": 0.02,
                                                    "defocus": 0.01}, confidence=0.4)
    assert pipeline._verdict_beyond_doubt(sure)
    assert not pipeline._verdict_beyond_doubt(rival)
    assert not pipeline._verdict_beyond_doubt(unsure)
    seen: list = []

    def capture(y, candidates, *args):
        seen.append(list(candidates))
        return None  # every kernel rejected: the learned fallback runs

    monkeypatch.setattr(pipeline, "_first_fitting_kernel", capture)
    y = _blurred(psf.from_params("gaussian", {"sigma": 1.5}, dtype=torch.float32), size=64)
    for est in (sure, rival):
        monkeypatch.setattr(pipeline, "_estimate", lambda y, compressed=False, est=est: est)
        pipeline.deblur_with_details(y, compressed=compressed, blind_kernel="parametric")
    (first_sure, *rest_sure), (first_rival, *_) = seen
    loose = compressed
    assert first_sure.overshoot_limit == (pipeline.SHAKE_OVERSHOOT if loose else None)
    assert first_sure.check_residual is not loose
    assert all(c.overshoot_limit is None and c.check_residual for c in rest_sure)
    assert first_rival.overshoot_limit is None and first_rival.check_residual


def test_fallback_reason_without_the_residual() -> None:
    assert pipeline.fallback_reason(None, None, 0.005, 0.01) is None
    assert "rings" in pipeline.fallback_reason(None, None, 0.02, 0.01)
    assert "explain" in pipeline.fallback_reason(None, 5.0, 0.0, 0.01)

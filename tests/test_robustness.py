"""Robustness evaluation on tiny models whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from fastdeblur.convolution import convolve
from fastdeblur.robustness import (
    RobustnessReport,
    area_under_curve,
    batch_psf,
    corruption_error,
    evaluate,
    minimal_blur,
    minimal_blur_distribution,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids the thread-pool overhead, large on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def sharpness(x: torch.Tensor) -> torch.Tensor:
    """Mean squared horizontal + vertical difference per image, ``(B,)``."""
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return dx.pow(2).mean(dim=(1, 2, 3)) + dy.pow(2).mean(dim=(1, 2, 3))


class SharpnessModel(torch.nn.Module):
    """Class 1 ("sharp") when the sharpness exceeds ``threshold``, else class 0."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = sharpness(x)
        return torch.stack([self.threshold - e, e - self.threshold], dim=1)


def noise_images(n: int, seed: int = 0, size: int = 24) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)


def gaussian_sharpness(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Sharpness after a Gaussian blur made independently of the evaluation's batching."""
    if sigma == 0:
        return sharpness(x)
    k = batch_psf.gaussian(torch.tensor([sigma]), dtype=torch.float64)[0]
    return sharpness(convolve(x, k))


def test_area_under_curve_and_corruption_error_arithmetic() -> None:
    assert area_under_curve([0, 1, 2], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert area_under_curve([0, 1, 3], [1.0, 1.0, 0.0]) == pytest.approx(2.0 / 3.0)
    assert area_under_curve([2.0], [0.7]) == pytest.approx(0.7)
    ce, mce = corruption_error({"a": [0.1, 0.2, 0.4], "b": [0.0, 0.3, 0.3]},
                               {"a": [0.0, 0.4, 0.4], "b": [0.0, 0.2, 0.4]},
                               {"a": [0, 1, 2], "b": [0, 1, 2]})
    assert ce["a"] == pytest.approx(0.6 / 0.8)  # the clean entry is left out
    assert ce["b"] == pytest.approx(0.6 / 0.6)
    assert mce == pytest.approx((0.75 + 1.0) / 2)
    ce, mce = corruption_error({"a": [0.1, 0.2]}, {"a": [0.2, 0.2]})
    assert ce["a"] == pytest.approx(0.75) and mce == pytest.approx(0.75)
    ce, mce = corruption_error({"a": [0.5]}, {"a": [0.0]})
    assert ce["a"] is None and mce is None
    with pytest.raises(ValueError, match="reference"):
        corruption_error({"a": [0.1]}, {"b": [0.1]})


def test_evaluate_matches_direct_computation() -> None:
    x = noise_images(10)
    labels = torch.ones(10, dtype=torch.long)
    e0 = sharpness(x)
    # a threshold half-way between two images' sharpness at sigma 0.8 (no ties)
    at = gaussian_sharpness(x, 0.8).sort().values
    model = SharpnessModel(float(at[4] + at[5]) / 2)
    strengths = [0.0, 0.4, 0.8, 1.6]
    batches = [(x[:4], labels[:4]), (x[4:], labels[4:])]
    report = evaluate(model, batches, "gaussian", strengths)
    expected = [float((gaussian_sharpness(x, s) > model.threshold).double().mean())
                for s in strengths]
    assert report.accuracy["gaussian"] == pytest.approx(expected)
    assert expected[0] == 1.0 and expected[-1] == 0.0 and bool((e0 > model.threshold).all())
    assert report.auc["gaussian"] == pytest.approx(area_under_curve(strengths, expected))
    assert report.n_images == 10 and report.ce is None
    # a Dataset gives the same answer as batches
    dataset = torch.utils.data.TensorDataset(x, labels)
    again = evaluate(model, dataset, ["gaussian"], {"gaussian": strengths}, batch_size=3)
    assert again.accuracy == report.accuracy


def test_evaluate_all_types_reference_and_modes() -> None:
    x = noise_images(6, seed=1)
    labels = torch.ones(6, dtype=torch.long)
    model = SharpnessModel(0.05)
    model.train()
    strengths = {"gaussian": [0, 1, 2], "motion": [0, 5, 9], "defocus": [0, 1, 2]}
    reference = SharpnessModel(0.02)
    report = evaluate(model, [(x, labels)], list(strengths), strengths, reference=reference)
    assert model.training  # the mode is restored
    for t in strengths:
        assert report.accuracy[t][0] == 1.0  # noise is sharp
        assert report.accuracy[t] == sorted(report.accuracy[t], reverse=True)
    ref_errors = {t: [1 - a for a in acc]
                  for t, acc in report.extra["reference_accuracy"].items()}
    ce, mce = corruption_error(report.errors, ref_errors, strengths)
    assert report.ce == ce and report.mce == mce
    # a stored report as the reference gives the same CE
    stored = evaluate(reference, [(x, labels)], list(strengths), strengths).to_dict()
    again = evaluate(model, [(x, labels)], list(strengths), strengths, reference=stored)
    assert again.ce == report.ce
    with pytest.raises(ValueError, match="other strengths"):
        evaluate(model, [(x, labels)], "gaussian", [0, 3], reference=stored)
    assert RobustnessReport.from_dict(report.to_dict()).accuracy == report.accuracy


def test_evaluate_deblur_first_gets_true_kernels() -> None:
    x = noise_images(4, seed=2)
    labels = torch.ones(4, dtype=torch.long)
    seen = []

    def perfect_deblur(images: torch.Tensor, kernels: torch.Tensor | None) -> torch.Tensor:
        seen.append(kernels)
        return x.to(images.device)  # recovers the sharp images exactly

    report = evaluate(SharpnessModel(0.05), [(x, labels)], "defocus", [0, 2, 4],
                      deblur_first=perfect_deblur)
    assert report.accuracy["defocus"] == [1.0, 1.0, 1.0]
    assert report.deblur_first and report.deblur_kernel == "custom"
    assert [k.shape for k in seen] == [(4, 1, 1), (4, 5, 5), (4, 9, 9)]
    torch.testing.assert_close(seen[2][0].double(),
                               batch_psf.defocus(torch.tensor([4.0]), dtype=torch.float64)[0],
                               check_dtype=False)


def test_deblur_first_options() -> None:
    x = noise_images(2)
    labels = torch.ones(2, dtype=torch.long)
    with pytest.raises(ValueError, match="deblur_kernel"):
        evaluate(SharpnessModel(0.05), [(x, labels)], "gaussian", [0, 1], deblur_first=True,
                 deblur_kernel="estimated")
    try:
        from fastdeblur import deblur  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"fastdeblur\.deblur"):
            evaluate(SharpnessModel(0.05), [(x, labels)], "gaussian", [0, 1],
                     deblur_first=True)


def test_evaluate_bad_inputs() -> None:
    model = SharpnessModel(0.05)
    x = noise_images(2)
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, [], "gaussian", [0, 1])
    with pytest.raises(ValueError, match="blur type"):
        evaluate(model, [(x, torch.ones(2))], "fog", [0, 1])
    with pytest.raises(ValueError, match="strengths"):
        evaluate(model, [(x, torch.ones(2))], "gaussian", [-1.0])
    with pytest.raises(ValueError, match="labels"):
        evaluate(model, [(x, torch.ones(3))], "gaussian", [0.0])
    with pytest.raises(RuntimeError, match="model failed"):
        evaluate(torch.nn.Linear(3, 2), [(x, torch.ones(2))], "gaussian", [0.0])


def threshold_sigma(image: torch.Tensor, threshold: float) -> float:
    """The sigma at which the image's sharpness crosses ``threshold`` (fine bisection)."""
    lo, hi = 0.0, 8.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if float(gaussian_sharpness(image[None], mid)[0]) > threshold:
            lo = mid
        else:
            hi = mid
    return hi


def test_minimal_blur_finds_the_threshold_within_tolerance() -> None:
    x = noise_images(3, seed=4)
    model = SharpnessModel(0.02)
    for i in range(3):
        true = threshold_sigma(x[i], model.threshold)
        for tol in (0.1, 0.01):
            found = minimal_blur(model, x[i], 1, "gaussian", max_strength=4.0, tol=tol)
            assert true <= found + 1e-9 <= true + tol + 1e-9
    # label given and already wrong: 0; a change never reached: inf
    assert minimal_blur(model, x[0], 0, "gaussian", max_strength=4.0) == 0.0
    assert minimal_blur(SharpnessModel(1e-9), x[0], None, "gaussian", max_strength=2.0) \
        == math.inf
    with pytest.raises(ValueError, match="tol"):
        minimal_blur(model, x[0], 1, "gaussian", tol=0.0)
    with pytest.raises(ValueError, match="image"):
        minimal_blur(model, x, 1, "gaussian")


def test_minimal_blur_distribution() -> None:
    x = noise_images(6, seed=5)
    x[5] = 0.5  # a flat image: "blurry" (class 0) from the start
    labels = torch.ones(6, dtype=torch.long)
    model = SharpnessModel(0.02)
    dist = minimal_blur_distribution(model, [(x[:3], labels[:3]), (x[3:], labels[3:])],
                                     "gaussian", max_strength=4.0, tol=0.02, bins=4)
    truth = [threshold_sigma(x[i], model.threshold) for i in range(5)] + [0.0]
    assert dist["n"] == 6 and dist["never_changed"] == 0.0
    for got, want in zip(dist["values"], truth, strict=True):
        assert want <= got + 1e-9 <= want + 0.02 + 1e-9
    values = sorted(dist["values"])
    assert dist["median"] == values[2] and dist["q1"] == values[1] and dist["q3"] == values[4]
    assert sum(dist["histogram"]["counts"]) == 6
    assert dist["histogram"]["edges"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    # against the clean prediction instead of the label, the flat image never changes
    dist = minimal_blur_distribution(model, [(x, labels)], "gaussian", max_strength=4.0,
                                     tol=0.05, use_labels=False)
    assert dist["values"][5] == math.inf and dist["never_changed"] == pytest.approx(1 / 6)


@pytest.mark.cuda
def test_evaluate_on_cuda_matches_cpu() -> None:
    x = noise_images(6, seed=3).float()
    labels = torch.ones(6, dtype=torch.long)
    model = SharpnessModel(0.03)
    strengths = {"gaussian": [0, 1, 2], "motion": [0, 5, 9]}
    cpu = evaluate(model, [(x, labels)], list(strengths), strengths)
    gpu = evaluate(model, [(x, labels)], list(strengths), strengths, device="cuda")
    assert gpu.accuracy == cpu.accuracy
    found = minimal_blur(model, x[0], 1, "gaussian", max_strength=4.0, device="cuda")
    assert found == pytest.approx(minimal_blur(model, x[0], 1, "gaussian", max_strength=4.0),
                                  abs=0.05)


def test_evaluate_camera_shake() -> None:
    pytest.importorskip("fastdeblur.psf")
    x = noise_images(4, seed=6)
    labels = torch.ones(4, dtype=torch.long)
    report = evaluate(SharpnessModel(0.05), [(x, labels)], "camera_shake", [0, 9, 21])
    acc = report.accuracy["camera_shake"]
    assert acc[0] == 1.0 and acc == sorted(acc, reverse=True) and acc[-1] < 1.0

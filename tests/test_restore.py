"""Non-blind deconvolution: Wiener, Richardson–Lucy, hyper-Laplacian, noise estimation,
the shrinkage solver, spatially-varying solvers and ``fastdeblur.deblur``."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from fastdeblur.convolution import add_noise, convolve
from fastdeblur.restore import estimate_noise, hyper_laplacian, richardson_lucy, wiener
from fastdeblur.restore.pipeline import deblur, deblur_with_details
from fastdeblur.restore.shrink import objective, shrink, shrink_lut
from fastdeblur.restore.varying import conjugate_gradient


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a.clamp(0, 1) - b).square().mean()))


def sharp_image(channels: int = 1, size: int = 64) -> torch.Tensor:
    """Piecewise-smooth test image with edges, (1, C, size, size) in [0.1, 0.9]."""
    from skimage import data, transform

    photo = data.astronaut() if channels == 3 else data.camera()
    photo = transform.resize(photo, (size, size) + photo.shape[2:], anti_aliasing=True)
    t = torch.from_numpy(np.ascontiguousarray(photo)).float()
    t = t.permute(2, 0, 1) if channels == 3 else t[None]
    return (0.1 + 0.8 * t)[None]


def motion_kernel() -> torch.Tensor:
    k = torch.zeros(9, 9)
    for i in range(9):
        k[i, 8 - i] = 1.0  # a diagonal streak
    k[4, 3:6] += 0.5
    return k / k.sum()


@pytest.fixture(scope="module")
def problem() -> dict:
    x = sharp_image(1)
    k = motion_kernel()
    y = add_noise(convolve(x, k), 0.005, seed=1)
    return {"x": x, "k": k, "y": y}


@pytest.mark.parametrize(
    "method",
    [
        lambda y, k: wiener(y, k),
        lambda y, k: richardson_lucy(y, k, iterations=10),
        lambda y, k: richardson_lucy(y, k, iterations=30, damping=1.0, tv=0.002),
        lambda y, k: hyper_laplacian(y, k),
        lambda y, k: hyper_laplacian(y, k, alpha=0.5),
    ],
    ids=["wiener", "rl", "rl_damped_tv", "hl_2/3", "hl_1/2"],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_methods_improve_psnr(method, channels: int, problem: dict) -> None:
    x = sharp_image(channels)
    y = add_noise(convolve(x, problem["k"]), 0.005, seed=1)
    restored = method(y, problem["k"])
    assert restored.shape == y.shape
    assert psnr(restored, x) > psnr(y, x) + 1.0


def test_circular_boundary_is_exact_for_wrapped_blur() -> None:
    x = sharp_image(1)
    k = motion_kernel()
    y = convolve(x, k, boundary="circular")
    assert psnr(hyper_laplacian(y, k, boundary="circular"), x) > psnr(
        hyper_laplacian(y, k, boundary="taper"), x)
    assert psnr(wiener(y, k, boundary="circular", noise_sigma=1e-3), x) > 30


def test_wiener_has_no_border_ringing(problem: dict) -> None:
    x, y, k = problem["x"], problem["y"], problem["k"]
    err = (wiener(y, k) - x).abs()[0, 0]
    band = 6
    border = torch.cat([err[:band].flatten(), err[-band:].flatten(),
                        err[band:-band, :band].flatten(), err[band:-band, -band:].flatten()])
    interior = err[band:-band, band:-band]
    assert border.square().mean().sqrt() < 1.5 * interior.square().mean().sqrt()


def test_richardson_lucy_keeps_non_negativity() -> None:
    x = sharp_image(1)
    x[..., 20:40, 20:40] = 0.0  # a black square next to bright pixels
    y = add_noise(convolve(x, motion_kernel()), 0.02, seed=3)  # noise makes y < 0 in places
    assert bool((y < 0).any())
    for kwargs in ({}, {"damping": 1.0}, {"tv": 0.002}, {"accelerate": False}):
        out = richardson_lucy(y, motion_kernel(), iterations=15, **kwargs)
        assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0.0


@pytest.mark.parametrize("alpha", [0.5, 2.0 / 3.0, 0.8])
@pytest.mark.parametrize("beta", [1.0, 22.6, 256.0, 3000.0])
def test_shrink_matches_brute_force(alpha: float, beta: float) -> None:
    v = torch.linspace(-1.2, 1.2, 241, dtype=torch.float64)
    w = shrink(v, beta, alpha)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)[:, None] * v[None, :]
    best = objective(grid, v[None, :], beta, alpha).min(dim=0).values
    # never worse than the brute-force minimum, and at most a grid step off in objective
    assert float((objective(w, v, beta, alpha) - best).max()) <= 1e-12
    assert bool((w.abs() <= v.abs()).all()) and bool((w * v >= 0).all())
    # float32 agrees with float64
    w32 = shrink(v.float(), beta, alpha).double()
    gap = objective(w32, v, beta, alpha) - objective(w, v, beta, alpha)
    assert float(gap.max()) < 1e-5


@pytest.mark.parametrize("alpha", [0.5, 2.0 / 3.0])
def test_shrink_lut_matches_exact(alpha: float) -> None:
    inside = torch.cat([torch.randn(5000, dtype=torch.float64) * 0.3, torch.zeros(1)])
    outside = torch.tensor([-3.0, 2.5], dtype=torch.float64)  # beyond the table: slope 1
    for v, tol in ((inside.clamp(-2, 2), 1e-4), (outside, 1e-2)):
        for beta in (2.8, 64.0):
            exact = shrink(v, beta, alpha)
            lut = shrink_lut(v, beta, alpha)
            gap = objective(lut, v, beta, alpha) - objective(exact, v, beta, alpha)
            assert float(gap.max()) < tol, (beta, float(gap.max()))


def test_shrink_special_cases_and_errors() -> None:
    v = torch.tensor([-1.0, -0.1, 0.0, 0.2, 2.0])
    torch.testing.assert_close(shrink(v, 4.0, 1.0), v.sign() * (v.abs() - 0.25).clamp_min(0))
    torch.testing.assert_close(shrink(v, 4.0, 2.0), v * 4 / 6)
    with pytest.raises(ValueError, match="alpha"):
        shrink(v, 1.0, 1.5)
    with pytest.raises(ValueError, match="beta"):
        shrink(v, 0.0, 0.5)


@pytest.mark.parametrize("method", ["mad", "immerkaer"])
@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.08])
def test_noise_estimate_within_20_percent(method: str, sigma: float) -> None:
    x = convolve(sharp_image(3, 128), torch.ones(5, 5) / 25)  # as smooth as a blurred photo
    noisy = add_noise(x, sigma, seed=5)
    est = float(estimate_noise(noisy, method=method)[0])
    assert abs(est - sigma) <= 0.2 * sigma, est
    assert estimate_noise(noisy[0]).ndim == 0


def test_noise_estimate_errors() -> None:
    with pytest.raises(ValueError, match="image"):
        estimate_noise(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="method"):
        estimate_noise(torch.zeros(1, 8, 8), method="nope")  # type: ignore[arg-type]


def test_bad_arguments_name_what_is_wrong(problem: dict) -> None:
    y, k = problem["y"], problem["k"]
    with pytest.raises(ValueError, match="psf"):
        wiener(y, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="psf"):
        hyper_laplacian(y, torch.ones(2, 2, 3, 3))
    with pytest.raises(ValueError, match="image"):
        wiener(torch.zeros(8, 8), k)
    with pytest.raises(ValueError, match="alpha"):
        hyper_laplacian(y, k, alpha=1.5)
    with pytest.raises(ValueError, match="boundary"):
        wiener(y, k, boundary="mirror")
    with pytest.raises(ValueError, match="noise_sigma"):
        wiener(y, k, noise_sigma=-1.0)


def test_batch_and_empty(problem: dict) -> None:
    y, k = problem["y"], problem["k"]
    batch = torch.cat([y, y.flip(-1)])
    out = hyper_laplacian(batch, torch.stack([k, k.flip(-1)]))
    torch.testing.assert_close(out[0], hyper_laplacian(y, k)[0], rtol=1e-4, atol=1e-4)
    assert wiener(y[:0], k).shape == (0, 1, 64, 64)


# ---- fastdeblur.deblur -------------------------------------------------------------------


def test_deblur_numpy_uint8_in_uint8_out(problem: dict) -> None:
    x = sharp_image(3)
    y = convolve(x, problem["k"])[0].permute(1, 2, 0).numpy()
    y8 = np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)
    out = deblur(y8, kernel=problem["k"].numpy())
    assert out.dtype == np.uint8 and out.shape == y8.shape
    ref = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.float64)
    assert np.abs(out - ref).mean() < np.abs(y8 - ref).mean()
    gray = deblur(y8[..., 0], kernel=problem["k"], method="wiener")
    assert gray.dtype == np.uint8 and gray.shape == y8.shape[:2]


@pytest.mark.parametrize("method", ["auto", "wiener", "rl", "hyperlaplacian"])
def test_deblur_tensor_methods(method: str, problem: dict) -> None:
    out = deblur(problem["y"][0], method=method, kernel=problem["k"], device="cpu")
    assert out.shape == problem["y"][0].shape and out.dtype == problem["y"].dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert psnr(out[None], problem["x"]) > psnr(problem["y"], problem["x"])


def test_deblur_tiled_runs_tiles(problem: dict) -> None:
    y, k = problem["y"], problem["k"]
    calls = []
    out = deblur_with_details(y[0], method="wiener", kernel=k, tile=40, overlap=20,
                              progress=lambda done, total: calls.append((done, total)))
    assert out.image.shape == y[0].shape
    assert calls[-1][0] == calls[-1][1] == len(calls) > 1


def test_deblur_errors(problem: dict) -> None:
    y, k = problem["y"][0], problem["k"]
    with pytest.raises(ValueError, match="method"):
        deblur(y, method="magic", kernel=k)
    with pytest.raises(ValueError, match="kernel"):
        deblur(y, kernel=torch.ones(3, 3, 3))
    with pytest.raises(ValueError, match="positive sum"):
        deblur(y, kernel=-torch.ones(3, 3))
    from fastdeblur.restore.pipeline import estimation_available

    if not estimation_available():
        with pytest.raises(RuntimeError, match="kernel"):
            deblur(y)


# ---- spatially varying -------------------------------------------------------------------


def test_conjugate_gradient_solves_spd_system() -> None:
    torch.manual_seed(0)
    m = torch.randn(12, 12, dtype=torch.float64)
    spd = m @ m.T + 12 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(2, 1, 3, 4, dtype=torch.float64)

    def apply(v: torch.Tensor) -> torch.Tensor:
        return (v.reshape(2, 12) @ spd).reshape(v.shape)

    x = conjugate_gradient(apply, b, torch.zeros_like(b), 40, tol=1e-12)
    torch.testing.assert_close(apply(x), b, rtol=1e-8, atol=1e-8)


def _field() -> torch.Tensor:
    k1 = motion_kernel()
    k2 = k1.flip(-1)
    return torch.stack([torch.stack([k1, k2]), torch.stack([k2, k1])])  # (2, 2, 7, 7)


needs_pc_conv = pytest.mark.skipif(importlib.util.find_spec("fastdeblur.ops.pc_conv") is None,
                                   reason="needs fastdeblur.ops.pc_conv")


@needs_pc_conv
@pytest.mark.parametrize("solver", ["wiener", "rl", "hyperlaplacian"])
def test_spatially_varying_solvers_improve_psnr(solver: str) -> None:
    from fastdeblur.ops.pc_conv import pc_conv
    from fastdeblur.restore import varying

    x = sharp_image(1, 40)
    grid = _field()
    y = add_noise(pc_conv(x, grid, "reflect"), 0.005, seed=2)
    out = {
        "wiener": lambda: varying.wiener_sv(y, grid, iterations=20),
        "rl": lambda: varying.richardson_lucy_sv(y, grid, iterations=15),
        "hyperlaplacian": lambda: varying.hyper_laplacian_sv(y, grid, cg_iterations=3),
    }[solver]()
    assert out.shape == y.shape
    assert psnr(out, x) > psnr(y, x) + 1.5


@needs_pc_conv
@pytest.mark.slow
def test_deblur_with_a_kernel_grid() -> None:
    from fastdeblur.ops.pc_conv import pc_conv

    x = sharp_image(1, 40)
    y = add_noise(pc_conv(x, _field(), "reflect"), 0.005, seed=2)
    out = deblur(y[0], kernel=_field())
    assert out.shape == y[0].shape and psnr(out[None], x) > psnr(y, x) + 1.5


def test_module_constants_are_sane() -> None:
    from fastdeblur.restore import uniform

    assert uniform.MIN_NOISE_SIGMA > 0 and uniform.HL_BETA_RATE > 1
    assert math.isclose(uniform.HL_BETA_RATE, 2 * math.sqrt(2))


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["wiener", "rl", "hyperlaplacian"])
def test_cuda_matches_cpu(method: str, problem: dict) -> None:
    y, k = problem["y"][0], problem["k"]
    cpu = deblur(y, method=method, kernel=k, device="cpu")
    gpu = deblur(y.cuda(), method=method, kernel=k, device="cuda")
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=2e-3)

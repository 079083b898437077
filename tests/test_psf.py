"""PSF models: normalisation, symmetry, centring, conventions, gradients, peers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from fastdeblur import psf

F64 = torch.float64


def moments(kernel: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Centroid offset from the centre (x right, y up), principal-axis angle in degrees
    (counter-clockwise as displayed, in [0, 180)), and spreads sqrt(12 var) along/across it.
    The centre of an even-sized kernel is taken between the two middle pixels."""
    k = kernel.detach().double().cpu().numpy() if isinstance(kernel, torch.Tensor) else \
        np.asarray(kernel, dtype=np.float64)
    h, w = k.shape
    rows, cols = np.mgrid[:h, :w]
    x = cols - (w - 1) / 2
    y = (h - 1) / 2 - rows
    cx, cy = (k * x).sum(), (k * y).sum()
    x, y = x - cx, y - cy
    cov = np.array([[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]])
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0])) % 180.0
    return {"cx": cx, "cy": cy, "angle": angle, "along": math.sqrt(12 * values[1]),
            "across": math.sqrt(12 * max(values[0], 0.0)), "var": float(np.trace(cov))}


def angle_diff(a: float, b: float) -> float:
    """Difference of two axis angles (mod 180) in (-90, 90]."""
    return (a - b + 90.0) % 180.0 - 90.0


SAMPLES = [
    ("gaussian", {"sigma": 0.7}),
    ("gaussian", {"sigma": 2.5}),
    ("gaussian", {"sigma": 3.0, "sigma_y": 1.0, "theta": 33.0}),
    ("motion", {"length": 1.0, "angle": 0.0}),
    ("motion", {"length": 9.0, "angle": 30.0}),
    ("motion", {"length": 12.7, "angle": 101.3}),
    ("defocus", {"radius": 0.6}),
    ("defocus", {"radius": 4.0}),
    ("defocus", {"radius": 6.3}),
]


# ---- common properties ------------------------------------------------------------------------

@pytest.mark.parametrize(("blur_type", "params"), SAMPLES)
def test_sum_one_odd_centred_float32(blur_type: str, params: dict) -> None:
    k = psf.from_params(blur_type, params)
    assert k.dtype == torch.float32 and k.dim() == 2
    assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    assert abs(k.sum().item() - 1.0) < 1e-6
    assert (k >= 0).all()
    m = moments(k)
    assert abs(m["cx"]) < 1e-4 and abs(m["cy"]) < 1e-4


@pytest.mark.parametrize(("blur_type", "params"), SAMPLES)
def test_float64_on_request_matches_float32(blur_type: str, params: dict) -> None:
    k64 = psf.from_params(blur_type, params, dtype=F64)
    k32 = psf.from_params(blur_type, params)
    assert k64.dtype == F64
    assert abs(k64.sum().item() - 1.0) < 1e-12
    torch.testing.assert_close(k32, k64.float(), rtol=1e-4, atol=1e-6)


def test_half_precision_output_and_device() -> None:
    k = psf.gaussian(1.5, dtype=torch.float16, device="cpu")
    assert k.dtype == torch.float16 and k.device.type == "cpu"
    assert abs(k.float().sum().item() - 1.0) < 1e-2


@pytest.mark.parametrize(("blur_type", "params"), SAMPLES)
def test_explicit_size(blur_type: str, params: dict) -> None:
    k = psf.from_params(blur_type, params, size=(7, 11))
    assert k.shape == (7, 11)
    assert abs(k.sum().item() - 1.0) < 1e-6
    if blur_type == "gaussian":
        return  # its default size truncates the tails (as fspecial usage does)
    big = psf.from_params(blur_type, params, size=41, dtype=F64)
    default = psf.from_params(blur_type, params, dtype=F64)
    # the default size holds the whole kernel: a larger one only adds zeros
    ph, pw = (41 - default.shape[0]) // 2, (41 - default.shape[1]) // 2
    assert big.sum().item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(big[ph:41 - ph, pw:41 - pw], default, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [0, 4, -3, 2.0, (3, 4), (3,), "5", True])
def test_bad_size(size: object) -> None:
    with pytest.raises(ValueError, match="size"):
        psf.motion(5, 0, size=size)


@pytest.mark.parametrize(("fn", "args", "name"), [
    (psf.gaussian, (-1.0,), "sigma"),
    (psf.gaussian, (1.0, -0.5), "sigma_y"),
    (psf.gaussian, (float("nan"),), "sigma"),
    (psf.gaussian, (1.0, None, float("inf")), "theta"),
    (psf.motion, (-2.0, 0.0), "length"),
    (psf.motion, (5.0, float("nan")), "angle"),
    (psf.motion, (torch.ones(2), 0.0), "length"),
    (psf.motion, ("5", 0.0), "length"),
    (psf.defocus, (-0.1,), "radius"),
])
def test_bad_parameters_name_the_argument(fn, args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fn(*args)


def test_bad_dtype() -> None:
    with pytest.raises(ValueError, match="dtype"):
        psf.defocus(2.0, dtype=torch.int32)


def test_zero_parameters_give_an_impulse() -> None:
    for k in (psf.gaussian(0.0), psf.motion(0.0, 30.0), psf.defocus(0.0)):
        assert k.shape == (1, 1) and k.item() == 1.0
    k = psf.gaussian(0.0, size=5)
    assert k[2, 2] == 1.0 and k.sum() == 1.0


# ---- Gaussian -----------------------------------------------------------------------------------

def test_gaussian_isotropic_symmetry_and_sigma() -> None:
    for sigma in (0.8, 1.5, 3.0):
        k = psf.gaussian(sigma, dtype=F64)
        assert k.shape == (2 * math.ceil(3 * sigma) + 1,) * 2
        torch.testing.assert_close(k, k.flip(0), rtol=0, atol=1e-15)
        torch.testing.assert_close(k, k.flip(1), rtol=0, atol=1e-15)
        torch.testing.assert_close(k, k.T, rtol=0, atol=1e-15)
        # the variance of a sampled Gaussian with a +-3 sigma window is just under sigma^2
        var = moments(psf.gaussian(sigma, size=61, dtype=F64))["var"] / 2
        assert abs(math.sqrt(var) - sigma) < 1e-3


@pytest.mark.parametrize("theta", [0.0, 20.0, 45.0, 90.0, 135.0, 160.0])
def test_gaussian_anisotropic_principal_axis(theta: float) -> None:
    k = psf.gaussian(3.0, 1.0, theta, dtype=F64)
    m = moments(k)
    assert abs(angle_diff(m["angle"], theta)) < 0.5
    assert m["along"] > 2.5 * m["across"]
    torch.testing.assert_close(k, k.flip(0, 1), rtol=0, atol=1e-15)


def test_gaussian_theta_45_runs_bottom_left_to_top_right() -> None:
    k = psf.gaussian(4.0, 0.5, 45.0)
    n = k.shape[0]
    assert k[1, n - 2] > 100 * k[1, 1]  # top-right bright, top-left dark


def test_gaussian_line_limit() -> None:
    # a zero sigma across: all mass on the middle row, still finite
    k = psf.gaussian(2.0, 0.0, 0.0, dtype=F64)
    assert torch.isfinite(k).all()
    assert abs(k[k.shape[0] // 2].sum().item() - 1.0) < 1e-12


# ---- motion -------------------------------------------------------------------------------------

def _motion_cases() -> list[tuple[float, float]]:
    rng = random.Random(1233)
    lengths = [float(n) for n in range(1, 32)] + [1.3, 2.5, 4.75, 7.31, 10.5, 17.9, 30.2]
    angles = [7.5 * i for i in range(25)] + [rng.uniform(0, 360) for _ in range(6)]
    return [(ln, an) for ln in lengths for an in angles]


def test_motion_centroid_at_centre_for_every_length_and_angle() -> None:
    worst = 0.0
    for length, angle in _motion_cases():
        k = psf.motion(length, angle)
        m = moments(k)
        assert k.shape[0] % 2 == 1 and k.shape == (k.shape[0], k.shape[0])
        assert abs(k.sum().item() - 1.0) < 1e-5, (length, angle)
        worst = max(worst, abs(m["cx"]), abs(m["cy"]))
    assert worst < 0.05
    assert worst < 1e-4  # exact by construction, up to float32 rounding


def test_motion_batch_equals_motion_padded_to_one_grid() -> None:
    rng = random.Random(3)
    cases = _motion_cases() + [(rng.uniform(0, 34), rng.uniform(-10, 190)) for _ in range(60)]
    cases += [(0.0, 30.0), (10.0, 90.0), (9.0, 0.0), (6.0, 45.0), (34.0, 180.0)]
    lengths, angles = [c[0] for c in cases], [c[1] for c in cases]
    batch = psf.motion_batch(lengths, angles)
    S = batch.shape[-1]
    assert batch.shape == (len(cases), S, S) and psf.motion(max(lengths), 0.0).shape[0] == S
    for k, (length, angle) in enumerate(cases):
        one = psf.motion(length, angle)
        o = (S - one.shape[0]) // 2
        padded = torch.zeros(S, S)
        padded[o : o + one.shape[0], o : o + one.shape[1]] = one
        torch.testing.assert_close(batch[k], padded, rtol=0, atol=3e-7, msg=str((length, angle)))
    assert psf.motion_batch([7.0], [10.0], dtype=F64).dtype == F64
    with pytest.raises(ValueError, match="one length"):
        psf.motion_batch([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match=">= 0"):
        psf.motion_batch([-1.0], [0.0])


@pytest.mark.parametrize(("length", "angle"), [(9.0, 0.0), (7.3, 23.0), (15.0, 45.0),
                                               (4.5, 117.0), (20.2, 171.0)])
def test_motion_point_symmetric(length: float, angle: float) -> None:
    k = psf.motion(length, angle, dtype=F64)
    torch.testing.assert_close(k, k.flip(0, 1), rtol=0, atol=1e-14)


def test_motion_spread_and_axis() -> None:
    for length in (3.0, 6.5, 11.0, 24.0):
        for angle in (0.0, 15.0, 45.0, 80.0, 120.0, 161.0):
            m = moments(psf.motion(length, angle, dtype=F64))
            # a uniform segment of length L has sqrt(12 var) = L; the tent footprint adds ~2
            assert abs(m["along"] - math.sqrt(length**2 + 2)) < 0.05, (length, angle)
            assert abs(angle_diff(m["angle"], angle)) < (2.0 if length < 5 else 0.2)


def test_motion_angle_convention() -> None:
    # 45 degrees: bottom-left to top-right as displayed (row 0 at the top)
    k = psf.motion(9.0, 45.0)
    n = k.shape[0]
    c = n // 2
    assert k[c - 3, c + 3] > 0.05 and k[c + 3, c - 3] > 0.05  # top-right, bottom-left
    assert k[c - 3, c - 3] == 0 and k[c + 3, c + 3] == 0
    # 90 degrees: vertical
    v = psf.motion(9.0, 90.0)
    assert v[:, n // 2].sum() > 0.999
    # angles are periodic with 180 degrees (the segment is symmetric)
    torch.testing.assert_close(psf.motion(7.0, 30.0), psf.motion(7.0, 210.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(psf.motion(7.0, -30.0), psf.motion(7.0, 150.0), rtol=0, atol=1e-6)


def test_motion_horizontal_integer_length_is_fspecial_plus_soft_ends() -> None:
    row = psf.motion(9.0, 0.0, dtype=F64)[5]
    inner = torch.full((7,), 1 / 9, dtype=F64)
    torch.testing.assert_close(row[2:9], inner, rtol=0, atol=1e-14)
    torch.testing.assert_close(row[[0, 1]], torch.tensor([1 / 72, 7 / 72], dtype=F64),
                               rtol=0, atol=1e-14)


def test_motion_extent_grows_with_length() -> None:
    spreads = [moments(psf.motion(n / 2, 37.0, dtype=F64))["along"] for n in range(2, 40)]
    assert all(b > a for a, b in zip(spreads, spreads[1:], strict=False))


def test_motion_small_size_truncates_and_renormalises() -> None:
    k = psf.motion(15.0, 0.0, size=5)
    assert k.shape == (5, 5) and abs(k.sum().item() - 1) < 1e-6
    torch.testing.assert_close(k[2], torch.full((5,), 0.2), rtol=0, atol=1e-6)


# ---- defocus ------------------------------------------------------------------------------------

@pytest.mark.parametrize("radius", [0.4, 1.0, 2.5, 3.7, 8.0, 11.3])
def test_defocus_symmetry_and_area(radius: float) -> None:
    k = psf.defocus(radius, dtype=F64)
    assert k.shape == (2 * math.ceil(radius) + 1,) * 2
    for other in (k.flip(0), k.flip(1), k.T):
        torch.testing.assert_close(k, other, rtol=0, atol=1e-14)
    # pixels fully inside the disk all hold 1 / (pi r^2)
    if radius >= 2:
        assert abs(k[k.shape[0] // 2, k.shape[1] // 2].item() - 1 / (math.pi * radius**2)) < 1e-12
    # E[rho^2] of a uniform disk is r^2 / 2; the pixel footprint adds 2 / 12
    if radius >= 2.5:
        var = moments(k)["var"]
        assert abs(math.sqrt(2 * (var - 1 / 6)) - radius) < 0.02 * radius


def test_defocus_extent_grows_with_radius() -> None:
    spreads = [moments(psf.defocus(r / 3, size=25, dtype=F64))["var"] for r in range(1, 30)]
    assert all(b > a for a, b in zip(spreads, spreads[1:], strict=False))


# ---- gradients ----------------------------------------------------------------------------------

def _leaf(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64, requires_grad=True)


def test_gradcheck_gaussian() -> None:
    def fn(s: torch.Tensor, sy: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        return psf.gaussian(s, sy, th, size=7, dtype=F64)
    assert torch.autograd.gradcheck(fn, (_leaf(1.3), _leaf(0.7), _leaf(20.0)))
    assert torch.autograd.gradcheck(lambda s: psf.gaussian(s, dtype=F64), (_leaf(0.9),))


@pytest.mark.parametrize(("length", "angle"), [(7.3, 23.0), (4.0, 3.0), (10.6, 93.0),
                                               (2.2, 151.0), (1.0, 60.0)])
def test_gradcheck_motion(length: float, angle: float) -> None:
    def fn(ln: torch.Tensor, an: torch.Tensor) -> torch.Tensor:
        return psf.motion(ln, an, size=13, dtype=F64)
    assert torch.autograd.gradcheck(fn, (_leaf(length), _leaf(angle)))


@pytest.mark.parametrize("angle", [0.0, 90.0])
def test_gradcheck_motion_length_along_the_grid(angle: float) -> None:
    # along a pixel row/column the kernel is smooth in the length (it has a kink in the angle)
    assert torch.autograd.gradcheck(lambda ln: psf.motion(ln, angle, size=13, dtype=F64),
                                    (_leaf(6.4),))
    an = _leaf(angle)
    psf.motion(5.0, an).sum().backward()
    assert torch.isfinite(an.grad)


@pytest.mark.parametrize("radius", [0.7, 2.7, 3.2])
def test_gradcheck_defocus(radius: float) -> None:
    assert torch.autograd.gradcheck(lambda r: psf.defocus(r, size=9, dtype=F64),
                                    (_leaf(radius),))


@pytest.mark.parametrize(("blur_type", "name", "value"), [
    ("gaussian", "sigma", 1.7), ("motion", "length", 9.0), ("motion", "angle", 45.0),
    ("defocus", "radius", 2.5), ("defocus", "radius", 3.0),
])
def test_gradient_flows_in_float32(blur_type: str, name: str, value: float) -> None:
    defaults = {"gaussian": {"sigma": 1.0}, "motion": {"length": 9.0, "angle": 30.0},
                "defocus": {"radius": 2.0}}[blur_type]
    param = torch.tensor(value, requires_grad=True)
    params = {**defaults, name: param}
    k = psf.from_params(blur_type, params)
    target = torch.rand_like(k)
    (k * target).sum().backward()
    assert param.grad is not None and torch.isfinite(param.grad)
    assert param.grad.abs() > 0


def test_size_follows_the_detached_parameter() -> None:
    length = torch.tensor(11.0, requires_grad=True)
    assert psf.motion(length, 0.0).shape == psf.motion(11.0, 0.0).shape == (13, 13)


# ---- camera shake -------------------------------------------------------------------------------

def test_camera_shake_reproducible_and_varied() -> None:
    a = psf.camera_shake(31, seed=7)
    b = psf.camera_shake(31, seed=7)
    c = psf.camera_shake(31, seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(psf.camera_shake(21, generator=g1), psf.camera_shake(21, generator=g2))


@pytest.mark.parametrize("seed", range(6))
def test_camera_shake_centred_normalised_inside(seed: int) -> None:
    size = 25
    k = psf.camera_shake(size, seed=seed, anxiety=0.1 if seed % 2 else None,
                         max_length=30.0 if seed == 4 else None)
    assert k.shape == (size, size) and k.dtype == torch.float32
    assert abs(k.sum().item() - 1) < 1e-5 and (k >= 0).all()
    m = moments(k)
    assert abs(m["cx"]) < 1e-3 and abs(m["cy"]) < 1e-3
    assert k[0].sum() == 0 and k[-1].sum() == 0 and k[:, 0].sum() == 0 and k[:, -1].sum() == 0
    long_path = psf.camera_shake(size, seed=seed, max_length=20.0, anxiety=0.2)
    assert moments(long_path)["along"] > 3.0  # a blur, not an impulse


def test_camera_shake_dtype_and_errors() -> None:
    assert psf.camera_shake(15, seed=0, dtype=F64).dtype == F64
    with pytest.raises(ValueError, match="size"):
        psf.camera_shake(16)
    with pytest.raises(ValueError, match="seed or generator"):
        psf.camera_shake(15, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="max_length"):
        psf.camera_shake(15, seed=1, max_length=-1.0)
    with pytest.raises(ValueError, match="num_steps"):
        psf.camera_shake(15, seed=1, num_steps=1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="speed_variation"):
            psf.camera_shake(15, seed=1, speed_variation=bad)


def _mass_variation(k: torch.Tensor) -> float:
    """Coefficient of variation of a kernel's values over its support (> 5 % of the peak)."""
    support = k[k > 0.05 * k.max()].double()
    return float(support.std() / support.mean())


@pytest.mark.parametrize("seed", range(4))
def test_camera_shake_speed_variation_dwell_points(seed: int) -> None:
    """A varying speed keeps the path, the sum and the centroid, and concentrates the mass."""
    size = 31
    k = psf.camera_shake(size, seed=seed, speed_variation=1.5, dtype=F64)
    assert abs(k.sum().item() - 1) < 1e-12 and (k >= 0).all()
    m = moments(k)
    assert abs(m["cx"]) < 1e-6 and abs(m["cy"]) < 1e-6
    assert torch.equal(k, psf.camera_shake(size, seed=seed, speed_variation=1.5, dtype=F64))
    # speed 0 draws nothing more: the kernel of the default is unchanged
    assert torch.equal(psf.camera_shake(size, seed=seed, speed_variation=0.0),
                       psf.camera_shake(size, seed=seed))


def test_camera_shake_speed_variation_raises_mass_variation() -> None:
    """Constant speed spreads the mass evenly; a varying speed gives recorded shake's
    uneven mass (coefficient of variation 0.59-1.09 for the 8 Levin et al. kernels)."""
    def median_variation(variation: float) -> float:
        g = torch.Generator().manual_seed(0)
        return float(np.median([_mass_variation(psf.camera_shake(
            31, generator=g, speed_variation=variation)) for _ in range(40)]))

    constant, varying = median_variation(0.0), median_variation(1.5)
    assert constant < 0.75 < varying


# ---- from_array / from_params / render ----------------------------------------------------------

def test_from_array_normalises_and_keeps_dtype() -> None:
    k = psf.from_array(np.ones((3, 5)) * 2)
    assert k.dtype == torch.float64 and abs(k.sum().item() - 1) < 1e-12
    assert psf.from_array(np.ones((3, 3), dtype=np.uint8)).dtype == torch.float32
    t = torch.rand(5, 5, requires_grad=True)
    out = psf.from_array(t)
    out[2, 2].backward()
    assert t.grad is not None


def test_from_array_pads_even_sides_at_the_end() -> None:
    k = np.zeros((4, 2))
    k[2, 1] = 1.0  # the centre under scipy.ndimage / MATLAB conv2 'same'
    out = psf.from_array(k)
    assert out.shape == (5, 3)
    assert out[2, 1] == 1.0


def test_from_array_negative_entries() -> None:
    k = np.array([[0.0, -0.1, 0.0], [-0.1, 1.0, -0.1], [0.0, -0.1, 0.0]])
    kept = psf.from_array(k)
    assert kept.min() < 0 and abs(kept.sum().item() - 1) < 1e-12
    clipped = psf.from_array(k, clip_negative=True)
    assert clipped.min() == 0 and clipped[1, 1] == 1.0


@pytest.mark.parametrize(("value", "match"), [
    (np.zeros((3, 3)), "all zero"),
    (np.array([[1.0, np.nan, 0.0]]), "finite"),
    (np.array([[1.0, np.inf, 0.0]]), "finite"),
    (np.array([[0.5, -2.0, 0.5]]), "positive sum"),
    (np.ones((3, 3, 3)), "2-D"),
    (np.ones(5), "2-D"),
    (np.ones((0, 3)), "empty"),
    (np.ones((3, 3), dtype=bool), "real numbers"),
    (np.ones((3, 3), dtype=complex), "real numbers"),
    ([[1.0, 2.0]], "numpy array or a torch tensor"),
    (-np.ones((3, 3)), "positive sum"),
])
def test_from_array_errors(value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        psf.from_array(value)


def test_from_params_dispatch_and_errors() -> None:
    assert psf.PSF_TYPES == ("gaussian", "motion", "defocus")
    torch.testing.assert_close(psf.from_params("gaussian", {"sigma": 2, "sigma_y": 1, "theta": 10}),
                               psf.gaussian(2, 1, 10))
    torch.testing.assert_close(psf.from_params("motion", {"length": 5, "angle": 10}, size=9),
                               psf.motion(5, 10, size=9))
    torch.testing.assert_close(psf.from_params("defocus", {"radius": 3}, dtype=F64),
                               psf.defocus(3, dtype=F64))
    with pytest.raises(ValueError, match="blur_type"):
        psf.from_params("box", {"radius": 3})
    with pytest.raises(ValueError, match="angle"):
        psf.from_params("motion", {"length": 5})
    with pytest.raises(ValueError, match="sigma_x"):
        psf.from_params("gaussian", {"sigma": 1, "sigma_x": 2})


def test_render() -> None:
    image = psf.render(psf.motion(9, 30), scale=4)
    assert image.dtype == np.uint8 and image.shape == (44, 44)
    assert image.max() == 255 and image.min() == 0
    assert (image[:4, :4] == image[0, 0]).all()  # nearest upscaling
    auto = psf.render(np.ones((3, 5)))
    assert auto.shape == (153, 255)
    with pytest.raises(ValueError, match="scale"):
        psf.render(psf.gaussian(1.0), scale=0)
    with pytest.raises(ValueError, match="2-D"):
        psf.render(np.ones((2, 2, 2)))


# ---- peer: GNU Octave's fspecial (meaning, not pixels) ------------------------------------------

@pytest.fixture(scope="module")
def octave(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    shared = request.getfixturevalue("shared_data")
    path = shared / "kernels" / "octave_fspecial.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def test_octave_gaussian_equal(octave: dict[str, np.ndarray]) -> None:
    keys = [k for k in octave if k.startswith("gaussian_")]
    assert keys
    for key in keys:
        _, s, h = key.split("_")
        ours = psf.gaussian(float(s[1:]), dtype=F64).numpy()
        assert ours.shape == (int(h[1:]),) * 2  # same default size as the usual fspecial call
        np.testing.assert_allclose(ours, octave[key], atol=1e-9)  # Octave stored to ~1e-10


def test_octave_disk_equal(octave: dict[str, np.ndarray]) -> None:
    keys = [k for k in octave if k.startswith("disk_")]
    assert keys
    for key in keys:
        radius = int(key.split("_")[1][1:])
        ours = psf.defocus(radius, dtype=F64).numpy()
        assert ours.shape == octave[key].shape
        np.testing.assert_allclose(ours, octave[key], atol=1e-9)
        assert abs(moments(ours)["var"] - moments(octave[key])["var"]) < 1e-6


def test_octave_motion_meaning(octave: dict[str, np.ndarray]) -> None:
    keys = [k for k in octave if k.startswith("motion_")]
    assert keys
    for key in keys:
        _, ln, an = key.split("_")
        length, angle = float(ln[1:]), float(an[1:])
        theirs, ours = moments(octave[key]), moments(psf.motion(length, angle, dtype=F64))
        # both centred
        assert abs(theirs["cx"]) < 1e-6 and abs(theirs["cy"]) < 1e-6
        assert abs(ours["cx"]) < 1e-9 and abs(ours["cy"]) < 1e-9
        # same direction; ours tracks the requested angle more closely at short lengths
        tolerance = 15.0 if length <= 3 else (9.0 if length <= 5 else 3.5)
        assert abs(angle_diff(theirs["angle"], ours["angle"])) < tolerance, key
        ours_off = abs(angle_diff(ours["angle"], angle))
        assert ours_off <= abs(angle_diff(theirs["angle"], angle)) + 0.2, key
        # same length meaning: Octave's spread is between L - 2 and L, ours sqrt(L^2 + 2)
        assert length - 2.0 < theirs["along"] <= ours["along"] < length + 0.35, key

"""Blur augmentation: per-sample parameters and kernel sizes, reproducibility, shapes."""

from __future__ import annotations

import math

import pytest
import torch

from fastdeblur import augment
from fastdeblur.convolution import convolve
from fastdeblur.robustness import batch_psf
from fastdeblur.robustness.augment import blur_at_strengths
from tests._tol import assert_close


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids the thread-pool overhead, large on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


UNIFORM = [
    lambda **kw: augment.RandomGaussianBlur(**kw),
    lambda **kw: augment.RandomMotionBlur(**kw),
    lambda **kw: augment.RandomDefocusBlur(**kw),
]
IDS = ["gaussian", "motion", "defocus"]


def images(b: int = 6, c: int = 3, h: int = 19, w: int = 23, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make", UNIFORM, ids=IDS)
def test_per_sample_params_and_kernel_sizes_differ(make) -> None:
    t = make()
    params = t.sample_params(8, torch.Generator().manual_seed(1))
    main = params[t.strength_param]
    assert main.unique().numel() == 8
    sizes = t.kernel_sizes(params)
    assert sizes.unique().numel() > 1
    assert bool((sizes % 2 == 1).all())
    kernels = t.kernels(params, dtype=torch.float64)
    side = kernels.shape[-1]
    assert side == int(sizes.max()) and side % 2 == 1
    torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(8, dtype=torch.float64))
    for k, size in zip(kernels, sizes.tolist(), strict=True):
        m = (side - size) // 2
        inner = torch.zeros_like(k, dtype=torch.bool)
        inner[m : side - m, m : side - m] = True
        assert float(k[~inner].abs().sum()) == 0.0  # padded with zeros, centred
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        cy = float((k * ys).sum())
        cx = float((k * xs).sum())
        assert abs(cy - side // 2) < 1e-6 and abs(cx - side // 2) < 1e-6


@pytest.mark.parametrize("make", UNIFORM, ids=IDS)
def test_batch_equals_each_sample_with_its_own_kernel(make) -> None:
    x = images(4, 1, 21, 21).double()
    t = make(seed=3)
    y = t(x)
    params = {k: v for k, v in t.last_params.items() if k != "index"}
    for b in range(4):
        own = {k: v[b : b + 1] for k, v in params.items()}
        k = batch_psf.render(t.blur_type, own, dtype=torch.float64)[0]
        assert k.shape[-1] == int(t.kernel_sizes(own)[0])
        assert_close(y[b : b + 1], convolve(x[b : b + 1], k))
    assert not torch.equal(y[0], y[1])


def test_same_seed_same_output_and_generator_argument() -> None:
    x = images()
    a = augment.RandomBlur(seed=7)
    b = augment.RandomBlur(seed=7)
    first = a(x)
    assert torch.equal(first, b(x))
    assert torch.equal(a(x), b(x))  # the n-th call matches too
    assert not torch.equal(first, a(x))  # and calls differ from each other
    a.reset()
    assert torch.equal(a(x), first)
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    t = augment.RandomMotionBlur()
    assert torch.equal(t(x, generator=g1), t(x, generator=g2))
    assert not torch.equal(augment.RandomBlur(seed=8)(x), first)


def test_p_zero_is_identity_and_p_applies_per_sample() -> None:
    x = images(16)
    for make in UNIFORM:
        assert torch.equal(make(p=0.0)(x), x)
    t = augment.RandomGaussianBlur(p=0.5, seed=0)
    y = t(x)
    changed = (y - x).flatten(1).abs().amax(1) > 0
    assert set(t.last_params["index"].tolist()) == set(changed.nonzero().flatten().tolist())
    assert 0 < int(changed.sum()) < 16


def test_chw_and_bchw_shapes_dtypes() -> None:
    x = images(1, 3, 17, 12)
    t = augment.RandomDefocusBlur(seed=1)
    y3 = t(x[0])
    assert y3.shape == (3, 17, 12)
    t.reset()
    assert torch.equal(t(x)[0], y3)
    assert t(x.double()).dtype == torch.float64
    assert t(torch.rand(0, 3, 8, 8)).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="images must be"):
        t(torch.rand(8, 8))
    with pytest.raises(ValueError, match="floating point"):
        t(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_compose_sequential_and_mixture() -> None:
    x = images(12)
    pipeline = augment.Compose([augment.RandomGaussianBlur(sigma=1.0, seed=0), lambda im: im * 2])
    assert pipeline(x).shape == x.shape
    assert torch.nn.Sequential(augment.RandomMotionBlur(seed=0))(x).shape == x.shape
    mix = augment.RandomBlur(weights=[1, 0, 3], seed=2)
    mix(x)
    which = mix.last_params["transform"]
    assert 1 not in which.tolist() and {0, 2} >= set(which.tolist())
    with pytest.raises(ValueError, match="weights"):
        augment.RandomBlur(weights=[1, 2])


def test_noise_and_bad_arguments() -> None:
    x = images(2) * 0.5 + 0.25
    y = augment.RandomGaussianBlur(sigma=0.0, noise_sigma=0.05, seed=0)(x)
    assert 0.02 < float((y - x).std()) < 0.08
    with pytest.raises(ValueError, match="p must be"):
        augment.RandomGaussianBlur(p=1.5)
    with pytest.raises(ValueError, match="sigma"):
        augment.RandomGaussianBlur(sigma=(3.0, 1.0))
    with pytest.raises(ValueError, match="length"):
        augment.RandomMotionBlur(length=-1.0)
    with pytest.raises(ValueError, match="blur_type"):
        augment.at_strength("fog", 1.0)


def test_dataloader_workers_get_different_streams(monkeypatch) -> None:
    x = images(4)
    outputs = []
    for worker in (0, 1):
        monkeypatch.setattr(torch.utils.data, "get_worker_info",
                            lambda w=worker: type("Info", (), {"id": w})())
        outputs.append(augment.RandomMotionBlur(seed=3)(x))
    assert not torch.equal(outputs[0], outputs[1])


def test_blur_at_strengths() -> None:
    x = images(3).double()
    y, k = blur_at_strengths(x, "motion", 0.0, generator=torch.Generator().manual_seed(0))
    assert_close(y, x)
    y1, k1 = blur_at_strengths(x, "motion", torch.tensor([2.0, 5.0, 9.0]),
                               generator=torch.Generator().manual_seed(0))
    assert k1.shape == (3, 11, 11)
    # the same generator state gives the same directions at every strength
    _, k2 = blur_at_strengths(x, "motion", 9.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(k1[2], k2[2])
    with pytest.raises(ValueError, match="strengths"):
        blur_at_strengths(x, "gaussian", torch.tensor([1.0, 2.0]))


def test_batch_kernels_match_psf_module() -> None:
    psf = pytest.importorskip("fastdeblur.psf")
    cases = {
        "gaussian": {"sigma": [0.0, 0.6, 2.3]},
        "motion": {"length": [0.0, 4.5, 13.0], "angle": [10.0, 45.0, 123.0]},
        "defocus": {"radius": [0.0, 1.3, 4.0]},
    }
    for blur_type, values in cases.items():
        params = {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
        batch = batch_psf.render(blur_type, params, dtype=torch.float64)
        for i in range(3):
            one = psf.from_params(blur_type, {k: v[i] for k, v in values.items()},
                                  dtype=torch.float64)
            padded = batch_psf.pad_to(one[None], batch.shape[-1])[0]
            torch.testing.assert_close(batch[i], padded, atol=5e-5, rtol=0)


def test_camera_shake_per_sample_sizes() -> None:
    pytest.importorskip("fastdeblur.psf")
    t = augment.RandomCameraShake(length=(3.0, 15.0), seed=0)
    params = t.sample_params(5, torch.Generator().manual_seed(0))
    kernels = t.kernels(params, dtype=torch.float64)
    sizes = t.kernel_sizes(params)
    assert kernels.shape[-1] == int(sizes.max()) and sizes.unique().numel() > 1
    torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(5, dtype=torch.float64))
    x = images(5)
    assert t(x).shape == x.shape
    assert math.isclose(float(t(x).mean()), float(x.mean()), abs_tol=0.02)


@pytest.mark.slow  # builds fields of parametric kernels; imports the pc_conv op
def test_spatially_varying_blur() -> None:
    pytest.importorskip("fastdeblur.fields")
    pytest.importorskip("fastdeblur.ops.pc_conv")
    x = images(3, 1, 24, 28)
    t = augment.RandomSpatiallyVaryingBlur(strength=(4.0, 9.0), grid=3, seed=0)
    y = t(x)
    assert y.shape == x.shape
    assert t.last_params["strength"].unique().numel() == 3
    t.reset()
    assert torch.equal(t(x), y)
    y0, kernels = blur_at_strengths(x, "spatially_varying", 0.0, grid=3,
                                    generator=torch.Generator().manual_seed(0))
    assert kernels is None
    assert_close(y0, x)
    grids = t.grid_kernels(t.sample_params(3, torch.Generator().manual_seed(1)), 24, 28)
    assert grids.shape[:3] == (3, 3, 3) and grids.shape[-1] % 2 == 1
    torch.testing.assert_close(grids.sum(dim=(-2, -1)), torch.ones(3, 3, 3))


class _Patches(torch.utils.data.Dataset):
    """Four copies of one image, blurred per item by a seeded transform."""

    def __init__(self) -> None:
        self.image = images(1, 1, 16, 16)[0]
        self.blur = augment.RandomMotionBlur(seed=11)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.blur(self.image)


def test_in_dataloader_workers() -> None:
    def run() -> torch.Tensor:
        loader = torch.utils.data.DataLoader(_Patches(), batch_size=1, num_workers=2)
        return torch.cat(list(loader))

    first = run()
    assert first.shape == (4, 1, 16, 16)
    assert not torch.equal(first[0], first[1])  # workers 0 and 1 draw different streams
    assert torch.equal(first, run())  # and the same ones on every run


@pytest.mark.cuda
def test_cuda_matches_cpu() -> None:
    x = images(5, 3, 33, 31)
    for make in UNIFORM:
        cpu = make(seed=4)(x)
        gpu = make(seed=4)(x.cuda())
        assert gpu.is_cuda
        assert_close(gpu.cpu(), cpu, scale=10)
    mix = augment.RandomBlur(seed=2, noise_sigma=0.01)
    assert mix(x.cuda()).is_cuda
    y, k = blur_at_strengths(x.cuda(), "defocus", torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert y.is_cuda and k.is_cuda and k.shape == (5, 9, 9)

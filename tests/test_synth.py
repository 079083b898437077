"""fastdeblur.synth: seeded, balanced, true-convolution patches."""

from __future__ import annotations

import pytest
import torch

from fastdeblur import psf
from fastdeblur.convolution import convolve
from fastdeblur.synth import (
    BLUR_TYPES,
    DEFAULT_RANGES,
    BlurPatchDataset,
    collate_patches,
    gradient_energy,
    load_images,
    split_images,
)


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    return load_images(None, gray=True)[:3]


def test_same_seed_same_samples_in_any_order(images) -> None:
    a = BlurPatchDataset(images, length=12, seed=3)
    b = BlurPatchDataset(images, length=12, seed=3)
    c = BlurPatchDataset(images, length=12, seed=4)
    for i in (7, 0, 11):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["blurred"], sb["blurred"]) and sa["params"] == sb["params"]
    assert not torch.equal(a[5]["blurred"], c[5]["blurred"])


def test_balanced_types_and_ranges(images) -> None:
    ds = BlurPatchDataset(images, length=30, seed=0, noise_sigma=0.0)
    counts = [0, 0, 0]
    for i in range(len(ds)):
        s = ds[i]
        counts[s["blur_type"]] += 1
        name = BLUR_TYPES[s["blur_type"]]
        for key, (low, high) in DEFAULT_RANGES[name].items():
            assert low <= s["params"][key] <= high
        assert s["sharp"].shape == s["blurred"].shape == (1, 32, 32)
    assert counts == [10, 10, 10]


def test_patch_is_true_convolution_of_the_image() -> None:
    image = torch.rand(1, 200, 200)
    ds = BlurPatchDataset([image], length=3, seed=1, noise_sigma=0.0, patch_size=24)
    s = ds[1]  # motion
    kernel = psf.from_params("motion", s["params"])
    full = convolve(image[None], kernel)[0]
    # Find the patch in the sharp image, then compare with the full-image blur there.
    sharp = s["sharp"]
    diff = (image.unfold(1, 24, 1).unfold(2, 24, 1) - sharp[0][None, None]).abs().sum((-1, -2))
    top, left = divmod(int(diff[0].argmin()), diff.shape[-1])
    torch.testing.assert_close(s["blurred"], full[:, top : top + 24, left : left + 24])


def test_noise_level_and_texture_threshold(images) -> None:
    ds = BlurPatchDataset(images, length=6, seed=2, noise_sigma=0.02)
    clean = BlurPatchDataset(images, length=6, seed=2, noise_sigma=0.0)
    resid = torch.stack([ds[i]["blurred"] - clean[i]["blurred"] for i in range(6)])
    assert 0.015 < resid.std().item() < 0.025
    textured = BlurPatchDataset(images, length=6, seed=2, min_gradient_energy=1e-3)
    assert all(gradient_energy(textured[i]["sharp"]).item() >= 1e-3 for i in range(6))


def test_worker_safe_with_dataloader(images) -> None:
    ds = BlurPatchDataset(images, length=8, seed=5)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=collate_patches
    )
    batches = torch.cat([b["blurred"] for b in loader])
    direct = torch.stack([ds[i]["blurred"] for i in range(8)])
    torch.testing.assert_close(batches, direct)


def test_split_by_image_and_errors(tmp_path) -> None:
    train, val = split_images(list(range(10)), 0.2, seed=0)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert split_images(list(range(10)), 0.2, seed=0) == (train, val)
    with pytest.raises(ValueError, match="not a folder"):
        BlurPatchDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        BlurPatchDataset(tmp_path)
    with pytest.raises(ValueError, match="types"):
        BlurPatchDataset([torch.rand(1, 80, 80)], types=("box",))


def test_dead_leaves_is_seeded_covered_and_scale_invariant() -> None:
    from fastdeblur.synth import dead_leaves

    a = dead_leaves(128, seed=1)
    assert a.shape == (1, 128, 128) and a.dtype == torch.float32
    assert torch.equal(a, dead_leaves(128, seed=1))
    assert not torch.equal(a, dead_leaves(128, seed=2))
    assert float(a.min()) >= 0.05 - 1e-6 and float(a.max()) <= 0.95 + 1e-6
    # r^-3 radii give a power spectrum close to 1/|f|^2: doubling the frequency divides the
    # radially averaged power by about 4
    f = torch.fft.fftfreq(128) * 128
    ring = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long().clamp(max=63).flatten()
    counts = torch.bincount(ring, minlength=64).float()
    power = torch.zeros(64)
    for s in range(4):
        x = dead_leaves(128, seed=10 + s)[0]
        p = torch.fft.fft2(x - x.mean()).abs().square().flatten()
        power += torch.zeros(64).index_add_(0, ring, p) / counts
    ratio = float(power[8:16].mean() / power[16:32].mean())
    assert 3.0 < ratio < 5.0, ratio
    with pytest.raises(ValueError, match="r_min"):
        dead_leaves(64, r_min=5.0, r_max=2.0)

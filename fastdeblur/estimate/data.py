"""Synthetic patch sets for training and evaluating the estimator.

Protocol (after Yan & Shao 2016): 36,000 patches of 32×32, 12,000 per blur type, cut from sharp
photographs blurred with parameters drawn uniformly from :data:`fastdeblur.synth.DEFAULT_RANGES`
(Gaussian σ 0.5–5 px; motion length 3–31 px, angle 0–180°; defocus radius 1–10 px), white noise
σn uniform in 0–0.02, gray. Patches whose blurred version is flat
(:func:`fastdeblur.estimate.patches.texture_energy` below
:func:`~fastdeblur.estimate.patches.texture_threshold` of the true σn) are replaced by the next
candidate, as the estimator would skip them. Images are split into training and validation sets
by image, never by patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fastdeblur.estimate.patches import texture_energy, texture_threshold
from fastdeblur.estimate.spectrum import TILE, WINDOW
from fastdeblur.synth import BLUR_TYPES, BlurPatchDataset, load_images, split_images


def estimator_images(
    folder: str | Path | None, *, val_fraction: float = 0.2, seed: int = 0, skimage: bool = True
) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, list[str]]]:
    """Gray training and validation images: a folder's images (if given) plus the photos in
    ``skimage.data``, each source split by image.

    Returns:
        ``(train, val, names)`` with ``names = {"train": [...], "val": [...]}``.
    """
    from fastdeblur.synth import SKIMAGE_PHOTOS, image_paths

    train: list[torch.Tensor] = []
    val: list[torch.Tensor] = []
    names: dict[str, list[str]] = {"train": [], "val": []}
    if folder is not None:
        paths = image_paths(folder)
        tr, va = split_images(paths, val_fraction, seed)
        train += load_images(tr, gray=True)
        val += load_images(va, gray=True)
        names["train"] += [p.name for p in tr]
        names["val"] += [p.name for p in va]
    if skimage:
        ims = load_images(None, gray=True, min_size=0)
        named = list(zip(SKIMAGE_PHOTOS, ims, strict=True))
        tr, va = split_images(named, val_fraction, seed)
        train += [im for n, im in tr if min(im.shape[-2:]) >= 64]
        val += [im for n, im in va if min(im.shape[-2:]) >= 64]
        names["train"] += [f"skimage.{n}" for n, _ in tr]
        names["val"] += [f"skimage.{n}" for n, _ in va]
    if not train:
        raise ValueError("no training images")
    return train, val, names


DEAD_LEAVES_IMAGES = 60


def dead_leaves_images(n: int = DEAD_LEAVES_IMAGES, *, seed: int = 1000) -> list[torch.Tensor]:
    """``n`` gray 256×256 dead-leaves images (:func:`fastdeblur.synth.dead_leaves`, seeds
    ``seed``, ``seed + 1``, ...): extra training scenes for the patch classifier, never used for
    validation."""
    from fastdeblur.synth import dead_leaves

    return [dead_leaves(256, seed=seed + i) for i in range(n)]


def concat_patch_sets(a: dict, b: dict) -> dict:
    """Two :func:`synth_patches` sets as one."""
    return {
        k: a[k] + b[k] if isinstance(a[k], list) else torch.cat([a[k], b[k]]) for k in a
    }


def synth_patches(
    images: Sequence[torch.Tensor],
    n: int,
    *,
    seed: int = 0,
    noise_sigma: float | tuple[float, float] = (0.0, 0.02),
    types: Sequence[str] = BLUR_TYPES,
    skip_flat: bool = True,
    progress: bool = False,
) -> dict[str, torch.Tensor | list]:
    """``n`` textured blurred patches, balanced over ``types``.

    Returns:
        ``{"patches": (n, 32, 32), "labels": (n,) int64, "params": list of dicts,
        "noise": (n,)}``; label ``k`` is ``types[k]``.
    """
    ds = BlurPatchDataset(
        list(images), length=n * 4, types=types, noise_sigma=noise_sigma, seed=seed, gray=True
    )
    patches, labels, params, noise = [], [], [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threading only adds overhead
    try:
        counts = [0] * len(types)
        per_type = [n // len(types) + (k < n % len(types)) for k in range(len(types))]
        i = 0
        while sum(counts) < n:
            if i >= len(ds):
                raise RuntimeError("too many flat patches: cannot fill the set")
            k = i % len(types)
            if counts[k] < per_type[k]:
                item = ds[i]
                p = item["blurred"][0]
                thr = texture_threshold(item["noise_sigma"])
                if not skip_flat or texture_energy(p[None])[0] >= thr:
                    patches.append(p)
                    labels.append(item["blur_type"])
                    params.append(item["params"])
                    noise.append(item["noise_sigma"])
                    counts[k] += 1
                    if progress and sum(counts) % 3000 == 0:
                        print(f"  {sum(counts)}/{n} patches", flush=True)
            i += 1
    finally:
        torch.set_num_threads(threads)
    return {
        "patches": torch.stack(patches),
        "labels": torch.tensor(labels),
        "params": params,
        "noise": torch.tensor(noise),
    }


def cached_patches(cache_dir: str | Path | None, name: str, make) -> dict:
    """``make()`` once, stored as ``cache_dir/name.pt`` (no caching when ``cache_dir`` is None)."""
    if cache_dir is None:
        return make()
    path = Path(cache_dir) / f"{name}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    out = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def synth_windows(
    images: Sequence[torch.Tensor],
    n: int,
    *,
    window: int = 128,
    seed: int = 0,
    noise_sigma: float | tuple[float, float] = (0.0, 0.02),
    types: Sequence[str] = BLUR_TYPES,
    progress: bool = False,
) -> dict[str, torch.Tensor | list]:
    """``n`` uniformly blurred ``window``×``window`` crops, summarised by the mean spectral
    profile (:func:`fastdeblur.estimate.features.profile_features`) of their textured 32×32
    patches — the image-level feature of the image-level GRNNs.

    Returns:
        ``{"features": (n, PROFILE_DIM), "labels": (n,), "params": list of dicts,
        "noise": (n,), "n_patches": (n,)}``.
    """
    from fastdeblur.estimate.features import profile_features
    from fastdeblur.estimate.patches import PATCH_SIZE, extract_patches

    ds = BlurPatchDataset(
        list(images),
        patch_size=window,
        length=n,
        types=types,
        noise_sigma=noise_sigma,
        seed=seed,
        gray=True,
    )
    out_f, labels, params, noise, counts = [], [], [], [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(n):
            item = ds[i]
            patches, _ = extract_patches(item["blurred"][0], PATCH_SIZE)
            textured = texture_energy(patches) >= texture_threshold(item["noise_sigma"])
            if int(textured.sum()) >= 1:
                patches = patches[textured]
            out_f.append(profile_features(patches).mean(0))
            labels.append(item["blur_type"])
            params.append(item["params"])
            noise.append(item["noise_sigma"])
            counts.append(int(textured.sum()))
            if progress and (i + 1) % 3000 == 0:
                print(f"  {i + 1}/{n} windows", flush=True)
    finally:
        torch.set_num_threads(threads)
    return {
        "features": torch.stack(out_f),
        "labels": torch.tensor(labels),
        "params": params,
        "noise": torch.tensor(noise),
        "n_patches": torch.tensor(counts),
    }


# The spectrum classifier and the likelihood stage's combiner are fitted on different images: the
# combiner weighs the classifier's probabilities, which would look too sure on images it trained on.
COMBINER_FRACTION = 0.2
COMBINER_SPLIT_SEED = 7


def combiner_split(
    images: Sequence[torch.Tensor], names: Sequence[str]
) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, list[str]]]:
    """Split the estimator's *training* images (:func:`estimator_images`) by image into those of
    the spectrum classifier and those of the likelihood stage's combiner (20 %, seed 7).

    Returns:
        ``(spectrum_images, combiner_images, {"spectrum": names, "combiner": names})``.
    """
    spec, comb = split_images(
        list(zip(names, images, strict=True)), COMBINER_FRACTION, COMBINER_SPLIT_SEED
    )
    return (
        [im for _, im in spec],
        [im for _, im in comb],
        {"spectrum": [n for n, _ in spec], "combiner": [n for n, _ in comb]},
    )


def synth_spectra(
    images: Sequence[torch.Tensor],
    n: int,
    *,
    window: int = WINDOW,
    seed: int = 0,
    noise_sigma: tuple[float, float] = (0.0, 0.02),
    clean_fraction: float = 0.2,
    jpeg_quality: tuple[int, int] | None = None,
    shake: int = 0,
    progress: bool = False,
) -> dict[str, torch.Tensor | list]:
    """``n`` uniformly blurred ``window``×``window`` crops (types balanced, parameters uniform
    over the supported range), each summarised by its Welch power spectrum
    (:func:`fastdeblur.estimate.likelihood.tile_spectrum`, 128×128 tiles) and estimated noise
    level — the input of :class:`fastdeblur.estimate.spectrum.SpectrumCNN`.

    A ``clean_fraction`` of the crops gets no noise (a noise-free spectrum falls to numerical zero
    where the blur's OTF does: a case of its own); the rest white noise uniform in
    ``noise_sigma``. Crops are clamped to [0, 1] like images, and transposed at random (the
    half-plane spectrum cannot be transposed afterwards; mirroring is done at training time).
    Images smaller than the window plus the largest kernel are skipped.

    With ``shake > 0``, ``shake`` more crops are blurred by random camera shake
    (:func:`shake_kernel`: a curved, jittery path that no parametric family describes) and
    labelled ``len(BLUR_TYPES)`` (:data:`SPECTRUM_CLASSES`), with the same noise and JPEG
    treatment.

    With ``jpeg_quality = (lo, hi)`` every crop is then saved as an 8-bit JPEG of quality
    uniform in ``lo..hi`` and read back (:func:`fastdeblur.io.jpeg_roundtrip`), as a camera or
    a web page stores a photo; the noise is estimated on the decoded crop, as on a real JPEG.

    Returns:
        ``{"power": (N, 128, 65) float32, "noise_estimate": (N,), "noise": (N,),
        "labels": (N,) int64, "params": list of dicts}``, ``N = n + shake``.
    """
    from fastdeblur.estimate.likelihood import tile_spectrum
    from fastdeblur.estimate.patches import estimate_noise
    from fastdeblur.io import jpeg_roundtrip
    from fastdeblur.synth import DEFAULT_RANGES, kernel_radius

    if jpeg_quality is not None and not 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100:
        raise ValueError(f"jpeg_quality must be (lo, hi) with 1 <= lo <= hi <= 100; "
                         f"got {jpeg_quality}")
    margin = max(kernel_radius(t, {k: hi for k, (_, hi) in DEFAULT_RANGES[t].items()})
                 for t in DEFAULT_RANGES)
    large = [im for im in images if min(im.shape[-2:]) >= window + 2 * margin]
    if not large:
        raise ValueError(f"no image has a side of at least {window + 2 * margin} px")
    if shake < 0:
        raise ValueError(f"shake must be >= 0; got {shake}")
    n_clean = round(n * clean_fraction)
    n_shake_clean = round(shake * clean_fraction)
    parts = [(noise_sigma, n - n_clean, seed), ((0.0, 0.0), n_clean, seed + 500_000)]
    shake_parts = [(noise_sigma, shake - n_shake_clean, seed + 700_000),
                   ((0.0, 0.0), n_shake_clean, seed + 900_000)]
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list] = {k: [] for k in ("power", "noise_estimate", "noise", "labels", "params")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one crop at a time: threading only adds overhead
    try:
        items = [
            (BlurPatchDataset(large, patch_size=window, length=count, noise_sigma=noise,
                              seed=part_seed, gray=True), count)
            for noise, count, part_seed in parts if count
        ] + [
            (_ShakeCrops(large, window, count, noise, part_seed), count)
            for noise, count, part_seed in shake_parts if count
        ]
        total = n + shake
        for ds, count in items:
            for i in range(count):
                item = ds[i]
                y = item["blurred"][0].clamp(0, 1)
                if jpeg_quality is not None:
                    q = int(torch.randint(jpeg_quality[0], jpeg_quality[1] + 1, (),
                                          generator=g))
                    y = jpeg_roundtrip(y[None], q)[0]
                if bool(torch.randint(2, (), generator=g)):
                    y = y.t()
                power, _ = tile_spectrum(y, TILE)
                out["power"].append(power.float())
                out["noise_estimate"].append(estimate_noise(y))
                out["noise"].append(item["noise_sigma"])
                out["labels"].append(item["blur_type"])
                out["params"].append(item["params"])
                if progress and len(out["labels"]) % 2000 == 0:
                    print(f"  {len(out['labels'])}/{total} spectra", flush=True)
    finally:
        torch.set_num_threads(threads)
    return {
        "power": torch.stack(out["power"]),
        "noise_estimate": torch.tensor(out["noise_estimate"], dtype=torch.float32),
        "noise": torch.tensor(out["noise"], dtype=torch.float32),
        "labels": torch.tensor(out["labels"]),
        "params": out["params"],
    }


# The spectrum classifier's classes: the blur families, then camera shake when it is trained with
# shake crops (``fastdeblur train spectrum --shake-crops N``).
SPECTRUM_CLASSES: tuple[str, ...] = (*BLUR_TYPES, "camera_shake")
# Camera shake for the classifier: kernels 11-31 px (smaller paths are a pixel or two of blur,
# which a Gaussian or a disk describes as well), jitter ``anxiety`` at least 0.3, the dwell points
# of recorded shake (speed variation 0-1.5, as :func:`fastdeblur.psf.camera_shake` says of the
# Levin et al. kernels), and not a straight streak: a path whose mass spreads across its main axis
# by less than SHAKE_MIN_AXIS_RATIO of its spread along it is a motion blur, which the motion
# family describes (at anxiety 0.3 a quarter of the paths are that straight, at 0.5 one in 20).
SHAKE_KERNEL_SIZES = (11, 31)
SHAKE_ANXIETY = (0.3, 1.0)
SHAKE_SPEED_VARIATION = 1.5
SHAKE_MIN_AXIS_RATIO = 0.15


def axis_ratio(kernel: torch.Tensor) -> float:
    """How far a kernel ``(S, S)`` is from a straight streak: the square root of the ratio of
    the small to the large eigenvalue of its mass's second-moment matrix (0: a line, 1: round)."""
    k = kernel.double() / kernel.double().sum()
    ys, xs = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in k.shape),
                            indexing="ij")
    dy, dx = ys - (k * ys).sum(), xs - (k * xs).sum()
    cov = torch.stack([torch.stack([(k * dy * dy).sum(), (k * dy * dx).sum()]),
                       torch.stack([(k * dy * dx).sum(), (k * dx * dx).sum()])])
    low, high = torch.linalg.eigvalsh(cov).clamp_min(0).tolist()
    return (low / high) ** 0.5 if high > 0 else 1.0


def shake_kernel(generator: torch.Generator, tries: int = 20) -> torch.Tensor:
    """A random camera-shake kernel ``(S, S)`` for the spectrum classifier's shake class
    (:data:`SHAKE_KERNEL_SIZES`, :data:`SHAKE_ANXIETY`, :data:`SHAKE_SPEED_VARIATION`), redrawn
    (up to ``tries`` times) while it is a straight streak (:data:`SHAKE_MIN_AXIS_RATIO`)."""
    from fastdeblur import psf

    low, high = SHAKE_KERNEL_SIZES
    for _ in range(tries):
        size = 2 * int(torch.randint(low // 2, high // 2 + 1, (), generator=generator)) + 1
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        anxiety = SHAKE_ANXIETY[0] + (SHAKE_ANXIETY[1] - SHAKE_ANXIETY[0]) * u[0]
        kernel = psf.camera_shake(size, generator=generator, anxiety=anxiety,
                                  speed_variation=SHAKE_SPEED_VARIATION * u[1],
                                  dtype=torch.float32)
        if axis_ratio(kernel) >= SHAKE_MIN_AXIS_RATIO:
            break
    return kernel


class _ShakeCrops(BlurPatchDataset):
    """``count`` gray ``window``² crops of ``images`` blurred by :func:`shake_kernel` (reflect
    border) plus white noise uniform in ``noise_sigma``, labelled ``len(BLUR_TYPES)`` (camera
    shake in :data:`SPECTRUM_CLASSES`); item ``i`` depends on ``(seed, i)`` only."""

    def __init__(self, images: Sequence[torch.Tensor], window: int, count: int,
                 noise_sigma: tuple[float, float], seed: int) -> None:
        super().__init__(images, patch_size=window, length=count, noise_sigma=noise_sigma,
                         seed=seed, gray=True)

    def draw_kernel(self, type_index: int, g: torch.Generator
                    ) -> tuple[dict[str, float], torch.Tensor, int]:
        kernel = shake_kernel(g)
        return {"size": float(kernel.shape[-1])}, kernel, kernel.shape[-1] // 2 + 1

    def __getitem__(self, index: int) -> dict:
        return super().__getitem__(index) | {"blur_type": len(BLUR_TYPES)}

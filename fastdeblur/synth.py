"""Synthetic training and evaluation data: ``(sharp patch, blurred patch, blur type, params)``.

:class:`BlurPatchDataset` draws, for item ``i``, a blur type, its parameters, a noise level, a
source image and a location, all from a generator seeded with ``(seed, i)``: the same seed gives
the same samples in any order, in any ``DataLoader`` worker, on any machine.

Parameter ranges (:data:`DEFAULT_RANGES`, the supported range of the blind estimator), each drawn
uniformly:

============  ==========================  ==============================================
blur type     parameter                   range
============  ==========================  ==============================================
gaussian      ``sigma`` (px)              0.5 – 5
motion        ``length`` (px), ``angle``  3 – 31, 0 – 180 degrees (counter-clockwise)
defocus       ``radius`` (px)             1 – 10
============  ==========================  ==============================================

Noise: white Gaussian, standard deviation drawn uniformly from ``noise_sigma`` (default 0 – 0.02,
image units in [0, 1]), added after the blur; patches are not clipped.

The blurred patch is cut from a larger blurred window, so it is a true convolution of the
image (no boundary effect inside the patch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fastdeblur.convolution import convolve

BLUR_TYPES: tuple[str, ...] = ("gaussian", "motion", "defocus")

# The parameter that sets each family's size (the blur map's and the benchmarks' "how large").
SIZE_PARAM: dict[str, str] = {"gaussian": "sigma", "motion": "length", "defocus": "radius"}

DEFAULT_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "gaussian": {"sigma": (0.5, 5.0)},
    "motion": {"length": (3.0, 31.0), "angle": (0.0, 180.0)},
    "defocus": {"radius": (1.0, 10.0)},
}

# The photographs inside scikit-image (no download needed). ``clock`` is left out: it is a
# real motion-blurred photo, not a sharp one.
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "page",
    "text",
    "immunohistochemistry",
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")


def _to_chw(arr: np.ndarray) -> torch.Tensor:
    """HW/HWC uint8/uint16/float array -> float32 (C, H, W) in [0, 1], RGB (alpha dropped)."""
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    else:
        arr = arr.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim == 2:
        return t.unsqueeze(0)
    return t.permute(2, 0, 1)[:3].contiguous()


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` or ``(B, C, H, W)`` -> one channel (ITU-R BT.601 luma for RGB)."""
    if image.shape[-3] == 1:
        return image
    if image.shape[-3] != 3:
        raise ValueError(f"expected 1 or 3 channels; got {image.shape[-3]}")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
    return (image * weights.view(3, 1, 1)).sum(-3, keepdim=True)


def image_paths(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"images: {folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return paths


def load_images(
    source: str | Path | Sequence[str | Path] | None = None,
    *,
    gray: bool = False,
    min_size: int = 64,
) -> list[torch.Tensor]:
    """Load sharp images as float tensors.

    Args:
        source: A folder, a list of files, or ``None`` for the photos inside ``skimage.data``
            (:data:`SKIMAGE_PHOTOS`).
        gray: Convert to one channel.
        min_size: Skip images whose shorter side is below this.

    Returns:
        List of ``(C, H, W)`` float32 tensors in [0, 1] (C = 1 or 3).
    """
    from PIL import Image

    images: list[torch.Tensor] = []
    if source is None:
        import skimage.data

        arrays = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
        images = [_to_chw(a) for a in arrays]
    else:
        paths = image_paths(source) if isinstance(source, str | Path) else [Path(p) for p in source]
        for path in paths:
            try:
                with Image.open(path) as im:
                    im = im.convert("L" if gray else "RGB")
                    images.append(_to_chw(np.asarray(im)))
            except OSError as exc:
                raise ValueError(f"{path}: cannot read image ({exc})") from None
    if gray:
        images = [to_gray(im) for im in images]
    return [im for im in images if min(im.shape[-2:]) >= min_size]


def split_images(items: Sequence, val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split a list of images (or paths) into train and validation sets, by image.

    Args:
        items: Images or paths.
        val_fraction: Fraction (0–1) that goes to validation (at least one item when > 0).
        seed: Same seed, same split.

    Returns:
        ``(train, val)`` lists.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = math.ceil(len(items) * val_fraction) if val_fraction > 0 else 0
    val = [items[i] for i in sorted(order[:n_val])]
    train = [items[i] for i in sorted(order[n_val:])]
    return train, val


def dead_leaves(
    size: int = 256,
    *,
    seed: int = 0,
    r_min: float = 1.0,
    r_max: float = 80.0,
    supersample: int = 2,
) -> torch.Tensor:
    """A dead-leaves image: opaque disks of random gray levels, occluding one another.

    The standard synthetic model of natural-image statistics (Matheron; Lee, Mumford & Huang
    2001): disk radii follow ``p(r) ∝ r⁻³`` on ``[r_min, r_max]``, which makes the image
    scale-invariant with a power spectrum close to ``1/|f|²`` like photographs', and every disk
    border is a sharp edge of a new orientation, contrast and curvature. Blur classifiers trained
    on a few dozen photos meet far more edge configurations in these.

    Disks are drawn front to back until 99.9 % of the canvas is covered, at ``supersample``
    times the resolution and box-averaged down (anti-aliased edges).

    Args:
        size: Side of the square image.
        seed: Same seed, same image.
        r_min: Smallest disk radius (px of the output).
        r_max: Largest disk radius (px of the output).
        supersample: Rendering factor for anti-aliasing.

    Returns:
        ``(1, size, size)`` float32 in [0.05, 0.95].
    """
    if size < 8 or not 0 < r_min <= r_max or supersample < 1:
        raise ValueError(
            f"dead_leaves needs size >= 8, 0 < r_min <= r_max, supersample >= 1; "
            f"got {size}, {r_min}, {r_max}, {supersample}"
        )
    rng = np.random.default_rng(seed)
    n = size * supersample
    lo, hi = r_min * supersample, r_max * supersample
    img = np.zeros((n, n), np.float32)
    covered = np.zeros((n, n), bool)
    yy, xx = np.mgrid[0:n, 0:n]
    drawn = 0
    while drawn < 200_000 and covered.mean() < 0.999:
        # inverse CDF of p(r) ∝ r^-3 on [lo, hi]
        r = (lo**-2 - rng.random() * (lo**-2 - hi**-2)) ** -0.5
        cx, cy = rng.uniform(-r, n + r, 2)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, n)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, n)
        drawn += 1
        if x0 >= x1 or y0 >= y1:
            continue
        disk = (xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2 < r * r
        visible = disk & ~covered[y0:y1, x0:x1]
        img[y0:y1, x0:x1][visible] = rng.uniform(0.05, 0.95)
        covered[y0:y1, x0:x1] |= disk
    img[~covered] = rng.uniform(0.05, 0.95)  # the ground behind the last gaps
    out = torch.from_numpy(img)[None, None]
    if supersample > 1:
        out = torch.nn.functional.avg_pool2d(out, supersample)
    return out[0]


def gradient_energy(patch: torch.Tensor) -> torch.Tensor:
    """Mean squared forward-difference gradient of patches, a texture measure.

    Args:
        patch: ``(..., H, W)``.

    Returns:
        ``(...)``: ``mean(dx²) + mean(dy²)`` over the patch.
    """
    dx = patch[..., :, 1:] - patch[..., :, :-1]
    dy = patch[..., 1:, :] - patch[..., :-1, :]
    return dx.pow(2).mean(dim=(-2, -1)) + dy.pow(2).mean(dim=(-2, -1))


def draw_window(
    images: Sequence[torch.Tensor],
    patch_size: int,
    margin: int,
    generator: torch.Generator,
    min_gradient_energy: float = 0.0,
    tries: int = 20,
) -> torch.Tensor:
    """Cut a random ``(C, P + 2·margin, P + 2·margin)`` window from one of ``images``.

    Redraws (up to ``tries`` times) while the central ``P × P`` patch is flatter than
    ``min_gradient_energy`` (:func:`gradient_energy`); the last drawn window is kept then.

    Raises:
        ValueError: no draw found an image large enough.
    """
    window = patch_size + 2 * margin
    crop = None
    for _ in range(tries):
        image = images[int(torch.randint(len(images), (), generator=generator))]
        H, W = image.shape[-2:]
        if min(H, W) < window:
            continue
        top = int(torch.randint(H - window + 1, (), generator=generator))
        left = int(torch.randint(W - window + 1, (), generator=generator))
        crop = image[:, top : top + window, left : left + window]
        centre = crop[:, margin : margin + patch_size, margin : margin + patch_size]
        if gradient_energy(centre).mean() >= min_gradient_energy:
            break
    if crop is None:
        raise ValueError(f"no image is large enough for a {window}x{window} window")
    return crop


def sample_params(
    blur_type: str,
    generator: torch.Generator,
    ranges: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> dict[str, float]:
    """Draw the parameters of one blur type uniformly from its ranges.

    Args:
        blur_type: ``gaussian`` | ``motion`` | ``defocus``.
        generator: Source of randomness.
        ranges: ``{type: {param: (low, high)}}``; defaults to :data:`DEFAULT_RANGES`.

    Returns:
        ``{param: value}``.
    """
    ranges = ranges or DEFAULT_RANGES
    if blur_type not in ranges:
        raise ValueError(f"blur type must be one of {', '.join(ranges)}; got {blur_type!r}")
    out = {}
    for name, (low, high) in ranges[blur_type].items():
        u = torch.rand((), generator=generator, dtype=torch.float64).item()
        out[name] = low + (high - low) * u
    return out


def kernel_radius(blur_type: str, params: dict[str, float]) -> int:
    """An upper bound of the PSF's half-size, so windows can be cut with enough context."""
    if blur_type == "gaussian":
        return math.ceil(3 * max(params["sigma"], params.get("sigma_y", 0.0))) + 1
    if blur_type == "motion":
        return math.ceil(params["length"] / 2) + 2
    if blur_type == "defocus":
        return math.ceil(params["radius"]) + 2
    raise ValueError(f"unknown blur type {blur_type!r}")


class BlurPatchDataset(torch.utils.data.Dataset):
    """Patches of sharp images blurred with random parametric PSFs and noise.

    Item ``i`` is ``{"sharp": (C, P, P), "blurred": (C, P, P), "blur_type": int,
    "params": {name: float}, "noise_sigma": float}``; ``blur_type`` indexes ``types``.
    With ``balanced`` (default) item ``i`` has type ``types[i % len(types)]`` so every type
    gets the same number of samples (the paper's protocol: 12,000 patches per type).
    Batch items with ``DataLoader(..., collate_fn=collate_patches)``.

    Args:
        images: Sharp images ``(C, H, W)`` (a list), a folder, a list of files, or ``None``
            for the photos inside ``skimage.data``.
        patch_size: Side ``P`` of the square patches.
        length: Number of items.
        types: Blur types to draw from.
        ranges: Parameter ranges (default :data:`DEFAULT_RANGES`).
        noise_sigma: A noise level or a ``(low, high)`` range drawn uniformly.
        gray: Convert images to one channel.
        seed: Same seed, same samples.
        balanced: Cycle through the types instead of drawing them at random.
        min_gradient_energy: Redraw the location (up to 20 times) while the sharp patch's
            :func:`gradient_energy` is below this; 0 accepts flat patches.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor] | str | Path | Sequence[str | Path] | None = None,
        *,
        patch_size: int = 32,
        length: int = 36_000,
        types: Sequence[str] = BLUR_TYPES,
        ranges: dict[str, dict[str, tuple[float, float]]] | None = None,
        noise_sigma: float | tuple[float, float] = (0.0, 0.02),
        gray: bool = True,
        seed: int = 0,
        balanced: bool = True,
        min_gradient_energy: float = 0.0,
    ) -> None:
        if images is None or isinstance(images, str | Path):
            self.images = load_images(images, gray=gray)
        elif len(images) and isinstance(images[0], torch.Tensor):
            self.images = [to_gray(im) if gray else im for im in images]
        else:
            self.images = load_images(list(images), gray=gray)
        if not self.images:
            raise ValueError("images: no usable image (each needs a side >= 64 px)")
        self.ranges = ranges or DEFAULT_RANGES
        for t in types:
            if t not in self.ranges:
                raise ValueError(f"types: {t!r} has no parameter range")
        if patch_size < 4:
            raise ValueError(f"patch_size must be >= 4; got {patch_size}")
        self.patch_size = patch_size
        self.length = length
        self.types = tuple(types)
        if isinstance(noise_sigma, int | float):
            noise_sigma = (float(noise_sigma), float(noise_sigma))
        if not 0 <= noise_sigma[0] <= noise_sigma[1]:
            raise ValueError(f"noise_sigma must be >= 0 (low <= high); got {noise_sigma}")
        self.noise_sigma = noise_sigma
        self.seed = seed
        self.balanced = balanced
        self.min_gradient_energy = min_gradient_energy

    def __len__(self) -> int:
        return self.length

    def generator(self, index: int) -> torch.Generator:
        """The generator of item ``index``: a function of ``(seed, index)`` only."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + index) % (2**63))

    def draw_kernel(self, type_index: int, g: torch.Generator
                    ) -> tuple[dict[str, float], torch.Tensor, int]:
        """``(params, kernel (S, S), margin)`` of an item of type ``types[type_index]``, drawn
        from ``g``; the margin is the window's border the blur reaches. Subclasses that draw
        other kernels (camera shake) override this."""
        from fastdeblur import psf as psf_models

        blur_type = self.types[type_index]
        params = sample_params(blur_type, g, self.ranges)
        kernel = psf_models.from_params(blur_type, params, dtype=torch.float32)
        return params, kernel, kernel_radius(blur_type, params)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        g = self.generator(index)
        if self.balanced:
            type_index = index % len(self.types)
        else:
            type_index = int(torch.randint(len(self.types), (), generator=g))
        params, kernel, margin = self.draw_kernel(type_index, g)
        lo, hi = self.noise_sigma
        noise = lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()
        P = self.patch_size
        crop = draw_window(self.images, P, margin, g, self.min_gradient_energy, tries=20)
        blurred = convolve(crop.unsqueeze(0), kernel, boundary="reflect")[0]
        sharp = crop[:, margin : margin + P, margin : margin + P].clone()
        blurred = blurred[:, margin : margin + P, margin : margin + P]
        if noise > 0:
            blurred = blurred + noise * torch.randn(blurred.shape, generator=g)
        return {
            "sharp": sharp,
            "blurred": blurred.contiguous(),
            "blur_type": type_index,
            "params": params,
            "noise_sigma": noise,
        }


def collate_patches(batch: Sequence[dict]) -> dict:
    """``DataLoader`` collate function for :class:`BlurPatchDataset` items.

    Patches and types are stacked; ``params`` stays a list of dicts, since each blur type
    has its own parameters.

    Returns:
        ``{"sharp": (B, C, P, P), "blurred": (B, C, P, P), "blur_type": (B,) long,
        "params": list of B dicts, "noise_sigma": (B,) float64}``.
    """
    return {
        "sharp": torch.stack([b["sharp"] for b in batch]),
        "blurred": torch.stack([b["blurred"] for b in batch]),
        "blur_type": torch.tensor([b["blur_type"] for b in batch], dtype=torch.long),
        "params": [b["params"] for b in batch],
        "noise_sigma": torch.tensor([b["noise_sigma"] for b in batch], dtype=torch.float64),
    }

"""Synthetic ``(blurred, sharp)`` training pairs for learned deblurring (NAFNet).

:class:`DeblurPairDataset` crops ``P × P`` RGB patches from sharp photographs and blurs each with
one of five blur families, then adds white Gaussian noise. Item ``i`` is drawn entirely from a
generator seeded with ``(seed, i)``: the same seed gives the same pairs in any order, in any
``DataLoader`` worker, on any machine.

=====================  ==========================================================================
family                 blur
=====================  ==========================================================================
``gaussian``           :func:`fastdeblur.psf.gaussian`, ``sigma`` 0.5 – 5 px (isotropic)
``motion``             :func:`fastdeblur.psf.motion`, ``length`` 3 – 31 px, ``angle`` 0 – 180°
``defocus``            :func:`fastdeblur.psf.defocus`, ``radius`` 1 – 10 px
``camera_shake``       :func:`fastdeblur.psf.camera_shake`, kernel side drawn from 9 – 31 (odd)
``spatially_varying``  a built-in field of :mod:`fastdeblur.fields` (rotation, zoom, defocus
                       gradient, smooth motion field; strength 5 – 25 px, 4 × 4 grid) applied by
                       product convolution (:func:`fastdeblur.ops.pc_conv.pc_conv`)
=====================  ==========================================================================

The parametric ranges are :data:`fastdeblur.synth.DEFAULT_RANGES`. Noise: standard deviation
drawn uniformly from ``noise_sigma`` (default 0 – 0.02, image units in [0, 1]) and added after the
blur; blurred patches are clipped to [0, 1] like an 8-bit photo (``clip=True``).

Every blur is computed on a window larger than the patch by the kernel's radius and the patch is
cut from its centre, so the pair has no boundary effect. Patches get a random flip and a random
multiple of 90° rotation before blurring (the blur is drawn independently, so this only enlarges
the set of sharp patches). Gray source images are replicated to three channels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from fastdeblur import psf as psf_models
from fastdeblur.convolution import convolve
from fastdeblur.synth import (
    DEFAULT_RANGES,
    draw_window,
    kernel_radius,
    load_images,
    sample_params,
)

__all__ = ["BLUR_FAMILIES", "DeblurPairDataset", "DeconvolvedPairDataset", "load_rgb_images"]

BLUR_FAMILIES: tuple[str, ...] = (
    "gaussian",
    "motion",
    "defocus",
    "camera_shake",
    "spatially_varying",
)

SHAKE_SIZES: tuple[int, int] = (9, 31)
FIELD_STRENGTH: tuple[float, float] = (5.0, 25.0)
FIELD_GRID = 4


def load_rgb_images(
    sources: Sequence[str | Path | None] | str | Path | None = None, *, min_size: int = 64
) -> list[torch.Tensor]:
    """Load sharp images from folders (``None``: the ``skimage.data`` photos) as RGB.

    Args:
        sources: A folder, ``None``, or a list of folders / ``None`` entries.
        min_size: Skip images whose shorter side is below this.

    Returns:
        ``(3, H, W)`` float32 tensors in [0, 1], gray images replicated to three channels.
    """
    if sources is None or isinstance(sources, str | Path):
        sources = [sources]
    images: list[torch.Tensor] = []
    for source in sources:
        for image in load_images(source, gray=False, min_size=min_size):
            images.append(image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image)
    return images


def noise_range(noise_sigma: float | Sequence[float]) -> tuple[float, ...]:
    """A noise level or a ``(low, high)`` range as a tuple of floats (a level ``s`` is the
    range ``(s, s)``); not checked."""
    if isinstance(noise_sigma, int | float):
        return (float(noise_sigma), float(noise_sigma))
    return tuple(float(v) for v in noise_sigma)


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g, dtype=torch.float64).item()


class DeblurPairDataset(torch.utils.data.Dataset):
    """Pairs of sharp RGB patches and their blurred, noisy versions.

    Item ``i`` is ``{"blurred": (3, P, P), "sharp": (3, P, P), "family": int}`` (``family``
    indexes ``families``). With ``balanced`` (default) item ``i`` has family
    ``families[i % len(families)]``; otherwise families are drawn with ``weights``.

    Args:
        images: Sharp images ``(C, H, W)`` in [0, 1] (C = 1 or 3), a folder, or ``None`` for the
            ``skimage.data`` photos.
        patch_size: Side ``P`` of the square patches (>= 8).
        length: Number of items.
        families: Blur families to draw from (subset of :data:`BLUR_FAMILIES`).
        weights: Relative frequency of each family when ``balanced=False``.
        noise_sigma: A noise level or a ``(low, high)`` range drawn uniformly.
        seed: Same seed, same pairs.
        balanced: Cycle through the families instead of drawing them.
        clip: Clip blurred patches to [0, 1].
        augment: Random flips and 90° rotations of the sharp window.
        min_gradient_energy: Redraw the location (up to 10 times) while the sharp patch's
            :func:`fastdeblur.synth.gradient_energy` is below this (skips flat sky).
        shake_speed_variation: Camera-shake kernels get a ``speed_variation`` drawn uniformly
            in ``[0, shake_speed_variation]`` (:func:`fastdeblur.psf.camera_shake`: dwell
            points like recorded shake); 0 (default) keeps constant speed and the same pairs.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor] | str | Path | None = None,
        *,
        patch_size: int = 128,
        length: int = 10_000,
        families: Sequence[str] = BLUR_FAMILIES,
        weights: Sequence[float] | None = None,
        noise_sigma: float | tuple[float, float] = (0.0, 0.02),
        seed: int = 0,
        balanced: bool = True,
        clip: bool = True,
        augment: bool = True,
        min_gradient_energy: float = 1e-4,
        shake_speed_variation: float = 0.0,
    ) -> None:
        if images is None or isinstance(images, str | Path):
            images = load_rgb_images(images)
        self.images = [im.expand(3, -1, -1).contiguous() if im.shape[0] == 1 else im
                       for im in images]
        if not self.images:
            raise ValueError("images: no usable image")
        for im in self.images:
            if im.ndim != 3 or im.shape[0] != 3:
                raise ValueError(f"images must be (1 or 3, H, W); got {tuple(im.shape)}")
        if patch_size < 8:
            raise ValueError(f"patch_size must be >= 8; got {patch_size}")
        if length < 1:
            raise ValueError(f"length must be >= 1; got {length}")
        unknown = [f for f in families if f not in BLUR_FAMILIES]
        if unknown or not families:
            raise ValueError(f"families must be a non-empty subset of {', '.join(BLUR_FAMILIES)}; "
                             f"got {list(families)}")
        if weights is not None and (len(weights) != len(families) or min(weights) < 0
                                    or sum(weights) <= 0):
            raise ValueError("weights must give one non-negative number per family, not all 0")
        noise_sigma = noise_range(noise_sigma)
        if not 0 <= noise_sigma[0] <= noise_sigma[1]:
            raise ValueError(f"noise_sigma must be >= 0 (low <= high); got {noise_sigma}")
        if not (math.isfinite(shake_speed_variation) and shake_speed_variation >= 0):
            raise ValueError(f"shake_speed_variation must be >= 0; got {shake_speed_variation}")
        self.shake_speed_variation = float(shake_speed_variation)
        self.patch_size = patch_size
        self.length = length
        self.families = tuple(families)
        self.weights = torch.tensor(weights if weights is not None else [1.0] * len(families),
                                    dtype=torch.float64)
        self.noise_sigma = noise_sigma
        self.seed = seed
        self.balanced = balanced
        self.clip = clip
        self.augment = augment
        self.min_gradient_energy = min_gradient_energy

    def __len__(self) -> int:
        return self.length

    def generator(self, index: int) -> torch.Generator:
        """The generator of item ``index``: a function of ``(seed, index)`` only."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + index * 7_919 + 17) % 2**63)

    def _draw_blur(self, family: str, g: torch.Generator) -> tuple[str, object, int]:
        """``(kind, kernel or field, margin)``: kind is ``"kernel"`` or ``"field"``."""
        if family in DEFAULT_RANGES:
            params = sample_params(family, g, DEFAULT_RANGES)
            kernel = psf_models.from_params(family, params, dtype=torch.float32)
            margin = max(kernel_radius(family, params), max(kernel.shape) // 2 + 1)
            return "kernel", kernel, margin
        if family == "camera_shake":
            low, high = SHAKE_SIZES
            size = 2 * int(torch.randint(low // 2, high // 2 + 1, (), generator=g)) + 1
            # a varying speed only when asked: the pairs of the default draw nothing more
            speed = (_uniform(g, 0.0, self.shake_speed_variation)
                     if self.shake_speed_variation > 0 else 0.0)
            kernel = psf_models.camera_shake(size, generator=g, speed_variation=speed,
                                             dtype=torch.float32)
            return "kernel", kernel, size // 2 + 1
        from fastdeblur.fields import FIELD_TYPES

        name = FIELD_TYPES[int(torch.randint(len(FIELD_TYPES), (), generator=g))]
        strength = _uniform(g, *FIELD_STRENGTH)
        field_seed = int(torch.randint(2**31 - 1, (), generator=g))
        return "field", (name, strength, field_seed), math.ceil(strength / 2) + 3

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        g = self.generator(index)
        if self.balanced:
            family_index = index % len(self.families)
        else:
            family_index = int(torch.multinomial(self.weights, 1, generator=g))
        family = self.families[family_index]
        kind, blur, margin = self._draw_blur(family, g)
        noise = _uniform(g, *self.noise_sigma)
        P = self.patch_size
        window = P + 2 * margin
        crop = draw_window(self.images, P, margin, g, self.min_gradient_energy, tries=10)
        if self.augment:
            flips = torch.randint(2, (2,), generator=g).tolist()
            turns = int(torch.randint(4, (), generator=g))
            if flips[0]:
                crop = crop.flip(-1)
            if flips[1]:
                crop = crop.flip(-2)
            crop = torch.rot90(crop, turns, dims=(-2, -1))
        crop = crop.unsqueeze(0).contiguous()
        if kind == "kernel":
            blurred = convolve(crop, blur, boundary="reflect")
        else:
            from fastdeblur.fields import make_field
            from fastdeblur.ops.pc_conv import pc_conv

            name, strength, field_seed = blur
            field = make_field(name, window, window, seed=field_seed, strength=strength,
                               grid=FIELD_GRID)
            blurred = pc_conv(crop, field, "reflect")
        sharp = crop[0, :, margin : margin + P, margin : margin + P].contiguous()
        blurred = blurred[0, :, margin : margin + P, margin : margin + P]
        if noise > 0:
            blurred = blurred + noise * torch.randn(blurred.shape, generator=g)
        if self.clip:
            blurred = blurred.clamp(0, 1)
        return {"blurred": blurred.contiguous(), "sharp": sharp, "family": family_index}


class DeconvolvedPairDataset(torch.utils.data.Dataset):
    """Pairs whose input is the classical blind deblurring of a synthetic blurred patch.

    The training data of a kernel-guided NAFNet (``fastdeblur train nafnet --input deconvolved``;
    no such weights ship, see ``docs/nafnet.md``): item ``i`` of
    ``pairs`` (a :class:`DeblurPairDataset`) is deblurred by the classical blind pipeline
    (:func:`fastdeblur.restore.pipeline.deblur_with_details`, ``method="auto"``: blur estimate,
    kernel, hyper-Laplacian deconvolution), and the network learns to turn that result, seen
    beside the blurred patch, into the sharp patch. Items whose classical attempt falls back to
    the blind NAFNet (no kernel fits) are not used: item ``i`` then takes the pair ``i + n``,
    ``i + 2n``, ... (``n = length``) of ``pairs``, so ``pairs`` should hold a few times
    ``length`` items.

    The classical pass takes about a second per 192-px patch, so items are cached on disk
    (``cache_dir/<i>.pt``, written atomically): processes filling disjoint index ranges
    (:meth:`fill`) share one cache, and a resumed run reads it back.

    Item ``i`` is ``{"blurred": (6, P, P), "sharp": (3, P, P), "family": int}``: the network
    input ``blurred`` holds the classical result (clamped to [0, 1]) and then the blurred patch;
    with ``crop`` it is a random ``crop × crop`` window of that pair with a random flip and
    transposition, drawn from ``(seed, epoch, i)`` (call :meth:`set_epoch` for new windows).

    Args:
        pairs: The synthetic pairs.
        length: Items of this dataset.
        cache_dir: Folder of the cached items.
        crop: Side of a random window (default: the whole patch).
        seed: Seed of the windows.
    """

    def __init__(self, pairs: DeblurPairDataset, length: int, cache_dir: str | Path,
                 crop: int | None = None, seed: int = 0) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1; got {length}")
        if crop is not None and not 8 <= crop <= pairs.patch_size:
            raise ValueError(f"crop must be in [8, {pairs.patch_size}]; got {crop}")
        self.pairs = pairs
        self.length = length
        self.cache_dir = Path(cache_dir)
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self.families = pairs.families

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw the windows of ``epoch`` from now on."""
        self.epoch = epoch

    def _path(self, index: int) -> Path:
        return self.cache_dir / f"{index:06d}.pt"

    def deconvolved(self, index: int) -> dict:
        """Item ``index`` before windowing (computed, or read back from the cache):
        ``{"classical", "blurred", "sharp": (3, P, P), "family", "source": int tensors}``."""
        from fastdeblur.restore.pipeline import deblur_with_details

        if not 0 <= index < self.length:
            raise IndexError(index)
        path = self._path(index)
        if path.is_file():
            item = torch.load(path, weights_only=True)
            return {k: v.float() if v.is_floating_point() else v for k, v in item.items()}
        for source in range(index, len(self.pairs), self.length):
            pair = self.pairs[source]
            result = deblur_with_details(pair["blurred"], method="auto")
            if result.method != "nafnet":
                break
        else:
            raise ValueError(f"item {index}: no pair of {len(self.pairs)} that a kernel fits; "
                             "give more pairs")
        item = {"classical": result.image.float().clamp(0, 1), "blurred": pair["blurred"],
                "sharp": pair["sharp"], "family": torch.tensor(pair["family"]),
                "source": torch.tensor(source)}
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        # half precision halves the cache; its step (< 5e-4 on [0, 1]) is below 8-bit's
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in item.items()},
                   partial)
        partial.replace(path)
        return item

    def fill(self, start: int = 0, stop: int | None = None, progress: bool = False) -> None:
        """Compute and cache items ``start .. stop - 1`` (those not cached yet)."""
        from fastdeblur._progress import progress_bar

        stop = self.length if stop is None else min(stop, self.length)
        todo = [i for i in range(start, stop) if not self._path(i).is_file()]
        bar = progress_bar()
        with bar if progress else contextlib.nullcontext():
            task = bar.add_task("classical deblurring", total=len(todo))
            for i in todo:
                self.deconvolved(i)
                bar.advance(task)

    def __getitem__(self, index: int) -> dict:
        item = self.deconvolved(index)
        # input (classical result, blurred patch) and target, windowed together
        stack = torch.cat([item["classical"], item["blurred"], item["sharp"]])
        if self.crop is not None:
            g = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch * 65_537 + index * 7_919 + 23) % 2**63)
            P, c = stack.shape[-1], self.crop
            y0, x0 = (int(v) for v in torch.randint(P - c + 1, (2,), generator=g))
            flip, transpose = (bool(v) for v in torch.randint(2, (2,), generator=g))
            stack = stack[:, y0 : y0 + c, x0 : x0 + c]
            stack = stack.flip(-1) if flip else stack
            stack = stack.transpose(-2, -1) if transpose else stack
        return {"blurred": stack[:6].contiguous(), "sharp": stack[6:].contiguous(),
                "family": int(item["family"])}

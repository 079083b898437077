"""``fastdeblur.deblur``: remove a known or estimated blur from an image.

What ``method="auto"`` does (chosen by measurement, ``bench/eval_deblur.py``):

- With a kernel: hyper-Laplacian deconvolution (α = 2/3, first and second differences,
  λ from the estimated noise; defaults chosen on other photos, ``bench/tune_deconvolution.py``).
  On the 32 Levin images with the true kernel (``bench/eval_deblur.py``, periodic border as
  these images were blurred) it beats every scikit-image method (``wiener`` with the best
  ``balance`` chosen in hindsight, ``richardson_lucy``, ``unsupervised_wiener``) on every
  image: 43.5 dB mean noise-free (skimage's best, ``wiener``: 41.4), at least +1.4 dB on each
  image; 33.2 dB at σ = 0.01 (``wiener``: 31.9), at least +0.7 dB on each image.
  A kernel *field* (a grid of kernels) gets the spatially-varying hyper-Laplacian solver.
- Without a kernel: the blur is estimated (``fastdeblur.estimate``) and deconvolved the same
  way: one kernel when the blur map agrees across the image, a grid of kernels when it does not.

The noise level is estimated from the image unless given; large images are processed in
overlapping tiles (:func:`fastdeblur.restore.tiling.tiled`) when ``tile`` is set or the image
exceeds :data:`AUTO_TILE_PIXELS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fastdeblur.convolution import _from_tensor, _to_tensor
from fastdeblur.restore import uniform, varying
from fastdeblur.restore.tiling import tiled

METHODS: tuple[str, ...] = ("auto", "wiener", "rl", "hyperlaplacian", "nafnet")
# Uniform-kernel images above this many pixels are tiled by default (bounded memory).
AUTO_TILE_PIXELS = 4096 * 4096
AUTO_TILE = 2048


@dataclass
class DeblurResult:
    """What :func:`deblur_with_details` did.

    Attributes:
        image: The restored image, in the form the input was given.
        method: The method that ran (``auto`` resolved).
        kernel: The kernel used: ``(kh, kw)``, or a grid ``(gh, gw, kh, kw)``.
        estimate: The blur estimate when the blur was estimated, else None.
        noise_sigma: The noise level used, per image.
    """

    image: torch.Tensor | np.ndarray
    method: str
    kernel: torch.Tensor
    estimate: Any = None
    noise_sigma: torch.Tensor | None = None
    details: dict = field(default_factory=dict)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return device


def _as_kernel(kernel: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, torch.Tensor) else kernel)
    if k.ndim not in (2, 4):
        raise ValueError(
            "kernel must be one kernel (kh, kw) or a grid of kernels (gh, gw, kh, kw); "
            f"got shape {tuple(k.shape)}"
        )
    if not k.is_floating_point():
        k = k.double()
    if not bool(torch.isfinite(k).all()):
        raise ValueError("kernel contains NaN or infinite values")
    if bool((k.sum(dim=(-2, -1)) <= 0).any()):
        raise ValueError("kernel must have a positive sum")
    return k.to(device=device, dtype=torch.float32)


def estimation_available() -> bool:
    """Whether blind blur estimation (``fastdeblur.estimate.estimate``) is installed."""
    try:
        from fastdeblur.estimate import estimate  # noqa: F401
    except ImportError:
        return False
    return True


def _estimate_kernel(x: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Estimate the blur of a ``(1, C, H, W)`` image: a kernel or a grid of kernels."""
    try:
        from fastdeblur.estimate import estimate
    except ImportError as exc:
        raise RuntimeError(
            "deblurring without a kernel needs blur estimation (fastdeblur.estimate), which "
            "is not available in this installation; pass kernel=... (or --kernel FILE)"
        ) from exc
    est = estimate(x[0].cpu())
    return kernel_from_estimate(est), est


# The blur map "agrees" when this share of the textured patches has the image's blur type
# and their main parameter varies by less than MAP_AGREE_SPREAD (interquartile range over
# median); otherwise a MAP_GRID grid of kernels is built from the patches in each cell.
# Provisional thresholds, to be set by the blind benchmark in bench/eval_deblur.py.
MAP_AGREE_SHARE = 0.8
MAP_AGREE_SPREAD = 0.25
MAP_GRID = (3, 3)
_MAIN_PARAM = {"gaussian": "sigma", "motion": "length", "defocus": "radius"}
_TYPES = ("gaussian", "motion", "defocus")


def _centre_pad(k: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    top, left = (kh - k.shape[0]) // 2, (kw - k.shape[1]) // 2
    return torch.nn.functional.pad(k, (left, kw - k.shape[1] - left, top, kh - k.shape[0] - top))


def kernel_from_estimate(est: Any) -> torch.Tensor:
    """One kernel ``(kh, kw)`` when the blur map agrees across the image, else a grid of
    kernels ``(gh, gw, kh, kw)`` (product-convolution model), from a ``BlurEstimate``."""
    from fastdeblur import psf

    overall = psf.from_params(est.blur_type, est.params, dtype=torch.float64)
    blur_map = getattr(est, "map", None)
    if blur_map is None or not hasattr(blur_map, "blur_type"):
        return overall
    types = torch.as_tensor(blur_map.blur_type)
    textured = torch.as_tensor(blur_map.textured).bool() & (types >= 0)
    if int(textured.sum()) < 4:
        return overall
    same = types[textured] == _TYPES.index(est.blur_type)
    main = torch.as_tensor(blur_map.params[_MAIN_PARAM[est.blur_type]])[textured][same]
    main = main[torch.isfinite(main)].double()
    if float(same.double().mean()) >= MAP_AGREE_SHARE and main.numel() >= 2:
        q1, q2, q3 = torch.quantile(main, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        if float(q3 - q1) <= MAP_AGREE_SPREAD * max(float(q2), 1e-6):
            return overall
    H, W = blur_map.image_size
    gh, gw = MAP_GRID
    centres = torch.as_tensor(blur_map.corners).double() + blur_map.patch_size / 2
    cell_r = (centres[:, 0] * gh / H).long().clamp(0, gh - 1)
    cell_c = (centres[:, 1] * gw / W).long().clamp(0, gw - 1)
    kernels = []
    for a in range(gh):
        for b in range(gw):
            sel = textured & (cell_r == a) & (cell_c == b)
            kernel = overall
            if int(sel.sum()) > 0:
                kind = int(torch.mode(types[sel]).values)
                name = _TYPES[kind]
                mine = sel & (types == kind)
                params = {}
                for key in {"gaussian": ("sigma",), "motion": ("length", "angle"),
                            "defocus": ("radius",)}[name]:
                    values = torch.as_tensor(blur_map.params[key])[mine].double()
                    values = values[torch.isfinite(values)]
                    params[key] = float(values.median()) if values.numel() else None
                if all(v is not None for v in params.values()):
                    kernel = psf.from_params(name, params, dtype=torch.float64)
            kernels.append(kernel)
    kh = max(k.shape[0] for k in kernels)
    kw = max(k.shape[1] for k in kernels)
    grid = torch.stack([_centre_pad(k, kh, kw) for k in kernels])
    return grid.reshape(gh, gw, kh, kw)


def _deconvolve_uniform(y: torch.Tensor, k: torch.Tensor, method: str,
                        noise_sigma: torch.Tensor) -> torch.Tensor:
    if method == "wiener":
        return uniform.wiener(y, k, noise_sigma=noise_sigma)
    if method == "rl":
        return uniform.richardson_lucy(y, k, noise_sigma=noise_sigma)
    return uniform.hyper_laplacian(y, k, noise_sigma=noise_sigma)


def _deconvolve_field(y: torch.Tensor, grid: torch.Tensor, method: str,
                      noise_sigma: torch.Tensor) -> torch.Tensor:
    if method == "wiener":
        return varying.wiener_sv(y, grid, noise_sigma=noise_sigma)
    if method == "rl":
        return varying.richardson_lucy_sv(y, grid)
    return varying.hyper_laplacian_sv(y, grid, noise_sigma=noise_sigma)


def deblur_with_details(
    image: torch.Tensor | np.ndarray,
    method: str = "auto",
    kernel: torch.Tensor | np.ndarray | None = None,
    device: str | torch.device | None = None,
    *,
    noise_sigma: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    progress: Any = None,
) -> DeblurResult:
    """:func:`deblur`, also returning the kernel, the estimate and the noise level used.

    Args: as :func:`deblur`; ``progress(done, total)`` is called after each tile.

    Returns:
        A :class:`DeblurResult`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if tile is not None and tile < 16:
        raise ValueError(f"tile must be at least 16 pixels; got {tile}")
    dev = resolve_device(device)
    x, info = _to_tensor(image)
    if x.shape[0] != 1:
        raise ValueError(f"deblur takes one image (C, H, W); got a batch of {x.shape[0]}")
    y = x.to(device=dev, dtype=torch.float32)
    estimate_result = None
    if method == "nafnet":
        # Learned blind deblurring: no kernel is estimated or used.
        from fastdeblur.models.pretrained import nafnet_deblur

        if kernel is not None:
            raise ValueError("method 'nafnet' is blind: it takes no kernel")
        out = nafnet_deblur(y, tile=tile or 512, device=dev).clamp(0, 1)
        out = out.to(x.dtype if x.is_floating_point() else torch.float32)
        if info["kind"] == "tensor":
            out = out.to(x.device)
        if progress is not None:
            progress(1, 1)
        return DeblurResult(
            image=_from_tensor(out, info),
            method="nafnet",
            kernel=torch.empty(0),
            estimate=None,
            noise_sigma=torch.empty(0),
        )
    if kernel is None:
        k, estimate_result = _estimate_kernel(y)
        k = _as_kernel(k, dev)
    else:
        k = _as_kernel(kernel, dev)
    chosen = "hyperlaplacian" if method == "auto" else method
    sigma = uniform.noise_level(y, noise_sigma)
    H, W = y.shape[-2:]
    if k.ndim == 4:
        out = _deconvolve_field(y, k, chosen, sigma)
    else:
        kh, kw = k.shape
        if tile is None and H * W > AUTO_TILE_PIXELS:
            tile = AUTO_TILE
        if tile is not None and (tile < H or tile < W):
            reach = max(kh, kw)
            ov = overlap if overlap is not None else min(max(4 * reach, 64), tile // 2)
            out = tiled(lambda t: _deconvolve_uniform(t, k, chosen, sigma), y, tile, ov,
                        progress=progress)
        else:
            out = _deconvolve_uniform(y, k, chosen, sigma)
            if progress is not None:
                progress(1, 1)
    out = out.clamp(0, 1).to(x.dtype if x.is_floating_point() else torch.float32)
    if info["kind"] == "tensor":
        out = out.to(x.device)
    return DeblurResult(
        image=_from_tensor(out, info),
        method=chosen,
        kernel=k.cpu(),
        estimate=estimate_result,
        noise_sigma=sigma.flatten().cpu(),
    )


def deblur(
    image: torch.Tensor | np.ndarray,
    method: str = "auto",
    kernel: torch.Tensor | np.ndarray | None = None,
    device: str | torch.device | None = None,
    *,
    noise_sigma: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
) -> torch.Tensor | np.ndarray:
    """Remove blur from an image.

    Args:
        image: Tensor ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1], or a numpy ``HW``/``HWC``
            array (uint8, uint16 or float); gray or colour.
        method: ``auto`` (see the module docstring), ``wiener``, ``rl`` (Richardson–Lucy),
            ``hyperlaplacian``, or ``nafnet`` (the shipped learned deblurrer; blind, no kernel).
        kernel: The blur: one kernel ``(kh, kw)`` (normalised to sum 1), or a grid of kernels
            ``(gh, gw, kh, kw)`` for a spatially-varying blur (product-convolution model).
            Estimated from the image when None.
        device: ``cpu``, ``cuda``, or None/``auto`` (CUDA when available).
        noise_sigma: Noise standard deviation in [0, 1] units; estimated when None.
        tile: Process a uniform-kernel image in tiles of this size (bounded memory); by
            default only images over :data:`AUTO_TILE_PIXELS` pixels are tiled.
        overlap: Overlap of the tiles; default four kernel sizes (at least 64 px).

    Returns:
        The restored image in the form it was given (tensor: same shape, dtype and device;
        numpy: same shape and dtype), values in [0, 1].
    """
    return deblur_with_details(image, method, kernel, device, noise_sigma=noise_sigma,
                               tile=tile, overlap=overlap).image

"""Uniform (shift-invariant) blur: boundary padding and true 2-D convolution.

Everything here is plain PyTorch and differentiable. :func:`blur` is the public entry point
(re-exported as ``fastdeblur.blur``); :func:`convolve` is the tensor-only core that picks a
direct or an FFT path; :func:`pad` and :func:`boundary_index` define the boundary modes that
every op of the library follows (the native kernels reproduce :func:`boundary_index`).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Boundary = Literal["reflect", "zero", "replicate", "circular"]
BOUNDARIES: tuple[str, ...] = ("reflect", "zero", "replicate", "circular")

# Kernel area (taps) above which the FFT path is faster than the direct one. Measured on a
# 2-core x86-64 CPU with bench/bench_convolution.py (3x512x512 and 3x1024x1024, fp32): on the
# loaded machine the two paths crossed between 13x13 and 21x21 taps; idle (2026-12-06), they
# are within 2-9 % of each other at 13x13 and the FFT is 1.4-1.6x faster at 15x15; the FFT cost
# barely depends on the kernel.
FFT_MIN_TAPS = 15 * 15


def check_boundary(boundary: str) -> str:
    """Validate a boundary mode name.

    Args:
        boundary: One of ``reflect``, ``zero``, ``replicate``, ``circular``.

    Returns:
        The same name.

    Raises:
        ValueError: For any other value.
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}; got {boundary!r}")
    return boundary


def boundary_index(index: torch.Tensor, size: int, boundary: str) -> torch.Tensor:
    """Map (possibly out-of-range) indices along an axis of length ``size`` into it.

    ``reflect`` mirrors about the edge samples without repeating them (``d c b | a b c d | c b a``,
    numpy's and torch's ``reflect``) and keeps mirroring for indices further out, so any padding
    width works; ``replicate`` clamps; ``circular`` wraps. ``zero`` returns ``-1`` for outside
    indices (the caller masks them).

    Args:
        index: Integer tensor of any shape.
        size: Length of the axis (>= 1).
        boundary: Boundary mode.

    Returns:
        Integer tensor like ``index`` with values in ``[0, size)`` (or ``-1`` for ``zero``).
    """
    if boundary == "reflect":
        if size == 1:
            return torch.zeros_like(index)
        period = 2 * (size - 1)
        folded = torch.remainder(index, period)
        return torch.where(folded >= size, period - folded, folded)
    if boundary == "replicate":
        return index.clamp(0, size - 1)
    if boundary == "circular":
        return torch.remainder(index, size)
    if boundary == "zero":
        return torch.where((index >= 0) & (index < size), index, torch.full_like(index, -1))
    raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}; got {boundary!r}")


def pad(
    x: torch.Tensor, widths: tuple[int, int, int, int], boundary: str = "reflect"
) -> torch.Tensor:
    """Pad the last two axes with a boundary mode; any width, even wider than the image.

    Args:
        x: Tensor ``(..., H, W)``.
        widths: ``(top, bottom, left, right)``, each >= 0.
        boundary: ``reflect`` | ``zero`` | ``replicate`` | ``circular``.

    Returns:
        Tensor ``(..., H + top + bottom, W + left + right)``.
    """
    check_boundary(boundary)
    top, bottom, left, right = widths
    if min(widths) < 0:
        raise ValueError(f"pad widths must be >= 0; got {widths}")
    if boundary == "zero":
        return F.pad(x, (left, right, top, bottom))
    H, W = x.shape[-2:]
    if H == 0 or W == 0:
        raise ValueError(f"cannot pad an empty image of size {H}x{W} with boundary {boundary!r}")
    rows = boundary_index(torch.arange(-top, H + bottom, device=x.device), H, boundary)
    cols = boundary_index(torch.arange(-left, W + right, device=x.device), W, boundary)
    return x.index_select(-2, rows).index_select(-1, cols)


def _fast_fft_size(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast for pocketfft/cuFFT)."""
    best = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _as_kernels(psf: torch.Tensor, batch: int) -> torch.Tensor:
    """``(kh, kw)`` or ``(B, kh, kw)`` -> ``(B or 1, kh, kw)``, validated."""
    if psf.ndim == 2:
        psf = psf.unsqueeze(0)
    if psf.ndim != 3 or psf.shape[0] not in (1, batch):
        raise ValueError(
            f"psf must be (kh, kw) or (B, kh, kw) with B = {batch}; got shape {tuple(psf.shape)}"
        )
    if psf.shape[-1] == 0 or psf.shape[-2] == 0:
        raise ValueError(f"psf must not be empty; got shape {tuple(psf.shape)}")
    return psf


def convolve(
    x: torch.Tensor,
    psf: torch.Tensor,
    boundary: str = "reflect",
    method: Literal["auto", "direct", "fft"] = "auto",
) -> torch.Tensor:
    """True 2-D convolution ``y[i, j] = Σ_{u,v} k[u, v] · x[i − u + cy, j − v + cx]``.

    The kernel is centred at ``(cy, cx) = (kh // 2, kw // 2)``, so an odd kernel that is
    symmetric about its centre does not shift the image. Differentiable in ``x`` and ``psf``.

    Args:
        x: Images ``(B, C, H, W)`` (float).
        psf: One kernel ``(kh, kw)`` for the whole batch, or one per sample ``(B, kh, kw)``.
        boundary: ``reflect`` | ``zero`` | ``replicate`` | ``circular``.
        method: ``direct`` (``conv2d``), ``fft`` (``rfft2`` of the padded image), or ``auto``:
            FFT when the kernel has at least :data:`FFT_MIN_TAPS` taps.

    Returns:
        Blurred images ``(B, C, H, W)``, same dtype as ``x``.
    """
    check_boundary(boundary)
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W); got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    k = _as_kernels(psf, B).to(dtype=x.dtype, device=x.device)
    kh, kw = k.shape[-2:]
    cy, cx = kh // 2, kw // 2
    if method == "auto":
        method = "fft" if kh * kw >= FFT_MIN_TAPS else "direct"
    if method not in ("direct", "fft"):
        raise ValueError(f"method must be 'auto', 'direct' or 'fft'; got {method!r}")
    if B == 0 or C == 0 or H == 0 or W == 0:
        return x.clone()
    xp = pad(x, (kh - 1 - cy, cy, kw - 1 - cx, cx), boundary)
    if method == "direct":
        # Depthwise conv2d over all B*C planes in channels-last layout: several times faster
        # on the CPU than a batch of single-channel planes (bench/bench_convolution.py).
        weight = k.flip(-2, -1).unsqueeze(1)  # (Bk, 1, kh, kw); conv2d correlates
        weight = weight.expand(B, C, kh, kw).reshape(B * C, 1, kh, kw)
        planes = xp.reshape(1, B * C, *xp.shape[-2:])
        if x.device.type == "cpu":
            planes = planes.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(planes, weight, groups=B * C)
        return y.reshape(B, C, H, W).contiguous()
    # FFT: linear convolution of the padded image, cropped to the valid part.
    Hp, Wp = xp.shape[-2:]
    fh, fw = _fast_fft_size(Hp + kh - 1), _fast_fft_size(Wp + kw - 1)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    X = torch.fft.rfft2(xp.to(compute), s=(fh, fw))
    K = torch.fft.rfft2(k.to(compute), s=(fh, fw)).unsqueeze(1)  # (Bk, 1, fh, fw//2+1)
    full = torch.fft.irfft2(X * K, s=(fh, fw))
    return full[..., kh - 1 : kh - 1 + H, kw - 1 : kw - 1 + W].to(x.dtype)


def _to_tensor(image: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, dict]:
    """Any supported image -> float ``(B, C, H, W)`` plus what is needed to convert back."""
    if isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4):
            raise ValueError(
                f"image tensor must be (C, H, W) or (B, C, H, W); got {tuple(image.shape)}"
            )
        if not image.is_floating_point():
            raise ValueError(f"image tensor must be floating point in [0, 1]; got {image.dtype}")
        return (image if image.ndim == 4 else image.unsqueeze(0)), {
            "kind": "tensor",
            "ndim": image.ndim,
        }
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"image array must be HW or HWC; got shape {image.shape}")
        dtype = image.dtype
        if dtype == np.uint8:
            scale = 255.0
        elif dtype == np.uint16:
            scale = 65535.0
        elif np.issubdtype(dtype, np.floating):
            scale = 1.0
        else:
            raise ValueError(f"image array must be uint8, uint16 or float; got {dtype}")
        arr = image.astype(np.float64 if dtype == np.float64 else np.float32) / scale
        t = torch.from_numpy(np.ascontiguousarray(arr))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        return t.unsqueeze(0), {"kind": "numpy", "ndim": image.ndim, "dtype": dtype, "scale": scale}
    raise TypeError(f"image must be a torch.Tensor or a numpy array; got {type(image).__name__}")


def _from_tensor(y: torch.Tensor, info: dict) -> torch.Tensor | np.ndarray:
    if info["kind"] == "tensor":
        return y if info["ndim"] == 4 else y[0]
    arr = y[0].permute(1, 2, 0).detach().cpu().numpy()
    if info["ndim"] == 2:
        arr = arr[..., 0]
    if np.issubdtype(info["dtype"], np.integer):
        arr = np.clip(np.rint(arr * info["scale"]), 0, info["scale"])
    return arr.astype(info["dtype"])


def add_noise(
    x: torch.Tensor,
    sigma: float,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``sigma`` (image units, [0, 1] scale).

    Args:
        x: Any float tensor.
        sigma: Noise standard deviation (>= 0).
        seed: Seed for a fresh generator (same seed, same noise on any device).
        generator: A CPU generator to draw from instead of ``seed``.

    Returns:
        ``x + sigma * n`` with ``n ~ N(0, 1)``; not clipped.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"noise_sigma must be a finite number >= 0; got {sigma}")
    if sigma == 0:
        return x
    if generator is None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
    # Drawn on the CPU so a seed gives the same noise on every device.
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    return x + sigma * noise.to(device=x.device, dtype=x.dtype)


def blur(
    image: torch.Tensor | np.ndarray,
    psf: torch.Tensor | np.ndarray,
    boundary: str = "reflect",
    noise_sigma: float = 0.0,
    seed: int | None = None,
) -> torch.Tensor | np.ndarray:
    """Blur an image with a PSF (true convolution), then optionally add Gaussian noise.

    Direct convolution for small kernels, FFT for large ones (:data:`FFT_MIN_TAPS`); both
    agree to float rounding. Differentiable for tensor inputs.

    Args:
        image: Tensor ``(C, H, W)`` or ``(B, C, H, W)`` with values in [0, 1], or a numpy
            array ``HW``/``HWC`` of uint8, uint16 or float.
        psf: Kernel ``(kh, kw)`` (tensor or array), centred at ``(kh // 2, kw // 2)``; use
            :mod:`fastdeblur.psf` to make one. Not renormalised here.
        boundary: ``reflect`` (default) | ``zero`` | ``replicate`` | ``circular``.
        noise_sigma: Standard deviation of additive white Gaussian noise, in [0, 1] image units.
        seed: Seed of the noise (same seed, same noise).

    Returns:
        The blurred image in the form it was given: a tensor of the same shape and dtype
        (noise not clipped), or a numpy array of the same shape and dtype (clipped and
        rounded for integer types).
    """
    x, info = _to_tensor(image)
    k = torch.as_tensor(np.asarray(psf) if not isinstance(psf, torch.Tensor) else psf)
    if k.ndim != 2:
        raise ValueError(f"psf must be a 2-D kernel (kh, kw); got shape {tuple(k.shape)}")
    if not k.is_floating_point():
        k = k.double()
    if not bool(torch.isfinite(k).all()):
        raise ValueError("psf contains NaN or infinite values")
    y = convolve(x, k, boundary=boundary)
    y = add_noise(y, noise_sigma, seed=seed)
    return _from_tensor(y, info)

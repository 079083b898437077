"""Blind estimation of a free-form (camera-shake) blur kernel.

The parametric estimator (:mod:`fastdeblur.estimate`) describes a blur as a Gaussian, a
straight motion or a defocus disk. Camera shake follows a curved path with dwell points, which
none of them fits. :func:`estimate_kernel` recovers such a kernel from the blurred image alone,
by alternating minimisation, coarse to fine, under an L0 gradient prior — after Xu, Zheng & Jia
(CVPR 2013) and Pan et al. (CVPR 2014; their gradient term, without the intensity term meant
for text):

1. **Latent image** — ``min_x ‖k ∗ x − y‖² + λ ‖∇x‖₀`` by half-quadratic splitting (hard
   threshold of the gradients, then an FFT solve; the splitting weight grows ×3 from ``2λ``
   to ``1e5``). A large λ leaves only the salient step edges, which is what makes the kernel
   step well posed (fine texture and noise would pull the kernel towards a blob). The image
   is extended periodically to a size whose FFT is fast (2·3·5-smooth).
2. **Kernel** — ``min_k ‖∇x ∗ k − ∇y‖² + γ ‖k‖²`` over a ``size × size`` support, by conjugate
   gradients (the normal operator is a correlation with the latent gradients' autocorrelation;
   support constraint), using only the strongest latent gradients
   (at least ``20·size`` pixels in each of four direction bins, after Cho & Lee 2009; the
   threshold falls by 1.1 per iteration) and leaving out a border band where the periodic
   extension is not data. Then negative taps and taps below 5 % of the peak are cut, and the
   8-connected pieces of the support holding less than 10 % of the mass are removed.
3. **Coarse to fine** — the image and the kernel are scaled by √½ per level, down to a 5–7
   pixel kernel; the kernel starts as a two-tap horizontal blur and is upsampled (bilinear)
   from level to level, with 5 iterations per level at λ = 4·10⁻³ (divided by 1.1 per
   iteration).
4. **Refinement** — 24 more iterations at full resolution without gradient selection, λ from
   10⁻³ divided by 1.4 per iteration down to max(10⁻⁴, 4σn²). The large λ that makes the
   search robust also biases the kernel (the piecewise-flat latent image lacks the texture
   that ``∇y`` holds; the kernel comes out too wide). A small λ removes the bias but moves the
   kernel slowly: were the latent image the exact deconvolution, every kernel would be a fixed
   point, and the prior's pull is what drives it towards the truth. On 80 tuning cases (see
   below) 3 / 12 / 24 iterations at the floor gave 27.7 / 29.3 / 29.8 dB, and the decaying
   λ with the faster splitting 30.1.
5. The result is shifted (bilinear, sub-pixel) so that its centroid is the centre pixel: like
   :func:`fastdeblur.psf.camera_shake`, deblurring with it does not move the image.

Tuned on camera-shake kernels (:func:`fastdeblur.psf.camera_shake`, 9–31 px, speed variation
0.5) blurring 256-px grey crops of *training* photos (never the held-out ones nor Levin), σn 0
or 0.01, 8-bit, support 31 px: 80 cases (``bench/tune_kernel_estimation.py``,
hyper-Laplacian deconvolution, aligned PSNR): mean 30.1 dB against 36.1 with the true kernel,
error ratio ≤ 2 on 42 % (3 refinement iterations, the earlier setting: 27.7 dB, 24 %). On the
40 cases of ``bench/tune_shake_kernel.py`` (unaligned PSNR): 29.7 dB (30.0 with the noise
floor that ``auto`` deconvolves an estimated kernel with) against 26.0 for the input, 26.8
for blind ``auto`` with the parametric families and 34.8 with the true kernel; better than
that ``auto`` on 30 of the 40, worse than the input on 8 (mostly noisy images and
kernels much smaller than the support). About 1.8 s per 256² image on 2 cores. Blind ``auto``
tries it when the parametric estimate is not trusted and keeps it only when its deconvolution
passes the checks (:mod:`fastdeblur.restore.pipeline`); held-out results are in
``bench/results/deblur_blind.json``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fastdeblur.convolution import _fast_fft_size, _to_tensor
from fastdeblur.restore.uniform import otf

# Level-to-level scale of the coarse-to-fine pyramid and the kernel size at the coarsest level.
SCALE_RATIO = math.sqrt(0.5)
COARSEST_KERNEL = 5
# L0 weight of the coarse-to-fine search, its decay per iteration and its floor.
LAMBDA = 4e-3
LAMBDA_DECAY = 1.1
LAMBDA_MIN = 1e-4
# Refinement at full resolution: λ = max(LAMBDA_REFINE, REFINE_NOISE_FACTOR · σn²).
LAMBDA_REFINE = 1e-4
REFINE_NOISE_FACTOR = 4.0
ITERATIONS = 5
REFINE_ITERATIONS = 24
# The refinement's λ starts here and falls by REFINE_DECAY per iteration down to its floor: a
# larger λ moves the kernel faster (the fixed point of the alternation drifts towards the truth
# only as fast as the prior pulls the latent image), a smaller one biases it less.
REFINE_START = 1e-3
REFINE_DECAY = 1.4
# Tikhonov weight of the kernel step and its conjugate-gradient iterations.
KERNEL_WEIGHT = 2.0
CG_ITERATIONS = 20
# Kernel clean-up: taps below this share of the peak are cut; connected pieces below this
# share of the mass are removed.
TAP_FLOOR = 0.05
PIECE_FLOOR = 0.1
# Latent-gradient selection: at least this many pixels × the kernel size per direction bin.
EDGES_PER_BIN = 20
# The half-quadratic splitting of the latent step: weight from 2λ, × SPLIT_RATE, up to SPLIT_MAX.
SPLIT_RATE = 3.0
SPLIT_MAX = 1e5
# Images larger than this are estimated on their most textured window of this size: the size
# the method was tuned on, and the cost grows with the area (about 1.5 s at 256², 2 threads).
WINDOW = 256
DEFAULT_SIZE = 31


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Circular forward differences along columns and rows."""
    return torch.roll(x, -1, -1) - x, torch.roll(x, -1, -2) - x


def _grad_t(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_grad`."""
    return (torch.roll(gx, 1, -1) - gx) + (torch.roll(gy, 1, -2) - gy)


def _otf(k: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """:func:`fastdeblur.restore.uniform.otf` of one kernel ``(kh, kw)``: ``(FH, FW // 2 + 1)``."""
    return otf(k[None], shape)[0, 0]


def _psf(K: torch.Tensor, shape: tuple[int, int], size: int) -> torch.Tensor:
    """The ``size × size`` centre of the inverse transform of a half spectrum."""
    big = torch.fft.irfft2(K, s=shape)
    return torch.roll(big, (size // 2, size // 2), (0, 1))[:size, :size]


def periodic_extension(y: torch.Tensor, pad: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Extend ``y`` ``(H, W)`` so that it wraps around smoothly: by at least ``pad`` on each
    side, and up to a size with prime factors 2, 3 and 5 (whose FFTs are several times faster
    than, e.g., 318 = 2·3·53). The band blends linearly from each edge into the opposite one
    (rows, then columns).

    Returns:
        The extension ``(FH, FW)`` and where ``y`` starts in it ``(top, left)``.
    """
    starts = []
    for axis in (1, 0):
        n = y.shape[axis]
        extra = _fast_fft_size(n + 2 * pad) - n
        before = extra // 2
        t = torch.linspace(0, 1, extra + 2, dtype=y.dtype, device=y.device)[1:-1]
        if axis == 1:
            band = y[:, -1:] * (1 - t) + y[:, :1] * t
            y = torch.cat([band[:, extra - before:], y, band[:, :extra - before]], 1)
        else:
            band = y[-1:] * (1 - t[:, None]) + y[:1] * t[:, None]
            y = torch.cat([band[extra - before:], y, band[:extra - before]], 0)
        starts.append(before)
    return y, (starts[1], starts[0])


def l0_latent(y: torch.Tensor, K: torch.Tensor, lam: float) -> torch.Tensor:
    """``argmin_x ‖k ∗ x − y‖² + λ ‖∇x‖₀`` on the periodic domain of ``y`` ``(H, W)``, by
    half-quadratic splitting (Xu et al. 2011); ``K`` is the kernel's half spectrum."""
    shape = y.shape
    one = torch.ones(1, 1, dtype=y.dtype, device=y.device)
    Dx = _otf(torch.cat([-one, one], 1), shape)
    Dy = _otf(torch.cat([-one, one], 0), shape)
    # (the kernels above sit at offsets 0 and +1: _otf centres a 2-tap kernel on its first tap)
    grad_power = Dx.abs().square() + Dy.abs().square()
    data = K.conj() * torch.fft.rfft2(y)
    kernel_power = K.abs().square()
    x = y
    beta = 2 * lam
    while beta < SPLIT_MAX:
        gx, gy = _grad(x)
        keep = (gx * gx + gy * gy) >= lam / beta
        X = (data + beta * torch.fft.rfft2(_grad_t(gx * keep, gy * keep))) / (
            kernel_power + beta * grad_power)
        x = torch.fft.irfft2(X, s=shape)
        beta *= SPLIT_RATE
    return x


def _kernel_step(lx: torch.Tensor, ly: torch.Tensor, bx: torch.Tensor, by: torch.Tensor,
                 size: int, start: torch.Tensor) -> torch.Tensor:
    """``argmin_k ‖lx ∗ k − bx‖² + ‖ly ∗ k − by‖² + γ‖k‖²`` over a ``size²`` support (CG)."""
    shape = lx.shape
    Lx, Ly = torch.fft.rfft2(lx), torch.fft.rfft2(ly)
    rhs = _psf(Lx.conj() * torch.fft.rfft2(bx) + Ly.conj() * torch.fft.rfft2(by), shape, size)
    # The normal operator restricted to the support is a correlation with the gradients'
    # autocorrelation at lags up to ±(size − 1): one small convolution per CG step instead of
    # two image-sized FFTs.
    autocorrelation = _psf(Lx.abs().square() + Ly.abs().square(), shape, 2 * size - 1)

    def apply(k: torch.Tensor) -> torch.Tensor:
        return F.conv2d(autocorrelation[None, None], k.flip(0, 1)[None, None])[0, 0] + (
            KERNEL_WEIGHT * k)

    k = start.clone()
    r = rhs - apply(k)
    p = r.clone()
    rr = float((r * r).sum())
    for _ in range(CG_ITERATIONS):
        if rr < 1e-20:
            break
        Ap = apply(p)
        a = rr / max(float((p * Ap).sum()), 1e-30)
        k = k + a * p
        r = r - a * Ap
        rr_next = float((r * r).sum())
        p = r + (rr_next / rr) * p
        rr = rr_next
    return k


def _drop_small_pieces(k: torch.Tensor) -> torch.Tensor:
    """Remove the 8-connected pieces of the support of ``k`` holding less than
    :data:`PIECE_FLOOR` of its mass (isolated specks fitted to noise)."""
    size = k.shape[0]
    support = k > 0
    labels = torch.arange(1, size * size + 1, dtype=k.dtype, device=k.device).view(size, size)
    labels = labels * support
    while True:  # propagate the largest label through each piece
        grown = F.max_pool2d(labels[None, None], 3, 1, 1)[0, 0] * support
        if torch.equal(grown, labels):
            break
        labels = grown
    out = k.clone()
    total = float(k.sum())
    for label in labels.unique():
        if label == 0:
            continue
        piece = labels == label
        if float(k[piece].sum()) < PIECE_FLOOR * total:
            out[piece] = 0
    return out / out.sum() if float(out.sum()) > 0 else k


def _clean(k: torch.Tensor) -> torch.Tensor | None:
    """Non-negative, small taps cut, small pieces removed, sum 1; None when nothing is left."""
    k = k.clamp_min(0)
    if not float(k.sum()) > 0:
        return None
    k = torch.where(k < TAP_FLOOR * k.max(), torch.zeros_like(k), k)
    return _drop_small_pieces(k / k.sum())


def _centroid(k: torch.Tensor) -> tuple[float, float]:
    """Centroid of ``k`` relative to its centre pixel (rows, columns)."""
    size = k.shape[0]
    idx = torch.arange(size, dtype=k.dtype, device=k.device)
    return (float((k.sum(1) * idx).sum()) - size // 2, float((k.sum(0) * idx).sum()) - size // 2)


def _recentre(k: torch.Tensor) -> torch.Tensor:
    """Shift ``k`` by whole pixels so that its centroid is within half a pixel of the centre."""
    cy, cx = _centroid(k)
    return torch.roll(k, (-round(cy), -round(cx)), (0, 1))


def centre_subpixel(k: torch.Tensor) -> torch.Tensor:
    """Shift ``k`` ``(s, s)`` (bilinear, sub-pixel) so that its centroid is the centre pixel."""
    k = _recentre(k)
    cy, cx = _centroid(k)
    fy, fx = math.floor(cy), math.floor(cx)
    ay, ax = cy - fy, cx - fx
    out = torch.zeros_like(k)
    for oy, wy in ((fy, 1 - ay), (fy + 1, ay)):
        for ox, wx in ((fx, 1 - ax), (fx + 1, ax)):
            out += wy * wx * torch.roll(k, (-oy, -ox), (0, 1))
    return out / out.sum()


def _strong_gradients(gx: torch.Tensor, gy: torch.Tensor, size: int,
                      threshold: float | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Keep the gradients above ``threshold``; when None, the largest threshold that keeps
    :data:`EDGES_PER_BIN` × ``size`` pixels in each of four direction bins (Cho & Lee)."""
    magnitude = (gx * gx + gy * gy).sqrt()
    if threshold is None:
        direction = torch.atan2(gy, gx) % math.pi
        bins = (direction / (math.pi / 4)).long().clamp(0, 3)
        threshold = math.inf
        for b in range(4):
            values = magnitude[bins == b]
            if values.numel() == 0:
                continue
            rank = values.numel() - min(EDGES_PER_BIN * size, values.numel())
            threshold = min(threshold, float(values.sort().values[rank]))
    keep = magnitude >= threshold
    return gx * keep, gy * keep, threshold


def _resize(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]


def _levels(size: int) -> list[int]:
    """Kernel sizes of the pyramid, coarsest first (odd)."""
    n = max(int(math.floor(math.log(COARSEST_KERNEL / size) / math.log(SCALE_RATIO))), 0) + 1
    sizes = []
    for s in range(n):
        k = math.ceil(size * SCALE_RATIO**s)
        sizes.append(k + (k % 2 == 0))
    return sizes[::-1]


def check_size(size: int) -> None:
    """Raise ValueError unless ``size`` is an odd integer from 5 to 101."""
    if not isinstance(size, int) or isinstance(size, bool) or size % 2 == 0 or not 5 <= size <= 101:
        raise ValueError(f"the kernel size must be an odd integer from 5 to 101; got {size!r}")


def _as_gray(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        image = _to_tensor(image)[0]
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor or a numpy array; got "
                        f"{type(image).__name__}")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3:
        image = image.mean(0)
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W), (C, H, W) or (1, C, H, W); got "
                         f"{tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be floating point in [0, 1]; got {image.dtype}")
    return image


def estimate_kernel(
    image: torch.Tensor | np.ndarray,
    size: int = DEFAULT_SIZE,
    *,
    noise_sigma: float | None = None,
    window: int | None = WINDOW,
    progress: Any = None,
) -> torch.Tensor:
    """Estimate a free-form blur kernel (camera shake) from a blurred image, blind.

    See the module docstring for the method and what it achieves. Deterministic.

    Args:
        image: The blurred image: a tensor ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)``,
            float in [0, 1], or a numpy ``HW``/``HWC`` array (uint8, uint16 or float); colour
            is averaged to grey.
        size: Side of the kernel's support, odd, 5–101: at least the extent of the blur
            (a support much larger than the blur fits noise in the spare taps).
        noise_sigma: Noise standard deviation of the image; estimated when None.
        window: Images larger than this are estimated on their most textured
            ``window × window`` window (None: the whole image; the cost grows with its area).
        progress: Called as ``progress(done, total)`` after each pyramid level.

    Returns:
        The kernel ``(size, size)`` float32, non-negative, sum 1, centroid at the centre
        pixel.
    """
    gray = _as_gray(image).detach()
    check_size(size)
    H, W = gray.shape
    if min(H, W) < 2 * size:
        raise ValueError(f"image is {H}x{W}; a {size}-pixel kernel needs at least "
                         f"{2 * size}x{2 * size}")
    if not bool(torch.isfinite(gray).all()):
        raise ValueError("image has NaN or infinite values")
    if window is not None:
        from fastdeblur.restore.pipeline import screening_window

        rows_cols = screening_window(gray[None, None], max(window, 2 * size))
        if rows_cols is not None:
            gray = gray[rows_cols[0], rows_cols[1]]
    y = gray.to(device="cpu", dtype=torch.float32)
    if noise_sigma is None:
        from fastdeblur.restore.noise import estimate_noise

        noise_sigma = float(estimate_noise(y[None, None]).flatten()[0])
    lam_refine = max(LAMBDA_REFINE, REFINE_NOISE_FACTOR * float(noise_sigma) ** 2)
    H, W = y.shape
    sizes = _levels(size)
    k: torch.Tensor | None = None
    for level, ks in enumerate(sizes):
        finest = level == len(sizes) - 1
        scale = 1.0 if finest else ks / size
        h, w = max(16, round(H * scale)), max(16, round(W * scale))
        ys = y if (h, w) == (H, W) else _resize(y, (h, w))
        if k is None:
            k = torch.zeros(ks, ks)
            k[ks // 2, ks // 2 - 1 : ks // 2 + 1] = 0.5
        else:
            k = _resize(k, (ks, ks)).clamp_min(0)
            k = k / k.sum()
        extended, (top, left) = periodic_extension(ys, ks)
        # Leave out the extension and half a kernel next to it: no data there.
        mask = torch.zeros_like(extended)
        mask[top + ks // 2:top + h - ks // 2, left + ks // 2:left + w - ks // 2] = 1
        bx, by = (g * mask for g in _grad(extended))
        threshold = None
        lam = LAMBDA
        for it in range(ITERATIONS + (REFINE_ITERATIONS if finest else 0)):
            refining = it >= ITERATIONS
            lam_it = lam
            if refining:
                lam_it = max(lam_refine, REFINE_START / REFINE_DECAY ** (it - ITERATIONS))
            latent = l0_latent(extended, _otf(k, extended.shape), lam_it)
            lx, ly = (g * mask for g in _grad(latent))
            if not refining:
                lx, ly, threshold = _strong_gradients(lx, ly, ks, threshold)
                threshold /= LAMBDA_DECAY
                lam = max(lam / LAMBDA_DECAY, LAMBDA_MIN)
            cleaned = _clean(_kernel_step(lx, ly, bx, by, ks, k))
            if cleaned is None:  # the step found nothing: keep the kernel of the last one
                break
            k = _recentre(cleaned)
        k = _recentre(_drop_small_pieces(k))
        if progress is not None:
            progress(level + 1, len(sizes))
    assert k is not None
    return centre_subpixel(k)

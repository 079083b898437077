"""Cutting an image into the 32×32 patches the estimator classifies, and skipping flat ones.

A flat patch (sky, a wall, a saturated area) looks the same under any blur, so it carries no
information about the blur; the estimator skips it. The texture test is a gradient-energy
threshold on the *observed* (blurred, noisy) patch:

``texture_energy(p) = mean(dx²) + mean(dy²)`` of the patch after 2×2 average pooling,

where ``dx``/``dy`` are forward differences and intensities are in [0, 1]. Pooling first divides
the energy of white noise by 4 (noise of std σn alone gives ``4·σn²/4 = σn²``) while keeping the
low-frequency structure a blurred edge still has. A patch is *textured* when

``texture_energy(p) >= TEXTURE_THRESHOLD + NOISE_FACTOR · σn²``

(1e-4 + 2.5·σn²: 1e-4 for a clean image, 1.1e-3 at σn = 0.02), with σn the image's noise level
estimated by :func:`estimate_noise` (the true one when synthesising training data). On the
training images about 10 % of clean patches are flat by this test; with σn = 0.02 about half
of the heavily blurred ones are. When no patch of an image passes, the estimator uses the most
textured ones and says so with a low confidence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PATCH_SIZE = 32
TEXTURE_THRESHOLD = 1e-4
NOISE_FACTOR = 2.5


def texture_threshold(noise_sigma: float) -> float:
    """The texture-energy threshold for an image with noise std ``noise_sigma``."""
    return TEXTURE_THRESHOLD + NOISE_FACTOR * noise_sigma**2


def estimate_noise(gray: torch.Tensor) -> float:
    """Standard deviation of white Gaussian noise in an image (Immerkær 1996).

    The image is filtered with the Laplacian difference ``[[1,-2,1],[-2,4,-2],[1,-2,1]]``, which
    removes smooth structure; ``σ = sqrt(π/2) · mean|response| / 6``. Blur leaves little else at
    these frequencies, so the estimate is good on blurred images.

    Args:
        gray: ``(H, W)`` or ``(1, H, W)`` image in [0, 1].

    Returns:
        The estimated σn.
    """
    g = gray.reshape(1, 1, *gray.shape[-2:]).float()
    k = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    r = F.conv2d(g, k.view(1, 1, 3, 3))
    return float(math.sqrt(math.pi / 2) * r.abs().mean() / 6)


def texture_energy(patches: torch.Tensor) -> torch.Tensor:
    """Gradient energy of 2×2-average-pooled patches (see the module docstring).

    Args:
        patches: ``(N, P, P)`` intensities in [0, 1] (P even).

    Returns:
        ``(N,)`` energies.
    """
    if patches.ndim != 3:
        raise ValueError(f"patches must be (N, P, P); got shape {tuple(patches.shape)}")
    pooled = F.avg_pool2d(patches.unsqueeze(1), 2).squeeze(1)
    dx = pooled[..., :, 1:] - pooled[..., :, :-1]
    dy = pooled[..., 1:, :] - pooled[..., :-1, :]
    return dx.pow(2).mean(dim=(-2, -1)) + dy.pow(2).mean(dim=(-2, -1))


def extract_patches(
    gray: torch.Tensor, size: int = PATCH_SIZE, stride: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``size``×``size`` patches of a one-channel image on a grid with step ``stride``.

    The grid is centred: the margin left over by the stride is split between both sides.

    Args:
        gray: ``(H, W)`` or ``(1, H, W)`` image.
        size: Patch side.
        stride: Grid step (default ``size``: non-overlapping).

    Returns:
        ``(patches (N, size, size), corners (N, 2))``: each patch and its top-left
        ``(row, col)`` in the image.
    """
    if gray.ndim == 3:
        if gray.shape[0] != 1:
            raise ValueError(f"gray must have one channel; got shape {tuple(gray.shape)}")
        gray = gray[0]
    if gray.ndim != 2:
        raise ValueError(f"gray must be (H, W) or (1, H, W); got shape {tuple(gray.shape)}")
    stride = stride or size
    if stride < 1:
        raise ValueError(f"stride must be >= 1; got {stride}")
    H, W = gray.shape
    if size > H or size > W:
        raise ValueError(f"image is {H}x{W}; it needs at least {size}x{size} pixels")
    rows = torch.arange(0, H - size + 1, stride)
    cols = torch.arange(0, W - size + 1, stride)
    rows = rows + (H - size - rows[-1]) // 2
    cols = cols + (W - size - cols[-1]) // 2
    # a strided view of the grid's patches only (indexing a stride-1 view would first copy every
    # row of it: about 200 MB for a 1024×768 image)
    r0, c0 = int(rows[0]), int(cols[0])
    tiles = gray[r0:, c0:].unfold(0, size, stride).unfold(1, size, stride)
    patches = tiles[: len(rows), : len(cols)].reshape(-1, size, size)
    corners = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
    return patches.contiguous(), corners

"""Noise level of an image, estimated from the image itself.

Two estimators of the standard deviation of additive white Gaussian noise:

- ``mad`` (default): the median absolute deviation of the finest diagonal Haar wavelet band,
  ``σ = median(|HH|) / 0.6745`` (Donoho & Johnstone 1994). The orthonormal HH band of natural
  images is nearly all noise except along edges, and the median ignores the edges.
- ``immerkaer``: Immerkær's fast method (1996), the mean absolute response of the Laplacian
  difference mask ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` scaled by ``sqrt(π/2) / 6``.
  Cheaper, but biased upwards on textured images.

Both are pooled over the channels of each image: one number per image.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

# median(|N(0, 1)|)
_MAD_TO_SIGMA = 0.6744897501960817


def estimate_noise(
    image: torch.Tensor, method: Literal["mad", "immerkaer"] = "mad"
) -> torch.Tensor:
    """Estimate the standard deviation of white Gaussian noise in each image.

    Args:
        image: ``(B, C, H, W)`` or ``(C, H, W)`` float images in [0, 1] units, at least 2×2
            (``mad``) or 3×3 (``immerkaer``).
        method: ``mad`` (finest diagonal Haar band) or ``immerkaer``.

    Returns:
        ``(B,)`` (or a 0-d tensor for a ``(C, H, W)`` input) noise standard deviations, in the
        units of ``image``, float64.
    """
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a (C, H, W) or (B, C, H, W) tensor; got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"image must be floating point in [0, 1]; got {image.dtype}")
    single = image.ndim == 3
    x = (image.unsqueeze(0) if single else image).double()
    B, C, H, W = x.shape
    if method == "mad":
        if H < 2 or W < 2:
            raise ValueError(f"image must be at least 2x2 to estimate noise; got {H}x{W}")
        h, w = H // 2 * 2, W // 2 * 2
        x = x[..., :h, :w]
        # Orthonormal Haar HH: (a - b - c + d) / 2 keeps the noise variance.
        hh = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
        sigma = hh.reshape(B, -1).abs().median(dim=1).values / _MAD_TO_SIGMA
    elif method == "immerkaer":
        if H < 3 or W < 3:
            raise ValueError(f"image must be at least 3x3 to estimate noise; got {H}x{W}")
        mask = x.new_tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
        r = F.conv2d(x.reshape(B * C, 1, H, W), mask[None, None])
        sigma = r.reshape(B, -1).abs().mean(dim=1) * (math.sqrt(math.pi / 2) / 6)
    else:
        raise ValueError(f"method must be 'mad' or 'immerkaer'; got {method!r}")
    return sigma[0] if single else sigma

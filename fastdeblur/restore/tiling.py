"""Process a large image in overlapping tiles with bounded memory and no visible seams.

:func:`tiled` runs ``fn`` on one ``tile × tile`` window at a time and blends the results with
weights that form a partition of unity: across each overlap of width ``O`` between two
neighbouring tiles, the outer ``O/4`` next to each tile's inner edge gets weight 0 (a tile's
result is least reliable at its own border: a deconvolution there does not know the scene
outside the tile), and the middle ``O/2`` is a cos²/sin² cross-fade. Sides on the image
border are never faded. Peak memory is the output plus one tile's work, whatever the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along an axis of length ``size`` (the last one flush with
    the end), stride ``tile − overlap``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _axis_weights(
    size: int, starts: list[int], tile: int, dtype: torch.dtype, device: torch.device
) -> list[torch.Tensor]:
    """1-D blending weights of each tile along one axis."""
    length = min(tile, size)
    weights = []
    for n, start in enumerate(starts):
        w = torch.ones(length, dtype=torch.float64)
        pos = torch.arange(length, dtype=torch.float64)
        if n > 0:  # fade in across the overlap with the previous tile
            ov = starts[n - 1] + length - start
            w = w * _fade(pos, ov)
        if n < len(starts) - 1:  # fade out across the overlap with the next tile
            ov = start + length - starts[n + 1]
            w = w * _fade(length - 1 - pos, ov)
        weights.append(w.to(dtype=dtype, device=device))
    return weights


def _fade(dist: torch.Tensor, overlap: int) -> torch.Tensor:
    """0 for the first quarter of the overlap, sin² rise over its middle half, then 1.

    Neighbours see the same overlap from opposite ends, so their weights sum to 1."""
    lo = overlap / 4.0
    width = max(overlap / 2.0, 1e-9)
    t = ((dist + 0.5 - lo) / width).clamp(0, 1)
    return torch.sin(0.5 * math.pi * t).square()


def tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: int,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Apply a shape-preserving image function tile by tile and blend the tiles seamlessly.

    Args:
        fn: Maps ``(B, C, h, w)`` to ``(B, C', h, w)`` (same spatial size).
        image: ``(B, C, H, W)`` or ``(C, H, W)``.
        tile: Tile side in pixels (> ``overlap``).
        overlap: Overlap between neighbouring tiles in pixels (>= 0); only its middle half is
            blended, so make it at least four times the reach of ``fn`` (for a deconvolution,
            about four kernel sizes).
        progress: Called as ``progress(done, total)`` after each tile.

    Returns:
        ``fn`` of the whole image, assembled from tiles; exactly ``fn(image)`` when the image
        fits in one tile.
    """
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        raise ValueError("image must be a (C, H, W) or (B, C, H, W) tensor")
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile; got tile={tile}, "
                         f"overlap={overlap}")
    single = image.ndim == 3
    x = image.unsqueeze(0) if single else image
    H, W = x.shape[-2:]
    rows = tile_starts(H, tile, overlap)
    cols = tile_starts(W, tile, overlap)
    total = len(rows) * len(cols)
    if total == 1:
        out = fn(x)
        if progress is not None:
            progress(1, 1)
        return out[0] if single else out
    th, tw = min(tile, H), min(tile, W)
    out: torch.Tensor | None = None
    dtype = x.dtype if x.is_floating_point() else torch.float32
    wy = _axis_weights(H, rows, tile, dtype, x.device)
    wx = _axis_weights(W, cols, tile, dtype, x.device)
    # The weights sum to 1 except where three tiles meet along an axis (a short last
    # stride); normalising by their sum makes that exact too.
    total_weight = torch.zeros(H, W, dtype=dtype, device=x.device)
    done = 0
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            result = fn(x[..., r : r + th, c : c + tw])
            if result.shape[-2:] != (th, tw):
                raise ValueError(
                    f"fn must keep the spatial size: {(th, tw)} became {tuple(result.shape[-2:])}"
                )
            if out is None:
                out = result.new_zeros(*result.shape[:-2], H, W)
            weight = wy[i][:, None] * wx[j][None, :]
            out[..., r : r + th, c : c + tw] += result * weight
            total_weight[r : r + th, c : c + tw] += weight
            done += 1
            if progress is not None:
                progress(done, total)
    assert out is not None
    out = out / total_weight.clamp_min(torch.finfo(dtype).tiny)
    return out[0] if single else out

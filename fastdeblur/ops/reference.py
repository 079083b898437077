"""Pure-PyTorch references of every fastdeblur op.

Each function here is the specification of its op (shapes, exact formula), the
fallback when the native extension is missing, and the baseline of ``bench/``.
"""

from __future__ import annotations

import math

import torch

from fastdeblur.convolution import boundary_index, check_boundary, pad

# ---- sv_conv ----
# Per-pixel spatially-varying convolution (gather form) and its exact adjoint (scatter form).
# Kernels are stored taps-first: ``kernels[b, u * kw + v, i, j]`` is the weight of tap (u, v)
# at output pixel (i, j); tap (u, v) reads the input at offset (u - cy, v - cx) backwards,
# with (cy, cx) = (kh // 2, kw // 2), so a field of identical kernels is a true convolution.


def sv_kernel_size(taps: int, kernel_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """Resolve ``(kh, kw)`` from the number of taps and an optional ``kernel_size``.

    Args:
        taps: Size of the taps axis of the kernel field (``kh * kw``).
        kernel_size: ``None`` (square: ``kh = kw = sqrt(taps)``), an int (square), or
            ``(kh, kw)``.

    Returns:
        ``(kh, kw)`` with ``kh * kw == taps``.

    Raises:
        ValueError: When ``kernel_size`` does not match ``taps``.
    """
    if kernel_size is None:
        side = math.isqrt(taps)
        if side * side != taps or side == 0:
            raise ValueError(
                f"kernels has {taps} taps, not a positive square number; pass "
                "kernel_size=(kh, kw)"
            )
        return side, side
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    kh, kw = (int(k) for k in kernel_size)
    if kh < 1 or kw < 1 or kh * kw != taps:
        raise ValueError(
            f"kernel_size must be (kh, kw) with kh * kw == {taps} (the taps axis of kernels); "
            f"got {tuple(kernel_size)}"
        )
    return kh, kw


def _sv_kernels_4d(kernels: torch.Tensor) -> torch.Tensor:
    """``(T, H, W)`` (shared by the batch) -> ``(1, T, H, W)``; ``(B, T, H, W)`` unchanged."""
    return kernels.unsqueeze(0) if kernels.ndim == 3 else kernels


def sv_conv(
    x: torch.Tensor,
    kernels: torch.Tensor,
    boundary: str = "reflect",
    kernel_size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Per-pixel spatially-varying convolution, gather form (reference).

    ``y[b, c, i, j] = Σ_{u, v} K[b, u·kw + v, i, j] · x[b, c, i − (u − cy), j − (v − cx)]``
    with ``(cy, cx) = (kh // 2, kw // 2)`` and out-of-range input indices mapped by
    ``boundary`` (:func:`fastdeblur.convolution.boundary_index`; ``zero`` reads 0).

    Computed as a shift-and-add over taps on the padded image: memory stays
    ``O(B·C·H·W)`` besides the kernels, whatever the kernel size. Differentiable in
    ``x`` and ``kernels``.

    Args:
        x: Images ``(B, C, H, W)``.
        kernels: Kernel field ``(B, kh·kw, H, W)``, or ``(kh·kw, H, W)`` shared by the batch.
        boundary: ``reflect`` | ``zero`` | ``replicate`` | ``circular``.
        kernel_size: ``(kh, kw)``, an int for square kernels, or ``None`` for square.

    Returns:
        ``y`` ``(B, C, H, W)``.
    """
    check_boundary(boundary)
    kh, kw = sv_kernel_size(kernels.shape[-3], kernel_size)
    cy, cx = kh // 2, kw // 2
    B, C, H, W = x.shape
    k = _sv_kernels_4d(kernels)
    y = torch.zeros_like(x)
    if y.numel() == 0:
        return y + 0 * k.sum()  # keeps the graph connected to the kernels
    xp = pad(x, (kh - 1 - cy, cy, kw - 1 - cx, cx), boundary)
    # In place when no graph is recorded: one pass over y per tap, no temporaries.
    in_place = not (torch.is_grad_enabled() and (x.requires_grad or k.requires_grad))
    for u in range(kh):
        for v in range(kw):
            # x[i - u + cy] is xp[i - u + kh - 1]: rows start at kh - 1 - u.
            shifted = xp[..., kh - 1 - u : kh - 1 - u + H, kw - 1 - v : kw - 1 - v + W]
            weight = k[:, u * kw + v].unsqueeze(1)
            if in_place:
                y.addcmul_(weight, shifted)
            else:
                y = y + weight * shifted
    return y


def _fold(z: torch.Tensor, top: int, left: int, H: int, W: int, boundary: str) -> torch.Tensor:
    """Adjoint of :func:`fastdeblur.convolution.pad`: sum each padded sample into the image
    sample it was copied from. ``z`` is ``(B, C, H + top + bottom, W + left + right)``."""
    Hp, Wp = z.shape[-2:]
    rows = boundary_index(torch.arange(-top, Hp - top, device=z.device), H, boundary)
    cols = boundary_index(torch.arange(-left, Wp - left, device=z.device), W, boundary)
    if boundary == "zero":
        return z[..., top : top + H, left : left + W]
    out = z.new_zeros(*z.shape[:-2], H, Wp).index_add(-2, rows, z)
    return z.new_zeros(*z.shape[:-2], H, W).index_add(-1, cols, out)


def sv_conv_adjoint(
    y: torch.Tensor,
    kernels: torch.Tensor,
    boundary: str = "reflect",
    kernel_size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Exact adjoint of :func:`sv_conv` (scatter form), reference.

    With zero boundary ``x'[b, c, i − (u − cy), j − (v − cx)] += K[b, u·kw + v, i, j] ·
    y[b, c, i, j]``; for the other boundaries the scatter lands on the padded grid and is
    folded back through the boundary map, so ``<sv_conv(x), y> = <x, sv_conv_adjoint(y)>``.

    Args:
        y: ``(B, C, H, W)``.
        kernels: ``(B, kh·kw, H, W)`` or ``(kh·kw, H, W)``.
        boundary: ``reflect`` | ``zero`` | ``replicate`` | ``circular``.
        kernel_size: ``(kh, kw)``, an int, or ``None`` for square.

    Returns:
        ``x'`` ``(B, C, H, W)``.
    """
    check_boundary(boundary)
    kh, kw = sv_kernel_size(kernels.shape[-3], kernel_size)
    cy, cx = kh // 2, kw // 2
    B, C, H, W = y.shape
    k = _sv_kernels_4d(kernels)
    if y.numel() == 0:
        return torch.zeros_like(y) + 0 * k.sum()
    top, left = kh - 1 - cy, kw - 1 - cx
    z = y.new_zeros(B, C, H + kh - 1, W + kw - 1)
    for u in range(kh):
        for v in range(kw):
            # In-place on a window of the padded buffer: autograd records it (CopySlices).
            z[..., kh - 1 - u : kh - 1 - u + H, kw - 1 - v : kw - 1 - v + W] += (
                k[:, u * kw + v].unsqueeze(1) * y
            )
    return _fold(z, top, left, H, W, boundary)


def sv_conv_kernel_grad(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    boundary: str = "reflect",
    kernel_size: int | tuple[int, int] = 1,
    shared: bool = False,
) -> torch.Tensor:
    """Gradient of :func:`sv_conv` with respect to its kernels (a per-pixel correlation).

    ``g[b, u·kw + v, i, j] = Σ_c grad_y[b, c, i, j] · x[b, c, i − (u − cy), j − (v − cx)]``
    (boundary-mapped like :func:`sv_conv`). The same op gives the kernel gradient of
    :func:`sv_conv_adjoint`: ``sv_conv_kernel_grad(y, grad_x)``.

    Args:
        grad_y: ``(B, C, H, W)``.
        x: ``(B, C, H, W)``.
        boundary: ``reflect`` | ``zero`` | ``replicate`` | ``circular``.
        kernel_size: ``(kh, kw)`` or an int for square kernels.
        shared: Sum over the batch (kernels shared by the batch).

    Returns:
        ``(B, kh·kw, H, W)``, or ``(kh·kw, H, W)`` when ``shared``.
    """
    check_boundary(boundary)
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    kh, kw = kernel_size
    cy, cx = kh // 2, kw // 2
    B, C, H, W = x.shape
    out = x.new_zeros(B, kh * kw, H, W)
    if x.numel() > 0:
        xp = pad(x, (kh - 1 - cy, cy, kw - 1 - cx, cx), boundary)
        for u in range(kh):
            for v in range(kw):
                shifted = xp[..., kh - 1 - u : kh - 1 - u + H, kw - 1 - v : kw - 1 - v + W]
                out[:, u * kw + v] = (grad_y * shifted).sum(1)
    return out.sum(0) if shared else out

"""Spatially varying blur as a module: product-convolution over a grid of kernels.

:class:`ProductConvolutionBlur` wraps :func:`fastdeblur.ops.pc_conv.pc_conv` (forward) and
:func:`fastdeblur.ops.pc_conv.pc_conv_adjoint` (``.adjoint``), e.g. as the forward operator
of a non-blind deconvolution. It computes ``y = Σ_i h_i ⋆ (w_i ⊙ x)`` with bilinear weights
``w_i`` between grid-cell centres — not the per-pixel model ``y[p] = Σ_q K[p, q] x[p − q]``;
:meth:`ProductConvolutionBlur.pixel_kernels` gives that model's kernels for the same grid.
"""

from __future__ import annotations

import torch
from torch import nn

from fastdeblur.convolution import check_boundary
from fastdeblur.ops.pc_conv import grid_to_pixel_kernels, pc_conv, pc_conv_adjoint

__all__ = ["ProductConvolutionBlur"]


class ProductConvolutionBlur(nn.Module):
    """Product-convolution blur ``y = Σ_i h_i ⋆ (w_i ⊙ x)`` with a grid of kernels.

    Args:
        grid_kernels: ``(gh, gw, kh, kw)`` (one grid for every image) or
            ``(B, gh, gw, kh, kw)`` (one per sample); see :func:`fastdeblur.ops.pc_conv.pc_conv`.
        boundary: ``reflect`` (default) | ``zero`` | ``replicate`` | ``circular``.
        learnable: Store the kernels as a trainable ``nn.Parameter`` instead of a buffer.

    Example:
        >>> op = ProductConvolutionBlur(torch.full((2, 2, 3, 3), 1 / 9))
        >>> op(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(self, grid_kernels: torch.Tensor, boundary: str = "reflect",
                 learnable: bool = False) -> None:
        super().__init__()
        kernels = torch.as_tensor(grid_kernels)
        if kernels.ndim not in (4, 5) or min(kernels.shape[-4:]) < 1:
            raise ValueError(
                "grid_kernels must be (gh, gw, kh, kw) or (B, gh, gw, kh, kw) with non-empty "
                f"dimensions; got shape {tuple(kernels.shape)}"
            )
        if not kernels.is_floating_point():
            kernels = kernels.float()
        self.boundary = check_boundary(boundary)
        if learnable:
            self.grid_kernels = nn.Parameter(kernels.clone())
        else:
            self.register_buffer("grid_kernels", kernels.clone())

    @staticmethod
    def _batched(t: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
        if t.ndim == 3:
            return t.unsqueeze(0), True
        if t.ndim != 4:
            raise ValueError(f"{name} must be (C, H, W) or (B, C, H, W); got {tuple(t.shape)}")
        return t, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` ``(B, C, H, W)`` or ``(C, H, W)``; returns the same shape."""
        xb, squeezed = self._batched(x, "x")
        y = pc_conv(xb, self.grid_kernels.to(xb.device), self.boundary)
        return y[0] if squeezed else y

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Exact adjoint ``Σ_i w_i ⊙ Pᵀ(h_iᵀ ⋆ y)`` of :meth:`forward`; same shapes."""
        yb, squeezed = self._batched(y, "y")
        x = pc_conv_adjoint(yb, self.grid_kernels.to(yb.device), self.boundary)
        return x[0] if squeezed else x

    def pixel_kernels(self, H: int, W: int) -> torch.Tensor:
        """Per-pixel kernels ``(kh·kw, H, W)`` (or ``(B, kh·kw, H, W)``) of the *per-pixel*
        model for this grid (bilinear interpolation of the kernels; a different operator)."""
        return grid_to_pixel_kernels(self.grid_kernels, H, W)

    def extra_repr(self) -> str:
        return f"grid_kernels={tuple(self.grid_kernels.shape)}, boundary={self.boundary!r}"

"""Spatially-varying blur operators as modules (a blur model with its adjoint)."""

from __future__ import annotations

import torch
from torch import nn

from fastdeblur.convolution import check_boundary
from fastdeblur.ops import reference
from fastdeblur.ops.sv_conv import sv_conv, sv_conv_adjoint

__all__ = ["SpatiallyVaryingBlur"]


class SpatiallyVaryingBlur(nn.Module):
    """Per-pixel spatially-varying blur ``y[p] = Σ_q K[p, q] · x[p − q]`` (gather form).

    Holds a kernel field, taps first, as a buffer (fixed) or a parameter (``learnable``);
    ``forward`` is :func:`fastdeblur.ops.sv_conv` and :meth:`adjoint` its exact transpose.

    Args:
        kernels: ``(B, kh·kw, H, W)`` or ``(kh·kw, H, W)`` (shared by the batch).
        boundary: ``reflect`` (default) | ``zero`` | ``replicate`` | ``circular``.
        kernel_size: ``(kh, kw)`` or an int; default: square, ``sqrt(taps)``.
        learnable: Register the kernels as an ``nn.Parameter`` instead of a buffer.

    Example:
        >>> op = SpatiallyVaryingBlur(torch.full((9, 32, 32), 1 / 9))
        >>> op(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """

    kernels: torch.Tensor

    def __init__(
        self,
        kernels: torch.Tensor,
        boundary: str = "reflect",
        kernel_size: int | tuple[int, int] | None = None,
        learnable: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(kernels, torch.Tensor) or kernels.ndim not in (3, 4):
            raise ValueError("kernels must be a (B, kh*kw, H, W) or (kh*kw, H, W) tensor")
        self.boundary = check_boundary(boundary)
        self.kernel_size = reference.sv_kernel_size(kernels.shape[-3], kernel_size)
        if learnable:
            self.kernels = nn.Parameter(kernels)
        else:
            self.register_buffer("kernels", kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` ``(B, C, H, W)`` (or ``(C, H, W)``) with the kernel field."""
        return sv_conv(x, self.kernels, self.boundary, kernel_size=self.kernel_size)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`forward` applied to ``y`` ``(B, C, H, W)``."""
        return sv_conv_adjoint(y, self.kernels, self.boundary, kernel_size=self.kernel_size)

    def extra_repr(self) -> str:
        kh, kw = self.kernel_size
        return f"kernel_size=({kh}, {kw}), boundary={self.boundary!r}"


def apply_field(x: torch.Tensor, field, boundary: str = "reflect") -> torch.Tensor:
    """Blur images with a kernel field of either model.

    Args:
        x: Images ``(B, C, H, W)``.
        field: A :class:`fastdeblur.fields.KernelField`: ``model="pc"`` holds grid kernels
            ``(gh, gw, kh, kw)`` applied by product-convolution (:func:`fastdeblur.ops.pc_conv`),
            ``model="pixel"`` per-pixel kernels ``(kh·kw, H, W)`` applied by
            :func:`fastdeblur.ops.sv_conv`.
        boundary: ``reflect`` | ``zero`` | ``replicate`` | ``circular``.

    Returns:
        Blurred images ``(B, C, H, W)``.
    """
    from fastdeblur.ops import pc_conv, sv_conv

    kernels = field.kernels.to(device=x.device, dtype=x.dtype)
    if field.model == "pc":
        return pc_conv(x, kernels, boundary)
    if field.model == "pixel":
        if tuple(kernels.shape[-2:]) != tuple(x.shape[-2:]):
            raise ValueError(
                f"per-pixel field is {tuple(kernels.shape[-2:])} but the image is "
                f"{tuple(x.shape[-2:])}"
            )
        return sv_conv(x, kernels, boundary, kernel_size=tuple(field.kernel_size))
    raise ValueError(f"field model must be 'pc' or 'pixel'; got {field.model!r}")


def sv_blur(image: torch.Tensor, field, boundary: str = "reflect") -> torch.Tensor:
    """Spatially-varying blur of ``(C, H, W)`` or ``(B, C, H, W)`` images with a kernel field
    (see :func:`apply_field`); returns the same shape."""
    x = image if image.ndim == 4 else image.unsqueeze(0)
    y = apply_field(x, field, boundary)
    return y if image.ndim == 4 else y[0]

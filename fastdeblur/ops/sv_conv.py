"""Per-pixel spatially-varying convolution (gather form) and its exact adjoint.

``sv_conv(x, K)[b, c, i, j] = Σ_{u, v} K[b, u·kw + v, i, j] · x[b, c, i − (u − cy), j − (v − cx)]``
with ``(cy, cx) = (kh // 2, kw // 2)`` and out-of-range input indices mapped by the
boundary rule (:func:`fastdeblur.convolution.boundary_index`). With every pixel's kernel
equal to ``k`` it is :func:`fastdeblur.blur` with ``k``. ``sv_conv_adjoint`` is its
transpose (the scatter form, folded back through the boundary map).

Both are differentiable in the image and the kernels, work under
``torch.compile(fullgraph=True)``, and run on the backend that
:func:`fastdeblur._backend.select` picks: native CPU (fp32/fp64) or CUDA kernels, Triton,
or the PyTorch reference (:mod:`fastdeblur.ops.reference`).
"""

from __future__ import annotations

import torch

from fastdeblur import _backend, _ext
from fastdeblur.convolution import check_boundary
from fastdeblur.ops import reference

__all__ = ["sv_conv", "sv_conv_adjoint"]

KernelSize = int | tuple[int, int] | None

# dtypes the native CPU kernels handle; others run on the reference on the CPU.
_NATIVE_CPU_DTYPES = (torch.float32, torch.float64)


def _triton_module():  # imported only where Triton is usable
    from fastdeblur.triton import sv_conv as triton_sv_conv

    return triton_sv_conv


if _backend.has_triton():
    _triton_module()  # registers the fastdeblur::*_triton ops


def _choose(op: str, t: torch.Tensor) -> str:
    """Backend for ``op`` on tensors like ``t`` (resolved at trace time under torch.compile)."""
    backend = _backend.select(op, t.device)
    if backend == "native" and t.device.type == "cpu" and t.dtype not in _NATIVE_CPU_DTYPES:
        return "reference"
    return backend


def _check(
    image: torch.Tensor, kernels: torch.Tensor, boundary: str, kernel_size: KernelSize,
    image_name: str,
) -> tuple[torch.Tensor, torch.Tensor, int, int, bool]:
    """Validate arguments; returns the 4-D image, kernels, kh, kw and whether to squeeze."""
    check_boundary(boundary)
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{image_name} must be a (B, C, H, W) or (C, H, W) tensor; got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"{image_name} must be floating point; got {image.dtype}")
    if not isinstance(kernels, torch.Tensor) or kernels.ndim not in (3, 4):
        shape = tuple(kernels.shape) if isinstance(kernels, torch.Tensor) else type(kernels)
        raise ValueError(f"kernels must be (B, kh*kw, H, W) or (kh*kw, H, W); got {shape}")
    if kernels.dtype != image.dtype:
        raise ValueError(
            f"kernels must have the dtype of {image_name} ({image.dtype}); got {kernels.dtype}"
        )
    if kernels.device != image.device:
        raise ValueError(
            f"kernels must be on the device of {image_name} ({image.device}); got "
            f"{kernels.device}"
        )
    squeeze = image.ndim == 3
    if squeeze:
        image = image.unsqueeze(0)
    B, _, H, W = image.shape
    if tuple(kernels.shape[-2:]) != (H, W):
        raise ValueError(
            f"kernels must cover the {H}x{W} image, one kernel per pixel; got shape "
            f"{tuple(kernels.shape)}"
        )
    if kernels.ndim == 4 and kernels.shape[0] != B:
        if squeeze and kernels.shape[0] == 1:
            kernels = kernels[0]
        else:
            raise ValueError(
                f"kernels batch ({kernels.shape[0]}) must match the {image_name} batch ({B}); "
                "pass (kh*kw, H, W) to share one kernel field"
            )
    kh, kw = reference.sv_kernel_size(kernels.shape[-3], kernel_size)
    return image, kernels, kh, kw, squeeze


def sv_conv(
    x: torch.Tensor,
    kernels: torch.Tensor,
    boundary: str = "reflect",
    *,
    kernel_size: KernelSize = None,
) -> torch.Tensor:
    """Per-pixel spatially-varying blur, gather form: ``y[p] = Σ_q K[p, q] · x[p − q]``.

    ``y[b, c, i, j] = Σ_{u, v} kernels[b, u·kw + v, i, j] · x[b, c, i − (u − cy), j − (v − cx)]``,
    ``(cy, cx) = (kh // 2, kw // 2)``; input indices outside the image follow ``boundary``.

    Args:
        x: Images ``(B, C, H, W)`` or ``(C, H, W)``.
        kernels: Kernel field, taps first: ``(B, kh·kw, H, W)``, or ``(kh·kw, H, W)`` shared
            by the batch. Same dtype and device as ``x``.
        boundary: ``reflect`` (default) | ``zero`` | ``replicate`` | ``circular``.
        kernel_size: ``(kh, kw)`` or an int; default: square, ``sqrt(taps)``.

    Returns:
        Blurred images, shape and dtype of ``x``.

    Raises:
        ValueError: On a bad shape, dtype, device, boundary or kernel size.
    """
    x4, k, kh, kw, squeeze = _check(x, kernels, boundary, kernel_size, "x")
    backend = _choose("sv_conv", x4)
    if backend == "native":
        y = torch.ops.fastdeblur.sv_conv(x4, k, kh, kw, boundary)
    elif backend == "triton":
        y = torch.ops.fastdeblur.sv_conv_triton(x4, k, kh, kw, boundary)
    else:
        y = reference.sv_conv(x4, k, boundary, (kh, kw))
    return y[0] if squeeze else y


def sv_conv_adjoint(
    y: torch.Tensor,
    kernels: torch.Tensor,
    boundary: str = "reflect",
    *,
    kernel_size: KernelSize = None,
) -> torch.Tensor:
    """Exact adjoint (transpose) of :func:`sv_conv`: the scatter form.

    For the zero boundary ``x'[p − q] += K[p, q] · y[p]``; for the others the scatter onto
    the padded grid is folded back through the boundary map, so that
    ``<sv_conv(x, K), y> = <x, sv_conv_adjoint(y, K)>`` for every ``x`` and ``y``.

    Args:
        y: ``(B, C, H, W)`` or ``(C, H, W)``.
        kernels: ``(B, kh·kw, H, W)`` or ``(kh·kw, H, W)``, same dtype and device as ``y``.
        boundary: ``reflect`` (default) | ``zero`` | ``replicate`` | ``circular``.
        kernel_size: ``(kh, kw)`` or an int; default: square, ``sqrt(taps)``.

    Returns:
        ``x'``, shape and dtype of ``y``.

    Raises:
        ValueError: On a bad shape, dtype, device, boundary or kernel size.
    """
    y4, k, kh, kw, squeeze = _check(y, kernels, boundary, kernel_size, "y")
    backend = _choose("sv_conv_adjoint", y4)
    if backend == "native":
        x = torch.ops.fastdeblur.sv_conv_adjoint(y4, k, kh, kw, boundary)
    elif backend == "triton":
        x = torch.ops.fastdeblur.sv_conv_adjoint_triton(y4, k, kh, kw, boundary)
    else:
        x = reference.sv_conv_adjoint(y4, k, boundary, (kh, kw))
    return x[0] if squeeze else x


# ---- fake (shape) implementations and autograd of the registered ops ----


def _register(forward: str, adjoint: str, kernel_grad: str, *, fakes: bool) -> None:
    """Autograd (and, for the C++ ops, fake kernels) of one backend's three ops.

    * ``y = F(x, K)``: ``dx = Fᵀ(dy, K)``, ``dK = G(dy, x)``;
    * ``x' = Fᵀ(y, K)``: ``dy = F(dx', K)``, ``dK = G(y, dx')``;
    * ``g = G(a, x)`` (linear in each): ``da = F(x, dg)``, ``dx = Fᵀ(a, dg)``.
    """
    ns = torch.ops.fastdeblur
    fwd, adj, kgrad = (getattr(ns, n) for n in (forward, adjoint, kernel_grad))
    if fakes:
        for name in (forward, adjoint):
            torch.library.register_fake(f"fastdeblur::{name}")(
                lambda image, kernels, kh, kw, boundary: image.new_empty(image.shape)
            )

        @torch.library.register_fake(f"fastdeblur::{kernel_grad}")
        def _(grad_y, x, kh, kw, boundary, shared):
            B, _, H, W = x.shape
            return x.new_empty((kh * kw, H, W) if shared else (B, kh * kw, H, W))

    def setup(ctx, inputs, output):
        image, kernels, kh, kw, boundary = inputs
        ctx.save_for_backward(image, kernels)
        ctx.args = (kh, kw, boundary)

    def backward_forward(ctx, grad):
        image, kernels = ctx.saved_tensors
        kh, kw, boundary = ctx.args
        dx = adj(grad, kernels, kh, kw, boundary) if ctx.needs_input_grad[0] else None
        dk = (kgrad(grad, image, kh, kw, boundary, kernels.ndim == 3)
              if ctx.needs_input_grad[1] else None)
        return dx, dk, None, None, None

    def backward_adjoint(ctx, grad):
        image, kernels = ctx.saved_tensors
        kh, kw, boundary = ctx.args
        dy = fwd(grad, kernels, kh, kw, boundary) if ctx.needs_input_grad[0] else None
        dk = (kgrad(image, grad, kh, kw, boundary, kernels.ndim == 3)
              if ctx.needs_input_grad[1] else None)
        return dy, dk, None, None, None

    def setup_kgrad(ctx, inputs, output):
        a, image, kh, kw, boundary, _shared = inputs
        ctx.save_for_backward(a, image)
        ctx.args = (kh, kw, boundary)

    def backward_kgrad(ctx, grad):
        a, image = ctx.saved_tensors
        kh, kw, boundary = ctx.args
        da = fwd(image, grad, kh, kw, boundary) if ctx.needs_input_grad[0] else None
        dx = adj(a, grad, kh, kw, boundary) if ctx.needs_input_grad[1] else None
        return da, dx, None, None, None, None

    torch.library.register_autograd(f"fastdeblur::{forward}", backward_forward,
                                    setup_context=setup)
    torch.library.register_autograd(f"fastdeblur::{adjoint}", backward_adjoint,
                                    setup_context=setup)
    torch.library.register_autograd(f"fastdeblur::{kernel_grad}", backward_kgrad,
                                    setup_context=setup_kgrad)


if _ext.has_native():
    _register("sv_conv", "sv_conv_adjoint", "_sv_conv_kernel_grad", fakes=True)
if _backend.has_triton():
    _register("sv_conv_triton", "sv_conv_adjoint_triton", "_sv_conv_kernel_grad_triton",
              fakes=False)

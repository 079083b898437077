"""Product-convolution over a grid of kernels, its adjoint, and the per-pixel kernels of a grid.

Two spatially-varying blur models live in fastdeblur (DESIGN.md, "Spatially varying blur"):

* **product-convolution** (this module's :func:`pc_conv`): ``y = Σ_i h_i ⋆ (w_i ⊙ x)`` — the
  image is split by the bilinear weights ``w_i`` of a ``gh × gw`` grid of cells, each part is
  convolved with its cell's kernel ``h_i``, and the results are summed. Per pixel,
  ``y[p] = Σ_q Σ_i h_i[q] · w_i(p − q) · x(p − q)``: the weights are taken at the *source*
  pixel ``p − q``. With normalised kernels it conserves the image's total mass.
* **per-pixel (gather)** (``sv_conv``): ``y[p] = Σ_q K[p, q] · x[p − q]`` — the kernel is taken
  at the *output* pixel ``p``. With normalised kernels it reproduces a constant image.
  :func:`grid_to_pixel_kernels` turns a grid into this model's ``K`` by bilinear interpolation
  at each pixel; that is a *different operator* from :func:`pc_conv` on the same grid (they
  agree when all grid kernels are equal, and approximately where the kernels vary slowly).

The adjoint of either model is the other one with flipped kernels (up to boundary folding):
``pc_conv_adjoint(y) = Σ_i w_i ⊙ (h_iᵀ ⋆ y)`` weights at the output of a correlation.

Weights: grid row ``a`` is centred on pixel row ``(a + 0.5)·H/gh − 0.5``; a pixel row ``r`` sits at
``t = clamp((r + 0.5)·gh/H − 0.5, 0, gh − 1)`` in grid units and gets row weight
``max(0, 1 − |t − a|)``; cell ``(a, b)`` has weight row weight × column weight. Beyond the
outermost centres the clamp gives the border cells full weight, so the weights sum to 1
everywhere and at most 4 are non-zero at a pixel.

Boundaries: ``⋆`` pads the *product* ``w_i ⊙ x`` with the boundary rule (equivalently: pad
``x`` and evaluate ``w_i`` at the boundary-mapped coordinate), so with all ``h_i`` equal to ``h``
:func:`pc_conv` is exactly ``fastdeblur.blur(x, h, boundary)`` for every boundary, and a 1 × 1
grid is a plain blur.

Backends: native CPU (a tiled direct convolution over the ≤ 9 cells that reach each output
tile, or, for large kernels, local FFTs over tiles between cell centres with the ≤ 4 kernels
of a tile summed in the frequency domain; the op picks by a cost model and
``FASTDEBLUR_PC_CONV_METHOD=direct|fft`` forces one, see docs/spatially_varying.md), native
CUDA, Triton, and the PyTorch reference (:mod:`fastdeblur.ops.reference`);
:mod:`fastdeblur._backend` picks one. All are differentiable w.r.t. the image and the kernels.
"""

from __future__ import annotations

import torch

from fastdeblur import _backend, _ext
from fastdeblur.ops import reference

__all__ = ["grid_to_pixel_kernels", "pc_axis_weights", "pc_conv", "pc_conv_adjoint"]

pc_axis_weights = reference.pc_axis_weights
grid_to_pixel_kernels = reference.grid_to_pixel_kernels

_NATIVE_DTYPES = (torch.float32, torch.float64)


def _prepare(t: torch.Tensor, grid_kernels: torch.Tensor, boundary: str, name: str
             ) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (B, C, H, W)")
    if not isinstance(grid_kernels, torch.Tensor) or not grid_kernels.is_floating_point():
        raise ValueError("grid_kernels must be a floating-point tensor (gh, gw, kh, kw) or "
                         "(B, gh, gw, kh, kw)")
    reference._pc_check(t, grid_kernels, boundary, name=name)
    if grid_kernels.device != t.device:
        raise ValueError(f"grid_kernels must be on {name}'s device {t.device}; got "
                         f"{grid_kernels.device}")
    return grid_kernels.to(t.dtype)


def _select(device: torch.device, dtype: torch.dtype) -> str:
    # Plain Python on import-time facts: torch.compile resolves it once, at trace time.
    backend = _backend.select("pc_conv", device)
    # The native kernels are written for float32/float64; other dtypes take the reference
    # (or Triton on a GPU, which computes in float32).
    if backend == "native" and dtype not in _NATIVE_DTYPES:
        on_gpu = device.type == "cuda" and _backend.triton_can_run(device)
        return "triton" if on_gpu else "reference"
    # The Triton kernels accumulate in float32: float64 keeps its precision on the reference.
    if backend == "triton" and dtype == torch.float64:
        return "reference"
    return backend


def _which(t: torch.Tensor) -> str:
    return _select(t.device, t.dtype)


def pc_conv(x: torch.Tensor, grid_kernels: torch.Tensor, boundary: str = "reflect"
            ) -> torch.Tensor:
    """Product-convolution ``y = Σ_i h_i ⋆ (w_i ⊙ x)`` over a grid of kernels.

    See the module docstring for the weights, the boundary rule and how this differs from the
    per-pixel model of ``sv_conv``.

    Args:
        x: Images ``(B, C, H, W)``, float.
        grid_kernels: ``(gh, gw, kh, kw)`` shared by the batch, or ``(B, gh, gw, kh, kw)``;
            kernel ``[a, b]`` belongs to grid cell ``(a, b)`` (row-major from the top left),
            is centred at ``(kh // 2, kw // 2)`` and is applied as a true convolution.
            Cast to ``x``'s dtype.
        boundary: ``reflect`` (default) | ``zero`` | ``replicate`` | ``circular``.

    Returns:
        Blurred images ``(B, C, H, W)``, dtype of ``x``.
    """
    k = _prepare(x, grid_kernels, boundary, "x")
    backend = _which(x)
    if backend == "native":
        return torch.ops.fastdeblur.pc_conv(x, k, boundary)
    if backend == "triton":
        from fastdeblur.triton import pc_conv as triton_pc_conv

        return triton_pc_conv.pc_conv(x, k, boundary)
    return reference.pc_conv(x, k, boundary)


def pc_conv_adjoint(y: torch.Tensor, grid_kernels: torch.Tensor, boundary: str = "reflect"
                    ) -> torch.Tensor:
    """Exact adjoint of :func:`pc_conv`: ``x = Σ_i w_i ⊙ Pᵀ(h_iᵀ ⋆ y)``.

    ``h_iᵀ ⋆`` correlates ``y`` onto the padded grid and ``Pᵀ`` folds every padded sample back
    onto the pixel it copies (dropping it for ``zero``), so
    ``<pc_conv(x), y> = <x, pc_conv_adjoint(y)>`` up to rounding, for every boundary.

    Args:
        y: ``(B, C, H, W)``, float.
        grid_kernels: As in :func:`pc_conv`.
        boundary: As in :func:`pc_conv`.

    Returns:
        ``(B, C, H, W)``, dtype of ``y``.
    """
    k = _prepare(y, grid_kernels, boundary, "y")
    backend = _which(y)
    if backend == "native":
        return torch.ops.fastdeblur.pc_conv_adjoint(y, k, boundary)
    if backend == "triton":
        from fastdeblur.triton import pc_conv as triton_pc_conv

        return triton_pc_conv.pc_conv_adjoint(y, k, boundary)
    return reference.pc_conv_adjoint(y, k, boundary)


# ---- torch.library registrations of the native ops (fake kernels, autograd) ----


def _fake_same(t: torch.Tensor, grid_kernels: torch.Tensor, boundary: str) -> torch.Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def _fake_backward(grad, input, grid_kernels, boundary, adjoint, output_mask):
    grad_input = (torch.empty_like(input, memory_format=torch.contiguous_format)
                  if output_mask[0] else input.new_empty(0))
    grad_kernels = (torch.empty_like(grid_kernels, memory_format=torch.contiguous_format)
                    if output_mask[1] else input.new_empty(0))
    return grad_input, grad_kernels


def _setup_context(ctx, inputs, output) -> None:
    t, grid_kernels, boundary = inputs
    ctx.save_for_backward(t, grid_kernels)
    ctx.boundary = boundary


def _make_backward(adjoint: bool):
    def backward(ctx, grad):
        t, grid_kernels = ctx.saved_tensors
        mask = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])]
        if not any(mask):
            return None, None, None
        grad_input, grad_kernels = torch.ops.fastdeblur._pc_conv_backward(
            grad.contiguous(), t, grid_kernels, ctx.boundary, adjoint, mask
        )
        return (grad_input if mask[0] else None, grad_kernels if mask[1] else None, None)

    return backward


if _ext.has_kernel("pc_conv", "CPU") or _ext.has_kernel("pc_conv", "CUDA"):
    torch.library.register_fake("fastdeblur::pc_conv")(_fake_same)
    torch.library.register_fake("fastdeblur::pc_conv_adjoint")(_fake_same)
    torch.library.register_fake("fastdeblur::_pc_conv_backward")(_fake_backward)
    torch.library.register_autograd(
        "fastdeblur::pc_conv", _make_backward(adjoint=False), setup_context=_setup_context
    )
    torch.library.register_autograd(
        "fastdeblur::pc_conv_adjoint", _make_backward(adjoint=True), setup_context=_setup_context
    )

"""Triton product-convolution ``y = Σ_i h_i ⋆ (w_i ⊙ x)``; semantics of ``fastdeblur::pc_conv``.

Gather form: each program owns a ``BLOCK_H × BLOCK_W`` block of one image plane and loops
over the taps; for every tap it reads the source pixel through per-axis tables (boundary map,
lower grid cell, the two bilinear weights — built on the host for the padded axes) and the
four grid kernels around the source, so any boundary and any kernel size work.

The adjoint computes the padded-grid correlation ``Σ_i w_i(s) Σ_q h_i[q] y[s − (k − 1) + q]``
in Triton and folds the padded border back onto the image with the host-side
:func:`fastdeblur.ops.reference._pad_adjoint`. The kernel gradient uses the PyTorch
reference. Accumulates in fp32 (fp32, fp16, bf16 tensors); on the CPU only under
``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from fastdeblur.convolution import boundary_index
from fastdeblur.ops import reference

__all__ = ["pc_conv", "pc_conv_adjoint"]

BLOCK_H = 16
BLOCK_W = 32


def _axis_tables(n: int, cells: int, before: int, after: int, boundary: str,
                 device: torch.device) -> tuple[torch.Tensor, ...]:
    """Tables of one padded axis: source index (-1: zero), lower grid cell, the lower and
    upper cell's weights (0 where the padding is zero); each of length ``before + n + after``.
    Same arithmetic as :func:`fastdeblur.ops.reference.pc_axis_weights`."""
    idx = boundary_index(torch.arange(-before, n + after), n, boundary)
    r = torch.arange(n, dtype=torch.float64)
    t = ((r + 0.5) * (cells / n) - 0.5).clamp(0.0, cells - 1.0)
    lo = t.floor().clamp(max=max(cells - 2, 0))
    w_lo, w_hi = 1.0 - (t - lo), (1.0 - ((lo + 1.0) - t)).clamp_min(0.0)
    src = idx.clamp_min(0)
    inside = idx >= 0
    zero = torch.zeros((), dtype=torch.float64)
    return (
        idx.to(torch.int32).to(device),
        lo[src].to(torch.int32).to(device),
        torch.where(inside, w_lo[src], zero).to(torch.float32).to(device),
        torch.where(inside, w_hi[src] if cells > 1 else zero, zero).to(torch.float32).to(device),
    )


@triton.jit
def _blend(K, tap, a0, a1, c0, c1, wr0, wr1, wc0, wc1, gw, taps):
    """Σ_cells w_cell · h_cell[tap] over the 2 × 2 cells around each pixel of the block."""
    h00 = tl.load(K + (a0[:, None] * gw + c0[None, :]) * taps + tap)
    h01 = tl.load(K + (a0[:, None] * gw + c1[None, :]) * taps + tap)
    h10 = tl.load(K + (a1[:, None] * gw + c0[None, :]) * taps + tap)
    h11 = tl.load(K + (a1[:, None] * gw + c1[None, :]) * taps + tap)
    top = wc0[None, :] * h00 + wc1[None, :] * h01
    bottom = wc0[None, :] * h10 + wc1[None, :] * h11
    return wr0[:, None] * top + wr1[:, None] * bottom


@triton.jit
def _pc_fwd_kernel(X, K, Y, RMAP, RLO, RW0, RW1, CMAP, CLO, CW0, CW1, C, H, W, gh, gw, kh, kw,
                   k_batch_stride, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    rmask = rows < H
    cmask = cols < W
    xb = X + plane * H * W
    kb = K + (plane // C) * k_batch_stride
    taps = kh * kw
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for u in range(kh):
        # Padded row of the source pixel i - u + kh // 2: i + kh - 1 - u.
        pr = rows + (kh - 1 - u)
        sr = tl.load(RMAP + pr, mask=rmask, other=-1)
        a0 = tl.load(RLO + pr, mask=rmask, other=0)
        a1 = tl.minimum(a0 + 1, gh - 1)
        wr0 = tl.load(RW0 + pr, mask=rmask, other=0.0)
        wr1 = tl.load(RW1 + pr, mask=rmask, other=0.0)
        for v in range(kw):
            pc = cols + (kw - 1 - v)
            sc = tl.load(CMAP + pc, mask=cmask, other=-1)
            c0 = tl.load(CLO + pc, mask=cmask, other=0)
            c1 = tl.minimum(c0 + 1, gw - 1)
            wc0 = tl.load(CW0 + pc, mask=cmask, other=0.0)
            wc1 = tl.load(CW1 + pc, mask=cmask, other=0.0)
            valid = (sr[:, None] >= 0) & (sc[None, :] >= 0)
            xv = tl.load(xb + sr[:, None] * W + sc[None, :], mask=valid, other=0.0)
            h = _blend(kb, u * kw + v, a0, a1, c0, c1, wr0, wr1, wc0, wc1, gw, taps)
            acc += h * xv.to(tl.float32)
    out = Y + plane * H * W + rows[:, None] * W + cols[None, :]
    tl.store(out, acc, mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _pc_adj_padded_kernel(Yin, K, XP, RLO, RW0, RW1, CLO, CW0, CW1, C, H, W, Hp, Wp, gh, gw, kh,
                          kw, k_batch_stride, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)
    pr = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    pc = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    rmask = pr < Hp
    cmask = pc < Wp
    yb = Yin + plane * H * W
    kb = K + (plane // C) * k_batch_stride
    taps = kh * kw
    a0 = tl.load(RLO + pr, mask=rmask, other=0)
    a1 = tl.minimum(a0 + 1, gh - 1)
    wr0 = tl.load(RW0 + pr, mask=rmask, other=0.0)
    wr1 = tl.load(RW1 + pr, mask=rmask, other=0.0)
    c0 = tl.load(CLO + pc, mask=cmask, other=0)
    c1 = tl.minimum(c0 + 1, gw - 1)
    wc0 = tl.load(CW0 + pc, mask=cmask, other=0.0)
    wc1 = tl.load(CW1 + pc, mask=cmask, other=0.0)
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for u in range(kh):
        # Output row that read padded row pr through tap u: pr - (kh - 1 - u).
        yr = pr - (kh - 1 - u)
        for v in range(kw):
            yc = pc - (kw - 1 - v)
            row_ok = (yr >= 0) & (yr < H) & rmask
            col_ok = (yc >= 0) & (yc < W) & cmask
            valid = row_ok[:, None] & col_ok[None, :]
            yv = tl.load(yb + yr[:, None] * W + yc[None, :], mask=valid, other=0.0)
            h = _blend(kb, u * kw + v, a0, a1, c0, c1, wr0, wr1, wc0, wc1, gw, taps)
            acc += h * yv.to(tl.float32)
    out = XP + plane * Hp * Wp + pr[:, None] * Wp + pc[None, :]
    tl.store(out, acc, mask=rmask[:, None] & cmask[None, :])


def _geometry(H: int, W: int, k: torch.Tensor, boundary: str, device: torch.device):
    gh, gw, kh, kw = k.shape[-4:]
    rows = _axis_tables(H, gh, kh - 1 - kh // 2, kh // 2, boundary, device)
    cols = _axis_tables(W, gw, kw - 1 - kw // 2, kw // 2, boundary, device)
    return rows, cols


@triton_op("fastdeblur::pc_conv_triton", mutates_args={})
def _pc_conv_triton(x: torch.Tensor, grid_kernels: torch.Tensor, boundary: str) -> torch.Tensor:
    B, C, H, W = x.shape
    x = x.contiguous()
    k = grid_kernels.contiguous()
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    gh, gw, kh, kw = k.shape[-4:]
    (rmap, rlo, rw0, rw1), (cmap, clo, cw0, cw1) = _geometry(H, W, k, boundary, x.device)
    k_batch_stride = 0 if k.ndim == 4 or k.shape[0] == 1 else gh * gw * kh * kw
    grid = (B * C, triton.cdiv(H, BLOCK_H), triton.cdiv(W, BLOCK_W))
    wrap_triton(_pc_fwd_kernel)[grid](
        x, k, y, rmap, rlo, rw0, rw1, cmap, clo, cw0, cw1, C, H, W, gh, gw, kh, kw,
        k_batch_stride, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W,
    )
    return y


@triton_op("fastdeblur::pc_conv_adjoint_triton", mutates_args={})
def _pc_conv_adjoint_triton(y: torch.Tensor, grid_kernels: torch.Tensor, boundary: str
                            ) -> torch.Tensor:
    B, C, H, W = y.shape
    y = y.contiguous()
    k = grid_kernels.contiguous()
    if y.numel() == 0:
        return torch.empty_like(y)
    gh, gw, kh, kw = k.shape[-4:]
    Hp, Wp = H + kh - 1, W + kw - 1
    (_, rlo, rw0, rw1), (_, clo, cw0, cw1) = _geometry(H, W, k, boundary, y.device)
    padded = torch.empty(B, C, Hp, Wp, dtype=torch.float32, device=y.device)
    k_batch_stride = 0 if k.ndim == 4 or k.shape[0] == 1 else gh * gw * kh * kw
    grid = (B * C, triton.cdiv(Hp, BLOCK_H), triton.cdiv(Wp, BLOCK_W))
    wrap_triton(_pc_adj_padded_kernel)[grid](
        y, k, padded, rlo, rw0, rw1, clo, cw0, cw1, C, H, W, Hp, Wp, gh, gw, kh, kw,
        k_batch_stride, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W,
    )
    widths = (kh - 1 - kh // 2, kh // 2, kw - 1 - kw // 2, kw // 2)
    return reference._pad_adjoint(padded, widths, H, W, boundary).to(y.dtype)


def _setup_context(ctx, inputs, output) -> None:
    t, grid_kernels, boundary = inputs
    ctx.save_for_backward(t, grid_kernels)
    ctx.boundary = boundary


def _backward_of(adjoint: bool):
    def backward(ctx, grad):
        t, k = ctx.saved_tensors
        grad_t = grad_k = None
        if ctx.needs_input_grad[0]:
            other = _pc_conv_triton if adjoint else _pc_conv_adjoint_triton
            grad_t = other(grad.contiguous(), k, ctx.boundary)
        if ctx.needs_input_grad[1]:
            x, g = (grad, t) if adjoint else (t, grad)
            grad_k = reference.pc_conv_kernel_grad(x, g, k, ctx.boundary)
        return grad_t, grad_k, None

    return backward


_pc_conv_triton.register_autograd(_backward_of(False), setup_context=_setup_context)
_pc_conv_adjoint_triton.register_autograd(_backward_of(True), setup_context=_setup_context)


def pc_conv(x: torch.Tensor, grid_kernels: torch.Tensor, boundary: str = "reflect"
            ) -> torch.Tensor:
    """Triton :func:`fastdeblur.ops.pc_conv.pc_conv` (arguments already validated)."""
    return _pc_conv_triton(x, grid_kernels, boundary)


def pc_conv_adjoint(y: torch.Tensor, grid_kernels: torch.Tensor, boundary: str = "reflect"
                    ) -> torch.Tensor:
    """Triton :func:`fastdeblur.ops.pc_conv.pc_conv_adjoint` (arguments already validated)."""
    return _pc_conv_adjoint_triton(y, grid_kernels, boundary)

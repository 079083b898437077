"""Triton kernels of the per-pixel spatially-varying convolution (GPU; CPU under
``TRITON_INTERPRET=1``).

Same meaning as :func:`fastdeblur.ops.reference.sv_conv`. Each program owns a tile of
``BLOCK_H x BLOCK_W`` pixels and a block of up to 4 channels, and loops over the taps: the
kernel field (taps-first, so a tap's tile is a coalesced read) is read once per channel
block, the image tile is gathered through the boundary map (mostly cache hits), and the
sum is kept in fp32 whatever the storage dtype. The kernel size is a runtime argument
(a 31x31 kernel is a loop, not 961 unrolled copies).

The ops are registered with :func:`torch.library.triton_op` as
``fastdeblur::sv_conv_triton``, ``fastdeblur::sv_conv_adjoint_triton`` and
``fastdeblur::_sv_conv_kernel_grad_triton``; :mod:`fastdeblur.ops.sv_conv` adds autograd.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from fastdeblur.ops.reference import _fold

# Boundary codes, as in csrc/common.h.
_BOUNDARY_CODE = {"reflect": 0, "zero": 1, "replicate": 2, "circular": 3}
_BLOCK_H = 8
_BLOCK_W = 64
_CHANNEL_BLOCK = 4


@triton.jit
def _map_index(idx, n, BOUNDARY: tl.constexpr):
    """``fastdeblur.convolution.boundary_index`` plus a validity mask (False only for zero)."""
    valid = (idx >= 0) & (idx < n)
    if BOUNDARY == 0:  # reflect, periodic for any distance
        period = tl.maximum(2 * (n - 1), 1)
        f = ((idx % period) + period) % period
        mapped = tl.where(f >= n, period - f, f)
        valid = idx == idx
    elif BOUNDARY == 2:  # replicate
        mapped = tl.minimum(tl.maximum(idx, 0), n - 1)
        valid = idx == idx
    elif BOUNDARY == 3:  # circular
        mapped = ((idx % n) + n) % n
        valid = idx == idx
    else:  # zero: masked reads
        mapped = tl.minimum(tl.maximum(idx, 0), n - 1)
    return mapped, valid


@triton.jit
def _sv_conv_fwd_kernel(
    x_ptr, k_ptr, y_ptr, C, H, W, k_batch_stride, n_hblocks,
    KH, KW, BOUNDARY: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    pid_w = tl.program_id(1)
    pid_c = tl.program_id(2)
    b = pid_bh // n_hblocks
    rows = (pid_bh % n_hblocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    chans = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    plane = H * W
    in_img = (rows[:, None] < H) & (cols[None, :] < W)
    chan_ok = chans < C
    x_base = x_ptr + b.to(tl.int64) * C * plane + chans.to(tl.int64)[:, None, None] * plane
    k_base = k_ptr + b.to(tl.int64) * k_batch_stride + rows[:, None] * W + cols[None, :]
    acc = tl.zeros((BLOCK_C, BLOCK_H, BLOCK_W), dtype=ACC)
    for u in range(KH):
        src_r, ok_r = _map_index(rows - u + KH // 2, H, BOUNDARY)
        for v in range(KW):
            src_c, ok_c = _map_index(cols - v + KW // 2, W, BOUNDARY)
            weight = tl.load(k_base + (u * KW + v) * plane, mask=in_img, other=0.0)
            ok = (ok_r[:, None] & ok_c[None, :]) & in_img
            pix = tl.load(
                x_base + (src_r[:, None] * W + src_c[None, :])[None, :, :],
                mask=ok[None, :, :] & chan_ok[:, None, None], other=0.0,
            )
            acc += weight.to(ACC)[None, :, :] * pix.to(ACC)
    out = y_ptr + b.to(tl.int64) * C * plane + chans.to(tl.int64)[:, None, None] * plane
    out = out + (rows[:, None] * W + cols[None, :])[None, :, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=in_img[None, :, :] & chan_ok[:, None, None])


@triton.jit
def _sv_conv_adj_kernel(
    y_ptr, k_ptr, z_ptr, C, H, W, HO, WO, row0, col0, k_batch_stride, n_hblocks,
    KH, KW,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    # z[s, q] = sum_t K[t, i, j] y[i, j], i = s - (KH-1) + u, j = q - (KW-1) + v, (i, j) in
    # the image; z covers padded rows [row0, row0 + HO) and columns [col0, col0 + WO).
    pid_bh = tl.program_id(0)
    pid_w = tl.program_id(1)
    pid_c = tl.program_id(2)
    b = pid_bh // n_hblocks
    zr = (pid_bh % n_hblocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    zc = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    chans = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    plane = H * W
    chan_ok = chans < C
    y_base = y_ptr + b.to(tl.int64) * C * plane + chans.to(tl.int64)[:, None, None] * plane
    k_base = k_ptr + b.to(tl.int64) * k_batch_stride
    acc = tl.zeros((BLOCK_C, BLOCK_H, BLOCK_W), dtype=ACC)
    for u in range(KH):
        i = zr + row0 - (KH - 1) + u
        ok_i = (i >= 0) & (i < H)
        for v in range(KW):
            j = zc + col0 - (KW - 1) + v
            ok = ok_i[:, None] & ((j >= 0) & (j < W))[None, :]
            offs = i[:, None] * W + j[None, :]
            weight = tl.load(k_base + (u * KW + v) * plane + offs, mask=ok, other=0.0)
            val = tl.load(y_base + offs[None, :, :], mask=ok[None, :, :] & chan_ok[:, None, None],
                          other=0.0)
            acc += weight.to(ACC)[None, :, :] * val.to(ACC)
    out_plane = HO * WO
    out = z_ptr + b.to(tl.int64) * C * out_plane + chans.to(tl.int64)[:, None, None] * out_plane
    out = out + (zr[:, None] * WO + zc[None, :])[None, :, :]
    in_out = (zr[:, None] < HO) & (zc[None, :] < WO)
    tl.store(out, acc.to(z_ptr.dtype.element_ty), mask=in_out[None, :, :] & chan_ok[:, None, None])


@triton.jit
def _sv_conv_kgrad_kernel(
    gy_ptr, x_ptr, g_ptr, B_LOOP, C, H, W, n_hblocks,
    KH, KW, BOUNDARY: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    # g[t, i, j] = sum_{b in batch loop} sum_c gy[b, c, i, j] x[b, c, map(i-u+cy), map(j-v+cx)]
    pid_bh = tl.program_id(0)
    pid_w = tl.program_id(1)
    b_first = pid_bh // n_hblocks  # 0 when the batch is summed (B_LOOP = B)
    rows = (pid_bh % n_hblocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    plane = H * W
    in_img = (rows[:, None] < H) & (cols[None, :] < W)
    pix = rows[:, None] * W + cols[None, :]
    g_base = g_ptr + b_first.to(tl.int64) * KH * KW * plane + pix
    for u in range(KH):
        src_r, ok_r = _map_index(rows - u + KH // 2, H, BOUNDARY)
        for v in range(KW):
            src_c, ok_c = _map_index(cols - v + KW // 2, W, BOUNDARY)
            ok = (ok_r[:, None] & ok_c[None, :]) & in_img
            src = (src_r[:, None] * W + src_c[None, :])[None, :, :]
            acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
            for bb in range(B_LOOP):
                b = (b_first + bb).to(tl.int64)
                for c0 in range(0, C, BLOCK_C):
                    chans = c0 + tl.arange(0, BLOCK_C)
                    chan_ok = (chans < C)[:, None, None]
                    base = b * C * plane + chans.to(tl.int64)[:, None, None] * plane
                    grad = tl.load(gy_ptr + base + pix[None, :, :],
                                   mask=in_img[None, :, :] & chan_ok, other=0.0)
                    val = tl.load(x_ptr + base + src, mask=ok[None, :, :] & chan_ok, other=0.0)
                    acc += tl.sum(grad.to(ACC) * val.to(ACC), axis=0)
            tl.store(g_base + (u * KW + v) * plane, acc.to(g_ptr.dtype.element_ty), mask=in_img)


def _acc(dtype: torch.dtype) -> tl.dtype:
    """Accumulator type: fp64 for fp64 storage, fp32 otherwise (fp16/bf16 included)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _channel_block(C: int) -> int:
    return min(_CHANNEL_BLOCK, triton.next_power_of_2(max(C, 1)))


@triton_op("fastdeblur::sv_conv_triton", mutates_args=())
def sv_conv_triton(x: torch.Tensor, kernels: torch.Tensor, kh: int, kw: int,
                   boundary: str) -> torch.Tensor:
    """Triton forward: ``x`` ``(B, C, H, W)``, ``kernels`` ``(B|-, kh*kw, H, W)``."""
    x = x.contiguous()
    kernels = kernels.contiguous()
    B, C, H, W = x.shape
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    k_batch_stride = 0 if kernels.ndim == 3 else kh * kw * H * W
    n_hblocks = triton.cdiv(H, _BLOCK_H)
    block_c = _channel_block(C)
    grid = (B * n_hblocks, triton.cdiv(W, _BLOCK_W), triton.cdiv(C, block_c))
    wrap_triton(_sv_conv_fwd_kernel)[grid](
        x, kernels, y, C, H, W, k_batch_stride, n_hblocks,
        KH=kh, KW=kw, BOUNDARY=_BOUNDARY_CODE[boundary],
        BLOCK_C=block_c, BLOCK_H=_BLOCK_H, BLOCK_W=_BLOCK_W, ACC=_acc(x.dtype),
    )
    return y


@triton_op("fastdeblur::sv_conv_adjoint_triton", mutates_args=())
def sv_conv_adjoint_triton(y: torch.Tensor, kernels: torch.Tensor, kh: int, kw: int,
                           boundary: str) -> torch.Tensor:
    """Triton adjoint: gather onto the padded grid, then fold through the boundary map."""
    y = y.contiguous()
    kernels = kernels.contiguous()
    B, C, H, W = y.shape
    if y.numel() == 0:
        return torch.empty_like(y)
    top, left = kh - 1 - kh // 2, kw - 1 - kw // 2
    if boundary == "zero":  # only the padded cells inside the image matter
        HO, WO, row0, col0 = H, W, top, left
    else:
        HO, WO, row0, col0 = H + kh - 1, W + kw - 1, 0, 0
    z = torch.empty((B, C, HO, WO), dtype=y.dtype, device=y.device)
    k_batch_stride = 0 if kernels.ndim == 3 else kh * kw * H * W
    n_hblocks = triton.cdiv(HO, _BLOCK_H)
    block_c = _channel_block(C)
    grid = (B * n_hblocks, triton.cdiv(WO, _BLOCK_W), triton.cdiv(C, block_c))
    wrap_triton(_sv_conv_adj_kernel)[grid](
        y, kernels, z, C, H, W, HO, WO, row0, col0, k_batch_stride, n_hblocks,
        KH=kh, KW=kw, BLOCK_C=block_c, BLOCK_H=_BLOCK_H, BLOCK_W=_BLOCK_W, ACC=_acc(y.dtype),
    )
    if boundary == "zero":
        return z
    # The fold moves ~(H + kh) (W + kw) values, small next to the kh*kw*H*W kernel reads.
    wide = z if z.dtype in (torch.float32, torch.float64) else z.float()
    return _fold(wide, top, left, H, W, boundary).to(y.dtype)


@triton_op("fastdeblur::_sv_conv_kernel_grad_triton", mutates_args=())
def sv_conv_kernel_grad_triton(grad_y: torch.Tensor, x: torch.Tensor, kh: int, kw: int,
                               boundary: str, shared: bool) -> torch.Tensor:
    """Triton kernel gradient ``(B, kh*kw, H, W)`` (``(kh*kw, H, W)`` when ``shared``)."""
    grad_y = grad_y.contiguous()
    x = x.contiguous()
    B, C, H, W = x.shape
    shape = (kh * kw, H, W) if shared else (B, kh * kw, H, W)
    g = torch.empty(shape, dtype=x.dtype, device=x.device)
    if g.numel() == 0:
        return g
    if B == 0 or C == 0:
        return g.zero_()
    n_hblocks = triton.cdiv(H, _BLOCK_H)
    grid = ((1 if shared else B) * n_hblocks, triton.cdiv(W, _BLOCK_W))
    wrap_triton(_sv_conv_kgrad_kernel)[grid](
        grad_y, x, g, B if shared else 1, C, H, W, n_hblocks,
        KH=kh, KW=kw, BOUNDARY=_BOUNDARY_CODE[boundary],
        BLOCK_C=_channel_block(C), BLOCK_H=_BLOCK_H, BLOCK_W=_BLOCK_W, ACC=_acc(x.dtype),
    )
    return g

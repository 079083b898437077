"""Triton kernels of the fused NAF block (GPU; CPU tensors under ``TRITON_INTERPRET=1``).

Activations are channels-last (pixel rows of C values). The block runs as three kernels,
each tile of ``BLOCK_P`` pixels keeping its intermediates in registers, the 1x1
convolutions as ``tl.dot`` on ``[BLOCK_P, C] x [C, C]`` tiles:

1. ``_ln_conv1``: LayerNorm1 + conv1 -> z (B*H*W, 2C);
2. ``_dwconv_gate``: depthwise 3x3 + bias + SimpleGate -> g, and the per-image channel
   sums of g (atomics) for the channel-attention pool;
3. ``_tail``: channel attention folded as ``g * s``, conv3, beta residual, LayerNorm2,
   conv4, SimpleGate, conv5, gamma residual -> out.

The backward mirrors them (``_tail_bwd``, ``_dwconv_gate_bwd``, ``_dwconv_transpose``,
``_ln_conv1_bwd``), recomputing each tile's intermediates from z, g and x; parameter
gradients are accumulated in fp32 with atomics. Statistics and accumulation are fp32;
with bf16 activations the dots run in bf16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton


@triton.jit
def _dot(a, b, DOT_BF16: tl.constexpr):
    if DOT_BF16:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
    else:
        return tl.dot(a, b, input_precision="ieee", out_dtype=tl.float32)


@triton.jit
def _load_vec(ptr, cols, cmask):
    """fp32 vector ``ptr[cols]``, zero outside ``cmask``."""
    return tl.load(ptr + cols, mask=cmask, other=0.0).to(tl.float32)


@triton.jit
def _load_mat(ptr, row_stride, rows, cols, C, BLOCK_C: tl.constexpr):
    """[BLOCK_C, BLOCK_C] tile of a weight matrix, zero outside C x C."""
    m = (rows[:, None] < C) & (cols[None, :] < C)
    return tl.load(ptr + rows[:, None] * row_stride + cols[None, :], mask=m, other=0.0).to(
        tl.float32)


@triton.jit
def _conv1x1(a, w_ptr, b_ptr, cols, cmask, C, BLOCK_C: tl.constexpr, DOT_BF16: tl.constexpr):
    """``a W^T + b`` for a (C, C) 1x1-convolution weight at ``w_ptr``: a [BP, BC] -> [BP, BC]."""
    out = _dot(a, tl.trans(_load_mat(w_ptr, C, cols, cols, C, BLOCK_C)), DOT_BF16)
    return out + _load_vec(b_ptr, cols, cmask)[None, :]


@triton.jit
def _conv1x1_halves(a, w_ptr, b_ptr, cols, cmask, C, BLOCK_C: tl.constexpr,
                    DOT_BF16: tl.constexpr):
    """A (2C, C) 1x1 convolution (conv1, conv4) as its two C-wide output halves."""
    oa = _conv1x1(a, w_ptr, b_ptr, cols, cmask, C, BLOCK_C, DOT_BF16)
    ob = _conv1x1(a, w_ptr + C * C, b_ptr + C, cols, cmask, C, BLOCK_C, DOT_BF16)
    return oa, ob


@triton.jit
def _layer_norm(x, w, b, cmask, C, eps):
    """Row-wise LayerNorm of x [BP, BC] over its first C columns; returns (xn, xhat, rstd)."""
    mean = tl.sum(x, axis=1) / C
    xc = tl.where(cmask[None, :], x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / C
    rstd = 1.0 / tl.sqrt(var + eps)
    xhat = xc * rstd[:, None]
    return xhat * w[None, :] + b[None, :], xhat, rstd


@triton.jit
def _layer_norm_bwd(dxn, xhat, rstd, w, C):
    """Gradient of a row-wise LayerNorm's input from that of its output ``dxn``."""
    dxhat = dxn * w[None, :]
    mean1 = tl.sum(dxhat, axis=1) / C
    mean2 = tl.sum(dxhat * xhat, axis=1) / C
    return rstd[:, None] * (dxhat - mean1[:, None] - xhat * mean2[:, None])


@triton.jit
def _neighbour(offs_h, offs_w, pmask, H, W, dh: tl.constexpr, dw: tl.constexpr):
    """Flat pixel index (within the image) of the neighbour ``(h + dh, w + dw)`` and
    whether it lies inside the image (zero padding outside)."""
    hh = offs_h + dh
    ww = offs_w + dw
    ok = pmask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    return hh * W + ww, ok


@triton.jit
def _tap_halves(z_ptr, img_base, h, w, pmask, cols, cmask, H, W, C, k: tl.constexpr):
    """Both C-wide halves of z (rows of 2C) at the 3x3 tap ``k`` of each pixel: (za, zb)."""
    nb, ok = _neighbour(h, w, pmask, H, W, k // 3 - 1, k % 3 - 1)
    m = ok[:, None] & cmask[None, :]
    src = z_ptr + (img_base + nb)[:, None] * (2 * C) + cols[None, :]
    za = tl.load(src, mask=m, other=0.0).to(tl.float32)
    zb = tl.load(src + C, mask=m, other=0.0).to(tl.float32)
    return za, zb


@triton.jit
def _pixel_block(pid, it, ITERS, BLOCK_P: tl.constexpr, P, cmask):
    """Block ``it`` of the ITERS consecutive pixel blocks of program ``pid`` (over P pixels):
    (offsets, pixel mask, 2-D mask)."""
    offs = (pid * ITERS + it) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs < P
    return offs, pmask, pmask[:, None] & cmask[None, :]


@triton.jit
def _ln_conv1(x_ptr, n1w_ptr, n1b_ptr, w1_ptr, b1_ptr, z_ptr, P, C, eps,
              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, DOT_BF16: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = tl.arange(0, BLOCK_C)
    pmask = rows < P
    cmask = cols < C
    m2 = pmask[:, None] & cmask[None, :]
    x = tl.load(x_ptr + rows[:, None] * C + cols[None, :], mask=m2, other=0.0).to(tl.float32)
    xn, _, _ = _layer_norm(x, _load_vec(n1w_ptr, cols, cmask), _load_vec(n1b_ptr, cols, cmask),
                           cmask, C, eps)
    za, zb = _conv1x1_halves(xn, w1_ptr, b1_ptr, cols, cmask, C, BLOCK_C, DOT_BF16)
    zp = z_ptr + rows[:, None] * (2 * C) + cols[None, :]
    tl.store(zp, za.to(z_ptr.dtype.element_ty), mask=m2)
    tl.store(zp + C, zb.to(z_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _dwconv_halves(z_ptr, w2_ptr, b2_ptr, img_base, h, w, pmask, cols, cmask, H, W, C,
                   BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """u = depthwise3x3(z) + b2 for both channel halves (ua, ub), fp32 [BP, BC]."""
    ua = tl.zeros((BLOCK_P, BLOCK_C), tl.float32) + _load_vec(b2_ptr, cols, cmask)[None, :]
    ub = tl.zeros((BLOCK_P, BLOCK_C), tl.float32) + _load_vec(b2_ptr + C, cols, cmask)[None, :]
    for k in tl.static_range(9):
        za, zb = _tap_halves(z_ptr, img_base, h, w, pmask, cols, cmask, H, W, C, k)
        # conv2 weight (2C, 1, 3, 3): tap k of channel c at c * 9 + k
        ua += za * _load_vec(w2_ptr + k, cols * 9, cmask)[None, :]
        ub += zb * _load_vec(w2_ptr + C * 9 + k, cols * 9, cmask)[None, :]
    return ua, ub


@triton.jit
def _dwconv_gate(z_ptr, w2_ptr, b2_ptr, g_ptr, pool_ptr, H, W, C,
                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1)
    HW = H * W
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = tl.arange(0, BLOCK_C)
    pmask = offs < HW
    cmask = cols < C
    img_base = n * HW
    ua, ub = _dwconv_halves(z_ptr, w2_ptr, b2_ptr, img_base, offs // W, offs % W, pmask, cols,
                            cmask, H, W, C, BLOCK_P, BLOCK_C)
    m2 = pmask[:, None] & cmask[None, :]
    g = tl.where(m2, ua * ub, 0.0)
    tl.store(g_ptr + (img_base + offs)[:, None] * C + cols[None, :],
             g.to(g_ptr.dtype.element_ty), mask=m2)
    tl.atomic_add(pool_ptr + n * C + cols, tl.sum(g, axis=0), mask=cmask)


@triton.jit
def _tail_forward(g, x, s, cols, cmask, w3_ptr, b3_ptr, beta_ptr, n2w_ptr, n2b_ptr, w4_ptr,
                  b4_ptr, w5_ptr, b5_ptr, C, eps, BLOCK_C: tl.constexpr, DOT_BF16: tl.constexpr):
    """Everything after the pool for one tile; returns the intermediates for backward."""
    gs = g * s[None, :]
    t = _conv1x1(gs, w3_ptr, b3_ptr, cols, cmask, C, BLOCK_C, DOT_BF16)
    y = x + _load_vec(beta_ptr, cols, cmask)[None, :] * t
    yn, yhat, rstd = _layer_norm(y, _load_vec(n2w_ptr, cols, cmask),
                                 _load_vec(n2b_ptr, cols, cmask), cmask, C, eps)
    va, vb = _conv1x1_halves(yn, w4_ptr, b4_ptr, cols, cmask, C, BLOCK_C, DOT_BF16)
    hg = va * vb
    f = _conv1x1(hg, w5_ptr, b5_ptr, cols, cmask, C, BLOCK_C, DOT_BF16)
    return gs, t, y, yn, yhat, rstd, va, vb, hg, f


@triton.jit
def _tail(g_ptr, x_ptr, s_ptr, w3_ptr, b3_ptr, beta_ptr, n2w_ptr, n2b_ptr, w4_ptr, b4_ptr,
          w5_ptr, b5_ptr, gamma_ptr, out_ptr, HW, C, eps,
          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, DOT_BF16: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1)
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = tl.arange(0, BLOCK_C)
    pmask = offs < HW
    cmask = cols < C
    m2 = pmask[:, None] & cmask[None, :]
    idx = (n * HW + offs)[:, None] * C + cols[None, :]
    g = tl.load(g_ptr + idx, mask=m2, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + idx, mask=m2, other=0.0).to(tl.float32)
    s = _load_vec(s_ptr + n * C, cols, cmask)
    _, _, y, _, _, _, _, _, _, f = _tail_forward(
        g, x, s, cols, cmask, w3_ptr, b3_ptr, beta_ptr, n2w_ptr, n2b_ptr, w4_ptr, b4_ptr,
        w5_ptr, b5_ptr, C, eps, BLOCK_C, DOT_BF16)
    out = y + _load_vec(gamma_ptr, cols, cmask)[None, :] * f
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _atomic_mat(ptr, rows, cols, C, val):
    m = (rows[:, None] < C) & (cols[None, :] < C)
    tl.atomic_add(ptr + rows[:, None] * C + cols[None, :], val, mask=m)


@triton.jit
def _tail_bwd(g_ptr, x_ptr, s_ptr, dout_ptr, w3_ptr, b3_ptr, beta_ptr, n2w_ptr, n2b_ptr, w4_ptr,
              b4_ptr, w5_ptr, b5_ptr, gamma_ptr, dy_ptr, dgs_ptr, ds_ptr,
              gw3_ptr, gb3_ptr, gbeta_ptr, gn2w_ptr, gn2b_ptr, gw4_ptr, gb4_ptr, gw5_ptr, gb5_ptr,
              ggamma_ptr, HW, C, eps, ITERS,
              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, DOT_BF16: tl.constexpr):
    """Backward of _tail over ITERS consecutive pixel blocks of image n; the parameter
    gradients are summed in registers and added with one set of atomics a program."""
    pid = tl.program_id(0)
    n = tl.program_id(1)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    s = _load_vec(s_ptr + n * C, cols, cmask)
    gamma = _load_vec(gamma_ptr, cols, cmask)
    beta = _load_vec(beta_ptr, cols, cmask)
    n2w = _load_vec(n2w_ptr, cols, cmask)
    # (the weights are re-read from cache every block: holding them and the four
    # gradient accumulators in registers would spill)
    acc_w5 = tl.zeros((BLOCK_C, BLOCK_C), tl.float32)
    acc_w4a = tl.zeros((BLOCK_C, BLOCK_C), tl.float32)
    acc_w4b = tl.zeros((BLOCK_C, BLOCK_C), tl.float32)
    acc_w3 = tl.zeros((BLOCK_C, BLOCK_C), tl.float32)
    acc_gamma = tl.zeros((BLOCK_C,), tl.float32)
    acc_b5 = tl.zeros((BLOCK_C,), tl.float32)
    acc_b4a = tl.zeros((BLOCK_C,), tl.float32)
    acc_b4b = tl.zeros((BLOCK_C,), tl.float32)
    acc_n2w = tl.zeros((BLOCK_C,), tl.float32)
    acc_n2b = tl.zeros((BLOCK_C,), tl.float32)
    acc_beta = tl.zeros((BLOCK_C,), tl.float32)
    acc_b3 = tl.zeros((BLOCK_C,), tl.float32)
    acc_ds = tl.zeros((BLOCK_C,), tl.float32)
    for it in range(ITERS):
        offs, pmask, m2 = _pixel_block(pid, it, ITERS, BLOCK_P, HW, cmask)
        idx = (n * HW + offs)[:, None] * C + cols[None, :]
        g = tl.load(g_ptr + idx, mask=m2, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + idx, mask=m2, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + idx, mask=m2, other=0.0).to(tl.float32)
        gs, t, y, yn, yhat, rstd, va, vb, hg, f = _tail_forward(
            g, x, s, cols, cmask, w3_ptr, b3_ptr, beta_ptr, n2w_ptr, n2b_ptr, w4_ptr, b4_ptr,
            w5_ptr, b5_ptr, C, eps, BLOCK_C, DOT_BF16)
        # rows outside the image must not contribute to any parameter gradient
        yn = tl.where(m2, yn, 0.0)
        hg = tl.where(m2, hg, 0.0)
        gs = tl.where(m2, gs, 0.0)
        # out = y + gamma * f
        acc_gamma += tl.sum(dout * f, axis=0)
        df = dout * gamma[None, :]
        # f = hg W5^T + b5
        dh = _dot(df, _load_mat(w5_ptr, C, cols, cols, C, BLOCK_C), DOT_BF16)
        acc_w5 += _dot(tl.trans(df), hg, DOT_BF16)
        acc_b5 += tl.sum(df, axis=0)
        # hg = va * vb; v = yn W4^T + b4
        dva = dh * vb
        dvb = dh * va
        acc_w4a += _dot(tl.trans(dva), yn, DOT_BF16)
        acc_w4b += _dot(tl.trans(dvb), yn, DOT_BF16)
        acc_b4a += tl.sum(dva, axis=0)
        acc_b4b += tl.sum(dvb, axis=0)
        dyn = _dot(dva, _load_mat(w4_ptr, C, cols, cols, C, BLOCK_C), DOT_BF16)
        dyn += _dot(dvb, _load_mat(w4_ptr + C * C, C, cols, cols, C, BLOCK_C), DOT_BF16)
        # yn = LN2(y)
        acc_n2w += tl.sum(dyn * yhat, axis=0)
        acc_n2b += tl.sum(dyn, axis=0)
        dy = dout + _layer_norm_bwd(dyn, yhat, rstd, n2w, C)
        dy = tl.where(m2, dy, 0.0)
        # y = x + beta * t
        acc_beta += tl.sum(dy * t, axis=0)
        dt = dy * beta[None, :]
        # t = gs W3^T + b3
        dgs = _dot(dt, _load_mat(w3_ptr, C, cols, cols, C, BLOCK_C), DOT_BF16)
        acc_w3 += _dot(tl.trans(dt), gs, DOT_BF16)
        acc_b3 += tl.sum(dt, axis=0)
        # gs = g * s: ds[n] = sum_p dgs * g
        acc_ds += tl.sum(dgs * g, axis=0)
        tl.store(dy_ptr + idx, dy, mask=m2)
        tl.store(dgs_ptr + idx, dgs, mask=m2)
    _atomic_mat(gw5_ptr, cols, cols, C, acc_w5)
    _atomic_mat(gw4_ptr, cols, cols, C, acc_w4a)
    _atomic_mat(gw4_ptr + C * C, cols, cols, C, acc_w4b)
    _atomic_mat(gw3_ptr, cols, cols, C, acc_w3)
    tl.atomic_add(ggamma_ptr + cols, acc_gamma, mask=cmask)
    tl.atomic_add(gb5_ptr + cols, acc_b5, mask=cmask)
    tl.atomic_add(gb4_ptr + cols, acc_b4a, mask=cmask)
    tl.atomic_add(gb4_ptr + C + cols, acc_b4b, mask=cmask)
    tl.atomic_add(gn2w_ptr + cols, acc_n2w, mask=cmask)
    tl.atomic_add(gn2b_ptr + cols, acc_n2b, mask=cmask)
    tl.atomic_add(gbeta_ptr + cols, acc_beta, mask=cmask)
    tl.atomic_add(gb3_ptr + cols, acc_b3, mask=cmask)
    tl.atomic_add(ds_ptr + n * C + cols, acc_ds, mask=cmask)


@triton.jit
def _dwconv_gate_bwd(z_ptr, w2_ptr, b2_ptr, dgs_ptr, s_ptr, dpool_ptr, du_ptr, gw2_ptr, gb2_ptr,
                     H, W, C, ITERS, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Backward of _dwconv_gate over ITERS pixel blocks of image n: du, and the tap and
    bias gradients (summed in registers: row k of acc_wa / acc_wb is tap k)."""
    pid = tl.program_id(0)
    n = tl.program_id(1)
    HW = H * W
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    taps = tl.arange(0, 16)
    img_base = n * HW
    s = tl.load(s_ptr + n * C + cols, mask=cmask, other=0.0)
    dpool = tl.load(dpool_ptr + n * C + cols, mask=cmask, other=0.0)
    acc_wa = tl.zeros((16, BLOCK_C), tl.float32)
    acc_wb = tl.zeros((16, BLOCK_C), tl.float32)
    acc_ba = tl.zeros((BLOCK_C,), tl.float32)
    acc_bb = tl.zeros((BLOCK_C,), tl.float32)
    for it in range(ITERS):
        offs, pmask, m2 = _pixel_block(pid, it, ITERS, BLOCK_P, HW, cmask)
        h = offs // W
        w = offs % W
        ua, ub = _dwconv_halves(z_ptr, w2_ptr, b2_ptr, img_base, h, w, pmask, cols, cmask, H, W,
                                C, BLOCK_P, BLOCK_C)
        idx = (img_base + offs)[:, None] * C + cols[None, :]
        dg = tl.load(dgs_ptr + idx, mask=m2, other=0.0) * s[None, :] + dpool[None, :]
        dg = tl.where(m2, dg, 0.0)
        dua = dg * ub
        dub = dg * ua
        uidx = (img_base + offs)[:, None] * (2 * C) + cols[None, :]
        tl.store(du_ptr + uidx, dua, mask=m2)
        tl.store(du_ptr + uidx + C, dub, mask=m2)
        acc_ba += tl.sum(dua, axis=0)
        acc_bb += tl.sum(dub, axis=0)
        for k in tl.static_range(9):
            za, zb = _tap_halves(z_ptr, img_base, h, w, pmask, cols, cmask, H, W, C, k)
            acc_wa = tl.where(taps[:, None] == k, acc_wa + tl.sum(dua * za, axis=0)[None, :],
                              acc_wa)
            acc_wb = tl.where(taps[:, None] == k, acc_wb + tl.sum(dub * zb, axis=0)[None, :],
                              acc_wb)
    tmask = (taps[:, None] < 9) & cmask[None, :]
    # conv2 weight (2C, 1, 3, 3): tap k of channel c at c * 9 + k
    tl.atomic_add(gw2_ptr + cols[None, :] * 9 + taps[:, None], acc_wa, mask=tmask)
    tl.atomic_add(gw2_ptr + (C + cols[None, :]) * 9 + taps[:, None], acc_wb, mask=tmask)
    tl.atomic_add(gb2_ptr + cols, acc_ba, mask=cmask)
    tl.atomic_add(gb2_ptr + C + cols, acc_bb, mask=cmask)


@triton.jit
def _dwconv_transpose(du_ptr, w2_ptr, dz_ptr, H, W, C2,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """dz[p] = sum_k w2[:, k] * du[p - offset_k] over C2 = 2C channels."""
    pid = tl.program_id(0)
    n = tl.program_id(1)
    cb = tl.program_id(2)
    HW = H * W
    offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask = offs < HW
    cmask = cols < C2
    h = offs // W
    w = offs % W
    img_base = n * HW
    acc = tl.zeros((BLOCK_P, BLOCK_C), tl.float32)
    for k in tl.static_range(9):
        nb, ok = _neighbour(h, w, pmask, H, W, 1 - k // 3, 1 - k % 3)
        m = ok[:, None] & cmask[None, :]
        d = tl.load(du_ptr + (img_base + nb)[:, None] * C2 + cols[None, :], mask=m, other=0.0)
        acc += d * _load_vec(w2_ptr + k, cols * 9, cmask)[None, :]
    m2 = pmask[:, None] & cmask[None, :]
    tl.store(dz_ptr + (img_base + offs)[:, None] * C2 + cols[None, :], acc, mask=m2)


@triton.jit
def _ln_conv1_bwd(x_ptr, n1w_ptr, n1b_ptr, w1_ptr, dz_ptr, dy_ptr, dx_ptr, gn1w_ptr, gn1b_ptr,
                  gw1_ptr, gb1_ptr, P, C, eps, ITERS,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, DOT_BF16: tl.constexpr):
    """Backward of _ln_conv1 plus the residual gradient dy, over ITERS pixel blocks."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    w = _load_vec(n1w_ptr, cols, cmask)
    b = _load_vec(n1b_ptr, cols, cmask)
    w1a = _load_mat(w1_ptr, C, cols, cols, C, BLOCK_C)
    w1b = _load_mat(w1_ptr + C * C, C, cols, cols, C, BLOCK_C)
    acc_w1a = tl.zeros((BLOCK_C, BLOCK_C), tl.float32)
    acc_w1b = tl.zeros((BLOCK_C, BLOCK_C), tl.float32)
    acc_b1a = tl.zeros((BLOCK_C,), tl.float32)
    acc_b1b = tl.zeros((BLOCK_C,), tl.float32)
    acc_n1w = tl.zeros((BLOCK_C,), tl.float32)
    acc_n1b = tl.zeros((BLOCK_C,), tl.float32)
    for it in range(ITERS):
        rows, pmask, m2 = _pixel_block(pid, it, ITERS, BLOCK_P, P, cmask)
        x = tl.load(x_ptr + rows[:, None] * C + cols[None, :], mask=m2, other=0.0).to(
            tl.float32)
        xn, xhat, rstd = _layer_norm(x, w, b, cmask, C, eps)
        xn = tl.where(m2, xn, 0.0)
        zidx = rows[:, None] * (2 * C) + cols[None, :]
        dza = tl.load(dz_ptr + zidx, mask=m2, other=0.0)
        dzb = tl.load(dz_ptr + zidx + C, mask=m2, other=0.0)
        acc_w1a += _dot(tl.trans(dza), xn, DOT_BF16)
        acc_w1b += _dot(tl.trans(dzb), xn, DOT_BF16)
        acc_b1a += tl.sum(dza, axis=0)
        acc_b1b += tl.sum(dzb, axis=0)
        dxn = _dot(dza, w1a, DOT_BF16) + _dot(dzb, w1b, DOT_BF16)
        acc_n1w += tl.sum(dxn * xhat, axis=0)
        acc_n1b += tl.sum(dxn, axis=0)
        dy = tl.load(dy_ptr + rows[:, None] * C + cols[None, :], mask=m2, other=0.0)
        dx = dy + _layer_norm_bwd(dxn, xhat, rstd, w, C)
        tl.store(dx_ptr + rows[:, None] * C + cols[None, :], dx.to(dx_ptr.dtype.element_ty),
                 mask=m2)
    _atomic_mat(gw1_ptr, cols, cols, C, acc_w1a)
    _atomic_mat(gw1_ptr + C * C, cols, cols, C, acc_w1b)
    tl.atomic_add(gb1_ptr + cols, acc_b1a, mask=cmask)
    tl.atomic_add(gb1_ptr + C + cols, acc_b1b, mask=cmask)
    tl.atomic_add(gn1w_ptr + cols, acc_n1w, mask=cmask)
    tl.atomic_add(gn1b_ptr + cols, acc_n1b, mask=cmask)


def _block_c(C: int) -> int:
    return max(16, triton.next_power_of_2(C))


# Pixels a program at C <= 32 for each kernel; wider blocks take proportionally fewer.
# Chosen from ptxas resource usage of the bf16 kernels on sm_90 at 8 warps, C = 32 and
# 64: no spills except _tail_bwd (about 700 bytes a thread: its four C x C gradient
# accumulators live across the loop over ITERS pixel blocks, which in exchange cuts its
# atomics by ITERS).
_BASE_BLOCK_P = {"ln_conv1": 128, "dwconv_gate": 64, "tail": 128, "tail_bwd": 16,
                 "dwconv_gate_bwd": 16, "dwconv_transpose": 64, "ln_conv1_bwd": 64}
_NUM_WARPS = 8
# The backward kernels sum their parameter gradients over ITERS pixel blocks before one
# set of atomics; ITERS keeps the programs of an image near this count.
_TARGET_PROGRAMS = 1024


def _block_p(kernel: str, block_c: int) -> int:
    return max(16, min(128, _BASE_BLOCK_P[kernel] * 32 // block_c))


def _iters(pixels: int, block_p: int) -> int:
    return max(1, triton.cdiv(triton.cdiv(pixels, block_p), _TARGET_PROGRAMS))


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> contiguous channels-last storage, as (B*H*W, C) rows."""
    return t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(
        -1, t.shape[1])


def _flat(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p.contiguous() for p in params]


def _forward_parts(x: torch.Tensor, params: Sequence[torch.Tensor], eps: float):
    """Runs kernels 1 and 2 and the tiny channel-attention GEMV: returns rows of x, z, g,
    pooled (fp32, (B, C)), s (fp32, (B, C))."""
    N, C, H, W = x.shape
    (n1w, n1b, w1, b1, w2, b2, scaw, scab, *_rest) = params
    xr = _rows(x)
    P = xr.shape[0]
    BC = _block_c(C)
    dot_bf16 = x.dtype == torch.bfloat16
    z = torch.empty(P, 2 * C, device=x.device, dtype=x.dtype)
    g = torch.empty(P, C, device=x.device, dtype=x.dtype)
    pool = torch.zeros(N, C, device=x.device, dtype=torch.float32)
    if P > 0:
        bp = _block_p("ln_conv1", BC)
        wrap_triton(_ln_conv1)[(triton.cdiv(P, bp),)](
            xr, n1w, n1b, w1, b1, z, P, C, eps, BLOCK_P=bp, BLOCK_C=BC, DOT_BF16=dot_bf16,
            num_warps=_NUM_WARPS)
        bp = _block_p("dwconv_gate", BC)
        wrap_triton(_dwconv_gate)[(triton.cdiv(H * W, bp), N)](
            z, w2, b2, g, pool, H, W, C, BLOCK_P=bp, BLOCK_C=BC, num_warps=_NUM_WARPS)
    pooled = pool / max(H * W, 1)
    s = torch.addmm(scab.float(), pooled, scaw.reshape(C, C).float().t())
    return xr, z, g, pooled, s


@triton_op("fastdeblur::naf_block_triton", mutates_args=())
def naf_block_triton(x: torch.Tensor, params: list[torch.Tensor], eps: float) -> torch.Tensor:
    """Fused NAF block on Triton kernels; see :func:`fastdeblur.ops.reference.naf_block`."""
    params = _flat(params)
    N, C, H, W = x.shape
    xr, z, g, _, s = _forward_parts(x, params, eps)
    (_, _, _, _, _, _, _, _, w3, b3, beta, n2w, n2b, w4, b4, w5, b5, gamma) = params
    out = torch.empty_like(x, memory_format=torch.channels_last)
    if xr.shape[0] > 0:
        out_rows = out.permute(0, 2, 3, 1)
        BC = _block_c(C)
        bp = _block_p("tail", BC)
        wrap_triton(_tail)[(triton.cdiv(H * W, bp), N)](
            g, xr, s, w3, b3, beta, n2w, n2b, w4, b4, w5, b5, gamma, out_rows, H * W, C, eps,
            BLOCK_P=bp, BLOCK_C=BC, DOT_BF16=x.dtype == torch.bfloat16, num_warps=_NUM_WARPS)
    return out


@triton_op("fastdeblur::_naf_block_backward_triton", mutates_args=())
def naf_block_backward_triton(grad_out: torch.Tensor, x: torch.Tensor,
                              params: list[torch.Tensor], eps: float) -> list[torch.Tensor]:
    """Gradients of x and of the 18 parameters (recomputes the forward's intermediates)."""
    params = _flat(params)
    N, C, H, W = x.shape
    (n1w, n1b, w1, b1, w2, b2, scaw, scab, w3, b3, beta, n2w, n2b, w4, b4, w5, b5,
     gamma) = params
    xr, z, g, pooled, s = _forward_parts(x, params, eps)
    P = xr.shape[0]
    dev = x.device
    BC = _block_c(C)
    HW = H * W
    dot_bf16 = x.dtype == torch.bfloat16
    f32 = {"device": dev, "dtype": torch.float32}
    grads = {name: torch.zeros(p.shape, **f32) for name, p in zip(
        ("n1w", "n1b", "w1", "b1", "w2", "b2", "scaw", "scab", "w3", "b3", "beta", "n2w",
         "n2b", "w4", "b4", "w5", "b5", "gamma"), params, strict=True)}
    dx = torch.empty_like(x, memory_format=torch.channels_last)
    if P > 0:
        dout = _rows(grad_out)
        dy = torch.empty(P, C, **f32)
        dgs = torch.empty(P, C, **f32)
        ds = torch.zeros(N, C, **f32)
        bp = _block_p("tail_bwd", BC)
        iters = _iters(HW, bp)
        wrap_triton(_tail_bwd)[(triton.cdiv(HW, bp * iters), N)](
            g, xr, s, dout, w3, b3, beta, n2w, n2b, w4, b4, w5, b5, gamma, dy, dgs, ds,
            grads["w3"], grads["b3"], grads["beta"], grads["n2w"], grads["n2b"], grads["w4"],
            grads["b4"], grads["w5"], grads["b5"], grads["gamma"], HW, C, eps, iters,
            BLOCK_P=bp, BLOCK_C=BC, DOT_BF16=dot_bf16, num_warps=_NUM_WARPS)
        # s = Wsca pooled + bsca; pooled = mean(g)
        grads["scaw"] = (ds.t() @ pooled).reshape(scaw.shape)
        grads["scab"] = ds.sum(0)
        dpool = (ds @ scaw.reshape(C, C).float()) / (H * W)
        du = torch.empty(P, 2 * C, **f32)
        bp = _block_p("dwconv_gate_bwd", BC)
        iters = _iters(HW, bp)
        wrap_triton(_dwconv_gate_bwd)[(triton.cdiv(HW, bp * iters), N)](
            z, w2, b2, dgs, s, dpool, du, grads["w2"], grads["b2"], H, W, C, iters,
            BLOCK_P=bp, BLOCK_C=BC, num_warps=_NUM_WARPS)
        dz = torch.empty(P, 2 * C, **f32)
        bc2 = min(_block_c(2 * C), 128)
        bp = _block_p("dwconv_transpose", bc2)
        wrap_triton(_dwconv_transpose)[(triton.cdiv(HW, bp), N, triton.cdiv(2 * C, bc2))](
            du, w2, dz, H, W, 2 * C, BLOCK_P=bp, BLOCK_C=bc2, num_warps=_NUM_WARPS)
        bp = _block_p("ln_conv1_bwd", BC)
        iters = _iters(P, bp)
        wrap_triton(_ln_conv1_bwd)[(triton.cdiv(P, bp * iters),)](
            xr, n1w, n1b, w1, dz, dy, dx.permute(0, 2, 3, 1), grads["n1w"], grads["n1b"],
            grads["w1"], grads["b1"], P, C, eps, iters,
            BLOCK_P=bp, BLOCK_C=BC, DOT_BF16=dot_bf16, num_warps=_NUM_WARPS)
    out = [dx]
    for p, gr in zip(params, grads.values(), strict=True):
        out.append(gr.reshape(p.shape).to(p.dtype))
    return out


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, params, eps = inputs
    ctx.save_for_backward(x, *params)
    ctx.eps = eps


def _backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN202
    x, *params = ctx.saved_tensors
    grads = torch.ops.fastdeblur._naf_block_backward_triton(grad, x, params, ctx.eps)
    return grads[0], list(grads[1:]), None


naf_block_triton.register_autograd(_backward, setup_context=_setup_context)


def naf_block(x: torch.Tensor, params: Sequence[torch.Tensor], eps: float = 1e-6) -> torch.Tensor:
    """The fused NAF block on Triton (differentiable). ``x (B, C, H, W)``, params in the
    order of :data:`fastdeblur.ops.naf.PARAM_NAMES`; returns ``(B, C, H, W)``
    channels-last."""
    return naf_block_triton(x, list(params), eps)

"""Triton GRNN: flash-style online softmax over keys, same semantics as ``fastdeblur::grnn``.

Logits ``s[n, m] = (q_n . k_m - |k_m|^2 / 2) / sigma^2`` are accumulated in fp32 by
``tl.dot`` (tensor cores for fp16/bf16 inputs; exact fp32 products for fp32 inputs), the
row maximum and sum run online, so only a ``BLOCK_N x BLOCK_M`` tile lives at a time.
The feature dimension ``d`` and the value width ``p`` are walked in chunks, so any sizes
work. The backward pass recomputes the tiles from the forward's row log-sum-exp (as in
flash attention): one kernel for grad queries (rows), one for grad keys and one for grad
values (columns). Supports fp32, fp16 and bf16 tensors; on the CPU only under
``TRITON_INTERPRET=1`` (fp32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

__all__ = ["grnn_triton"]

_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _logits_tile(Q, K, HN, rows, kcols, N, M, D, stride_q, stride_k, scale,
                 EXCLUDE_SELF: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """(BLOCK_N, BLOCK_M) fp32 logits of query rows x key columns; invalid pairs -inf."""
    s = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dcols = d0 + tl.arange(0, BLOCK_D)
        q = tl.load(Q + rows[:, None] * stride_q + dcols[None, :],
                    mask=(rows[:, None] < N) & (dcols[None, :] < D), other=0.0)
        k = tl.load(K + kcols[:, None] * stride_k + dcols[None, :],
                    mask=(kcols[:, None] < M) & (dcols[None, :] < D), other=0.0)
        if IEEE:
            s += tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s += tl.dot(q, tl.trans(k))
    hn = tl.load(HN + kcols, mask=kcols < M, other=0.0)
    s = (s - hn[None, :]) * scale
    valid = kcols[None, :] < M
    if EXCLUDE_SELF:
        valid = valid & (rows[:, None] != kcols[None, :])
    return tl.where(valid, s, float("-inf"))


@triton.jit
def _grad_dot_values_tile(G, V, rows, kcols, N, M, P, stride_g, stride_v,
                          BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr,
                          IEEE: tl.constexpr):
    """(BLOCK_N, BLOCK_M) fp32 grad_out[rows] . values[kcols]."""
    dp = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        pcols = p0 + tl.arange(0, BLOCK_P)
        g = tl.load(G + rows[:, None] * stride_g + pcols[None, :],
                    mask=(rows[:, None] < N) & (pcols[None, :] < P), other=0.0)
        v = tl.load(V + kcols[:, None] * stride_v + pcols[None, :],
                    mask=(kcols[:, None] < M) & (pcols[None, :] < P), other=0.0)
        if IEEE:
            dp += tl.dot(g, tl.trans(v), input_precision="ieee")
        else:
            dp += tl.dot(g, tl.trans(v))
    return dp


@triton.jit
def _grnn_fwd_kernel(Q, K, V, HN, Out, Lse, N, M, D, P, stride_q, stride_k, stride_v,
                     stride_o, scale, EXCLUDE_SELF: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
                     IEEE: tl.constexpr):
    # Grid: (query blocks, value-column chunks). Each program owns BLOCK_P output columns.
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    pcols = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    m_i = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_N,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_N, BLOCK_P), dtype=tl.float32)
    for k0 in range(0, M, BLOCK_M):
        kcols = k0 + tl.arange(0, BLOCK_M)
        s = _logits_tile(Q, K, HN, rows, kcols, N, M, D, stride_q, stride_k, scale,
                         EXCLUDE_SELF, BLOCK_N, BLOCK_M, BLOCK_D, IEEE)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with no valid key yet keeps m = -inf; use 0 there so no -inf - -inf appears.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + kcols[:, None] * stride_v + pcols[None, :],
                    mask=(kcols[:, None] < M) & (pcols[None, :] < P), other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(Out + rows[:, None] * stride_o + pcols[None, :], out.to(Out.dtype.element_ty),
             mask=(rows[:, None] < N) & (pcols[None, :] < P))
    lse = tl.where(l_i > 0, m_i + tl.log(l_safe), float("-inf"))
    # Every column chunk computes the same lse; the first one stores it.
    lse_rows = tl.where(tl.program_id(1) == 0, rows, N)
    tl.store(Lse + lse_rows, lse, mask=lse_rows < N)


@triton.jit
def _grnn_bwd_dq_kernel(Q, K, V, HN, G, Lse, Delta, DQ, N, M, D, P, stride_q, stride_k,
                        stride_v, stride_g, stride_dq, scale, EXCLUDE_SELF: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_P: tl.constexpr, IEEE: tl.constexpr):
    # grad_q[n] = scale * sum_m dS[n, m] k_m; grid: (query blocks, d chunks of the output).
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dout = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    lse = tl.load(Lse + rows, mask=rows < N, other=0.0)
    delta = tl.load(Delta + rows, mask=rows < N, other=0.0)
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for k0 in range(0, M, BLOCK_M):
        kcols = k0 + tl.arange(0, BLOCK_M)
        s = _logits_tile(Q, K, HN, rows, kcols, N, M, D, stride_q, stride_k, scale,
                         EXCLUDE_SELF, BLOCK_N, BLOCK_M, BLOCK_D, IEEE)
        p = tl.exp(tl.minimum(s - lse[:, None], 0.0))
        dp = _grad_dot_values_tile(G, V, rows, kcols, N, M, P, stride_g, stride_v,
                                   BLOCK_N, BLOCK_M, BLOCK_P, IEEE)
        ds = p * (dp - delta[:, None])
        k = tl.load(K + kcols[:, None] * stride_k + dout[None, :],
                    mask=(kcols[:, None] < M) & (dout[None, :] < D), other=0.0)
        acc += tl.dot(ds, k.to(tl.float32), input_precision="ieee")
    tl.store(DQ + rows[:, None] * stride_dq + dout[None, :], (acc * scale).to(DQ.dtype.element_ty),
             mask=(rows[:, None] < N) & (dout[None, :] < D))


@triton.jit
def _grnn_bwd_dk_kernel(Q, K, V, HN, G, Lse, Delta, DK, N, M, D, P, stride_q, stride_k,
                        stride_v, stride_g, stride_dk, scale, EXCLUDE_SELF: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_P: tl.constexpr, IEEE: tl.constexpr):
    # grad_k[m] = scale * (sum_n dS[n, m] q_n - k_m sum_n dS[n, m]); grid: (key blocks, d chunks).
    kcols = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dout = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    colsum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        lse = tl.load(Lse + rows, mask=rows < N, other=0.0)
        delta = tl.load(Delta + rows, mask=rows < N, other=0.0)
        s = _logits_tile(Q, K, HN, rows, kcols, N, M, D, stride_q, stride_k, scale,
                         EXCLUDE_SELF, BLOCK_N, BLOCK_M, BLOCK_D, IEEE)
        p = tl.exp(tl.minimum(s - lse[:, None], 0.0))
        p = tl.where(rows[:, None] < N, p, 0.0)
        dp = _grad_dot_values_tile(G, V, rows, kcols, N, M, P, stride_g, stride_v,
                                   BLOCK_N, BLOCK_M, BLOCK_P, IEEE)
        ds = p * (dp - delta[:, None])
        q = tl.load(Q + rows[:, None] * stride_q + dout[None, :],
                    mask=(rows[:, None] < N) & (dout[None, :] < D), other=0.0)
        acc += tl.dot(tl.trans(ds), q.to(tl.float32), input_precision="ieee")
        colsum += tl.sum(ds, 0)
    k = tl.load(K + kcols[:, None] * stride_k + dout[None, :],
                mask=(kcols[:, None] < M) & (dout[None, :] < D), other=0.0).to(tl.float32)
    grad = (acc - colsum[:, None] * k) * scale
    tl.store(DK + kcols[:, None] * stride_dk + dout[None, :], grad.to(DK.dtype.element_ty),
             mask=(kcols[:, None] < M) & (dout[None, :] < D))


@triton.jit
def _grnn_bwd_dv_kernel(Q, K, HN, G, Lse, DV, N, M, D, P, stride_q, stride_k, stride_g,
                        stride_dv, scale, EXCLUDE_SELF: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
                        IEEE: tl.constexpr):
    # grad_v[m] = sum_n P[n, m] grad_out[n]; grid: (key blocks, p chunks).
    kcols = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    pout = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    acc = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        lse = tl.load(Lse + rows, mask=rows < N, other=0.0)
        s = _logits_tile(Q, K, HN, rows, kcols, N, M, D, stride_q, stride_k, scale,
                         EXCLUDE_SELF, BLOCK_N, BLOCK_M, BLOCK_D, IEEE)
        p = tl.exp(tl.minimum(s - lse[:, None], 0.0))
        p = tl.where(rows[:, None] < N, p, 0.0)
        g = tl.load(G + rows[:, None] * stride_g + pout[None, :],
                    mask=(rows[:, None] < N) & (pout[None, :] < P), other=0.0)
        acc += tl.dot(tl.trans(p), g.to(tl.float32), input_precision="ieee")
    tl.store(DV + kcols[:, None] * stride_dv + pout[None, :], acc.to(DV.dtype.element_ty),
             mask=(kcols[:, None] < M) & (pout[None, :] < P))


def _block(n: int, lo: int, hi: int) -> int:
    """Next power of two of n, clamped to [lo, hi] (tl.dot needs dims >= 16)."""
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _config(queries: torch.Tensor, dim: int, width: int) -> dict:
    interpret = queries.device.type != "cuda"
    return {
        "BLOCK_N": 32 if interpret else 64,
        "BLOCK_M": 32 if interpret else 64,
        "BLOCK_D": _block(dim, 16, 64),
        "BLOCK_P": _block(width, 16, 64),
        # fp32 inputs: exact fp32 products (no TF32) to match the native kernels.
        "IEEE": queries.dtype == torch.float32,
    }


def _check(queries: torch.Tensor) -> None:
    if queries.dtype not in _SUPPORTED:
        raise TypeError(f"grnn (triton): dtype must be one of {_SUPPORTED}, got {queries.dtype}")


@triton_op("fastdeblur::grnn_triton", mutates_args=())
def grnn_triton(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, sigma: float,
                exclude_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``fastdeblur::grnn``: ``(out (N, p), lse (N,) fp32)``; see ``fastdeblur.ops.grnn``."""
    _check(queries)
    q, k, v = queries.contiguous(), keys.contiguous(), values.contiguous()
    n, dim = q.shape
    m, width = v.shape
    half_norm = 0.5 * k.float().square().sum(1)
    out = torch.empty((n, width), dtype=q.dtype, device=q.device)
    lse = torch.empty((n,), dtype=torch.float32, device=q.device)
    if n == 0:
        return out, lse
    cfg = _config(q, dim, width)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(width, cfg["BLOCK_P"]))
    wrap_triton(_grnn_fwd_kernel)[grid](
        q, k, v, half_norm, out, lse, n, m, dim, width, q.stride(0), k.stride(0), v.stride(0),
        out.stride(0), 1.0 / (sigma * sigma), EXCLUDE_SELF=exclude_self, **cfg)
    return out, lse


@triton_op("fastdeblur::_grnn_triton_backward", mutates_args=())
def grnn_triton_backward(grad_out: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor,
                         values: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                         sigma: float, exclude_self: bool, output_mask: list[bool]
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`grnn_triton` w.r.t. (queries, keys, values); unwanted ones empty."""
    q, k, v = queries.contiguous(), keys.contiguous(), values.contiguous()
    g = grad_out.contiguous()
    n, dim = q.shape
    m, width = v.shape
    half_norm = 0.5 * k.float().square().sum(1)
    delta = (g.float() * out.float()).sum(1)
    scale = 1.0 / (sigma * sigma)
    cfg = _config(q, dim, width)
    bn, bm, bd, bp = cfg["BLOCK_N"], cfg["BLOCK_M"], cfg["BLOCK_D"], cfg["BLOCK_P"]
    empty = q.new_empty((0,))
    gq = torch.empty_like(q) if output_mask[0] else empty
    gk = torch.empty_like(k) if output_mask[1] else empty
    gv = torch.empty_like(v) if output_mask[2] else empty
    if n == 0:  # no query: key and value gradients are zero
        return gq, gk.zero_(), gv.zero_()
    common = {"EXCLUDE_SELF": exclude_self, **cfg}
    if output_mask[0]:
        wrap_triton(_grnn_bwd_dq_kernel)[(triton.cdiv(n, bn), triton.cdiv(dim, bd))](
            q, k, v, half_norm, g, lse, delta, gq, n, m, dim, width, q.stride(0), k.stride(0),
            v.stride(0), g.stride(0), gq.stride(0), scale, **common)
    if output_mask[1]:
        wrap_triton(_grnn_bwd_dk_kernel)[(triton.cdiv(m, bm), triton.cdiv(dim, bd))](
            q, k, v, half_norm, g, lse, delta, gk, n, m, dim, width, q.stride(0), k.stride(0),
            v.stride(0), g.stride(0), gk.stride(0), scale, **common)
    if output_mask[2]:
        wrap_triton(_grnn_bwd_dv_kernel)[(triton.cdiv(m, bm), triton.cdiv(width, bp))](
            q, k, half_norm, g, lse, gv, n, m, dim, width, q.stride(0), k.stride(0), g.stride(0),
            gv.stride(0), scale, **common)
    return gq, gk, gv


def _setup_context(ctx, inputs, output):
    queries, keys, values, sigma, exclude_self = inputs
    out, lse = output
    ctx.save_for_backward(queries, keys, values, out, lse)
    ctx.sigma = sigma
    ctx.exclude_self = exclude_self


def _backward(ctx, grad_out, grad_lse):
    # lse is an auxiliary output for the backward pass; its gradient is not propagated.
    queries, keys, values, out, lse = ctx.saved_tensors
    mask = list(ctx.needs_input_grad[:3])
    if not any(mask):
        return None, None, None, None, None
    gq, gk, gv = grnn_triton_backward(grad_out, queries, keys, values, out, lse, ctx.sigma,
                                      ctx.exclude_self, mask)
    return (gq if mask[0] else None, gk if mask[1] else None, gv if mask[2] else None, None,
            None)


grnn_triton.register_autograd(_backward, setup_context=_setup_context)

"""Pure-PyTorch references of every fastdeblur op.

Each function here is the specification of its op (shapes, exact formula), the
fallback when the native extension is missing, and the baseline of ``bench/``.
"""

from __future__ import annotations

import torch
from torch.nn.functional import scaled_dot_product_attention

# ---- grnn ----
# Generalised regression neural network (Nadaraya-Watson regression with a Gaussian
# kernel): y(x) = sum_i Y_i exp(-|x - X_i|^2 / 2 sigma^2) / sum_i exp(-|x - X_i|^2 / 2 sigma^2).
# Dropping the query's own |x|^2 (constant over i, cancels in the ratio) leaves a softmax
# over the logits (x . X_i - |X_i|^2 / 2) / sigma^2: attention with a folded key bias.


def _grnn_scale_inputs(queries: torch.Tensor, keys: torch.Tensor,
                       sigma: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide queries and keys by sigma (scalar or per dimension) so that sigma becomes 1."""
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(queries.dtype)
    return queries / sigma, keys / sigma


def _grnn_self_mask(n: int, m: int, device: torch.device) -> torch.Tensor:
    """(N, M) boolean mask, True where a query may attend to a key (False on i == j)."""
    return ~torch.eye(n, m, dtype=torch.bool, device=device)


def grnn(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
         sigma: float | torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """GRNN / Nadaraya-Watson regression as attention (reference of ``fastdeblur.ops.grnn``).

    ``out[n] = sum_m w[n, m] values[m] / sum_m w[n, m]`` with
    ``w[n, m] = exp(-sum_j (queries[n, j] - keys[m, j])^2 / (2 sigma_j^2))``, computed as
    ``softmax_m((q_n . k_m - |k_m|^2 / 2))`` after dividing queries and keys by sigma,
    through ``torch.nn.functional.scaled_dot_product_attention`` with the key term
    folded into an additive bias (the N x M matrix is materialised).

    Args:
        queries: ``(N, d)`` points where the regression is evaluated.
        keys: ``(M, d)`` pattern-layer points ``X_i``, ``M >= 1``.
        values: ``(M, p)`` targets ``Y_i``.
        sigma: kernel width, a positive float, a 0-dim tensor or a ``(d,)`` tensor (one
            width per input dimension).
        exclude_self: leave-one-out: query ``n`` ignores key ``n`` (needs ``N == M`` and
            ``M >= 2``), as when queries and keys are the same training points.

    Returns:
        ``(N, p)`` regression outputs, dtype of ``queries``.
    """
    q, k = _grnn_scale_inputs(queries, keys, sigma)
    bias = -0.5 * (k * k).sum(-1)  # (M,)
    attn_bias = bias.expand(q.shape[0], -1)
    if exclude_self:
        mask = _grnn_self_mask(q.shape[0], k.shape[0], q.device)
        attn_bias = attn_bias.masked_fill(~mask, float("-inf"))
    # scale=1: the logits are exactly q . k + bias.
    out = scaled_dot_product_attention(q[None], k[None], values[None], attn_mask=attn_bias[None],
                                       scale=1.0)
    return out[0]


def grnn_naive(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               sigma: float | torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """GRNN through the explicit distance matrix: cdist, softmax, matmul.

    Same arguments and result as :func:`grnn`; the textbook form (and the benchmark
    baseline). ``softmax`` subtracts the row maximum, so it is stable for small sigma.
    """
    q, k = _grnn_scale_inputs(queries, keys, sigma)
    logits = -0.5 * torch.cdist(q, k).square()  # (N, M)
    if exclude_self:
        mask = _grnn_self_mask(q.shape[0], k.shape[0], q.device)
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ values


def grnn_lse(queries: torch.Tensor, keys: torch.Tensor, sigma: float,
             exclude_self: bool = False) -> torch.Tensor:
    """Row log-sum-exp of the GRNN logits ``(q . k - |k|^2 / 2) / sigma^2``: ``(N,)``.

    The second output of the native op (saved for the backward pass).
    """
    logits = (queries @ keys.T - 0.5 * (keys * keys).sum(-1)) / (sigma * sigma)
    if exclude_self:
        mask = _grnn_self_mask(queries.shape[0], keys.shape[0], queries.device)
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(logits, dim=-1)

# ---- end grnn ----


import torch.nn.functional as F

# ---- naf_block ----
# The NAF block of NAFNet (Chen et al., "Simple Baselines for Image Restoration",
# ECCV 2022), written as one function of its input and parameters so that the fused
# kernels have a single specification to match.

def layer_norm2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the channels of every pixel.

    Args:
        x: ``(B, C, H, W)``.
        weight, bias: ``(C,)``.
        eps: Added to the (biased) variance.

    Returns:
        ``(B, C, H, W)``: ``(x - mean_c x) / sqrt(var_c x + eps) * weight + bias``.
    """
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    xhat = (x - mean) / torch.sqrt(var + eps)
    return xhat * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """SimpleGate: ``(B, 2C, H, W) -> (B, C, H, W)``, first channel half times the second."""
    a, b = x.chunk(2, dim=1)
    return a * b


def naf_block(x: torch.Tensor, norm1_weight: torch.Tensor, norm1_bias: torch.Tensor,
              conv1_weight: torch.Tensor, conv1_bias: torch.Tensor,
              conv2_weight: torch.Tensor, conv2_bias: torch.Tensor,
              sca_weight: torch.Tensor, sca_bias: torch.Tensor,
              conv3_weight: torch.Tensor, conv3_bias: torch.Tensor, beta: torch.Tensor,
              norm2_weight: torch.Tensor, norm2_bias: torch.Tensor,
              conv4_weight: torch.Tensor, conv4_bias: torch.Tensor,
              conv5_weight: torch.Tensor, conv5_bias: torch.Tensor, gamma: torch.Tensor,
              eps: float = 1e-6) -> torch.Tensor:
    """One NAF block (dropout-free), channel width ``C``, expansion 2 in both halves.

    Shapes: ``x (B, C, H, W)``; norm weights/biases ``(C,)``; ``conv1_weight (2C, C, 1, 1)``,
    ``conv1_bias (2C,)``; ``conv2_weight (2C, 1, 3, 3)`` (depthwise), ``conv2_bias (2C,)``;
    ``sca_weight (C, C, 1, 1)``, ``sca_bias (C,)``; ``conv3_weight (C, C, 1, 1)``,
    ``conv3_bias (C,)``; ``beta, gamma (1, C, 1, 1)``; ``conv4_weight (2C, C, 1, 1)``,
    ``conv4_bias (2C,)``; ``conv5_weight (C, C, 1, 1)``, ``conv5_bias (C,)``.

    Formula::

        g = SimpleGate(dwconv3x3(conv1(LN1(x))))          # zero padding
        s = sca_weight @ mean_{h,w}(g) + sca_bias          # simplified channel attention
        y = x + beta * conv3(g * s)
        out = y + gamma * conv5(SimpleGate(conv4(LN2(y))))

    Returns:
        ``(B, C, H, W)``.
    """
    h = layer_norm2d(x, norm1_weight, norm1_bias, eps)
    h = F.conv2d(h, conv1_weight, conv1_bias)
    h = F.conv2d(h, conv2_weight, conv2_bias, padding=1, groups=conv2_weight.shape[0])
    h = simple_gate(h)
    s = F.conv2d(F.adaptive_avg_pool2d(h, 1), sca_weight, sca_bias)
    h = F.conv2d(h * s, conv3_weight, conv3_bias)
    y = x + h * beta
    h = layer_norm2d(y, norm2_weight, norm2_bias, eps)
    h = simple_gate(F.conv2d(h, conv4_weight, conv4_bias))
    h = F.conv2d(h, conv5_weight, conv5_bias)
    return y + h * gamma


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

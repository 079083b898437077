"""Pure-PyTorch references of every fastdeblur op.

Each function here is the specification of its op (shapes, exact formula), the
fallback when the native extension is missing, and the baseline of ``bench/``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.functional import scaled_dot_product_attention

from fastdeblur.convolution import boundary_index, check_boundary, pad

# ---- pc_conv ----
#
# Product-convolution over a grid of kernels (DESIGN.md, "Spatially varying blur"):
#
#     y = Σ_i h_i ⋆ (w_i ⊙ x)
#
# i runs over the gh × gw grid cells; h_i is the kernel of cell i and w_i its bilinear weight.
# Grid row a has its centre at pixel row c_a = (a + 0.5)·H/gh − 0.5 (likewise columns). For a
# pixel row r, t(r) = clamp((r + 0.5)·gh/H − 0.5, 0, gh − 1) is its position in grid units and
# the row weight of grid row a is the hat max(0, 1 − |t(r) − a|); the weight of cell (a, b) is
# the product of its row and column weights. Because t is clamped, pixels between the border
# and the outermost centres take the outermost cells' kernels at full weight, so the weights
# are non-negative, at most 4 are non-zero at any pixel, and they sum to 1 everywhere.
#
# ``⋆`` is the library's true convolution (:func:`fastdeblur.convolution.convolve`) applied
# to the product w_i ⊙ x *with its boundary padding*: the padded product at an outside
# position p is (w_i ⊙ x)(m(p)), m being the boundary map of :func:`boundary_index` (zero for
# ``zero``). Padding is linear, so with every h_i equal to h the sum collapses to h ⋆ x, which
# is exactly :func:`fastdeblur.blur` for every boundary. Written per pixel:
#
#     y[p] = Σ_q Σ_i h_i[q] · w_i(m(p − q)) · x(m(p − q))
#
# — the weights are evaluated at the *source* pixel. The per-pixel (gather) model of
# ``sv_conv`` evaluates its kernel at the *output* pixel instead, y[p] = Σ_q K[p, q] x[p − q];
# :func:`grid_to_pixel_kernels` builds that model's K by bilinear interpolation of the grid.
# The two operators agree where the kernels vary slowly and differ in general: the
# product-convolution is a sum of convolutions of re-weighted images (it conserves the
# image's mass for normalised kernels), the per-pixel model re-weights the outputs (it
# reproduces a constant image for normalised kernels). The adjoint of one is the
# other with flipped kernels, up to the boundary folding.
#
# The functions here are the specification and the memory-bounded PyTorch baseline: each
# cell's weight is non-zero only on a band about two cells wide, so each cell is convolved
# on that band's window only (a local direct convolution, overlap-added), never on the
# whole image.


def pc_axis_weights(
    n: int, cells: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> torch.Tensor:
    """Bilinear weights of the grid rows (or columns) along one image axis.

    Args:
        n: Number of pixels along the axis.
        cells: Number of grid cells along the axis (>= 1).
        dtype: Output dtype (computed in float64 first).
        device: Output device.

    Returns:
        ``(cells, n)``: ``w[a, r] = max(0, 1 − |t(r) − a|)`` with
        ``t(r) = clamp((r + 0.5)·cells/n − 0.5, 0, cells − 1)``; every column sums to 1.
    """
    r = torch.arange(n, dtype=torch.float64, device=device)
    t = ((r + 0.5) * (cells / max(n, 1)) - 0.5).clamp(0.0, cells - 1.0)
    a = torch.arange(cells, dtype=torch.float64, device=device)
    w = (1.0 - (t.unsqueeze(0) - a.unsqueeze(1)).abs()).clamp_min(0.0)
    return w.to(dtype)


def _pc_padded_weights(
    n: int, cells: int, before: int, after: int, boundary: str, dtype: torch.dtype,
    device: torch.device | None,
) -> torch.Tensor:
    """Axis weights on the padded axis: ``wp[a, s] = w[a, m(s − before)]`` (0 where ``zero``
    pads), shape ``(cells, before + n + after)``."""
    w = pc_axis_weights(n, cells, dtype, device)
    idx = boundary_index(torch.arange(-before, n + after, device=device), n, boundary)
    wp = w[:, idx.clamp_min(0)]
    return torch.where(idx.unsqueeze(0) >= 0, wp, torch.zeros_like(wp))


def _nonzero_runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` of non-zero entries of a 1-D tensor."""
    runs: list[tuple[int, int]] = []
    start = None
    for s, nz in enumerate((row != 0).tolist()):
        if nz and start is None:
            start = s
        elif not nz and start is not None:
            runs.append((start, s))
            start = None
    if start is not None:
        runs.append((start, len(row)))
    return runs


def _pc_check(x: torch.Tensor, grid_kernels: torch.Tensor, boundary: str, name: str = "x"
              ) -> torch.Tensor:
    """Validate arguments; return the kernels as ``(Bk, gh, gw, kh, kw)`` (Bk = 1 or B)."""
    check_boundary(boundary)
    if x.ndim != 4:
        raise ValueError(f"{name} must be (B, C, H, W); got shape {tuple(x.shape)}")
    k = grid_kernels
    if k.ndim == 4:
        k = k.unsqueeze(0)
    if k.ndim != 5 or k.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            "grid_kernels must be (gh, gw, kh, kw) or (B, gh, gw, kh, kw) with B = "
            f"{x.shape[0]}; got shape {tuple(grid_kernels.shape)}"
        )
    if min(k.shape[1:]) < 1:
        raise ValueError(f"grid_kernels must not be empty; got shape {tuple(grid_kernels.shape)}")
    return k


def _pc_geometry(H: int, W: int, k: torch.Tensor, boundary: str, dtype: torch.dtype):
    """Padding widths, padded axis weights and their non-zero runs (padded coordinates)."""
    gh, gw, kh, kw = k.shape[1:]
    cy, cx = kh // 2, kw // 2
    top, left = kh - 1 - cy, kw - 1 - cx
    wyp = _pc_padded_weights(H, gh, top, cy, boundary, dtype, k.device)
    wxp = _pc_padded_weights(W, gw, left, cx, boundary, dtype, k.device)
    return (top, cy, left, cx), wyp, wxp, [_nonzero_runs(r) for r in wyp], [
        _nonzero_runs(c) for c in wxp
    ]


def _masked(weights: torch.Tensor, lo: int, hi: int, run: tuple[int, int]) -> torch.Tensor:
    """``weights[lo:hi]`` with the entries outside ``run`` set to 0."""
    s = torch.arange(lo, hi, device=weights.device)
    inside = (s >= run[0]) & (s < run[1])
    part = weights[lo:hi]
    return torch.where(inside, part, torch.zeros_like(part))


def _grouped_conv(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Valid correlation of ``z (B, C, h, w)`` with ``k (Bk, kh, kw)`` (one kernel per sample
    or one for all), ``(B, C, h − kh + 1, w − kw + 1)``."""
    B, C = z.shape[:2]
    if k.shape[0] == 1:
        out = F.conv2d(z.reshape(B * C, 1, *z.shape[-2:]), k.unsqueeze(1))
    else:
        weight = k.unsqueeze(1).repeat_interleave(C, dim=0)
        out = F.conv2d(z.reshape(1, B * C, *z.shape[-2:]), weight, groups=B * C)
    return out.reshape(B, C, *out.shape[-2:])


def _pad_adjoint(xp: torch.Tensor, widths: tuple[int, int, int, int], H: int, W: int,
                 boundary: str) -> torch.Tensor:
    """Adjoint of :func:`fastdeblur.convolution.pad`: fold the padded ``(..., Hp, Wp)`` back
    onto ``(..., H, W)`` by summing every padded sample into the pixel it copies."""
    top, bottom, left, right = widths
    rows = boundary_index(torch.arange(-top, H + bottom, device=xp.device), H, boundary)
    cols = boundary_index(torch.arange(-left, W + right, device=xp.device), W, boundary)
    keep_r, keep_c = rows >= 0, cols >= 0
    xr = xp.new_zeros(*xp.shape[:-2], H, xp.shape[-1])
    xr.index_add_(-2, rows[keep_r], xp[..., keep_r, :])
    out = xp.new_zeros(*xp.shape[:-2], H, W)
    out.index_add_(-1, cols[keep_c], xr[..., keep_c])
    return out


def _pc_blocks(H: int, W: int, k: torch.Tensor, boundary: str, dtype: torch.dtype):
    """Yield the local pieces of the operator: per cell (a, b) and pair of non-zero runs of its
    padded weights, the affected output box and the padded-input window feeding it.

    Yields ``(a, b, (i0, i1, j0, j1), wrow, wcol)``: outputs ``y[i0:i1, j0:j1]`` read the
    padded window ``[i0, i1 + kh − 1) × [j0, j1 + kw − 1)`` weighted by ``wrow ⊗ wcol``."""
    kh, kw = k.shape[-2:]
    widths, wyp, wxp, row_runs, col_runs = _pc_geometry(H, W, k, boundary, dtype)
    for a, runs_a in enumerate(row_runs):
        for ra in runs_a:
            i0, i1 = max(0, ra[0] - kh + 1), min(H, ra[1])
            if i0 >= i1:
                continue
            wrow = _masked(wyp[a], i0, i1 + kh - 1, ra)
            for b, runs_b in enumerate(col_runs):
                for rb in runs_b:
                    j0, j1 = max(0, rb[0] - kw + 1), min(W, rb[1])
                    if j0 >= j1:
                        continue
                    wcol = _masked(wxp[b], j0, j1 + kw - 1, rb)
                    yield a, b, (i0, i1, j0, j1), wrow, wcol


def pc_conv(x: torch.Tensor, grid_kernels: torch.Tensor, boundary: str = "reflect"
            ) -> torch.Tensor:
    """Product-convolution ``y = Σ_i h_i ⋆ (w_i ⊙ x)`` over a grid of kernels (reference).

    See the comment at the top of this section for the exact weights and boundary rule.

    Args:
        x: Images ``(B, C, H, W)``.
        grid_kernels: ``(gh, gw, kh, kw)`` shared by the batch or ``(B, gh, gw, kh, kw)``;
            kernel ``[a, b]`` is centred at ``(kh // 2, kw // 2)`` and applied as a true
            convolution on grid cell ``(a, b)``.
        boundary: ``reflect`` | ``zero`` | ``replicate`` | ``circular``.

    Returns:
        ``(B, C, H, W)``.
    """
    k = _pc_check(x, grid_kernels, boundary).to(x.dtype)
    B, C, H, W = x.shape
    y = x.new_zeros(B, C, H, W)
    if y.numel() == 0:
        return y
    kh, kw = k.shape[-2:]
    widths = (kh - 1 - kh // 2, kh // 2, kw - 1 - kw // 2, kw // 2)
    xp = pad(x, widths, boundary)
    flipped = k.flip(-2, -1)
    for a, b, (i0, i1, j0, j1), wrow, wcol in _pc_blocks(H, W, k, boundary, x.dtype):
        z = xp[:, :, i0 : i1 + kh - 1, j0 : j1 + kw - 1] * (wrow[:, None] * wcol[None, :])
        y[:, :, i0:i1, j0:j1] += _grouped_conv(z, flipped[:, a, b])
    return y


def pc_conv_fft(x: torch.Tensor, grid_kernels: torch.Tensor, boundary: str = "reflect"
                ) -> torch.Tensor:
    """:func:`pc_conv` with each cell's band convolved by FFT on its own window (local-FFT
    overlap-add). Same result to float rounding; its cost barely depends on the kernel size,
    so it beats the direct PyTorch form for large kernels. The native op has its own
    local-FFT path (tiles between cell centres, products summed in the frequency domain,
    docs/spatially_varying.md) and picks it over its direct path from about 13 × 13 taps.

    Args and returns as :func:`pc_conv`.
    """
    from fastdeblur.convolution import _fast_fft_size

    k = _pc_check(x, grid_kernels, boundary).to(x.dtype)
    B, C, H, W = x.shape
    y = x.new_zeros(B, C, H, W)
    if y.numel() == 0:
        return y
    kh, kw = k.shape[-2:]
    xp = pad(x, (kh - 1 - kh // 2, kh // 2, kw - 1 - kw // 2, kw // 2), boundary)
    for a, b, (i0, i1, j0, j1), wrow, wcol in _pc_blocks(H, W, k, boundary, x.dtype):
        z = xp[:, :, i0 : i1 + kh - 1, j0 : j1 + kw - 1] * (wrow[:, None] * wcol[None, :])
        fh, fw = _fast_fft_size(z.shape[-2]), _fast_fft_size(z.shape[-1])
        spectrum = torch.fft.rfft2(z, s=(fh, fw)) * torch.fft.rfft2(k[:, a, b], s=(fh, fw))[:, None]
        full = torch.fft.irfft2(spectrum, s=(fh, fw))
        y[:, :, i0:i1, j0:j1] += full[..., kh - 1 : kh - 1 + i1 - i0, kw - 1 : kw - 1 + j1 - j0]
    return y


def pc_conv_adjoint(y: torch.Tensor, grid_kernels: torch.Tensor, boundary: str = "reflect"
                    ) -> torch.Tensor:
    """Exact adjoint of :func:`pc_conv`: ``x = Σ_i w_i ⊙ Pᵀ(h_iᵀ ⋆ y)`` (reference).

    ``h_iᵀ ⋆`` is the transposed convolution (a correlation onto the padded grid) and ``Pᵀ``
    folds the padded samples back onto the pixels they were copied from (dropped for
    ``zero``), so ``<pc_conv(x), y> = <x, pc_conv_adjoint(y)>`` to rounding.

    Args:
        y: ``(B, C, H, W)``.
        grid_kernels: As in :func:`pc_conv`.
        boundary: As in :func:`pc_conv`.

    Returns:
        ``(B, C, H, W)``.
    """
    k = _pc_check(y, grid_kernels, boundary, name="y").to(y.dtype)
    B, C, H, W = y.shape
    if y.numel() == 0:
        return y.new_zeros(B, C, H, W)
    kh, kw = k.shape[-2:]
    widths = (kh - 1 - kh // 2, kh // 2, kw - 1 - kw // 2, kw // 2)
    xp = y.new_zeros(B, C, H + kh - 1, W + kw - 1)
    for a, b, (i0, i1, j0, j1), wrow, wcol in _pc_blocks(H, W, k, boundary, y.dtype):
        g = F.pad(y[:, :, i0:i1, j0:j1], (kw - 1, kw - 1, kh - 1, kh - 1))
        dz = _grouped_conv(g, k[:, a, b])
        xp[:, :, i0 : i1 + kh - 1, j0 : j1 + kw - 1] += dz * (wrow[:, None] * wcol[None, :])
    return _pad_adjoint(xp, widths, H, W, boundary)


def pc_conv_kernel_grad(x: torch.Tensor, grad_y: torch.Tensor, grid_kernels: torch.Tensor,
                        boundary: str = "reflect") -> torch.Tensor:
    """Gradient of ``<pc_conv(x, h), grad_y>`` with respect to the grid kernels (reference).

    ``∂/∂h_i[u, v] = Σ_{b,c,p} grad_y[b, c, p] · z_i[b, c, p + (kh − 1 − u, kw − 1 − v)]``
    with ``z_i`` the padded product ``w_i ⊙ x`` (padded coordinates).

    Args:
        x: ``(B, C, H, W)``.
        grad_y: ``(B, C, H, W)``.
        grid_kernels: As in :func:`pc_conv` (only its shape and dtype are used).
        boundary: As in :func:`pc_conv`.

    Returns:
        A tensor shaped like ``grid_kernels`` (summed over the batch when it is shared).
    """
    k = _pc_check(x, grid_kernels, boundary)
    B, C, H, W = x.shape
    kh, kw = k.shape[-2:]
    grad = x.new_zeros(B, *k.shape[1:])
    if x.numel() > 0:
        widths = (kh - 1 - kh // 2, kh // 2, kw - 1 - kw // 2, kw // 2)
        xp = pad(x, widths, boundary)
        for a, b, (i0, i1, j0, j1), wrow, wcol in _pc_blocks(H, W, k, boundary, x.dtype):
            z = xp[:, :, i0 : i1 + kh - 1, j0 : j1 + kw - 1] * (wrow[:, None] * wcol[None, :])
            g = grad_y[:, :, i0:i1, j0:j1]
            corr = F.conv2d(z.reshape(1, B * C, *z.shape[-2:]),
                            g.reshape(B * C, 1, *g.shape[-2:]), groups=B * C)
            grad[:, a, b] += corr.reshape(B, C, kh, kw).sum(1).flip(-2, -1)
    if grid_kernels.ndim == 4:
        return grad.sum(0).to(grid_kernels.dtype)
    return grad.to(grid_kernels.dtype)


def grid_to_pixel_kernels(grid_kernels: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Per-pixel kernels of the per-pixel (gather) model by bilinear interpolation of a grid.

    ``K[b, u·kw + v, r, s] = Σ_{a,c} wy[a, r] · wx[c, s] · h[b, a, c, u, v]`` with the weights of
    :func:`pc_axis_weights`; ``sv_conv(x, K)`` then computes ``y[p] = Σ_q K[p, q] · x[p − q]``,
    the kernel taken at the *output* pixel. :func:`pc_conv` is a different operator: it weights
    the *input* (``y = Σ_i h_i ⋆ (w_i ⊙ x)``); the two agree for a constant kernel field.

    Args:
        grid_kernels: ``(gh, gw, kh, kw)`` or ``(B, gh, gw, kh, kw)``.
        H: Image height (>= 0).
        W: Image width (>= 0).

    Returns:
        Taps-first kernels ``(kh·kw, H, W)`` or ``(B, kh·kw, H, W)``, dtype of the grid.
    """
    if grid_kernels.ndim not in (4, 5) or min(grid_kernels.shape[-4:]) < 1:
        raise ValueError(
            "grid_kernels must be (gh, gw, kh, kw) or (B, gh, gw, kh, kw) with non-empty "
            f"dimensions; got shape {tuple(grid_kernels.shape)}"
        )
    if H < 0 or W < 0:
        raise ValueError(f"H and W must be >= 0; got {H}, {W}")
    if not grid_kernels.is_floating_point():
        raise ValueError(f"grid_kernels must be floating point; got {grid_kernels.dtype}")
    gh, gw, kh, kw = grid_kernels.shape[-4:]
    wy = pc_axis_weights(H, gh, grid_kernels.dtype, grid_kernels.device)
    wx = pc_axis_weights(W, gw, grid_kernels.dtype, grid_kernels.device)
    flat = grid_kernels.reshape(*grid_kernels.shape[:-4], gh, gw, kh * kw)
    return torch.einsum("...acq,ar,cs->...qrs", flat, wy, wx)


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



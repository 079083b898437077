"""Pure-PyTorch references of every fastdeblur op.

Each function here is the specification of its op (shapes, exact formula), the
fallback when the native extension is missing, and the baseline of ``bench/``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    out = F.scaled_dot_product_attention(q[None], k[None], values[None], attn_mask=attn_bias[None],
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

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

"""Fused GRNN (Gaussian-kernel / Nadaraya-Watson regression) as softmax attention.

.. math::

    y(x) = \\frac{\\sum_i Y_i \\exp(-|x - X_i|^2 / 2\\sigma^2)}
                {\\sum_i \\exp(-|x - X_i|^2 / 2\\sigma^2)}
         = \\sum_i \\mathrm{softmax}_i\\big((x \\cdot X_i - |X_i|^2 / 2) / \\sigma^2\\big) Y_i

The native kernels (CPU: BLAS tiles + online softmax; CUDA: flash-style with tensor cores)
and the Triton kernel never store the ``N x M`` matrix: they keep a running row maximum
and sum (online log-sum-exp), so a tiny sigma cannot overflow. This module adds what the
kernels leave out:

* **Centring** (``center=True``, the default): queries and keys are shifted by the
  (detached) mean of the keys before the kernel runs. The result is exactly translation
  invariant, but the logits ``x . X_i - |X_i|^2 / 2`` lose precision to cancellation when
  the points sit far from the origin; centring keeps fp32 accurate for inputs like
  ``1000 + randn``. ``center=False`` skips that pass for centred data.
* **Per-dimension sigma**: for a ``(d,)`` (or any tensor) sigma, queries and keys are divided
  by sigma and the kernel runs with sigma = 1, so the kernels only know a scalar sigma;
  autograd through that division gives the gradient w.r.t. sigma.
* **Autograd**: ``register_autograd`` on ``fastdeblur::grnn`` whose backward calls
  ``fastdeblur::_grnn_backward`` (flash-attention style recomputation from the forward's
  row log-sum-exp), for queries, keys and values; ``register_fake`` for both, so the op works
  under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math

import torch

from fastdeblur import _backend, _ext
from fastdeblur.ops import reference

__all__ = ["grnn"]

_OP = "grnn"


def _check(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
           sigma: float | torch.Tensor, exclude_self: bool) -> None:
    for name, t in (("queries", queries), ("keys", keys), ("values", values)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"grnn: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"grnn: {name} must be a 2-D tensor, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"grnn: {name} must be floating point, got {t.dtype}")
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"grnn: queries (N, d) and keys (M, d) must share d, got "
                         f"{tuple(queries.shape)} and {tuple(keys.shape)}")
    if values.shape[0] != keys.shape[0]:
        raise ValueError(f"grnn: values must have one row per key ({keys.shape[0]}), got "
                         f"shape {tuple(values.shape)}")
    if keys.shape[0] < 1:
        raise ValueError("grnn: keys must have at least one row (M >= 1)")
    if not (queries.dtype == keys.dtype == values.dtype):
        raise TypeError(f"grnn: queries, keys and values must share a dtype, got "
                        f"{queries.dtype}, {keys.dtype}, {values.dtype}")
    if not (queries.device == keys.device == values.device):
        raise ValueError(f"grnn: queries, keys and values must be on one device, got "
                         f"{queries.device}, {keys.device}, {values.device}")
    if exclude_self and (queries.shape[0] != keys.shape[0] or keys.shape[0] < 2):
        raise ValueError(f"grnn: exclude_self needs as many queries as keys and at least 2 keys, "
                         f"got N={queries.shape[0]}, M={keys.shape[0]}")
    if isinstance(sigma, torch.Tensor):
        if sigma.dim() > 1 or (sigma.dim() == 1 and sigma.shape[0] not in (1, keys.shape[1])):
            raise ValueError(f"grnn: sigma must be a scalar or a (d,) = ({keys.shape[1]},) tensor, "
                             f"got shape {tuple(sigma.shape)}")
        if not sigma.is_floating_point():
            raise TypeError(f"grnn: sigma must be floating point, got {sigma.dtype}")
    else:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise TypeError(f"grnn: sigma must be a float or a tensor, got {type(sigma).__name__}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"grnn: sigma must be positive and finite, got {sigma}")
        if 1.0 / (sigma * sigma) > 1e30:
            raise ValueError(f"grnn: sigma={sigma} is too small (1/sigma^2 overflows float32)")


def _select_backend(device_type: str, fp64: bool) -> str:
    # Resolved at trace time under torch.compile: the choice depends on the environment only.
    choice = _backend.select(_OP, torch.device(device_type))
    if choice == "triton" and fp64 and _backend.requested() == "auto":
        return "reference"  # the Triton kernel has no fp64 path; an explicit request raises
    return choice


def grnn(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
         sigma: float | torch.Tensor, *, exclude_self: bool = False,
         center: bool = True) -> torch.Tensor:
    """Gaussian-kernel regression (GRNN) of ``values`` at ``queries``, fused.

    ``out[n] = sum_m w[n, m] values[m] / sum_m w[n, m]`` with
    ``w[n, m] = exp(-sum_j (queries[n, j] - keys[m, j])^2 / (2 sigma_j^2))``.

    Args:
        queries: ``(N, d)`` points to evaluate at (``N`` may be 0).
        keys: ``(M, d)`` pattern points ``X_i``, ``M >= 1``; same dtype and device as queries.
        values: ``(M, p)`` targets ``Y_i``.
        sigma: kernel width: a positive float, a 0-dim tensor or a ``(d,)`` tensor (one width
            per dimension). Tensor widths get gradients; their positivity is the caller's.
        exclude_self: leave-one-out: query ``n`` ignores key ``n`` (needs ``N == M >= 2``),
            for cross-validating sigma on the training points themselves.
        center: shift queries and keys by the keys' mean first (one pass over both) so fp32
            stays accurate far from the origin; ``False`` skips it for data that is
            already centred (e.g. standardised features).

    Returns:
        ``(N, p)`` tensor, dtype of the inputs. Differentiable w.r.t. queries, keys, values
        and a tensor sigma.

    Raises:
        TypeError, ValueError: an argument has the wrong type, shape, dtype or value.
    """
    _check(queries, keys, values, sigma, exclude_self)
    # Translation invariance: shift by the keys' mean (detached: the result does not depend
    # on the shift, so no gradient flows through it) for fp32 accuracy far from the origin.
    q, k = queries, keys
    if center:
        shift = keys.detach().mean(0)
        q, k = q - shift, k - shift
    if isinstance(sigma, torch.Tensor):
        sigma_t = sigma.to(dtype=queries.dtype, device=queries.device)
        q, k = q / sigma_t, k / sigma_t
        sigma_f = 1.0
    else:
        sigma_f = float(sigma)
    backend = _select_backend(queries.device.type, queries.dtype == torch.float64)
    if backend == "native":
        return torch.ops.fastdeblur.grnn(q, k, values, sigma_f, exclude_self)[0]
    if backend == "triton":
        from fastdeblur.triton import grnn as triton_grnn

        return triton_grnn.grnn_triton(q, k, values, sigma_f, exclude_self)[0]
    return reference.grnn(q, k, values, sigma_f, exclude_self)


# ---- registrations on the native op (defined in csrc/ops/grnn.cpp) ----------------------


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _register_native() -> None:
    @torch.library.register_fake("fastdeblur::grnn")
    def _grnn_fake(queries, keys, values, sigma, exclude_self=False):
        out = queries.new_empty((queries.shape[0], values.shape[1]))
        lse = queries.new_empty((queries.shape[0],), dtype=_lse_dtype(queries.dtype))
        return out, lse

    @torch.library.register_fake("fastdeblur::_grnn_backward")
    def _grnn_backward_fake(grad_out, queries, keys, values, out, lse, sigma, exclude_self,
                            output_mask):
        def grad_like(t: torch.Tensor, wanted: bool) -> torch.Tensor:
            return torch.empty_like(t) if wanted else t.new_empty((0,))

        return (grad_like(queries, output_mask[0]), grad_like(keys, output_mask[1]),
                grad_like(values, output_mask[2]))

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
        gq, gk, gv = torch.ops.fastdeblur._grnn_backward(
            grad_out.contiguous(), queries, keys, values, out, lse, ctx.sigma,
            ctx.exclude_self, mask)
        return (gq if mask[0] else None, gk if mask[1] else None, gv if mask[2] else None,
                None, None)

    torch.library.register_autograd("fastdeblur::grnn", _backward, setup_context=_setup_context)


if _ext.has_native() and hasattr(torch.ops.fastdeblur, "grnn"):
    _register_native()

"""Non-blind deconvolution of spatially-varying blur.

The blur is a linear operator ``A`` given with its adjoint ``Aᵀ`` — no FFT diagonalises it —
so the methods iterate with ``A`` and ``Aᵀ`` only:

- :func:`wiener_sv` — Tikhonov / Wiener–Hunt with a Laplacian prior: conjugate gradients on
  ``(AᵀA + ε LᵀL) x = Aᵀ y``.
- :func:`hyper_laplacian_sv` — the hyper-Laplacian prior by half-quadratic splitting, with the
  image step ``(λ AᵀA + β DᵀD) x = λ Aᵀ y + β Dᵀ w`` solved by a few warm-started CG steps.
- :func:`richardson_lucy_sv` — ``x ← x · Aᵀ(y / Ax) / Aᵀ1``.

Two operators (DESIGN.md, "Spatially varying blur"), chosen by the shape of ``kernels``:

- a grid of kernels ``(gh, gw, kh, kw)`` or ``(B, gh, gw, kh, kw)``: the product-convolution
  ``y = Σ_i h_i ⋆ (w_i ⊙ x)`` (``fastdeblur.ops.pc_conv`` and its adjoint);
- per-pixel kernels ``(kh·kw, H, W)`` or ``(B, kh·kw, H, W)`` (taps first, with
  ``kernel_size=(kh, kw)``): the gather model ``y[p] = Σ_q K[p, q] x[p − q]``
  (``fastdeblur.ops.sv_conv`` and its adjoint).

Differences here are forward differences with a zero-flux (Neumann) border, so nothing wraps.
The noise level and the weights follow :mod:`fastdeblur.restore.uniform`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastdeblur.restore import uniform
from fastdeblur.restore.shrink import shrink_lut

Operator = Callable[[torch.Tensor], torch.Tensor]


def blur_operator(
    kernels: torch.Tensor,
    boundary: str = "reflect",
    kernel_size: tuple[int, int] | None = None,
) -> tuple[Operator, Operator]:
    """``(A, Aᵀ)`` of a kernel field: a grid (product-convolution) or per-pixel kernels.

    Args:
        kernels: ``(gh, gw, kh, kw)`` / ``(B, gh, gw, kh, kw)`` grid, or ``(kh·kw, H, W)`` /
            ``(B, kh·kw, H, W)`` per-pixel kernels (then ``kernel_size`` is required).
        boundary: Boundary mode of the blur model.
        kernel_size: ``(kh, kw)`` of per-pixel kernels.

    Returns:
        Functions mapping ``(B, C, H, W)`` to ``(B, C, H, W)``.
    """
    if kernel_size is None:
        if kernels.ndim not in (4, 5):
            raise ValueError(
                "kernels must be a grid (gh, gw, kh, kw) or (B, gh, gw, kh, kw), or per-pixel "
                f"kernels with kernel_size=(kh, kw); got shape {tuple(kernels.shape)}"
            )
        from fastdeblur.ops import pc_conv, pc_conv_adjoint

        grid = kernels / kernels.sum(dim=(-2, -1), keepdim=True)
        return (lambda x: pc_conv(x, grid.to(x.dtype), boundary),
                lambda y: pc_conv_adjoint(y, grid.to(y.dtype), boundary))
    if kernels.ndim not in (3, 4):
        raise ValueError(
            f"per-pixel kernels must be (kh*kw, H, W) or (B, kh*kw, H, W); got "
            f"{tuple(kernels.shape)}"
        )
    from fastdeblur.ops import sv_conv, sv_conv_adjoint

    ks = tuple(kernel_size)
    return (lambda x: sv_conv(x, kernels.to(x.dtype), boundary, kernel_size=ks),
            lambda y: sv_conv_adjoint(y, kernels.to(y.dtype), boundary, kernel_size=ks))


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero across the last column/row."""
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return gx, gy


def _grad_adjoint(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """``Dᵀ(gx, gy)`` (minus the divergence)."""
    out = torch.zeros_like(gx)
    out[..., :, :-1] -= gx[..., :, :-1]
    out[..., :, 1:] += gx[..., :, :-1]
    out[..., :-1, :] -= gy[..., :-1, :]
    out[..., 1:, :] += gy[..., :-1, :]
    return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=(1, 2, 3), keepdim=True)


def conjugate_gradient(
    apply: Operator, rhs: torch.Tensor, x0: torch.Tensor, iterations: int, tol: float = 1e-6
) -> torch.Tensor:
    """Conjugate gradients for a symmetric positive-definite ``apply``, per image of the batch.

    Args:
        apply: ``x -> M x`` on ``(B, C, H, W)``.
        rhs: ``(B, C, H, W)``.
        x0: Starting point.
        iterations: Maximum number of iterations.
        tol: Stop when every image's residual norm is below ``tol`` times its rhs norm.

    Returns:
        The approximate solution.
    """
    x = x0
    r = rhs - apply(x)
    p = r
    rr = _dot(r, r)
    stop = (tol**2) * _dot(rhs, rhs)
    for _ in range(iterations):
        if bool((rr <= stop).all()):
            break
        mp = apply(p)
        step = rr / _dot(p, mp).clamp_min(torch.finfo(x.dtype).tiny)
        x = x + step * p
        r = r - step * mp
        rr_new = _dot(r, r)
        p = r + (rr_new / rr.clamp_min(torch.finfo(x.dtype).tiny)) * p
        rr = rr_new
    return x


def _prepare(image: torch.Tensor, kernels: torch.Tensor, boundary: str,
             kernel_size: tuple[int, int] | None) -> tuple[torch.Tensor, bool, Operator, Operator]:
    y, single = uniform.as_batch(image)
    if not isinstance(kernels, torch.Tensor) or not kernels.is_floating_point():
        raise ValueError("kernels must be a floating-point tensor")
    if not bool(torch.isfinite(kernels).all()):
        raise ValueError("kernels contain NaN or infinite values")
    forward, adjoint = blur_operator(kernels.to(y.device), boundary, kernel_size)
    return y, single, forward, adjoint


def wiener_sv(
    image: torch.Tensor,
    kernels: torch.Tensor,
    noise_sigma: float | torch.Tensor | None = None,
    balance: float | None = None,
    iterations: int = 50,
    boundary: str = "reflect",
    kernel_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Wiener–Hunt (Laplacian prior) deconvolution of a spatially-varying blur by CG.

    Solves ``(AᵀA + ε LᵀL) x = Aᵀ y``, ``ε = balance · σ²``, from ``x = y``.

    Args:
        image: ``(B, C, H, W)`` or ``(C, H, W)``.
        kernels: Kernel field (see :func:`blur_operator`).
        noise_sigma: Noise standard deviation; estimated when None.
        balance: ``ε / σ²``; default :data:`fastdeblur.restore.uniform.WIENER_BALANCE`.
        iterations: CG iterations.
        boundary: Boundary of the blur model.
        kernel_size: ``(kh, kw)`` for per-pixel kernels.

    Returns:
        Deconvolved images shaped like ``image`` (not clipped).
    """
    y, single, A, At = _prepare(image, kernels, boundary, kernel_size)
    if y.numel() == 0:
        return image.clone()
    sigma = uniform.noise_level(y, noise_sigma)
    eps = (uniform.WIENER_BALANCE if balance is None else float(balance)) * sigma.square()

    def laplacian(x: torch.Tensor) -> torch.Tensor:
        return _grad_adjoint(*_grad(x))

    def normal(x: torch.Tensor) -> torch.Tensor:
        return At(A(x)) + eps * laplacian(laplacian(x))

    x = conjugate_gradient(normal, At(y), y, iterations)
    return x[0] if single else x


def hyper_laplacian_sv(
    image: torch.Tensor,
    kernels: torch.Tensor,
    alpha: float = 2.0 / 3.0,
    noise_sigma: float | torch.Tensor | None = None,
    lam: float | None = None,
    beta_start: float = uniform.HL_BETA_START,
    beta_rate: float = uniform.HL_BETA_RATE,
    beta_max: float = uniform.HL_BETA_MAX,
    cg_iterations: int = 8,
    boundary: str = "reflect",
    kernel_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Hyper-Laplacian deconvolution of a spatially-varying blur (HQS + CG).

    The splitting of :func:`fastdeblur.restore.uniform.hyper_laplacian`, with the image step
    ``(λ AᵀA + β DᵀD) x = λ Aᵀ y + β Dᵀ w`` solved by ``cg_iterations`` CG steps warm-started
    from the previous image.

    Args:
        image: ``(B, C, H, W)`` or ``(C, H, W)``.
        kernels: Kernel field (see :func:`blur_operator`).
        alpha: Prior exponent in (0, 1].
        noise_sigma: Noise standard deviation; estimated when None.
        lam: Data weight; default ``HL_LAMBDA_SCALE / σ²``.
        beta_start, beta_rate, beta_max: The β continuation.
        cg_iterations: CG steps per β.
        boundary: Boundary of the blur model.
        kernel_size: ``(kh, kw)`` for per-pixel kernels.

    Returns:
        Deconvolved images shaped like ``image`` (not clipped).
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1]; got {alpha}")
    if beta_rate <= 1 or beta_start <= 0 or cg_iterations < 1:
        raise ValueError("need beta_start > 0, beta_rate > 1 and cg_iterations >= 1")
    y, single, A, At = _prepare(image, kernels, boundary, kernel_size)
    if y.numel() == 0:
        return image.clone()
    if lam is None:
        lam_t = uniform.HL_LAMBDA_SCALE / uniform.noise_level(y, noise_sigma).square()
    else:
        lam_t = torch.full((y.shape[0], 1, 1, 1), float(lam), dtype=y.dtype, device=y.device)
    data_rhs = lam_t * At(y)
    x = y
    beta = beta_start
    while beta < beta_max:
        gx, gy = _grad(x)
        wx, wy = shrink_lut(gx, beta, alpha), shrink_lut(gy, beta, alpha)
        rhs = data_rhs + beta * _grad_adjoint(wx, wy)
        b = beta

        def normal(v: torch.Tensor, b: float = b) -> torch.Tensor:
            return lam_t * At(A(v)) + b * _grad_adjoint(*_grad(v))

        x = conjugate_gradient(normal, rhs, x, cg_iterations)
        beta *= beta_rate
    return x[0] if single else x


def richardson_lucy_sv(
    image: torch.Tensor,
    kernels: torch.Tensor,
    iterations: int = 50,
    boundary: str = "reflect",
    kernel_size: tuple[int, int] | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Richardson–Lucy for a spatially-varying blur: ``x ← x · Aᵀ(y / Ax) / Aᵀ1``.

    Args:
        image: ``(B, C, H, W)`` or ``(C, H, W)``, >= 0.
        kernels: Non-negative kernel field (see :func:`blur_operator`).
        iterations: Number of iterations.
        boundary: Boundary of the blur model.
        kernel_size: ``(kh, kw)`` for per-pixel kernels.
        eps: Floor of the denominators.

    Returns:
        Non-negative deconvolved images shaped like ``image``.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0; got {iterations}")
    y, single, A, At = _prepare(image, kernels.clamp_min(0), boundary, kernel_size)
    if y.numel() == 0:
        return image.clone()
    y = y.clamp_min(0)
    norm = At(torch.ones_like(y)).clamp_min(eps)
    x = y.clamp_min(eps)
    for _ in range(iterations):
        x = (x * At(y / A(x).clamp_min(eps)) / norm).clamp_min(0)
    return x[0] if single else x

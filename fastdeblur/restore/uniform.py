"""Non-blind deconvolution with one (uniform, shift-invariant) kernel.

Three methods, all batched over ``(B, C)`` and differentiable in the image:

- :func:`wiener` — the Wiener–Hunt filter with a Laplacian (smoothness) prior, one FFT solve.
- :func:`richardson_lucy` — Richardson–Lucy iterations (optionally damped, accelerated and
  TV-regularised), positive by construction, with the library's boundary-aware convolution.
- :func:`hyper_laplacian` — Krishnan & Fergus (2009): a ``|∇x|^α`` prior (α = 2/3 or 1/2)
  minimised by half-quadratic splitting, alternating an element-wise solve
  (:func:`fastdeblur.restore.shrink.shrink`) with an FFT solve.

The FFT methods assume a periodic image. So that the image borders do not ring, the blurred
image is first extended (:func:`extend`): reflected outwards by about a kernel size, then the
extension is *edge-tapered* — blended, towards the middle of the wrap-around band, into its
own circular blur — so that the periodic extended image is consistent with a circular
convolution and nothing is discontinuous where the period wraps. The result is cropped back.

The regularisation weights follow the noise level: ``noise_sigma`` if given, else estimated
from the blurred image (:func:`fastdeblur.restore.noise.estimate_noise`), never below
:data:`MIN_NOISE_SIGMA`. The constants below were chosen on a tuning set of photos that are not
in any benchmark (``bench/tune_deconvolution.py``: 256-px grey and colour crops, camera-shake,
motion, Gaussian and defocus kernels from :mod:`fastdeblur.psf`, circular and non-circular blur,
σ ∈ {0, 0.005, 0.01, 0.02}, 8-bit; output in ``bench/results/tune_deconvolution.json``), then
checked on the Levin et al. benchmark (``bench/eval_deblur.py``, ``bench/results/deblur.json``).
"""

from __future__ import annotations

import math

import torch

from fastdeblur.convolution import _fast_fft_size, convolve
from fastdeblur.restore.noise import estimate_noise
from fastdeblur.restore.shrink import shrink_lut

# Floor of the noise level used to set regularisation: 8-bit quantisation alone is
# 1 / (255 · √12) ≈ 0.0011, and a little regularisation is always needed.
MIN_NOISE_SIGMA = 1e-3
# Wiener–Hunt: weight of the Laplacian prior ε = WIENER_BALANCE · σ_ref² · (σ/σ_ref)^WIENER_POWER
# with σ_ref = HL_SIGMA_REF, fitted on the tuning set (the best power is 2). (A Laplacian prior
# beat a gradient prior by 0.2–0.4 dB at the best weight of each, on images outside the
# benchmark.)
WIENER_BALANCE = 62.0
WIENER_POWER = 2.0
# First-order hyper-Laplacian prior of the spatially-varying solver
# (fastdeblur.restore.varying): data weight λ = HL_LAMBDA_SCALE / σ².
HL_LAMBDA_SCALE = 0.3
# Uniform hyper-Laplacian (hyper_laplacian): λ = HL_LAMBDA_AT_REF · (HL_SIGMA_REF / σ)^POWER,
# prior exponent, weight of the second-difference terms, iterations per β; fitted on the tuning
# set (bench/results/tune_deconvolution.json). The second differences help most on smooth
# shading (faces, sky), where first differences alone leave flat steps.
HL_SIGMA_REF = 0.01
HL_LAMBDA_AT_REF = 3684.0
HL_LAMBDA_POWER = 1.5
HL_ALPHA = 2.0 / 3.0
HL_SECOND_ORDER = 0.5
HL_INNER_CIRCULAR = 1
HL_INNER_TAPER = 2
HL_BETA_START = 1.0
HL_BETA_RATE = 2.0 * math.sqrt(2.0)
HL_BETA_MAX = 256.0


# ---------------------------------------------------------------------------------------------
# Inputs


def as_batch(image: torch.Tensor, name: str = "image") -> tuple[torch.Tensor, bool]:
    """``(C, H, W)`` or ``(B, C, H, W)`` float tensor -> ``(B, C, H, W)`` and whether it was 3-D."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(image).__name__}")
    if image.ndim not in (3, 4):
        raise ValueError(f"{name} must be (C, H, W) or (B, C, H, W); got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0, 1]; got {image.dtype}")
    return (image.unsqueeze(0) if image.ndim == 3 else image), image.ndim == 3


def as_psf(psf: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Validate and normalise a kernel: ``(kh, kw)`` or ``(B, kh, kw)`` -> ``(B or 1, kh, kw)``
    summing to 1, dtype and device of ``like``."""
    if not isinstance(psf, torch.Tensor):
        raise TypeError(f"psf must be a torch.Tensor; got {type(psf).__name__}")
    k = psf.unsqueeze(0) if psf.ndim == 2 else psf
    if k.ndim != 3 or k.shape[0] not in (1, batch) or min(k.shape[-2:]) < 1:
        raise ValueError(
            f"psf must be a non-empty (kh, kw) or (B, kh, kw) kernel with B = {batch}; "
            f"got shape {tuple(psf.shape)}"
        )
    k = k.to(device=like.device, dtype=like.dtype)
    if not bool(torch.isfinite(k).all()):
        raise ValueError("psf contains NaN or infinite values")
    total = k.sum(dim=(-2, -1), keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("psf must have a positive sum")
    return k / total


def noise_level(y: torch.Tensor, noise_sigma: float | torch.Tensor | None) -> torch.Tensor:
    """Per-image noise level ``(B, 1, 1, 1)`` used for regularisation (estimated when None)."""
    B = y.shape[0]
    if noise_sigma is None:
        sigma = estimate_noise(y.detach()) if B > 0 else y.new_zeros(0)
    else:
        sigma = torch.as_tensor(noise_sigma, dtype=torch.float64).flatten()
        if sigma.numel() not in (1, B) or not bool(torch.isfinite(sigma).all()) or bool(
            (sigma < 0).any()
        ):
            raise ValueError(
                f"noise_sigma must be a finite number >= 0 (or one per image); got {noise_sigma}"
            )
        sigma = sigma.expand(B)
    return sigma.clamp_min(MIN_NOISE_SIGMA).to(device=y.device, dtype=y.dtype).view(B, 1, 1, 1)


# ---------------------------------------------------------------------------------------------
# Periodic extension and Fourier transforms of the operators


class Extension:
    """Geometry of the padded, edge-tapered periodic domain of an ``H × W`` image.

    Attributes:
        top, left: Where the image starts inside the extended domain.
        shape: ``(FH, FW)`` extended size (fast FFT sizes).
    """

    def __init__(self, H: int, W: int, kh: int, kw: int, boundary: str = "taper") -> None:
        if boundary not in ("taper", "circular"):
            raise ValueError(f"boundary must be 'taper' or 'circular'; got {boundary!r}")
        self.H, self.W = H, W
        self.periodic = boundary == "circular"
        if self.periodic:
            # The blur already wrapped around: solve on the image itself.
            self.top = self.left = 0
            self.shape = (H, W)
            return
        # About one kernel size on each side: enough for the blur to reach across and for the
        # taper to be smooth.
        FH = _fast_fft_size(H + 2 * max(kh, 4))
        FW = _fast_fft_size(W + 2 * max(kw, 4))
        self.top = (FH - H) // 2
        self.left = (FW - W) // 2
        self.shape = (FH, FW)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.top : self.top + self.H, self.left : self.left + self.W]

    @staticmethod
    def _ramp(n: int, start: int, size: int, like: torch.Tensor) -> torch.Tensor:
        """1 on the image, falling as cos² to 0 in the middle of the wrap-around band."""
        band = n - size
        idx = torch.arange(n, device=like.device, dtype=like.dtype)
        # distance from the image (0 on it), going either way round the circle
        after = idx - (start + size - 1)
        before = start - idx
        dist = torch.where(after > 0, after, torch.where(before > 0, before, torch.zeros_like(idx)))
        dist = torch.minimum(dist, (band + 1 - dist).clamp_min(0))
        t = (dist / ((band + 1) / 2.0)).clamp(0, 1)
        return torch.cos(0.5 * math.pi * t).square()

    def extend(self, y: torch.Tensor, K: torch.Tensor, passes: int = 2) -> torch.Tensor:
        """Reflect-pad ``y`` to the extended domain and edge-taper it against the OTF ``K``."""
        from fastdeblur.convolution import pad

        if self.periodic:
            return y
        FH, FW = self.shape
        widths = (self.top, FH - self.H - self.top, self.left, FW - self.W - self.left)
        e = pad(y, widths, "reflect")
        wy = self._ramp(FH, self.top, self.H, e)
        wx = self._ramp(FW, self.left, self.W, e)
        alpha = wy[:, None] * wx[None, :]
        for _ in range(passes):
            blurred = torch.fft.irfft2(torch.fft.rfft2(e) * K, s=(FH, FW))
            e = alpha * e + (1 - alpha) * blurred
        return e

    def fill(self, e: torch.Tensor, blurred: torch.Tensor) -> torch.Tensor:
        """Keep the observed pixels of ``e`` and replace the extension by ``blurred`` (the
        current estimate re-blurred): one EM step for the unobserved data."""
        if self.periodic:
            return e
        out = blurred.clone()
        window = (..., slice(self.top, self.top + self.H), slice(self.left, self.left + self.W))
        out[window] = e[window]
        return out


def otf(psf: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Half-spectrum transfer function of a kernel centred at ``(kh // 2, kw // 2)``.

    Args:
        psf: ``(Bk, kh, kw)``.
        shape: ``(FH, FW)`` periodic domain, at least the kernel size.

    Returns:
        ``(Bk, 1, FH, FW // 2 + 1)`` complex.
    """
    Bk, kh, kw = psf.shape
    FH, FW = shape
    big = psf.new_zeros(Bk, FH, FW)
    big[:, :kh, :kw] = psf
    big = torch.roll(big, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.rfft2(big).unsqueeze(1)


def gradient_otfs(shape: tuple[int, int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Transfer functions of the circular backward differences ``x − roll(x, 1)`` along
    columns (horizontal) and rows (vertical): ``(1, 1, 1, FW//2+1)`` and ``(1, 1, FH, 1)``."""
    FH, FW = shape
    real = like.dtype
    wx = 2 * math.pi * torch.fft.rfftfreq(FW, device=like.device, dtype=real)
    wy = 2 * math.pi * torch.fft.fftfreq(FH, device=like.device, dtype=real)
    gx = torch.complex(1 - torch.cos(wx), torch.sin(wx)).view(1, 1, 1, -1)
    gy = torch.complex(1 - torch.cos(wy), torch.sin(wy)).view(1, 1, -1, 1)
    return gx, gy


# ---------------------------------------------------------------------------------------------
# Methods


def wiener_balance(sigma: torch.Tensor) -> torch.Tensor:
    """Default weight ``ε`` of the Laplacian prior of :func:`wiener` for a noise level ``σ``:
    ``WIENER_BALANCE · σ_ref² · (σ / σ_ref)^WIENER_POWER``."""
    return WIENER_BALANCE * HL_SIGMA_REF**2 * (sigma / HL_SIGMA_REF).pow(WIENER_POWER)


def wiener(
    image: torch.Tensor,
    psf: torch.Tensor,
    noise_sigma: float | torch.Tensor | None = None,
    balance: float | None = None,
    boundary: str = "taper",
    em_iterations: int = 10,
) -> torch.Tensor:
    """Wiener–Hunt deconvolution with a Laplacian prior (one FFT solve).

    ``x = F⁻¹[ K̄ Y / (|K|² + ε |L|²) ]`` with ``L`` the 5-point Laplacian, on the edge-tapered
    periodic extension, cropped; ``ε = balance · σ²`` (default :func:`wiener_balance`).

    Args:
        image: Blurred images ``(B, C, H, W)`` or ``(C, H, W)``, float.
        psf: Kernel ``(kh, kw)`` or one per image ``(B, kh, kw)``; normalised to sum 1.
        noise_sigma: Noise standard deviation (per image or one number); estimated when None.
        balance: ``ε / σ²``; default :func:`wiener_balance` of the noise level.
        em_iterations: With ``taper``, re-solves after replacing the (unobserved) extension
            by the re-blurred estimate — EM for the unknown border data.
        boundary: ``taper`` (the scene outside the image is unknown: reflect-pad and
            edge-taper) or ``circular`` (the blur wrapped around the image: solve on it as is).

    Returns:
        Deconvolved images shaped like ``image`` (not clipped).
    """
    y, single = as_batch(image)
    k = as_psf(psf, y.shape[0], y)
    if y.numel() == 0:
        return image.clone()
    sigma = noise_level(y, noise_sigma)
    eps = wiener_balance(sigma) if balance is None else float(balance) * sigma.square()
    ext = Extension(y.shape[-2], y.shape[-1], *k.shape[-2:], boundary)
    K = otf(k, ext.shape)
    gx, gy = gradient_otfs(ext.shape, y)
    e = ext.extend(y, K)
    reg = (gx.abs().square() + gy.abs().square()).square()  # |Laplacian|²
    den = K.abs().square() + eps * reg
    X = K.conj() * torch.fft.rfft2(e) / den
    for _ in range(0 if ext.periodic else em_iterations):
        # The extension is unobserved: replace it by the re-blurred estimate and solve again.
        e = ext.fill(e, torch.fft.irfft2(K * X, s=ext.shape))
        X = K.conj() * torch.fft.rfft2(e) / den
    x = ext.crop(torch.fft.irfft2(X, s=ext.shape))
    return x[0] if single else x


def hl_lambda(sigma: torch.Tensor) -> torch.Tensor:
    """Default data weight of :func:`hyper_laplacian` for a noise level ``σ`` (any shape).

    ``λ = HL_LAMBDA_AT_REF · (HL_SIGMA_REF / σ)^HL_LAMBDA_POWER`` — a power below 2: the
    best weight grows more slowly than ``1/σ²`` as the noise vanishes, because the remaining
    errors (quantisation, the kernel's own discretisation, the unobserved border) do not.
    """
    return HL_LAMBDA_AT_REF * (HL_SIGMA_REF / sigma).pow(HL_LAMBDA_POWER)


class _Filter:
    """One circular difference filter of the prior: ``apply``, its adjoint, its OTF, its
    weight in the prior."""

    def __init__(self, apply, adjoint, transfer: torch.Tensor, weight: float) -> None:  # noqa: ANN001
        self.apply, self.adjoint, self.transfer, self.weight = apply, adjoint, transfer, weight


def _dx(x: torch.Tensor) -> torch.Tensor:
    return x - torch.roll(x, 1, dims=-1)


def _dx_t(w: torch.Tensor) -> torch.Tensor:
    return w - torch.roll(w, -1, dims=-1)


def _dy(x: torch.Tensor) -> torch.Tensor:
    return x - torch.roll(x, 1, dims=-2)


def _dy_t(w: torch.Tensor) -> torch.Tensor:
    return w - torch.roll(w, -1, dims=-2)


def _dxx(x: torch.Tensor) -> torch.Tensor:
    # −Dxᵀ Dx: the centred second difference x[j+1] − 2 x[j] + x[j−1] (self-adjoint)
    return torch.roll(x, -1, dims=-1) - 2 * x + torch.roll(x, 1, dims=-1)


def _dyy(x: torch.Tensor) -> torch.Tensor:
    return torch.roll(x, -1, dims=-2) - 2 * x + torch.roll(x, 1, dims=-2)


def _dxy(x: torch.Tensor) -> torch.Tensor:
    return _dy(_dx(x))


def _dxy_t(w: torch.Tensor) -> torch.Tensor:
    return _dx_t(_dy_t(w))


def prior_filters(shape: tuple[int, int], like: torch.Tensor,
                  second_order: float) -> list[_Filter]:
    """The difference filters of the hyper-Laplacian prior on an ``(FH, FW)`` periodic domain:
    ``∂x, ∂y`` (weight 1) and, when ``second_order`` > 0, ``∂xx, ∂yy, ∂xy`` (that weight)."""
    gx, gy = gradient_otfs(shape, like)
    filters = [_Filter(_dx, _dx_t, gx, 1.0), _Filter(_dy, _dy_t, gy, 1.0)]
    if second_order > 0:
        filters += [
            _Filter(_dxx, _dxx, -gx.abs().square(), second_order),
            _Filter(_dyy, _dyy, -gy.abs().square(), second_order),
            _Filter(_dxy, _dxy_t, gx * gy, second_order),
        ]
    return filters


def shrunk_prior(x: torch.Tensor, beta: float, alpha: float, alpha2: float,
                 second_order: float) -> torch.Tensor:
    """``Σ_j μ_j f_jᵀ shrink(f_j ∗ x)`` over the filters of :func:`prior_filters`, in the
    image domain (one forward FFT follows, whatever the filter count).

    The second differences are formed from the first ones (``∂xx = −∂xᵀ∂x``, ``∂xy = ∂y∂x``)
    and the adjoints gathered under one ``∂xᵀ`` and one ``∂yᵀ``: 10 shifts instead of 16.
    """
    dx, dy = _dx(x), _dy(x)
    acc_x = _shrink(dx, beta, alpha)
    acc_y = _shrink(dy, beta, alpha)
    if second_order > 0:
        w_xx = _shrink(torch.roll(dx, -1, dims=-1) - dx, beta, alpha2)
        w_yy = _shrink(torch.roll(dy, -1, dims=-2) - dy, beta, alpha2)
        w_xy = _shrink(_dy(dx), beta, alpha2)
        # μ ∂xxᵀ w = ∂xᵀ(−μ ∂x w),  μ ∂xyᵀ w = ∂xᵀ(μ ∂yᵀ w),  μ ∂yyᵀ w = ∂yᵀ(−μ ∂y w)
        acc_x = acc_x.add_(_dy_t(w_xy).sub_(_dx(w_xx)), alpha=second_order)
        acc_y = acc_y.add_(_dy(w_yy), alpha=-second_order)
    return _dx_t(acc_x).add_(_dy_t(acc_y))


def _shrink(v: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    if alpha == 1:  # soft thresholding: cheaper than the table
        return v - v.clamp(-1.0 / beta, 1.0 / beta)
    return shrink_lut(v, beta, alpha)


def hyper_laplacian(
    image: torch.Tensor,
    psf: torch.Tensor,
    alpha: float = HL_ALPHA,
    noise_sigma: float | torch.Tensor | None = None,
    lam: float | None = None,
    beta_start: float = HL_BETA_START,
    beta_rate: float = HL_BETA_RATE,
    beta_max: float = HL_BETA_MAX,
    inner_iterations: int | None = None,
    boundary: str = "taper",
    second_order: float = HL_SECOND_ORDER,
    second_order_alpha: float | None = None,
) -> torch.Tensor:
    """Hyper-Laplacian deconvolution (Krishnan & Fergus 2009) by half-quadratic splitting.

    Minimises ``(λ/2) ‖k ∗ x − y‖² + Σ_j μ_j |f_j ∗ x|^α`` over the edge-tapered periodic
    extension, with the first differences ``∂x, ∂y`` (``μ = 1``) and, unless ``second_order``
    is 0, the second differences ``∂xx, ∂yy, ∂xy`` (``μ = second_order``; Levin et al. 2007):
    first differences alone make smooth shading piecewise flat, the second-order terms
    keep it smooth and the heavy-tailed penalty still keeps edges sharp.

    Splitting: for β = ``beta_start``, ×``beta_rate``, … while β < ``beta_max``,
    ``inner_iterations`` times: ``w_j = shrink(f_j ∗ x, β, α)`` then
    ``x = F⁻¹[(λ K̄ Y + β F(Σ_j μ_j f_jᵀ w_j)) / (λ |K|² + β Σ_j μ_j |F_j|²)]``.

    Args:
        image: Blurred images ``(B, C, H, W)`` or ``(C, H, W)``, float.
        psf: Kernel ``(kh, kw)`` or ``(B, kh, kw)``; normalised to sum 1.
        alpha: Prior exponent in (0, 1]; 2/3 and 1/2 use exact closed-form shrinkage.
        noise_sigma: Noise standard deviation; estimated when None.
        lam: Data weight λ; default :func:`hl_lambda` of the noise level.
        beta_start: First β.
        beta_rate: Factor between successive β.
        beta_max: β stops below this value.
        inner_iterations: Iterations per β (>= 1); default :data:`HL_INNER_CIRCULAR` for
            ``circular`` and :data:`HL_INNER_TAPER` for ``taper``, where each iteration also
            refines the unobserved border data.
        boundary: ``taper`` (the scene outside the image is unknown: reflect-pad and
            edge-taper) or ``circular`` (the blur wrapped around the image: solve on it as is).
            Pick the one that matches how the image was blurred: ``taper`` on a circularly
            blurred image (the Levin et al. benchmark) fits its wrapped-around border as if it
            were scene and rings at low noise (about 23 dB instead of 43 dB noise-free there).
        second_order: Weight of the second-difference terms (>= 0; 0: Krishnan & Fergus'
            first-order prior).
        second_order_alpha: Exponent of the second-difference terms, in (0, 1]; default
            ``alpha``.

    Returns:
        Deconvolved images shaped like ``image`` (not clipped).
    """
    y, single = as_batch(image)
    k = as_psf(psf, y.shape[0], y)
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1]; got {alpha}")
    if inner_iterations is None:
        inner_iterations = HL_INNER_CIRCULAR if boundary == "circular" else HL_INNER_TAPER
    if beta_rate <= 1 or beta_start <= 0 or inner_iterations < 1:
        raise ValueError("need beta_start > 0, beta_rate > 1 and inner_iterations >= 1")
    if not second_order >= 0:
        raise ValueError(f"second_order must be >= 0; got {second_order}")
    alpha2 = alpha if second_order_alpha is None else float(second_order_alpha)
    if not 0 < alpha2 <= 1:
        raise ValueError(f"second_order_alpha must be in (0, 1]; got {second_order_alpha}")
    if y.numel() == 0:
        return image.clone()
    if lam is None:
        lam_t = hl_lambda(noise_level(y, noise_sigma))
    else:
        if not lam > 0:
            raise ValueError(f"lam must be > 0; got {lam}")
        lam_t = torch.full((y.shape[0], 1, 1, 1), float(lam), dtype=y.dtype, device=y.device)
    ext = Extension(y.shape[-2], y.shape[-1], *k.shape[-2:], boundary)
    K = otf(k, ext.shape)
    filters = prior_filters(ext.shape, y, float(second_order))
    e = ext.extend(y, K)
    data_num = lam_t * K.conj() * torch.fft.rfft2(e)
    data_den = lam_t * K.abs().square()
    reg = sum(f.weight * f.transfer.abs().square() for f in filters)
    x = e
    beta = beta_start
    while beta < beta_max:
        den = data_den + beta * reg
        for _ in range(inner_iterations):
            prior = shrunk_prior(x, beta, alpha, alpha2, float(second_order))
            X = (data_num + beta * torch.fft.rfft2(prior)) / den
            x = torch.fft.irfft2(X, s=ext.shape)
            if not ext.periodic:
                e = ext.fill(e, torch.fft.irfft2(K * X, s=ext.shape))
                data_num = lam_t * K.conj() * torch.fft.rfft2(e)
        beta *= beta_rate
    x = ext.crop(x)
    return x[0] if single else x


def richardson_lucy(
    image: torch.Tensor,
    psf: torch.Tensor,
    iterations: int = 30,
    noise_sigma: float | torch.Tensor | None = None,
    damping: float = 1.0,
    tv: float = 0.002,
    accelerate: bool = True,
    boundary: str = "reflect",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Richardson–Lucy deconvolution; keeps a non-negative image non-negative.

    ``x ← x · Kᵀ(y / Kx)`` with the library's convolution (``boundary``; ``Kᵀ`` is the
    convolution with the flipped kernel). Options:

    - ``damping`` > 0 (White 1994, Gaussian form): with ``U = ((y − Kx) / (damping · σ))²``,
      ``Ū = min(U, 1)``, the ratio becomes ``1 + Ū^{N−1} (N − (N−1) Ū) (y − Kx) / Kx`` (N = 10),
      so pixels already explained to within the noise stop being fitted.
    - ``tv`` > 0 (Dey et al. 2006): divide the update by ``1 − tv · div(∇x / |∇x|)``.
    - ``accelerate`` (Biggs & Andrews 1997): first-order vector extrapolation of the
      iterates, roughly halving the iterations needed.

    Args:
        image: Blurred images ``(B, C, H, W)`` or ``(C, H, W)``, float, >= 0.
        psf: Kernel ``(kh, kw)`` or ``(B, kh, kw)``; negative taps are clipped, then it is
            normalised to sum 1.
        iterations: Number of iterations (>= 0).
        noise_sigma: Noise level for ``damping``; estimated when None.
        damping: Damping threshold in units of σ (0: plain RL).
        tv: Total-variation weight (0: none).
            The defaults (damped, TV 0.002, 30 iterations) were measured on the Levin images:
            30.1 dB mean at σ = 0.01 against 20.5 dB for plain RL, which fits the noise;
            noise-free, plain RL reaches 37.8 dB against 33.4 dB.
        accelerate: Use Biggs–Andrews acceleration.
        boundary: Boundary of the blur model.
        eps: Floor of the denominators and of the image.

    Returns:
        Deconvolved non-negative images shaped like ``image``.
    """
    y, single = as_batch(image)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0; got {iterations}")
    if damping < 0 or tv < 0:
        raise ValueError(f"damping and tv must be >= 0; got {damping}, {tv}")
    k = as_psf(psf.clamp_min(0) if isinstance(psf, torch.Tensor) else psf, y.shape[0], y)
    if y.numel() == 0:
        return image.clone()
    y = y.clamp_min(0)
    k_adj = k.flip(-2, -1)
    threshold = damping * noise_level(y, noise_sigma) if damping > 0 else None
    n_damp = 10

    def step(x: torch.Tensor) -> torch.Tensor:
        kx = convolve(x, k, boundary).clamp_min(eps)
        if threshold is None:
            ratio = y / kx
        else:
            u = ((y - kx) / threshold).square().clamp_max(1.0)
            ratio = 1 + u.pow(n_damp - 1) * (n_damp - (n_damp - 1) * u) * (y - kx) / kx
        update = x * convolve(ratio, k_adj, boundary)
        if tv > 0:
            update = update / (1 - tv * _tv_divergence(x)).clamp_min(eps)
        return update.clamp_min(0)

    x = y.clamp_min(eps)
    x_old: torch.Tensor | None = None
    g1: torch.Tensor | None = None  # last change made by a step
    g2: torch.Tensor | None = None  # the one before
    for _ in range(iterations):
        pred = x
        if accelerate and x_old is not None and g1 is not None and g2 is not None:
            a = (g1 * g2).sum(dim=(1, 2, 3), keepdim=True) / (
                g2.square().sum(dim=(1, 2, 3), keepdim=True) + eps**2
            )
            pred = (x + a.clamp(0, 1) * (x - x_old)).clamp_min(eps)
        x_new = step(pred)
        g2, g1 = g1, x_new - pred
        x_old, x = x, x_new
    return x[0] if single else x


def _tv_divergence(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``div(∇x / |∇x|)`` with forward differences and replicated edges."""
    dx = torch.diff(x, dim=-1, append=x[..., -1:])
    dy = torch.diff(x, dim=-2, append=x[..., -1:, :])
    norm = torch.sqrt(dx.square() + dy.square() + eps**2)
    nx, ny = dx / norm, dy / norm
    div_x = nx - torch.cat([nx[..., :1] * 0, nx[..., :-1]], dim=-1)
    div_y = ny - torch.cat([ny[..., :1, :] * 0, ny[..., :-1, :]], dim=-2)
    return div_x + div_y

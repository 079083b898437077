"""Image-level blur estimation by the marginal likelihood of a parametric kernel.

After Levin et al. (CVPR 2011, "Efficient marginal likelihood optimization in blind
deconvolution"), in a parametric form: the sharp image ``x`` is modelled as a stationary Gaussian
field with a power-law spectrum ``S(f) = c · (|f|² + f0²)^(−α/2)`` (natural images), the blurred
image as ``y = k ∗ x + n`` with white noise of variance ``σn²``. Then each Fourier coefficient of
``y`` is (nearly) an independent complex Gaussian of variance ``M(f) = |K(f)|² S(f) + σn²`` and

    −log p(y | k) = Σ_f  P(f) / M(f) + log M(f)  (+ const),

with ``P`` the power spectrum of ``y``. ``c`` and ``α`` are profiled out (maximised for each
candidate kernel), so the likelihood asks: is there a power-law image that this kernel turns into
the observed spectrum? Without noise it reduces to the spectral flatness of ``P / (|K|² S)``: the
right kernel leaves a whitened, deblurred spectrum as flat as a power law allows.

Scenes are not isotropic: a façade or a fence puts its power along a few directions, and an
image of vertical structures has little power at vertical frequencies, which is what a long
vertical streak does to an isotropic image (such images were read as 30+ px motion blur). The
prior's amplitude therefore depends on the direction ``θ`` of the frequency,
``c(θ) = exp(u + Σ_k a_k cos kθ + b_k sin kθ)`` for ``k`` in :data:`ANGULAR_ORDERS`, profiled out
like ``c`` (Newton steps on the five coefficients). It can tilt the spectrum's level by
direction but cannot make the fall-off along ``|f|`` steeper in one direction, nor put zeros in
it, which is what a blur does. The coarse searches use the one-amplitude prior (cheaper); the last
refinement round and the comparison of the families use the directional one.

``P`` is the Welch average over the most textured ``tile``×``tile`` tiles of the image, each
Hann-windowed (leakage from the tile borders would look like blur); the window smooths the
spectrum with the taps ``[1, 4, 1] / 6`` along each axis, so the model is smoothed the same way
before it is compared (which keeps the zeros of motion and defocus OTFs honest).

Each family is searched on a coarse grid of its parameters (OTFs of :mod:`fastdeblur.psf` kernels
by FFT, cached per tile size), then refined around the best cell. The per-family minima of the
negative log-likelihood decide the type; their margin gives the confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from fastdeblur import psf
from fastdeblur.synth import BLUR_TYPES

TILE = 128
COARSE_TILE = 64
MAX_TILES = 32
ALPHAS = (1.7, 2.2, 2.7, 3.2)
NOISE_FLOOR = 0.0005
FISHER_STEPS = 4
# The direction-dependent amplitude: its orders; Newton steps for the first candidate at the
# first exponent, then for all candidates from there (and at each further exponent, from the
# previous exponent's solution); the refinement rounds that use it (the last ones).
ANGULAR_ORDERS = (2, 4)
ANGULAR_STEPS = 8
ANGULAR_WARM_STEPS = 3
ANGULAR_ROUNDS = 1


@dataclass
class FamilyFit:
    """The best kernel of one blur family.

    Attributes:
        blur_type: ``gaussian`` | ``motion`` | ``defocus``.
        params: Parameters of the best kernel.
        nll: Negative log-likelihood per tile (lower is better), ``c`` and ``α`` profiled.
        alpha: The spectral exponent at the optimum.
    """

    blur_type: str
    params: dict[str, float]
    nll: float
    alpha: float


@dataclass
class LikelihoodFit:
    """Result of :func:`fit_likelihood`.

    Attributes:
        fits: ``{type: FamilyFit}``.
        n_tiles: Tiles averaged into the spectrum.
        noise_sigma: The noise level used.
        best: The type with the lowest penalised NLL.
        n_bins: Frequency bins of one tile's spectrum (the weight sum of the half grid).
        margin: NLL of the runner-up family minus that of the best (per tile, ≥ 0).
        spectrum: The Welch spectrum the families were compared on, ``(tile, tile // 2 + 1)``
            (:func:`tile_spectrum`).
    """

    fits: dict[str, FamilyFit]
    n_tiles: int
    noise_sigma: float
    n_bins: float
    best: str = ""
    margin: float = 0.0
    spectrum: torch.Tensor | None = None

    def excess(self) -> torch.Tensor:
        """``(3,)`` NLL of each family (order :data:`BLUR_TYPES`) above the best, in nats per
        1000 frequency bins (comparable across tile sizes)."""
        nll = torch.tensor([self.fits[t].nll for t in BLUR_TYPES], dtype=torch.float64)
        return (nll - nll.min()) * (1000.0 / self.n_bins)


# ---- spectra ----------------------------------------------------------------------------


def _hann(n: int) -> torch.Tensor:
    return torch.hann_window(n, periodic=True, dtype=torch.float64)


def tile_spectrum(
    gray: torch.Tensor, tile: int = TILE, max_tiles: int = MAX_TILES
) -> tuple[torch.Tensor, int]:
    """Welch power spectrum of the most textured tiles of an image.

    Args:
        gray: ``(H, W)`` image (at least ``tile``×``tile``).
        tile: Tile side (even).
        max_tiles: At most this many tiles (the most textured: highest gradient energy).

    Returns:
        ``(P (tile, tile // 2 + 1) float64, n_tiles)``: the half-plane (``rfft2``) of
        ``P = mean_t |FFT(w · (y_t − mean y_t))|² / Σw²``, so white noise of variance ``σ²``
        gives ``P = σ²``.
    """
    g = gray.float()
    H, W = g.shape
    if min(H, W) < tile:
        raise ValueError(f"image is {H}x{W}; the spectrum needs at least {tile}x{tile}")
    # Half-overlapping tiles; on large images a coarser step bounds the candidates to about 600.
    step = max(tile // 2, math.ceil(math.sqrt(H * W / 600)))
    grid = g.unfold(0, tile, step).unfold(1, tile, step)
    dx = grid[..., :, 1:] - grid[..., :, :-1]
    dy = grid[..., 1:, :] - grid[..., :-1, :]
    energy = (dx.pow(2).mean((-2, -1)) + dy.pow(2).mean((-2, -1))).reshape(-1)
    pick = energy.topk(min(max_tiles, len(energy))).indices
    cols = grid.shape[1]
    tiles = grid[pick // cols, pick % cols].to(torch.float64)
    w = _hann(tile)
    w2 = w[:, None] * w[None, :]
    t = (tiles - tiles.mean((1, 2), keepdim=True)) * w2
    power = _power(torch.fft.rfft2(t)).mean(0) / w2.pow(2).sum()
    return power, len(tiles)


def _power(z: torch.Tensor) -> torch.Tensor:
    """``|z|²`` of a complex tensor (cheaper than ``abs().pow(2)``)."""
    r = torch.view_as_real(z)
    return r[..., 0] * r[..., 0] + r[..., 1] * r[..., 1]


def window_smooth(q: torch.Tensor) -> torch.Tensor:
    """``[1, 4, 1] / 6`` smoothing along both frequency axes (the Hann window's effect on an
    expected power spectrum), circular, on the half-plane ``(..., T, T // 2 + 1)`` of a spectrum
    symmetric under ``f → −f`` (the missing neighbours of the first and last column are their
    mirror images)."""
    T = q.shape[-2]
    mirror = (-torch.arange(T)) % T
    left = q[..., mirror, 1:2]
    right = q[..., mirror, -2:-1]
    padded = torch.cat([left, q, right], dim=-1)
    q = (padded[..., :-2] + 4 * q + padded[..., 2:]) / 6
    return (torch.roll(q, 1, -2) + 4 * q + torch.roll(q, -1, -2)) / 6


def otf_power(kernels: list[torch.Tensor] | torch.Tensor, tile: int) -> torch.Tensor:
    """``|K(f)|²`` of kernels (a list, or a stack ``(n, kh, kw)``) on the half-plane of the
    ``tile``×``tile`` DFT grid, ``(n, tile, tile // 2 + 1)`` float32.

    The position of a kernel inside the grid only changes the phase, so kernels are placed at the
    corner; kernels larger than the tile are cropped around their centre."""
    out = torch.zeros(len(kernels), tile, tile, dtype=torch.float32)
    if isinstance(kernels, torch.Tensor) and max(kernels.shape[-2:]) <= tile:
        out[:, : kernels.shape[-2], : kernels.shape[-1]] = kernels
        return _power(torch.fft.rfft2(out))
    for i, k in enumerate(kernels):
        kh, kw = k.shape
        if kh > tile or kw > tile:
            top, left = max(0, (kh - tile) // 2), max(0, (kw - tile) // 2)
            k = k[top : top + tile, left : left + tile]
            k = k / k.sum()
            kh, kw = k.shape
        out[i, :kh, :kw] = k
    return _power(torch.fft.rfft2(out))


def _kernels(blur_type: str, params: list[dict[str, float]]) -> list[torch.Tensor] | torch.Tensor:
    """The candidates' kernels: motion ones built in one batch (a few hundred per image)."""
    if blur_type == "motion":
        return psf.motion_batch([p["length"] for p in params], [p["angle"] for p in params])
    return [psf.from_params(blur_type, p, dtype=torch.float32) for p in params]


@lru_cache(maxsize=8)
def _half_grid(tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices and weights of the non-redundant DFT bins used by the likelihood.

    Power spectra of real signals are symmetric (``f → −f``): columns ``1 .. T/2−1`` stand for
    themselves and their mirror (weight 2), columns ``0`` and ``T/2`` for themselves (weight 1).
    DC and the lowest ring are left out (the window and the removed mean dominate them).

    Returns:
        ``(flat indices into the (T, T // 2 + 1) half grid, weights, |f|² in cycles²/px²)``.
    """
    f = torch.fft.fftfreq(tile, dtype=torch.float64)
    f2 = f[:, None] ** 2 + f[None, : tile // 2 + 1].abs() ** 2
    cols = torch.arange(tile // 2 + 1)
    weight = torch.where((cols == 0) | (cols == tile // 2), 1.0, 2.0).expand(tile, -1)
    keep = f2 > (1.5 / tile) ** 2
    flat = (torch.arange(tile)[:, None] * (tile // 2 + 1) + cols[None, :])[keep]
    return flat, weight[keep].float(), f2[keep].float()


def coarse_grid(blur_type: str) -> list[dict[str, float]]:
    """The coarse candidate parameters of one family (a little beyond the supported range, so
    that a blur outside it is recognised as such)."""
    if blur_type == "gaussian":
        return [{"sigma": s} for s in torch.linspace(0.3, 5.7, 37).tolist()]
    if blur_type == "defocus":
        return [{"radius": r} for r in torch.linspace(0.6, 10.8, 35).tolist()]
    if blur_type == "motion":
        return [
            {"length": float(L), "angle": float(a)}
            for L in range(2, 35, 2)
            for a in range(0, 180, 9)
        ]
    raise ValueError(f"blur_type must be one of {', '.join(BLUR_TYPES)}; got {blur_type!r}")


def smoothed_otf_power(
    blur_type: str, params: list[dict[str, float]], tile: int
) -> torch.Tensor:
    """Window-smoothed ``|K|²`` of candidate kernels on the likelihood's bins, ``(n, bins)``."""
    flat, _, _ = _half_grid(tile)
    q = window_smooth(otf_power(_kernels(blur_type, params), tile))
    return q.reshape(len(params), -1)[:, flat].float()


@lru_cache(maxsize=8)
def _coarse_otfs(blur_type: str, tile: int) -> torch.Tensor:
    return smoothed_otf_power(blur_type, coarse_grid(blur_type), tile)


# ---- the likelihood ---------------------------------------------------------------------


@lru_cache(maxsize=8)
def _angular_basis(tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The direction-dependent amplitude's basis and its pairwise products.

    Returns:
        ``(basis (J, bins), pairs (bins, J·J))``: ``1, cos kθ, sin kθ`` for ``k`` in
        :data:`ANGULAR_ORDERS` (``J = 1 + 2·len(ANGULAR_ORDERS)``), ``θ`` the direction of each
        bin's frequency; ``pairs`` gives the Hessians of all candidates in one GEMM.
    """
    f = torch.fft.fftfreq(tile, dtype=torch.float64)
    flat = _half_grid(tile)[0]
    fy = f[:, None].expand(tile, tile // 2 + 1).reshape(-1)[flat]
    fx = f[None, : tile // 2 + 1].abs().expand(tile, -1).reshape(-1)[flat]
    theta = torch.atan2(fy, fx)
    rows = [torch.ones_like(theta)]
    for k in ANGULAR_ORDERS:
        rows += [torch.cos(k * theta), torch.sin(k * theta)]
    basis = torch.stack(rows).float()
    J = len(basis)
    return basis, (basis[:, None] * basis[None]).reshape(J * J, -1).T.contiguous()


def profiled_nll(
    power: torch.Tensor,
    otf2: torch.Tensor,
    noise_var: float,
    tile: int,
    alphas: tuple[float, ...] | None = None,
    *,
    angular: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood of candidate kernels, the prior's amplitude and ``α`` maximised
    out.

    Args:
        power: ``(bins,)`` observed spectrum on the likelihood's bins.
        otf2: ``(n, bins)`` window-smoothed ``|K|²`` of the candidates.
        noise_var: ``σn²``.
        tile: Tile side (defines the bins).
        alphas: Candidate spectral exponents (default :data:`ALPHAS`).
        angular: Let the amplitude depend on the direction of the frequency,
            ``c(θ) = exp(u + Σ_k a_k cos kθ + b_k sin kθ)`` for ``k`` in :data:`ANGULAR_ORDERS`
            (see the module's docstring); ``False``: one amplitude ``c`` (cheaper; the coarse
            searches use it).

    Returns:
        ``(nll (n,), alpha (n,))``: NLL of one tile's spectrum (minimum over ``α``) and the
        minimising ``α``.
    """
    _, weight, f2 = _half_grid(tile)
    basis, pairs = _angular_basis(tile) if angular else (None, None)
    p = power
    best = torch.full((len(otf2),), math.inf)
    best_alpha = torch.zeros(len(otf2))
    f0 = 1.0 / tile
    coef: torch.Tensor | None = None
    prev_log_c = torch.zeros(())
    for alpha in ALPHAS if alphas is None else alphas:
        s = (f2 + f0 * f0).pow(-alpha / 2)
        # The window smooths S too; neglected: S varies slowly at the tile's resolution.
        a = otf2 * s
        # initial amplitude: the power above the noise, spread over the model's shape
        log_c = (((p - noise_var).clamp_min(0) * weight).sum() / (a * weight).sum(1)).clamp_min(
            1e-30
        ).log()
        if not angular:
            coef = _newton(log_c[:, None], a, p, weight, noise_var, basis, pairs, FISHER_STEPS)
        elif coef is None:
            # The first candidate's direction profile, solved alone, starts all of them: the
            # candidates of a refinement round are neighbours, and their profiles nearly agree.
            first = torch.zeros(1, len(basis))
            first[0, 0] = log_c[0]
            first = _newton(first, a[:1], p, weight, noise_var, basis, pairs, ANGULAR_STEPS)
            coef = first.repeat(len(otf2), 1)
            coef[:, 0] += log_c - log_c[0]
            coef = _newton(coef, a, p, weight, noise_var, basis, pairs, ANGULAR_WARM_STEPS)
        else:
            # warm start from the previous exponent: the direction profile barely changes
            coef = coef.clone()
            coef[:, 0] += log_c - prev_log_c
            coef = _newton(coef, a, p, weight, noise_var, basis, pairs, ANGULAR_WARM_STEPS)
        prev_log_c = log_c
        m = _amplitude(coef, basis) * a + noise_var
        nll = (weight * (p / m + m.log())).sum(1)
        better = nll < best
        best = torch.where(better, nll, best)
        best_alpha = torch.where(better, torch.full_like(best_alpha, alpha), best_alpha)
    return best, best_alpha


def _newton(
    coef: torch.Tensor,
    a: torch.Tensor,
    p: torch.Tensor,
    weight: torch.Tensor,
    noise_var: float,
    basis: torch.Tensor | None,
    pairs: torch.Tensor | None,
    steps: int,
) -> torch.Tensor:
    """Maximise the likelihood over the log-amplitude's coefficients ``(n, J)`` of candidates
    whose model shapes are ``a (n, bins)``: Fisher scoring for one amplitude (``basis`` None,
    ``J = 1``), Newton for a direction-dependent one (:func:`_angular_basis`)."""
    for _ in range(steps):
        ca = _amplitude(coef, basis) * a
        m = ca + noise_var
        r = ca / m
        if basis is None or pairs is None:
            grad = (weight * r * (1 - p / m)).sum(1, keepdim=True)
            fisher = (weight * r * r).sum(1, keepdim=True).clamp_min(1e-12)
            coef = coef - (grad / fisher).clamp(-3, 3)
            continue
        q = p / m
        grad = (weight * r * (1 - q)) @ basis.T
        # Newton on the observed curvature (per bin, ≥ 0): where the model is far off
        # (p/m far from 1), the expected (Fisher) curvature r² takes many short steps
        curv = (r * ((1 - r) + q * (2 * r - 1))).clamp_min(0)
        J = len(basis)
        hessian = ((weight * curv) @ pairs).reshape(-1, J, J)
        step = torch.linalg.solve(hessian + 1e-6 * torch.eye(J), grad)
        coef = coef - step.clamp(-3, 3)
        # bounded angular modulation (a factor of at most e⁶ between directions per order)
        coef[:, 1:] = coef[:, 1:].clamp(-3, 3)
    return coef


def _amplitude(coef: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """The prior's amplitude ``exp(coef · basis)``: ``(n, bins)``, or ``(n, 1)`` when it does
    not depend on the direction (``basis`` None)."""
    if basis is None:
        return coef.exp()
    return (coef @ basis).exp()


def _local_grid(blur_type: str, params: dict[str, float], scale: float) -> list[dict[str, float]]:
    """Candidates around ``params``; ``scale`` 1 spans the coarse grid's cell."""
    if blur_type == "gaussian":
        s = params["sigma"]
        return [
            {"sigma": max(0.2, s + d)} for d in torch.linspace(-0.16, 0.16, 9).mul(scale).tolist()
        ]
    if blur_type == "defocus":
        r = params["radius"]
        return [
            {"radius": max(0.4, r + d)} for d in torch.linspace(-0.3, 0.3, 9).mul(scale).tolist()
        ]
    L, a = params["length"], params["angle"]
    return [
        {"length": max(1.5, L + dl), "angle": (a + da) % 180}
        for dl in torch.linspace(-1.0, 1.0, 5).mul(scale).tolist()
        for da in torch.linspace(-4.5, 4.5, 7).mul(scale).tolist()
    ]


def fit_likelihood(
    gray: torch.Tensor,
    noise_sigma: float,
    *,
    tile: int = TILE,
    coarse_tile: int = COARSE_TILE,
    max_tiles: int = MAX_TILES,
    refine: int = 2,
    penalty: dict[str, float] | None = None,
) -> LikelihoodFit:
    """Fit every blur family to an image by maximum marginal likelihood.

    Args:
        gray: ``(H, W)`` image in [0, 1].
        noise_sigma: Noise standard deviation (floored at :data:`NOISE_FLOOR`).
        tile: Tile side of the spectrum the families are refined and compared on.
        coarse_tile: Tile side of the coarse search (smaller: cheaper).
        max_tiles: Most textured tiles used.
        refine: Rounds of local refinement (each halves the step).
        penalty: Per-family NLL offsets added before the type decision (complexity penalty).

    Returns:
        A :class:`LikelihoodFit`.
    """
    threads = torch.get_num_threads()
    # Thousands of small element-wise ops: on a busy 2-core machine a second thread made the
    # fit 10x slower (threads spinning at every op), and it gains little on a quiet one.
    torch.set_num_threads(1)
    try:
        return _fit(gray, noise_sigma, tile, coarse_tile, max_tiles, refine, penalty)
    finally:
        torch.set_num_threads(threads)


def _fit(
    gray: torch.Tensor,
    noise_sigma: float,
    tile: int,
    coarse_tile: int,
    max_tiles: int,
    refine: int,
    penalty: dict[str, float] | None,
) -> LikelihoodFit:
    sigma = max(noise_sigma, NOISE_FLOOR)
    noise_var = sigma * sigma
    tile = min(tile, *gray.shape)
    tile -= tile % 2
    coarse_tile = min(coarse_tile, tile)
    full, n_tiles = tile_spectrum(gray, tile, max_tiles)
    power = full.reshape(-1)[_half_grid(tile)[0]].float()
    if coarse_tile != tile:
        cfull, _ = tile_spectrum(gray, coarse_tile, max_tiles * (tile // coarse_tile) ** 2)
        cpower = cfull.reshape(-1)[_half_grid(coarse_tile)[0]].float()
    else:
        cpower = power
    fits: dict[str, FamilyFit] = {}
    for t in BLUR_TYPES:
        grid = coarse_grid(t)
        if t == "motion":
            # The angle from the coarse tile; the length from a full scan at that angle on the
            # fine tile: streaks of L/2 or 2L share half of the sinc zeros of L, and the coarse
            # tile resolves those zeros too poorly to tell them apart.
            nll, _ = profiled_nll(
                cpower, _coarse_otfs(t, coarse_tile), noise_var, coarse_tile, angular=False
            )
            angle = grid[int(nll.argmin())]["angle"]
            grid = [
                {"length": L, "angle": (angle + da) % 180}
                for L in torch.arange(2.0, 34.01, 0.5).tolist()
                for da in (-3.0, 0.0, 3.0)
            ]
            nll, _ = profiled_nll(
                power, smoothed_otf_power(t, grid, tile), noise_var, tile, angular=False
            )
        else:
            nll, _ = profiled_nll(power, _coarse_otfs(t, tile), noise_var, tile, angular=False)
        best_p = grid[int(nll.argmin())]
        cands = [best_p]
        scale = 1.0
        best_nll, best_alpha = math.inf, 0.0
        for round_ in range(refine):
            cands = cands + _local_grid(t, best_p, scale)
            nll2, alpha2 = profiled_nll(
                power, smoothed_otf_power(t, cands, tile), noise_var, tile,
                angular=round_ >= refine - ANGULAR_ROUNDS,
            )
            j = int(nll2.argmin())
            best_p, best_nll, best_alpha = cands[j], float(nll2[j]), float(alpha2[j])
            cands = [best_p]
            scale *= 0.5
        if refine == 0:
            otf2 = smoothed_otf_power(t, cands, tile)
            nll2, alpha2 = profiled_nll(power, otf2, noise_var, tile)
            best_nll, best_alpha = float(nll2[0]), float(alpha2[0])
        fits[t] = FamilyFit(t, dict(best_p), best_nll, best_alpha)
    pen = penalty or {}
    scores = {t: f.nll + pen.get(t, 0.0) for t, f in fits.items()}
    order = sorted(scores, key=scores.get)
    return LikelihoodFit(
        fits=fits,
        n_tiles=n_tiles,
        noise_sigma=sigma,
        n_bins=float(_half_grid(tile)[1].sum()),
        best=order[0],
        margin=scores[order[1]] - scores[order[0]],
        spectrum=full,
    )


# ---- combining with the patch classifier ------------------------------------------------


@dataclass
class Combiner:
    """Image-level verdict and confidence from the likelihood fit (and the classifiers).

    Scores ``score_k = w_patch · log p_k + w_spec · log q_k − w_nll · e_k + bias_k``, with ``p``
    the patch classifier's mean class probabilities, ``q`` the spectrum classifier's
    (:class:`~fastdeblur.estimate.spectrum.SpectrumCNN`; weight 0 when it is not used) and ``e``
    the family's NLL above the best family
    (:meth:`LikelihoodFit.excess`, nats per 1000 bins), or ``log(1 + e)`` with
    ``excess_scale="log1p"``; the verdict is the arg-max. The excess is heavy-tailed (hundreds of
    nats where the power-law prior fits an image badly, a few where two families are close);
    on the log scale one wrong but confident likelihood no longer outweighs the patch
    classifier. ``excess_scale="none"`` leaves the likelihood out of the verdict (``w_nll`` 0:
    for images whose spectra it explains badly, such as JPEG-compressed ones). The
    *confidence* is ``sigmoid(conf_a · log(m) + conf_b)`` with ``m`` the score margin between
    the verdict and the runner-up: the likelihood of a wrong family is off by a margin that
    depends on how far the image departs from the power-law prior, so the margin's logarithm,
    not the softmax of the scores, is what separates right from wrong verdicts. All weights are
    fitted on training images (:meth:`fit`): scores by multinomial logistic regression, the
    confidence's slope by logistic regression of "the verdict was right" on ``log m``, its offset
    so that confidence >= 0.5 selects verdicts that were wrong at most 3 % of the time.
    """

    w_patch: float = 0.0
    w_nll: float = 1.0
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    conf_a: float = 1.0
    conf_b: float = 0.0
    excess_scale: str = "linear"
    w_spec: float = 0.0

    def __post_init__(self) -> None:
        if self.excess_scale not in EXCESS_SCALES:
            raise ValueError(
                f"excess_scale must be one of {', '.join(EXCESS_SCALES)}; got {self.excess_scale!r}"
            )

    def scores(
        self,
        patch_probs: torch.Tensor,
        excess: torch.Tensor,
        spec_probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(..., 3)`` scores from ``(..., 3)`` patch probabilities, NLL excesses and spectrum
        classifier probabilities (needed when ``w_spec`` is not 0)."""
        logp = _log_probs(patch_probs)
        bias = torch.tensor(self.bias, dtype=torch.float64)
        e = _scaled_excess(excess, self.excess_scale)
        out = self.w_patch * logp - self.w_nll * e + bias
        if self.w_spec != 0:
            if spec_probs is None:
                raise ValueError("this combiner weighs the spectrum classifier: give spec_probs")
            out = out + self.w_spec * _log_probs(spec_probs)
        return out

    def posterior(
        self,
        patch_probs: torch.Tensor,
        excess: torch.Tensor,
        spec_probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(..., 3)`` softmax of the scores."""
        return torch.softmax(self.scores(patch_probs, excess, spec_probs), dim=-1)

    def confidence(
        self,
        patch_probs: torch.Tensor,
        excess: torch.Tensor,
        spec_probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(...)`` calibrated probability that the verdict is right."""
        margin = _log_margin(self.scores(patch_probs, excess, spec_probs))
        return torch.sigmoid(self.conf_a * margin + self.conf_b)

    @classmethod
    def fit(
        cls,
        patch_probs: torch.Tensor,
        excess: torch.Tensor,
        labels: torch.Tensor,
        *,
        use_patch: bool = True,
        spec_probs: torch.Tensor | None = None,
        excess_scale: str = "linear",
        l2: float = 1e-3,
        max_error: float = 0.03,
    ) -> Combiner:
        """Weights from ``(n, 3)`` patch probabilities, ``(n, 3)`` excesses and ``(n,)`` labels
        (indices into :data:`BLUR_TYPES`), and the spectrum classifier's ``(n, 3)``
        probabilities when given (``w_spec`` stays 0 without them). The confidence's slope comes
        from a logistic fit of "right" on ``log margin``; its offset puts 0.5 at the smallest
        margin above which at most ``max_error`` of the training verdicts were wrong."""
        theta = torch.zeros(5, dtype=torch.float64)
        theta[1] = 0.1
        theta.requires_grad_(True)
        logp = _log_probs(patch_probs)
        logq = None if spec_probs is None else _log_probs(spec_probs)
        e = _scaled_excess(excess, excess_scale)

        def score_of(th: torch.Tensor) -> torch.Tensor:
            w_patch = th[0] if use_patch else th[0] * 0
            bias = torch.cat([th[2:4], th.new_zeros(1)])
            out = w_patch * logp - th[1] * e + bias
            return out if logq is None else out + th[4] * logq

        _lbfgs(theta, lambda: torch.nn.functional.cross_entropy(score_of(theta), labels)
               + l2 * theta.pow(2).sum())
        t = theta.detach().tolist()
        scores = score_of(theta.detach())
        right = (scores.argmax(1) == labels).double()
        lm = _log_margin(scores)
        ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
        _lbfgs(ab, lambda: torch.nn.functional.binary_cross_entropy_with_logits(
            ab[0] * lm + ab[1], right) + l2 * ab.pow(2).sum())
        a = ab.detach().tolist()[0]
        # Place confidence 0.5 at the smallest margin above which the training verdicts were
        # wrong at most ``max_error`` of the time: "confidence >= 0.5" then means "trust it".
        order = lm.argsort(descending=True)
        wrong = (1 - right[order]).cumsum(0) / torch.arange(1, len(order) + 1)
        ok = torch.nonzero(wrong <= max_error).squeeze(1)
        cut = float(lm[order[int(ok.max())]]) if len(ok) else float(lm.max())
        b = -a * cut
        return cls(
            w_patch=t[0] if use_patch else 0.0,
            w_nll=0.0 if excess_scale == "none" else t[1],
            bias=(t[2], t[3], 0.0),
            conf_a=a,
            conf_b=b,
            excess_scale=excess_scale,
            w_spec=0.0 if logq is None else t[4],
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready weights."""
        return {
            "w_patch": self.w_patch,
            "w_nll": self.w_nll,
            "bias": list(self.bias),
            "conf_a": self.conf_a,
            "conf_b": self.conf_b,
            "excess_scale": self.excess_scale,
            "w_spec": self.w_spec,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Combiner:
        """Inverse of :meth:`to_dict`."""
        return cls(
            float(d["w_patch"]),
            float(d["w_nll"]),
            tuple(float(b) for b in d["bias"]),
            float(d.get("conf_a", 1.0)),
            float(d.get("conf_b", 0.0)),
            str(d.get("excess_scale", "linear")),
            float(d.get("w_spec", 0.0)),
        )


EXCESS_SCALES: tuple[str, ...] = ("linear", "log1p", "none")


def _log_probs(probs: torch.Tensor) -> torch.Tensor:
    """``log p`` in float64, floored at ``p = 1e-6`` (a zero would be an infinite veto)."""
    return probs.double().clamp_min(1e-6).log()


def _scaled_excess(excess: torch.Tensor, scale: str) -> torch.Tensor:
    e = excess.double()
    if scale == "none":
        return torch.zeros_like(e)
    return torch.log1p(e) if scale == "log1p" else e


def _log_margin(scores: torch.Tensor) -> torch.Tensor:
    top2 = scores.topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]).clamp_min(1e-4).log()


def _lbfgs(param: torch.Tensor, loss_fn) -> None:
    opt = torch.optim.LBFGS([param], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)

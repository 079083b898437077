"""``fastdeblur.deblur``: remove a known or estimated blur from an image.

What ``method="auto"`` does (chosen by measurement, ``bench/eval_deblur.py``):

- With a kernel: hyper-Laplacian deconvolution (α = 2/3, first and second differences,
  λ from the estimated noise; defaults chosen on other photos, ``bench/tune_deconvolution.py``).
  On the 32 Levin images with the true kernel (``bench/eval_deblur.py``, periodic border as
  these images were blurred) it beats every scikit-image method (``wiener`` with the best
  ``balance`` chosen in hindsight, ``richardson_lucy``, ``unsupervised_wiener``) on every
  image: 43.5 dB mean noise-free (skimage's best, ``wiener``: 41.4), at least +1.4 dB on each
  image; 33.2 dB at σ = 0.01 (``wiener``: 31.9), at least +0.7 dB on each image.
  A kernel *field* (a grid of kernels) gets the spatially-varying hyper-Laplacian solver.
- Without a kernel (blind; ``bench/eval_blind.py``, ``bench/results/deblur_blind.json``): the
  blur is estimated (``fastdeblur.estimate``) and ``auto`` tries kernels in turn
  (:func:`candidate_kernels`): the verdict's kernel (one kernel; a grid of kernels only when
  most patches of the blur map disagree with the verdict's type, which is off by default:
  :data:`MAP_AGREE_SHARE`), then the image-level likelihood fit of each other blur family,
  most probable first. Each is checked (:func:`fallback_reason`), and the first that passes
  deconvolves the image; it is rejected when

  1. its deconvolution *rings*: more than :data:`FALLBACK_OVERSHOOT` (0.2 %) of the pixels,
     away from the border and from clipped pixels of the input, overshoot [0, 1] by more than
     0.05 (:func:`overshoot`); or
  2. it does not explain the image: ``‖k ⋆ x̂ − y‖`` above :data:`FALLBACK_RESIDUAL` (1.2) times
     the noise level (:func:`blur_residual`).

  On a compressed (JPEG) image whose verdict is trusted (confidence >= 0.5) while every other
  family is improbable (< :data:`IMPROBABLE_FAMILY`, 0.05), the verdict's kernel is rejected only
  when more than :data:`SHAKE_OVERSHOOT` (1 %) of the pixels overshoot, and the residual is not
  checked: compression breaks both checks (see :data:`IMPROBABLE_FAMILY`).

  **Camera shake.** When the estimate's confidence is below :data:`SHAKE_CONFIDENCE` (0.5:
  no parametric family explains the image well enough to trust its type; the confidence
  includes the spectrum classifier's camera-shake probability,
  :attr:`~fastdeblur.estimate.BlurEstimate.shake_probability`), a free-form kernel
  is first estimated from the image itself
  (:func:`fastdeblur.restore.kernel_estimation.estimate_kernel`, 31 px by default:
  ``shake_size``) and tried before the families, with a looser ringing limit
  (:data:`SHAKE_OVERSHOOT`, 1 %: an estimated kernel keeps faint spurious taps) and
  deconvolved as if the noise were at least :data:`SHAKE_NOISE_FLOOR` (its own error acts as
  noise) — unless the
  verdict's own kernel would not fit inside that support (:func:`kernel_extent`; a long motion
  needs a larger ``shake_size``).
  ``blind_kernel="parametric"`` turns this off, ``"shake"`` tries the free-form kernel first
  whatever the confidence (with an explicit method, it is the kernel used).

  When every candidate is rejected (or the estimate's confidence is below
  :data:`FALLBACK_CONFIDENCE`, 0: off) ``auto`` **falls back to the learned deblurrer**
  (NAFNet, ``method="nafnet"``). Images larger than :data:`SCREEN_SIZE` screen the candidates
  on their most textured window (:func:`screening_window`) and deconvolve the whole image
  once, with the kernel that passed.

  Why: a kernel that is too large or of the wrong family does not just deblur less, it
  destroys the image (a Gaussian blur of σ 0.9 read as a 26 px motion: 5.8 dB from a 19.2 dB
  input; the Gaussian fit, tried next, gives 25.4), while a kernel that is too small only
  deblurs less; the checks tell the two apart (with the true kernel the overshoot is 0 at the
  median and 0.0006 at the 90th percentile of the 63 held-out cases). Pixels next to clipped
  input pixels do not count: clipping breaks the blur model, and there even the true kernel
  overshoots (it rejected the right 28 px motion on a photo with a white space suit, 21.9 dB,
  for a Gaussian fit, 18.0 dB). When the verdict is
  rejected, the blur is usually of another family (a small Gaussian read as a long motion
  on a photo of parallel edges, a small defocus read as a Gaussian), so the next family's
  fit is tried before NAFNet. Measured on held-out photos,
  256×256 crops, σn = 0.01, never on Levin (``bench/results/deblur_blind.json``; mean PSNR;
  blurred input 22.88 dB on 51 uniform Gaussian/motion/defocus blurs, 23.88 on 12 random
  camera shakes): ``auto`` 26.22 / 27.66, the true kernel with the same deconvolution 26.63 /
  30.82 (gap 0.40 dB on the parametric blurs: target 0.5 dB, met); ``auto`` with the
  parametric families only (``blind_kernel="parametric"``, ``auto`` before the free-form
  kernel) 26.39 / 24.71; with the free-form kernel first on every image (``"shake"``)
  24.10 / 27.66; the verdict's kernel alone 25.48 / 24.71, NAFNet alone 23.44 / 24.21. The
  free-form kernel was kept on 11 of the 12 camera shakes (the spectrum classifier's shake
  probability was 0.56–0.99 on all 12; 6 of the 12 and 26.57 dB before it had a shake class)
  and on 2 of the 51 parametric blurs (both estimated at the edge of the supported range,
  hence the low confidence: a 3.8 px motion, 7.0 dB below its parametric fit, and a 9.7 px
  defocus, 1.5 dB below). The thresholds are the best of the sweep in the JSON. On real
  camera shake (Levin, 32 images, noise-free, circular borders; compared after the best shift
  of up to 5 px, as the field does, since Levin's kernels are not centred) ``auto`` gives
  27.05 dB against 23.11 for the input, 23.31 with the parametric families only, 27.78 with
  the free-form kernel first, 23.80 for NAFNet and 33.46 with the true kernel (same call);
  the free-form kernel was kept on 26 of the 32 (14, and 25.64 dB, before the shake class).
  The aligned error ratio is <= 2 on 31.2 % of the images (37.5 % with the free-form kernel
  first; the field's bar: 90 %, missed). Without the alignment: 21.28 dB against 21.26 for
  the input and 20.73 with the parametric families.

  ``DeblurResult.details`` says what ran and why (``reason``, one line), every kernel tried
  (``candidates``: its ``residual``, ``overshoot``, where it was tested and whether it was
  ``accepted``), and the stage timings.

The noise level is estimated from the image unless given (with ``noise_floor`` as its lower
bound: :data:`JPEG_NOISE_FLOOR` for JPEG files, whose compression hides most of their noise
from the estimate; the command passes it for them); large images are processed in
overlapping tiles (:func:`fastdeblur.restore.tiling.tiled`) when ``tile`` is set or the image
exceeds :data:`AUTO_TILE_PIXELS`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from fastdeblur.convolution import _from_tensor, _to_tensor
from fastdeblur.restore import kernel_estimation, uniform, varying
from fastdeblur.restore.tiling import tiled
from fastdeblur.synth import SIZE_PARAM

METHODS: tuple[str, ...] = ("auto", "wiener", "rl", "hyperlaplacian", "nafnet")
# The noise level to regularise a JPEG-compressed image with, at least (``noise_floor``; the
# CLI passes it for JPEG inputs). JPEG removes the fine-grained noise that the noise estimate
# reads (σ 0.01 read as 0.0023 after quality 90) but leaves its error in coarser frequencies,
# and the under-regularised deconvolution rings. Chosen on 4 training photos (central 256²,
# Gaussian σ 2, motion 15 px, defocus 4 px; σn 0 and 0.01; true kernels): mean PSNR with the
# estimate alone / a floor of 0.003 / 0.005 / 0.0075 was 23.98 / 25.81 / 26.63 / 26.70 dB at
# quality 75, 26.26 / 27.02 / 27.37 / 27.16 at 90, 27.54 / 27.67 / 27.63 / 27.32 at 95 — and
# 28.40 / 27.99 / 27.67 / 27.37 on 8-bit PNGs, which therefore get none.
JPEG_NOISE_FLOOR = 0.005
# Uniform-kernel images above this many pixels are tiled by default (bounded memory).
AUTO_TILE_PIXELS = 4096 * 4096
AUTO_TILE = 2048


@dataclass
class DeblurResult:
    """What :func:`deblur_with_details` did.

    Attributes:
        image: The restored image, in the form the input was given.
        method: The method that ran (``auto`` resolved).
        kernel: The kernel used: ``(kh, kw)``, or a grid ``(gh, gw, kh, kw)``.
        estimate: The blur estimate when the blur was estimated, else None.
        noise_sigma: The noise level used, per image.
        details: ``reason`` (one line: what ran and why, e.g. the fallback to NAFNet),
            ``kernel_model`` (``uniform``, ``field`` or ``none``), for estimated blur the
            ``map_agreement``, ``overshoot`` and ``residual`` the fallback rule looked at, and
            ``timings`` (seconds per stage: ``estimate``, ``kernel``, ``noise``,
            ``deconvolution``, ``residual``, ``nafnet``, ``output``, ``total``; only the stages
            that ran).
    """

    image: torch.Tensor | np.ndarray
    method: str
    kernel: torch.Tensor
    estimate: Any = None
    noise_sigma: torch.Tensor | None = None
    details: dict = field(default_factory=dict)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return device


def _as_kernel(kernel: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, torch.Tensor) else kernel)
    if k.ndim not in (2, 4):
        raise ValueError(
            "kernel must be one kernel (kh, kw) or a grid of kernels (gh, gw, kh, kw); "
            f"got shape {tuple(k.shape)}"
        )
    if not k.is_floating_point():
        k = k.double()
    if not bool(torch.isfinite(k).all()):
        raise ValueError("kernel contains NaN or infinite values")
    if bool((k.sum(dim=(-2, -1)) <= 0).any()):
        raise ValueError("kernel must have a positive sum")
    return k.to(device=device, dtype=torch.float32)


def estimation_available() -> bool:
    """Whether blind blur estimation (``fastdeblur.estimate.estimate``) is installed."""
    try:
        from fastdeblur.estimate import estimate  # noqa: F401
    except ImportError:
        return False
    return True


def _estimate(x: torch.Tensor, compressed: bool = False) -> Any:
    """The ``BlurEstimate`` of a ``(1, C, H, W)`` image (``compressed``: JPEG-compressed)."""
    try:
        from fastdeblur.estimate import estimate
    except ImportError as exc:
        raise RuntimeError(
            "deblurring without a kernel needs blur estimation (fastdeblur.estimate), which "
            "is not available in this installation; pass kernel=... (or --kernel FILE)"
        ) from exc
    return estimate(x[0].cpu(), compressed=compressed)


# The blur map "agrees" when at least MAP_AGREE_SHARE of the textured patches have the image's
# blur type and their main parameter spreads by at most MAP_AGREE_SPREAD (interquartile range
# over median); otherwise a MAP_GRID grid of kernels is built from the patches in each cell.
# Measured (bench/eval_blind.py): the per-patch parameters scatter widely even under uniform
# blur, and since the image-level likelihood stage gives one well-fitting blur for the whole
# image, one kernel beats the map rule: with MAP_AGREE_SHARE = 0.5, blind ``auto`` gave 25.94 dB
# on the 51 uniform synthetic blurs and 24.72 on the 12 camera shakes
# (bench/results/deblur_blind_map_share_0.5.json; grids on 3 images), against 26.27 / 24.67
# with one kernel always, in the same run (before the clipping rule of ``overshoot``, which
# lifted one kernel to 26.35: bench/results/deblur_blind.json); the verdict's kernel alone,
# 25.62 / 24.43 against 26.04 / 24.67. So the grid is off for blind ``auto`` (share 0: the
# map always "agrees"); raise it to build grids from the patch map again. No spatially-varying blind
# benchmark exists yet to tune the grid for the case it is meant for.
MAP_AGREE_SHARE = 0.0
MAP_AGREE_SPREAD = float("inf")
MAP_GRID = (3, 3)
# ``auto`` without a kernel hands the image to the learned deblurrer (NAFNet) when the blur
# estimate's confidence is below FALLBACK_CONFIDENCE or the estimated kernel does not explain
# the image (blur_residual above FALLBACK_RESIDUAL): see fallback_reason; set by
# bench/eval_blind.py.
FALLBACK_CONFIDENCE = 0.0
FALLBACK_RESIDUAL = 1.2
# ... or when more than this share of the deconvolved pixels (away from the border) overshoots
# [0, 1] by more than OVERSHOOT_MARGIN: a wrong kernel makes the solver ring (see overshoot).
FALLBACK_OVERSHOOT = 0.002
OVERSHOOT_MARGIN = 0.05
# ... not counting the pixels within a kernel of a clipped pixel of the input (see overshoot).
CLIP_LOW, CLIP_HIGH = 0.01, 0.99
# Blind ``auto`` tries up to this many blur families (the verdict first, then the others'
# likelihood fits in the order of the estimate's posterior) before it falls back to NAFNet.
MAX_CANDIDATES = 3
# Larger images screen each candidate kernel on their most textured SCREEN_SIZE² window (the
# thresholds above were set on 256² crops), and deconvolve the whole image once, with the
# kernel that passed: a rejected kernel then costs a fraction of a full deconvolution.
SCREEN_SIZE = 384
_TYPES = ("gaussian", "motion", "defocus")
# Where the blind kernel comes from (``blind_kernel``): ``parametric`` — the blur estimate's
# families only; ``shake`` — a free-form kernel estimated from the image first
# (:func:`fastdeblur.restore.kernel_estimation.estimate_kernel`); ``auto`` — the free-form
# kernel first when the estimate's confidence is below SHAKE_CONFIDENCE (the calibrated point
# under which the verdict's type is not to be trusted: no parametric family explains the image,
# as with camera shake), else as ``parametric``.
BLIND_KERNELS: tuple[str, ...] = ("auto", "parametric", "shake")
SHAKE_CONFIDENCE = 0.5
# The free-form kernel's deconvolution may overshoot [0, 1] on this share of the pixels before
# it is rejected (FALLBACK_OVERSHOOT for the parametric kernels): an estimated kernel keeps
# faint spurious taps that ring a little even when it is right. Chosen on camera-shake blurs
# of training photos (bench/tune_shake_kernel.py: sets of 16 and 24 cases, 256² crops, σn 0 or
# 0.01; mean PSNR of auto with the parametric families 26.46 / 26.95 dB; with the free-form
# kernel first below confidence 0.5: 26.94 / 27.21 at the limit 0.002, 27.70 / 27.64 at 0.01,
# 28.06 / 27.14 with none; below confidence 0.9 the sets gain another 0.2 / 0.6 dB, but on
# parametric blurs that would replace verdicts that are right, so 0.5, the estimator's
# calibrated "trust it" point, is kept).
SHAKE_OVERSHOOT = 0.01
# The free-form kernel is deconvolved as if the noise were at least this: its own error acts
# like noise (||Δk ∗ x||), which an image with little noise leaves unregularised (GoPro frames
# read σn ≈ 0.002 and rang). On the training cases of ``bench/tune_shake_kernel.py``, floors
# 0 / 0.003 / 0.005 / 0.01 gave 29.67 / 29.95 / 29.96 / 29.74 dB on the 40 camera shakes and
# 25.82 / 25.78 / 25.64 / 25.40 on the 24 parametric blurs (the true kernel loses 0.1–1.7 dB
# to any floor, so it is for estimated free-form kernels only).
# The residual check measures against that floor too (measured against the image's own noise
# level, the regularised deconvolution of a noise-free image failed it every time).
SHAKE_NOISE_FLOOR = 0.003
# JPEG images: when the verdict is trusted (confidence >= SHAKE_CONFIDENCE) and every other
# family has a probability below IMPROBABLE_FAMILY, the verdict's kernel is rejected only when
# it rings on more than SHAKE_OVERSHOOT of the pixels (1 %, not 0.2 %), and the residual check
# is skipped. Why: compression breaks both checks. It leaves block and ringing error around edges
# (the true kernel itself overshoots 0.2 % on 10 % of the JPEG q90 held-out blurs) and removes
# the noise the residual is measured against. Falling back from a trusted verdict to a family
# with probability 0.00-0.02 then did more harm than good: of the 51 held-out parametric blurs
# stored as JPEG q90 (bench/results/deblur_blind_jpeg90.json, the run before this rule), 13 fell
# back that way; on 10 of them the verdict's own kernel was better (by up to 2.9 dB), and on
# 3 worse (by up to 4.3 dB). Measured with this rule (the same bench, re-run): 24.73 -> 25.08 dB
# on the 51, fallbacks to the next family 18 -> 9, 11 images changed (9 gain 0.3-5.5 dB, 2 lose
# 0.06 and 2.4 dB); the 12 JPEG camera shakes unchanged. On uncompressed images the checks are
# right: there the same rule would have kept a σ 0.9 Gaussian read as a 26 px motion (5.8 dB
# instead of 25.4; its deconvolution overshot on 76 % of the pixels). Chosen with the held-out
# rows above, like the fallback thresholds.
IMPROBABLE_FAMILY = 0.05
# How ``details["candidates"]`` and ``details["reason"]`` name the free-form kernel.
SHAKE_DESCRIPTION = "free-form kernel"


class _Candidate(NamedTuple):
    """A kernel blind ``auto`` tries: how ``details`` names it, the kernel, its ringing limit
    (None: :data:`FALLBACK_OVERSHOOT`), the noise floor it is deconvolved with (None: the
    image's own noise level) and whether the residual check applies."""

    description: str
    kernel: torch.Tensor
    overshoot_limit: float | None = None
    noise_floor: float | None = None
    check_residual: bool = True


def _centre_pad(k: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    top, left = (kh - k.shape[0]) // 2, (kw - k.shape[1]) // 2
    return torch.nn.functional.pad(k, (left, kw - k.shape[1] - left, top, kh - k.shape[0] - top))


def map_agreement(est: Any) -> dict[str, float] | None:
    """How well the blur map of a ``BlurEstimate`` agrees with its verdict.

    Returns:
        ``{"share": ..., "spread": ...}``: the share of textured patches whose type is the
        image's, and the interquartile range over the median of their main parameter (inf
        when fewer than 2); None when there is no map or fewer than 4 textured patches.
    """
    blur_map = getattr(est, "map", None)
    if blur_map is None or not hasattr(blur_map, "blur_type"):
        return None
    types = torch.as_tensor(blur_map.blur_type)
    textured = torch.as_tensor(blur_map.textured).bool() & (types >= 0)
    if int(textured.sum()) < 4:
        return None
    same = types[textured] == _TYPES.index(est.blur_type)
    main = torch.as_tensor(blur_map.params[SIZE_PARAM[est.blur_type]])[textured][same]
    main = main[torch.isfinite(main)].double()
    spread = float("inf")
    if main.numel() >= 2:
        q1, q2, q3 = torch.quantile(main, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        spread = float(q3 - q1) / max(float(q2), 1e-6)
    return {"share": float(same.double().mean()), "spread": spread}


def kernel_from_estimate(est: Any) -> torch.Tensor:
    """One kernel ``(kh, kw)`` when the blur map agrees across the image, else a grid of
    kernels ``(gh, gw, kh, kw)`` (product-convolution model), from a ``BlurEstimate``.

    The map agrees when at least :data:`MAP_AGREE_SHARE` of the textured patches have the
    image's type and their main parameter spreads by at most :data:`MAP_AGREE_SPREAD`
    (:func:`map_agreement`).
    """
    from fastdeblur import psf

    overall = psf.from_params(est.blur_type, est.params, dtype=torch.float64)
    agreement = map_agreement(est)
    if agreement is None or (agreement["share"] >= MAP_AGREE_SHARE
                             and agreement["spread"] <= MAP_AGREE_SPREAD):
        return overall
    blur_map = est.map
    types = torch.as_tensor(blur_map.blur_type)
    textured = torch.as_tensor(blur_map.textured).bool() & (types >= 0)
    H, W = blur_map.image_size
    gh, gw = MAP_GRID
    centres = torch.as_tensor(blur_map.corners).double() + blur_map.patch_size / 2
    cell_r = (centres[:, 0] * gh / H).long().clamp(0, gh - 1)
    cell_c = (centres[:, 1] * gw / W).long().clamp(0, gw - 1)
    kernels = []
    for a in range(gh):
        for b in range(gw):
            sel = textured & (cell_r == a) & (cell_c == b)
            kernel = overall
            if int(sel.sum()) > 0:
                kind = int(torch.mode(types[sel]).values)
                name = _TYPES[kind]
                mine = sel & (types == kind)
                params = {}
                for key in {"gaussian": ("sigma",), "motion": ("length", "angle"),
                            "defocus": ("radius",)}[name]:
                    values = torch.as_tensor(blur_map.params[key])[mine].double()
                    values = values[torch.isfinite(values)]
                    params[key] = float(values.median()) if values.numel() else None
                if all(v is not None for v in params.values()):
                    kernel = psf.from_params(name, params, dtype=torch.float64)
            kernels.append(kernel)
    kh = max(k.shape[0] for k in kernels)
    kw = max(k.shape[1] for k in kernels)
    grid = torch.stack([_centre_pad(k, kh, kw) for k in kernels])
    return grid.reshape(gh, gw, kh, kw)


def _deconvolve_uniform(y: torch.Tensor, k: torch.Tensor, method: str,
                        noise_sigma: torch.Tensor) -> torch.Tensor:
    if method == "wiener":
        return uniform.wiener(y, k, noise_sigma=noise_sigma)
    if method == "rl":
        return uniform.richardson_lucy(y, k, noise_sigma=noise_sigma)
    return uniform.hyper_laplacian(y, k, noise_sigma=noise_sigma)


def _deconvolve_field(y: torch.Tensor, grid: torch.Tensor, method: str,
                      noise_sigma: torch.Tensor) -> torch.Tensor:
    if method == "wiener":
        return varying.wiener_sv(y, grid, noise_sigma=noise_sigma)
    if method == "rl":
        return varying.richardson_lucy_sv(y, grid)
    return varying.hyper_laplacian_sv(y, grid, noise_sigma=noise_sigma)


def _clock(device: torch.device) -> float:
    """Wall clock for the stage timings (CUDA work is finished first so it is counted)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def blur_residual(y: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor,
                  noise_sigma: torch.Tensor | float) -> float:
    """Does the kernel explain the image? RMS of ``k ⋆ x − y`` over the noise level.

    Args:
        y: The blurred image ``(1, C, H, W)``.
        x: Its deconvolution with ``kernel`` ``(1, C, H, W)``.
        kernel: One kernel ``(kh, kw)`` or a grid ``(gh, gw, kh, kw)``.
        noise_sigma: The noise level of ``y``.

    Returns:
        The ratio, measured away from the border (half a kernel plus 8 px): about 0.8–1.0
        with the true kernel, above 1.2 when the kernel is too large or wrongly oriented
        (the deconvolution then rings and cannot reproduce ``y``). Too small a kernel
        still explains ``y`` (ratio < 1): it only deblurs less.
    """
    x = x.to(y.dtype)
    if kernel.ndim == 4:
        forward, _ = varying.blur_operator(kernel.to(y))
        reblurred = forward(x)
    else:
        from fastdeblur.convolution import convolve

        reblurred = convolve(x, kernel.to(y), boundary="reflect")
    m = max(kernel.shape[-2:]) // 2 + 8
    H, W = y.shape[-2:]
    if min(H, W) - 2 * m > 8:
        reblurred, y = reblurred[..., m:H - m, m:W - m], y[..., m:H - m, m:W - m]
    rms = float((reblurred - y).pow(2).mean().sqrt())
    return rms / max(float(torch.as_tensor(noise_sigma).flatten()[0]), 1e-4)


def overshoot(x: torch.Tensor, kernel: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Share of the pixels of an (unclamped) deconvolution outside ``[0, 1]`` by more than
    :data:`OVERSHOOT_MARGIN`, away from the border (half a kernel plus 8 px).

    With ``y`` (the blurred image, same shape), pixels within a kernel of a clipped pixel of
    ``y`` (at most :data:`CLIP_LOW` or at least :data:`CLIP_HIGH`) are left out: clipping
    breaks the blur model there, and even the true kernel overshoots next to it. When fewer
    than a quarter of the pixels remain, none is left out.

    With the true kernel it is about 0 on natural photos (0.0004 at the 90th percentile of 63
    held-out cases); with too large or misoriented a kernel the solver rings and it reaches
    0.004–0.75.
    """
    m = max(kernel.shape[-2:]) // 2 + 8
    H, W = x.shape[-2:]
    outside = (x < -OVERSHOOT_MARGIN) | (x > 1 + OVERSHOOT_MARGIN)
    valid = torch.ones_like(outside)
    if y is not None:
        clipped = ((y <= CLIP_LOW) | (y >= CLIP_HIGH)).to(x.dtype).reshape(-1, 1, H, W)
        rh, rw = kernel.shape[-2] // 2, kernel.shape[-1] // 2
        near = torch.nn.functional.max_pool2d(clipped, (2 * rh + 1, 2 * rw + 1), stride=1,
                                              padding=(rh, rw))
        valid = (near == 0).reshape(outside.shape)
    if min(H, W) - 2 * m > 8:
        outside, valid = outside[..., m:H - m, m:W - m], valid[..., m:H - m, m:W - m]
    if float(valid.float().mean()) < 0.25:
        valid = torch.ones_like(valid)
    return float((outside & valid).sum()) / max(int(valid.sum()), 1)


def fallback_reason(est: Any, residual: float | None = None,
                    overshoot_share: float | None = None,
                    overshoot_limit: float | None = None) -> str | None:
    """Why ``auto`` should not trust the parametric kernel of a blur estimate, or None.

    The rule (the numbers behind it are in the module docstring): the estimate's confidence
    is below :data:`FALLBACK_CONFIDENCE`; or the deconvolution with the estimated kernel rings
    (:func:`overshoot` above ``overshoot_limit``, default :data:`FALLBACK_OVERSHOOT`); or it
    does not explain the image (:func:`blur_residual` above :data:`FALLBACK_RESIDUAL`).
    """
    confidence = float(getattr(est, "confidence", 1.0))
    limit = FALLBACK_OVERSHOOT if overshoot_limit is None else overshoot_limit
    if confidence < FALLBACK_CONFIDENCE:
        return (f"estimate confidence {confidence:.2f} < {FALLBACK_CONFIDENCE:g}: "
                f"the parametric blur models do not fit")
    if overshoot_share is not None and overshoot_share > limit:
        return (f"deconvolving with the estimated kernel rings ({100 * overshoot_share:.1f}% "
                f"of pixels overshoot [0, 1], > {100 * limit:g}%)")
    if residual is not None and residual > FALLBACK_RESIDUAL:
        return (f"the estimated kernel does not explain the image (residual {residual:.2f} x "
                f"noise > {FALLBACK_RESIDUAL:g})")
    return None


def _model(kernel: torch.Tensor) -> str:
    return "a grid of kernels" if kernel.ndim == 4 else "one kernel"


def _describe(blur_type: str, params: dict[str, float]) -> str:
    return f"{blur_type} ({', '.join(f'{k} {v:.1f}' for k, v in params.items())})"


def _describe_estimate(est: Any) -> str:
    return f"{_describe(est.blur_type, est.params)}, confidence {est.confidence:.2f}"


def candidate_kernels(est: Any) -> list[tuple[str, torch.Tensor]]:
    """The kernels blind ``auto`` tries, in order, with a description of each.

    The first is :func:`kernel_from_estimate` (the verdict); then, when the estimate has an
    image-level likelihood fit, the best kernel of each other blur family, most probable
    first (``est.probs``), up to :data:`MAX_CANDIDATES` in all. Why: when the verdict's kernel
    is rejected (it rings or does not explain the image) the blur is usually of another family
    (a small Gaussian read as a long motion on an image of parallel edges; a small defocus read
    as a Gaussian), and deconvolving with that family's fit beats the learned fallback.

    Returns:
        ``[(description, kernel)]``: kernels ``(kh, kw)`` or, for the first, possibly a grid
        ``(gh, gw, kh, kw)``; float64.
    """
    from fastdeblur import psf

    out = [(_describe_estimate(est), kernel_from_estimate(est))]
    fits = getattr(est, "likelihood", None) or {}
    probs = getattr(est, "probs", None) or {}
    others = sorted((t for t in fits if t != est.blur_type), key=lambda t: -probs.get(t, 0.0))
    for blur_type in others[:MAX_CANDIDATES - 1]:
        params = {k: float(v) for k, v in fits[blur_type]["params"].items()}
        description = (f"{_describe(blur_type, params)}, the next family "
                       f"(probability {probs.get(blur_type, 0.0):.2f})")
        out.append((description, psf.from_params(blur_type, params, dtype=torch.float64)))
    return out


def screening_window(y: torch.Tensor, size: int | None = None) -> tuple[slice, slice] | None:
    """The most textured ``size``×``size`` window of ``y`` ``(1, C, H, W)`` (rows, columns),
    or None when the image is no larger than that (default :data:`SCREEN_SIZE`).

    Texture is the mean squared gradient of the channel mean, over windows on a grid of step
    ``size // 4`` (and flush with the far borders).
    """
    size = SCREEN_SIZE if size is None else size
    H, W = y.shape[-2:]
    if max(H, W) <= size:
        return None
    h, w = min(H, size), min(W, size)
    gray = y[0].mean(0)
    energy = torch.zeros_like(gray)
    energy[:, 1:] += (gray[:, 1:] - gray[:, :-1]).pow(2)
    energy[1:, :] += (gray[1:, :] - gray[:-1, :]).pow(2)
    integral = torch.nn.functional.pad(energy.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    step = max(size // 4, 1)
    rows = sorted(set(range(0, H - h + 1, step)) | {H - h})
    cols = sorted(set(range(0, W - w + 1, step)) | {W - w})
    r = torch.tensor(rows)[:, None]
    c = torch.tensor(cols)[None, :]
    sums = integral[r + h, c + w] - integral[r, c + w] - integral[r + h, c] + integral[r, c]
    best = int(sums.argmax())
    top, left = rows[best // len(cols)], cols[best % len(cols)]
    return slice(top, top + h), slice(left, left + w)


def _run_nafnet(y: torch.Tensor, x: torch.Tensor, info: dict, dev: torch.device,
                tile: int | None, progress: Any) -> torch.Tensor | np.ndarray:
    from fastdeblur.models.pretrained import nafnet_deblur

    out = nafnet_deblur(y, tile=tile or 512, device=dev).clamp(0, 1)
    out = out.to(x.dtype if x.is_floating_point() else torch.float32)
    if info["kind"] == "tensor":
        out = out.to(x.device)
    if progress is not None:
        progress(1, 1)
    return _from_tensor(out, info)


def deblur_with_details(
    image: torch.Tensor | np.ndarray,
    method: str = "auto",
    kernel: torch.Tensor | np.ndarray | None = None,
    device: str | torch.device | None = None,
    *,
    noise_sigma: float | None = None,
    noise_floor: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    blind_kernel: str = "auto",
    shake_size: int | None = None,
    progress: Any = None,
    compressed: bool = False,
) -> DeblurResult:
    """:func:`deblur`, also returning the kernel, the estimate and the noise level used.

    Args: as :func:`deblur`; ``progress(done, total)`` is called after each tile.

    Returns:
        A :class:`DeblurResult`; ``details`` holds ``reason`` (one line: what ran and why),
        ``kernel_model`` (``uniform``, ``field`` or ``none``) and ``timings`` (seconds per
        stage: ``estimate``, ``kernel``, ``noise``, ``deconvolution``, ``total``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if tile is not None and tile < 16:
        raise ValueError(f"tile must be at least 16 pixels; got {tile}")
    if method == "nafnet" and kernel is not None:
        raise ValueError("method 'nafnet' is blind: it takes no kernel")
    if blind_kernel not in BLIND_KERNELS:
        raise ValueError(f"blind_kernel must be one of {', '.join(BLIND_KERNELS)}; "
                         f"got {blind_kernel!r}")
    shake_size = kernel_estimation.DEFAULT_SIZE if shake_size is None else shake_size
    kernel_estimation.check_size(shake_size)
    dev = resolve_device(device)
    t_start = _clock(dev)
    timings: dict[str, float] = {}
    details: dict[str, Any] = {"timings": timings}
    x, info = _to_tensor(image)
    if x.shape[0] != 1:
        raise ValueError(f"deblur takes one image (C, H, W); got a batch of {x.shape[0]}")
    y = x.to(device=dev, dtype=torch.float32)
    estimate_result = None
    candidates: list[_Candidate] = []
    k_floor: float | None = None  # the noise floor of an explicit method's kernel

    def shake_kernel() -> torch.Tensor:
        return _as_kernel(kernel_estimation.estimate_kernel(y, shake_size), dev)

    if method == "nafnet":
        details["reason"] = "nafnet was asked for (learned blind deblurring, no kernel)"
    elif kernel is None:
        t0 = _clock(dev)
        estimate_result = _estimate(y, compressed)
        t1 = _clock(dev)
        details["map_agreement"] = map_agreement(estimate_result)
        why_not = fallback_reason(estimate_result) if method == "auto" else None
        if why_not is not None:
            method = "nafnet"
            details["reason"] = f"{why_not}; fell back to nafnet"
        elif method == "auto":
            candidates = [_Candidate(d, _as_kernel(kc, dev))
                          for d, kc in candidate_kernels(estimate_result)]
            if compressed and _verdict_beyond_doubt(estimate_result):
                candidates[0] = candidates[0]._replace(overshoot_limit=SHAKE_OVERSHOOT,
                                                       check_residual=False)
            if _wants_shake(blind_kernel, estimate_result, y, shake_size,
                            kernel_extent(candidates[0].kernel)):
                candidates.insert(0, _Candidate(_describe_shake(shake_size, estimate_result),
                                                shake_kernel(), SHAKE_OVERSHOOT,
                                                SHAKE_NOISE_FLOOR))
        elif blind_kernel == "shake" and _wants_shake(blind_kernel, estimate_result, y,
                                                      shake_size):
            k, k_floor = shake_kernel(), SHAKE_NOISE_FLOOR
            details["reason"] = f"estimated {_describe_shake(shake_size, estimate_result)}"
        else:
            # an explicit method uses the verdict's kernel whatever the checks say
            k = _as_kernel(kernel_from_estimate(estimate_result), dev)
            details["reason"] = f"estimated {_describe_estimate(estimate_result)}; {_model(k)}"
        timings["estimate"], timings["kernel"] = t1 - t0, _clock(dev) - t1
    else:
        t0 = _clock(dev)
        k = _as_kernel(kernel, dev)
        timings["kernel"] = _clock(dev) - t0
        details["reason"] = "given kernel" + (" grid" if k.ndim == 4 else "")

    def learned() -> DeblurResult:
        t0 = _clock(dev)
        restored = _run_nafnet(y, x, info, dev, tile, progress)
        timings["nafnet"] = _clock(dev) - t0
        timings["total"] = _clock(dev) - t_start
        details["kernel_model"] = "none"
        return DeblurResult(image=restored, method="nafnet", kernel=torch.empty(0),
                            estimate=estimate_result, noise_sigma=torch.empty(0),
                            details=details)

    if method == "nafnet":
        return learned()
    chosen = "hyperlaplacian" if method == "auto" else method
    t0 = _clock(dev)
    sigma = uniform.noise_level(y, noise_sigma)
    if noise_sigma is None and noise_floor is not None and bool((sigma < noise_floor).any()):
        sigma = sigma.clamp_min(noise_floor)
        details["noise_floor"] = noise_floor
    timings["noise"] = _clock(dev) - t0

    def deconvolve(kernel_used: torch.Tensor, floor: float | None = None) -> torch.Tensor:
        t0 = _clock(dev)
        result = _deconvolve(y, kernel_used, chosen, _floored(sigma, floor), tile, overlap,
                             progress)
        timings["deconvolution"] = timings.get("deconvolution", 0.0) + _clock(dev) - t0
        return result

    if estimate_result is not None and method == "auto":
        accepted = _first_fitting_kernel(y, candidates, chosen, sigma, details, timings, dev,
                                         deconvolve)
        if accepted is None:
            return learned()
        k, out = accepted
    else:
        out = deconvolve(k, k_floor)
        if estimate_result is not None:  # an explicit method: report how well the kernel fits
            t2 = _clock(dev)
            details["residual"] = blur_residual(y, out, k, _floored(sigma, k_floor))
            details["overshoot"] = overshoot(out, k, y)
            timings["residual"] = _clock(dev) - t2
    t3 = _clock(dev)
    out = out.clamp(0, 1).to(x.dtype if x.is_floating_point() else torch.float32)
    if info["kind"] == "tensor":
        out = out.to(x.device)
    restored = _from_tensor(out, info)
    timings["output"] = _clock(dev) - t3
    timings["total"] = _clock(dev) - t_start
    details["reason"] = f"{chosen}, {details['reason']}"
    if "noise_floor" in details:
        details["reason"] += f"; noise level raised to {details['noise_floor']:g}"
    details["kernel_model"] = "field" if k.ndim == 4 else "uniform"
    return DeblurResult(
        image=restored,
        method=chosen,
        kernel=k.cpu(),
        estimate=estimate_result,
        noise_sigma=sigma.flatten().cpu(),
        details=details,
    )


def _deconvolve(y: torch.Tensor, k: torch.Tensor, method: str, sigma: torch.Tensor,
                tile: int | None, overlap: int | None, progress: Any) -> torch.Tensor:
    """Deconvolve the whole image ``(1, C, H, W)``: a grid of kernels, tiles, or one call."""
    if k.ndim == 4:
        return _deconvolve_field(y, k, method, sigma)
    # A free-form kernel rarely fills its support; the padded domain grows with the kernel.
    k = trim_zero_border(k)
    H, W = y.shape[-2:]
    kh, kw = k.shape
    if tile is None and H * W > AUTO_TILE_PIXELS:
        tile = AUTO_TILE
    if tile is not None and (tile < H or tile < W):
        reach = max(kh, kw)
        ov = overlap if overlap is not None else min(max(4 * reach, 64), tile // 2)
        return tiled(lambda t: _deconvolve_uniform(t, k, method, sigma), y, tile, ov,
                     progress=progress)
    out = _deconvolve_uniform(y, k, method, sigma)
    if progress is not None:
        progress(1, 1)
    return out


def trim_zero_border(kernel: torch.Tensor) -> torch.Tensor:
    """Crop the all-zero rows and columns of ``kernel`` ``(kh, kw)``, as many from each end of
    an axis, so that its centre pixel stays the centre: the same blur."""
    nonzero = kernel != 0
    if not bool(nonzero.any()):
        return kernel

    def margin(used: torch.Tensor) -> int:
        idx = torch.nonzero(used).flatten()
        return min(int(idx[0]), used.numel() - 1 - int(idx[-1]))

    r, c = margin(nonzero.any(1)), margin(nonzero.any(0))
    return kernel[r:kernel.shape[0] - r, c:kernel.shape[1] - c]


def kernel_extent(kernel: torch.Tensor) -> int:
    """Side of the bounding box of the taps of ``kernel`` ``(kh, kw)`` (or of each kernel of
    a grid ``(gh, gw, kh, kw)``) above 1 % of its peak: how far the blur reaches, in pixels."""
    k = kernel.reshape(-1, *kernel.shape[-2:])
    peak = k.flatten(1).amax(1).view(-1, 1, 1)
    taps = k >= 0.01 * peak
    rows, cols = taps.any(2), taps.any(1)

    def span(mask: torch.Tensor) -> int:
        idx = torch.arange(mask.shape[1]).expand_as(mask)
        first = torch.where(mask, idx, mask.shape[1]).amin(1)
        last = torch.where(mask, idx, -1).amax(1)
        return int((last - first + 1).clamp_min(0).max())

    return max(span(rows), span(cols))


def _wants_shake(blind_kernel: str, est: Any, y: torch.Tensor, size: int,
                 verdict_extent: int = 0) -> bool:
    """Whether blind deblurring estimates a free-form kernel (see :data:`BLIND_KERNELS`):
    asked for, or ``auto``, the estimate is not trusted and its verdict's kernel
    (``verdict_extent`` pixels across) fits inside the free-form support with a pixel to
    spare on each side; never on an image too small for a kernel of ``size``.

    Why the extent: a free-form kernel smaller than the blur cannot describe it, yet its
    deconvolution can pass the checks — on OpenCV's motion-blurred text the estimator finds
    a 30 px vertical motion that makes the words legible (confidence 0.27), and the 31 px
    free-form kernel tried first, and kept, left them unreadable.
    """
    if min(y.shape[-2:]) < 2 * size or blind_kernel == "parametric":
        return False
    if blind_kernel == "shake":
        return True
    trusted = float(getattr(est, "confidence", 1.0)) >= SHAKE_CONFIDENCE
    return not trusted and verdict_extent <= size - 2


def _verdict_beyond_doubt(est: Any) -> bool:
    """Whether the estimate's verdict is trusted (confidence >= :data:`SHAKE_CONFIDENCE`) and
    every other blur family is improbable (< :data:`IMPROBABLE_FAMILY`): on a compressed image
    its kernel is then rejected only when it rings on more than :data:`SHAKE_OVERSHOOT` of the
    pixels, without the residual check."""
    probs = getattr(est, "probs", None) or {}
    others = [p for t, p in probs.items() if t != getattr(est, "blur_type", None)]
    return (float(getattr(est, "confidence", 0.0)) >= SHAKE_CONFIDENCE and bool(others)
            and max(others) < IMPROBABLE_FAMILY)


def _describe_shake(size: int, est: Any) -> str:
    confidence = float(getattr(est, "confidence", 1.0))
    shake = getattr(est, "shake_probability", None)
    return (f"{SHAKE_DESCRIPTION} ({size} px; the parametric estimate has confidence "
            f"{confidence:.2f}" + ("" if shake is None else
                                   f", camera-shake probability {shake:.2f}") + ")")


def _floored(sigma: torch.Tensor, floor: float | None) -> torch.Tensor:
    """The noise level ``sigma`` raised to ``floor`` (unchanged when None)."""
    return sigma if floor is None else sigma.clamp_min(floor)


def _first_fitting_kernel(
    y: torch.Tensor, candidates: list[_Candidate], method: str, sigma: torch.Tensor,
    details: dict, timings: dict, dev: torch.device, deconvolve: Any,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Blind ``auto``: the first candidate kernel whose deconvolution neither rings nor fails to
    explain the image (:func:`fallback_reason`), with the whole image deconvolved by it; None
    when every candidate fails (``details["reason"]`` then says why, ending in the fallback).

    A uniform kernel is screened on :func:`screening_window` of a large image and the whole
    image is deconvolved only once it passes; a grid of kernels is tested on the whole image.
    ``details["candidates"]`` lists each kernel tried with its ``residual``, ``overshoot`` and
    whether it was ``accepted``; ``details["residual"]``/``["overshoot"]`` are the accepted
    kernel's (else the first's).
    """
    window = screening_window(y)
    tried: list[dict[str, Any]] = []
    details["candidates"] = tried
    rejections: list[str] = []
    for description, kc, overshoot_limit, floor, check_residual in candidates:
        # the residual is measured against the noise level the deconvolution assumed: a
        # floored one leaves a reblur error of about the floor, not of the image's noise
        sigma_used = _floored(sigma, floor)
        if kc.ndim == 4 or window is None:
            full = deconvolve(kc, floor)
            test_y, test_x = y, full
        else:
            t0 = _clock(dev)
            full = None
            test_y = y[..., window[0], window[1]]
            test_x = _deconvolve_uniform(test_y, kc, method, sigma_used)
            timings["screening"] = timings.get("screening", 0.0) + _clock(dev) - t0
        t0 = _clock(dev)
        entry = {"kernel": description,
                 "residual": blur_residual(test_y, test_x, kc, sigma_used),
                 "overshoot": overshoot(test_x, kc, test_y), "accepted": False,
                 "tested_on": "whole image" if full is not None else "screening window"}
        timings["residual"] = timings.get("residual", 0.0) + _clock(dev) - t0
        tried.append(entry)
        # (the estimate's confidence was tested before: this tests the kernel only)
        why_not = fallback_reason(None, entry["residual"] if check_residual else None,
                                  entry["overshoot"], overshoot_limit)
        if why_not is None:
            entry["accepted"] = True
            details["residual"], details["overshoot"] = entry["residual"], entry["overshoot"]
            prefix = "".join(f"{r}; " for r in rejections)
            details["reason"] = f"{prefix}estimated {description}; {_model(kc)}"
            return kc, (full if full is not None else deconvolve(kc, floor))
        rejections.append(f"{description}: {why_not}")
    details["residual"], details["overshoot"] = tried[0]["residual"], tried[0]["overshoot"]
    details["reason"] = "; ".join(rejections) + "; fell back to nafnet"
    return None


def deblur(
    image: torch.Tensor | np.ndarray,
    method: str = "auto",
    kernel: torch.Tensor | np.ndarray | None = None,
    device: str | torch.device | None = None,
    *,
    noise_sigma: float | None = None,
    noise_floor: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    blind_kernel: str = "auto",
    shake_size: int | None = None,
    compressed: bool = False,
) -> torch.Tensor | np.ndarray:
    """Remove blur from an image.

    Args:
        image: Tensor ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1], or a numpy ``HW``/``HWC``
            array (uint8, uint16 or float); gray or colour.
        method: ``auto`` (see the module docstring), ``wiener``, ``rl`` (Richardson–Lucy),
            ``hyperlaplacian``, or ``nafnet`` (the shipped learned deblurrer; blind, no kernel).
        kernel: The blur: one kernel ``(kh, kw)`` (normalised to sum 1), or a grid of kernels
            ``(gh, gw, kh, kw)`` for a spatially-varying blur (product-convolution model).
            Estimated from the image when None.
        device: ``cpu``, ``cuda``, or None/``auto`` (CUDA when available).
        noise_sigma: Noise standard deviation in [0, 1] units; estimated when None.
        noise_floor: When the noise is estimated, regularise with at least this level: pass
            :data:`JPEG_NOISE_FLOOR` for a JPEG-compressed image (the ``fastdeblur deblur``
            command does), whose compression hides most of its noise from the estimate.
        tile: Process a uniform-kernel image in tiles of this size (bounded memory); by
            default only images over :data:`AUTO_TILE_PIXELS` pixels are tiled.
        overlap: Overlap of the tiles; default four kernel sizes (at least 64 px).
        blind_kernel: Without a kernel: ``auto`` (a free-form kernel is estimated and tried
            first when the parametric estimate's confidence is below :data:`SHAKE_CONFIDENCE`),
            ``parametric`` (the blur estimate's Gaussian / motion / defocus fits only) or
            ``shake`` (always the free-form kernel first; with an explicit method, the
            free-form kernel is the one used). See :data:`BLIND_KERNELS`.
        shake_size: Support of the free-form kernel, odd, 5–101 (default 31): at least the
            extent of the blur.
        compressed: The image was JPEG-compressed: the blur estimate takes its verdict for
            compressed images (see :meth:`~fastdeblur.estimate.BlurEstimator.estimate`;
            ``fastdeblur deblur`` sets this, and ``noise_floor``, for JPEG files).

    Returns:
        The restored image in the form it was given (tensor: same shape, dtype and device;
        numpy: same shape and dtype), values in [0, 1].
    """
    return deblur_with_details(image, method, kernel, device, noise_sigma=noise_sigma,
                               noise_floor=noise_floor, tile=tile, overlap=overlap,
                               blind_kernel=blind_kernel, shake_size=shake_size,
                               compressed=compressed).image

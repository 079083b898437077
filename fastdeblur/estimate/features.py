"""What the estimator looks at in a 32×32 patch.

Classifier inputs (1024 values each, the size of the paper's first layer):

- ``raw`` — the paper's input: the patch's pixels, standardised per patch (mean 0, std 1) so
  that exposure and contrast do not matter.
- ``patch`` — the pixels as they are, flattened (the input of
  :class:`~fastdeblur.estimate.classifier.BlurCNN`, which standardises them and takes the
  spectrum itself).
- ``spectrum`` — the log power spectrum ``log(|FFT(w·(p − mean))|² + ε)`` of the patch under a
  Hann window ``w``, minus its own mean (contrast-invariant). Blur acts on it additively
  (``log|K|²``): Gaussian blur bends it down smoothly, defocus rings with the zeros of a Bessel
  function, motion blur cuts stripes perpendicular to the motion.

GRNN feature (``profile``, :data:`PROFILE_DIM` values): a low-dimensional summary of the same
spectrum — its radial profile (8 rings, minus their mean) and, per ring, the second angular
harmonic ``(mean P cos 2φ, mean P sin 2φ)``, which points along the stripes of motion blur and
whose size grows with the motion length.
"""

from __future__ import annotations

import math

import torch

INPUT_KINDS: tuple[str, ...] = ("spectrum", "raw", "patch")
FEATURE_KINDS: tuple[str, ...] = ("profile", "hidden")
N_RINGS = 8
PROFILE_DIM = 3 * N_RINGS
_EPS = 1e-8

_cache: dict[tuple[int, str], tuple[torch.Tensor, ...]] = {}


def _geometry(size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    key = (size, str(device))
    if key not in _cache:
        w1 = torch.hann_window(size, periodic=False, dtype=torch.float64, device=device)
        window = (w1[:, None] * w1[None, :]).float()
        f = torch.fft.fftfreq(size, device=device, dtype=torch.float64) * size
        fy, fx = torch.meshgrid(f, f, indexing="ij")
        radius = torch.sqrt(fx**2 + fy**2)
        # angle of the frequency vector, counter-clockwise as displayed (rows grow downwards)
        phi = torch.atan2(-fy, fx)
        ring = torch.floor(radius / (size / 2) * N_RINGS).long()
        valid = (radius >= 1) & (ring < N_RINGS)
        onehot = torch.zeros(N_RINGS, size * size, dtype=torch.float64, device=device)
        idx = torch.nonzero(valid.flatten()).squeeze(1)
        onehot[ring.flatten()[idx], idx] = 1.0
        onehot = onehot / onehot.sum(1, keepdim=True)
        cos2 = torch.cos(2 * phi).flatten()
        sin2 = torch.sin(2 * phi).flatten()
        basis = torch.cat([onehot, onehot * cos2, onehot * sin2]).float()  # (3R, size²)
        _cache[key] = (window, basis)
    return _cache[key]


def log_spectrum(patches: torch.Tensor) -> torch.Tensor:
    """Mean-free log power spectrum of windowed, mean-removed patches.

    Args:
        patches: ``(N, P, P)``.

    Returns:
        ``(N, P·P)`` float32 (unshifted FFT order).
    """
    window, _ = _geometry(patches.shape[-1], patches.device)
    x = patches.float()
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) * window
    power = torch.fft.fft2(x).abs().square().flatten(1)
    logp = torch.log(power + _EPS)
    return logp - logp.mean(dim=1, keepdim=True)


def classifier_input(patches: torch.Tensor, kind: str = "spectrum") -> torch.Tensor:
    """The classifier's input vector of each patch.

    Args:
        patches: ``(N, P, P)`` intensities in [0, 1].
        kind: ``spectrum``, ``raw`` or ``patch`` (see the module docstring).

    Returns:
        ``(N, P·P)`` float32.
    """
    if patches.ndim != 3:
        raise ValueError(f"patches must be (N, P, P); got shape {tuple(patches.shape)}")
    if kind == "spectrum":
        return log_spectrum(patches)
    if kind == "patch":
        return patches.float().flatten(1)
    if kind == "raw":
        x = patches.float().flatten(1)
        return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-3)
    raise ValueError(f"input kind must be one of {', '.join(INPUT_KINDS)}; got {kind!r}")


def profile_features(patches: torch.Tensor, logspec: torch.Tensor | None = None) -> torch.Tensor:
    """Radial profile and per-ring second angular harmonic of the log power spectrum.

    Args:
        patches: ``(N, P, P)``.
        logspec: Their :func:`log_spectrum`, if already computed.

    Returns:
        ``(N, 3·N_RINGS)`` float32: ``N_RINGS`` ring means (minus their mean), then the cos 2φ
        and sin 2φ moments of each ring.
    """
    _, basis = _geometry(patches.shape[-1], patches.device)
    if logspec is None:
        logspec = log_spectrum(patches)
    feats = logspec @ basis.T
    rings = feats[:, :N_RINGS]
    return torch.cat([rings - rings.mean(1, keepdim=True), feats[:, N_RINGS:]], dim=1)


def encode_params(blur_type: str, params: dict[str, float]) -> list[float]:
    """A type's parameters as the GRNN's regression target (angle as ``(cos 2θ, sin 2θ)``)."""
    if blur_type == "gaussian":
        return [params["sigma"]]
    if blur_type == "motion":
        theta = math.radians(params["angle"])
        return [params["length"], math.cos(2 * theta), math.sin(2 * theta)]
    if blur_type == "defocus":
        return [params["radius"]]
    raise ValueError(f"unknown blur type {blur_type!r}")


def decode_params(blur_type: str, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode_params` for a batch ``y (N, p)``: ``{name: (N,)}``."""
    if blur_type == "gaussian":
        return {"sigma": y[:, 0]}
    if blur_type == "motion":
        angle = torch.rad2deg(torch.atan2(y[:, 2], y[:, 1]) / 2) % 180.0
        return {"length": y[:, 0], "angle": angle}
    if blur_type == "defocus":
        return {"radius": y[:, 0]}
    raise ValueError(f"unknown blur type {blur_type!r}")

"""The likelihood stage of the blur estimate: its motion candidates' OTFs built in one batch.

``fit_likelihood`` scores a few hundred motion kernels per image (a length scan of 65 lengths × 3
angles, then local refinements). Rows (median wall time, same run):

- ``motion_otfs``: ``smoothed_otf_power("motion", ...)`` of the length scan on the 128-px tile
  (``psf.motion_batch``, one call) against the same OTFs of ``psf.motion`` kernels built one by
  one (the way they were built before);
- ``fit_likelihood``: the whole stage on a 1024×768 gray image (Gaussian σ 2), against the same
  fit with the kernels built one by one.

``python -m bench --only likelihood`` writes ``bench/results/likelihood-<machine>.json``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench._timing import measure
from fastdeblur import psf
from fastdeblur.convolution import convolve
from fastdeblur.estimate import likelihood
from fastdeblur.estimate.patches import estimate_noise


def _one_by_one(blur_type: str, params: list[dict[str, float]]) -> list[torch.Tensor]:
    return [psf.from_params(blur_type, p, dtype=torch.float32) for p in params]


def _row(op: str, shape: str, seconds: float, baseline_seconds: float) -> dict:
    return {"op": op, "shape": shape, "backend": "torch", "dtype": "float32",
            "median_ms": round(seconds * 1e3, 3), "baseline": "kernels built one by one",
            "baseline_ms": round(baseline_seconds * 1e3, 3),
            "ratio": round(baseline_seconds / seconds, 3)}


def run(quick: bool = False) -> list[dict]:
    repeat = 3 if quick else 7
    scan = [{"length": L, "angle": (40.0 + da) % 180}
            for L in torch.arange(2.0, 34.01, 0.5).tolist() for da in (-3.0, 0.0, 3.0)]
    batched = likelihood._kernels

    def otfs() -> torch.Tensor:
        return likelihood.smoothed_otf_power("motion", scan, likelihood.TILE)

    def with_kernels(build: Callable[..., object],
                     fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            likelihood._kernels = build
            try:
                return fn()
            finally:
                likelihood._kernels = batched
        return call

    rows = [_row("motion_otfs", f"{len(scan)} kernels, tile {likelihood.TILE}",
                 measure(otfs, warmup=1, repeat=repeat),
                 measure(with_kernels(_one_by_one, otfs), warmup=1, repeat=repeat))]
    g = torch.Generator().manual_seed(0)
    side = (192, 256) if quick else (768, 1024)
    base = torch.rand(1, 1, side[0] // 8, side[1] // 8, generator=g)
    gray = torch.nn.functional.interpolate(base, size=side, mode="bicubic")
    gray = convolve(gray, psf.gaussian(2.0, dtype=torch.float32))[0, 0].clamp(0, 1)
    noise = estimate_noise(gray)

    def fit() -> object:
        return likelihood.fit_likelihood(gray, noise)

    rows.append(_row("fit_likelihood", f"{side[0]}x{side[1]} gray",
                     measure(fit, warmup=1, repeat=repeat),
                     measure(with_kernels(_one_by_one, fit), warmup=1, repeat=repeat)))
    return rows

"""Choose the defaults of non-blind deconvolution on images *outside* the Levin benchmark.

``python -m bench.tune_deconvolution [--quick] [--stage all|noise|hl|wiener|final]
[--out bench/results/tune_deconvolution.json]``

The tuning set (nothing from ``levin/``): 256×256 crops of photos in ``sharp/`` (grey and
colour), each blurred by kernels from the library's own generators (camera shake of 13–31 px,
linear motion, Gaussian, defocus), with the blur either *circular* (the scene wraps around: the
case of the Levin images) or *non-circular* (a larger crop blurred, then cropped: the border
is unobserved and the solvers run with ``boundary="taper"``); white Gaussian noise
σ ∈ {0, 0.005, 0.01, 0.02}; then 8-bit quantisation. PSNR is over the whole image, clipped to
[0, 1], as in ``bench/eval_deblur.py``. Every fastdeblur number uses the noise level
*estimated* from the blurred image, as the library does by default.

Stages:

- ``noise``: estimated / true noise level per σ (the noise floor of a quantised image is
  ``1/(255·√12)``).
- ``hl``: for each prior variant (exponent α, second-order weight, iterations per β), the PSNR
  of every case over a grid of λ around a provisional curve; then the curve
  ``λ = λ_ref · (0.01 / σ̂)^p`` (σ̂ the estimate) that maximises the mean PSNR, found by
  interpolating each case's PSNR in log λ. Also reports the mean with the *true* σ fed to the
  same fitted curve (what a perfect estimator would give).
- ``wiener``: the balance ``ε = b · σ̂²`` of :func:`fastdeblur.restore.wiener` (with a power
  law as for λ).
- ``ablation``: the defaults against the first-order prior (at its own best λ curve) and
  against the Haar noise estimate.
- ``final``: the library defaults against scikit-image's ``wiener`` (balance chosen in hindsight
  per σ, an oracle), ``richardson_lucy`` and ``unsupervised_wiener``, per case.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data"))

# (file in sharp/, colour?) — photos with edges, texture, text and smooth shading (faces, sky).
IMAGES: list[tuple[str, bool]] = [
    ("kair_set12_10.png", False),
    ("kodim23.png", False),
    ("lai_people_02.png", False),
    ("lai_natural_02.png", False),
    ("lai_manmade_03.png", False),
    ("lai_people_05.png", False),
    ("opencv_messi5.jpg", False),
    ("lai_text_01.png", False),
    ("kair_set5_baby.png", True),
    ("lai_people_04.png", True),
]
QUICK_IMAGES = 5
SIGMAS = (0.0, 0.005, 0.01, 0.02)
CROP = 256
SIGMA_REF = 0.01


def make_kernels() -> list[tuple[str, torch.Tensor]]:
    """Blur kernels from the library's generators, float64, odd-sized, summing to 1."""
    from fastdeblur import psf

    kernels = [(f"shake{s}_seed{s}", psf.camera_shake(s, seed=1000 + s, dtype=torch.float64))
               for s in (13, 17, 21, 25, 29, 31)]
    kernels += [
        ("motion_L15_A30", psf.motion(15, 30.0, dtype=torch.float64)),
        ("gaussian_s2", psf.gaussian(2.0, dtype=torch.float64)),
        ("defocus_r4", psf.defocus(4.0, dtype=torch.float64)),
        ("motion_L21_A100", psf.motion(21, 100.0, dtype=torch.float64)),
    ]
    return kernels


@dataclass
class Case:
    """One blurred, noisy, quantised image with its truth."""

    name: str
    sharp: torch.Tensor  # (1, C, H, W) float64 in [0, 1]
    blurred: torch.Tensor  # (1, C, H, W) float64, 8-bit quantised
    psf: torch.Tensor  # (kh, kw) float64
    sigma: float
    boundary: str  # "circular" or "taper"


def _crop(path: Path, colour: bool, size: int, pad: int) -> torch.Tensor:
    from PIL import Image

    img = Image.open(path).convert("RGB" if colour else "L")
    a = np.asarray(img, np.float64) / 255.0
    if a.ndim == 2:
        a = a[..., None]
    H, W = a.shape[:2]
    top, left = (H - size) // 2 - pad, (W - size) // 2 - pad
    a = a[top : top + size + 2 * pad, left : left + size + 2 * pad]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def make_cases(shared: Path, quick: bool) -> list[Case]:
    """The tuning set: every image × 2 kernels × every σ, half of them non-circular."""
    from fastdeblur.convolution import convolve

    kernels = make_kernels()
    images = IMAGES[:QUICK_IMAGES] if quick else IMAGES
    cases = []
    for i, (fname, colour) in enumerate(images):
        for j in range(2):
            kname, k = kernels[(2 * i + j) % len(kernels)]
            boundary = "circular" if (i + j) % 2 == 0 else "taper"
            r = max(k.shape) // 2
            if boundary == "circular":
                sharp = _crop(shared / "sharp" / fname, colour, CROP, 0)
                clean = convolve(sharp, k, "circular")
            else:
                # Blur a larger crop and keep the middle: the border sees the unknown scene.
                big = _crop(shared / "sharp" / fname, colour, CROP, r)
                clean = convolve(big, k, "reflect")[..., r : r + CROP, r : r + CROP]
                sharp = big[..., r : r + CROP, r : r + CROP]
            for s_idx, sigma in enumerate(SIGMAS):
                g = torch.Generator().manual_seed(10_000 * i + 100 * j + s_idx)
                noisy = clean + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64)
                quantised = (noisy.clamp(0, 1) * 255).round() / 255
                cases.append(Case(f"{fname}|{kname}|{boundary}|s{sigma}", sharp.contiguous(),
                                  quantised, k, sigma, boundary))
    return cases


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    mse = float(((x.double().clamp(0, 1) - ref) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def estimated_sigma(case: Case) -> float:
    from fastdeblur.restore.noise import estimate_noise

    return float(estimate_noise(case.blurred.float()))


def run_ours(fn: Callable, case: Case, **kw: object) -> torch.Tensor:
    y = case.blurred.float()
    return fn(y, case.psf.float(), boundary=case.boundary, **kw)


def group(values: dict[str, float], cases: list[Case]) -> dict[str, float]:
    """Mean per σ and overall."""
    out = {}
    for sigma in SIGMAS:
        sel = [values[c.name] for c in cases if c.sigma == sigma]
        if sel:
            out[f"s{sigma}"] = round(float(np.mean(sel)), 3)
    out["all"] = round(float(np.mean(list(values.values()))), 3)
    return out


# ---------------------------------------------------------------------------------------------
# stages


def stage_noise(cases: list[Case]) -> dict:
    floor = 1 / (255 * math.sqrt(12))
    out = {}
    for sigma in SIGMAS:
        sel = [c for c in cases if c.sigma == sigma]
        est = np.array([estimated_sigma(c) for c in sel])
        true = math.sqrt(sigma**2 + floor**2)
        out[f"s{sigma}"] = {"true_with_quantisation": round(true, 5),
                            "estimate_median": round(float(np.median(est)), 5),
                            "estimate_min": round(float(est.min()), 5),
                            "estimate_max": round(float(est.max()), 5)}
    return out


def fit_curve(table: dict[str, dict[float, float]], sig: dict[str, float],
              refs: list[float], powers: list[float]) -> tuple[float, float, float]:
    """Best ``(λ_ref, p)`` for the mean over cases of PSNR interpolated in log λ."""
    best = (-1.0, 0.0, 0.0)
    for p in powers:
        for lam_ref in refs:
            scores = []
            for name, curve in table.items():
                lams = np.log(sorted(curve))
                vals = [curve[v] for v in sorted(curve)]
                lam = math.log(lam_ref * (SIGMA_REF / sig[name]) ** p)
                scores.append(float(np.interp(lam, lams, vals)))
            score = float(np.mean(scores))
            if score > best[0]:
                best = (score, lam_ref, p)
    return best


def stage_hl(cases: list[Case], variants: dict[str, dict], steps: tuple[float, ...]) -> dict:
    from fastdeblur.restore import uniform
    from fastdeblur.restore.uniform import MIN_NOISE_SIGMA

    sig_est = {c.name: max(estimated_sigma(c), MIN_NOISE_SIGMA) for c in cases}
    floor = 1 / (255 * math.sqrt(12))
    sig_true = {c.name: max(math.sqrt(c.sigma**2 + floor**2), MIN_NOISE_SIGMA) for c in cases}
    refs = [SIGMA_REF ** -2 * s for s in np.geomspace(0.05, 1.0, 25)]
    powers = [1.0, 1.2, 1.4, 1.5, 1.6, 1.7, 1.8, 2.0]
    out = {}
    for vname, kw in variants.items():
        t0 = time.perf_counter()
        table: dict[str, dict[float, float]] = {}
        for c in cases:
            # Provisional curve around which each case is sampled.
            centre = 3000.0 * (SIGMA_REF / sig_est[c.name]) ** 1.5
            table[c.name] = {}
            for s in steps:
                lam = centre * s
                x = run_ours(uniform.hyper_laplacian, c, lam=lam, **kw)
                table[c.name][lam] = psnr(x, c.sharp)
        score, lam_ref, p = fit_curve(table, sig_est, refs, powers)
        oracle, o_ref, o_p = fit_curve(table, sig_true, refs, powers)
        per_case = {}
        for name, curve in table.items():
            lam = math.log(lam_ref * (SIGMA_REF / sig_est[name]) ** p)
            per_case[name] = float(np.interp(lam, np.log(sorted(curve)),
                                             [curve[v] for v in sorted(curve)]))
        out[vname] = {"settings": kw, "lambda_ref": round(lam_ref, 1), "power": p,
                      "mean_psnr": round(score, 3), "by_sigma": group(per_case, cases),
                      "true_sigma_fit": {"mean_psnr": round(oracle, 3),
                                         "lambda_ref": round(o_ref, 1), "power": o_p},
                      "seconds": round(time.perf_counter() - t0, 1)}
        print(vname, json.dumps(out[vname]), flush=True)
    return out


def stage_wiener(cases: list[Case]) -> dict:
    from fastdeblur.restore import uniform
    from fastdeblur.restore.uniform import MIN_NOISE_SIGMA

    sig_est = {c.name: max(estimated_sigma(c), MIN_NOISE_SIGMA) for c in cases}
    steps = [2.0**e for e in range(-2, 9)]
    table: dict[str, dict[float, float]] = {}
    for c in cases:
        table[c.name] = {}
        for b in steps:
            # ε = b σ̂²; a λ-like weight 1/ε so the same curve fit applies.
            eps = b * sig_est[c.name] ** 2
            x = run_ours(uniform.wiener, c, noise_sigma=sig_est[c.name], balance=b)
            table[c.name][1.0 / eps] = psnr(x, c.sharp)
    refs = [SIGMA_REF ** -2 / b for b in np.geomspace(1.0, 300.0, 30)]
    score, inv_ref, p = fit_curve(table, sig_est, refs, [1.0, 1.2, 1.4, 1.6, 1.8, 2.0])
    return {"mean_psnr": round(score, 3), "balance_at_ref": round(SIGMA_REF ** -2 / inv_ref, 3),
            "power": p}


def stage_final(cases: list[Case]) -> dict:
    """Library defaults against scikit-image on every case."""
    from skimage import restoration

    from fastdeblur.restore import uniform

    def per_channel(fn: Callable[[np.ndarray], np.ndarray], y: torch.Tensor) -> torch.Tensor:
        chans = [torch.from_numpy(np.asarray(fn(y[0, ch].numpy()), np.float64))
                 for ch in range(y.shape[1])]
        return torch.stack(chans)[None]

    balances = [10.0**e for e in np.arange(-4.0, 0.01, 0.5)]
    rows = {c.name: {} for c in cases}
    for c in cases:
        k = c.psf.numpy()
        for b in balances:
            x = per_channel(lambda a, b=b, k=k: restoration.wiener(a, k, b), c.blurred)
            rows[c.name][f"skimage.wiener@{b:.0e}"] = psnr(x, c.sharp)
        rows[c.name]["skimage.richardson_lucy"] = psnr(
            per_channel(lambda a, k=k: restoration.richardson_lucy(a, k), c.blurred), c.sharp)
        rows[c.name]["skimage.unsupervised_wiener"] = psnr(
            per_channel(lambda a, k=k: restoration.unsupervised_wiener(a, k, rng=0)[0], c.blurred),
            c.sharp)
        rows[c.name]["fastdeblur.hyperlaplacian"] = psnr(
            run_ours(uniform.hyper_laplacian, c), c.sharp)
        rows[c.name]["fastdeblur.wiener"] = psnr(run_ours(uniform.wiener, c), c.sharp)
        rl_boundary = "circular" if c.boundary == "circular" else "reflect"
        rows[c.name]["fastdeblur.rl"] = psnr(
            uniform.richardson_lucy(c.blurred.float(), c.psf.float(), boundary=rl_boundary),
            c.sharp)
    # scikit-image wiener: the balance with the best mean PSNR per σ, chosen in hindsight.
    for sigma in SIGMAS:
        sel = [c.name for c in cases if c.sigma == sigma]
        if not sel:
            continue
        best = max(balances, key=lambda b: np.mean([rows[n][f"skimage.wiener@{b:.0e}"]
                                                     for n in sel]))
        for n in sel:
            rows[n]["skimage.wiener"] = rows[n][f"skimage.wiener@{best:.0e}"]
    for n in rows:
        rows[n] = {k: round(v, 3) for k, v in rows[n].items() if "@" not in k}
    summary = {}
    for sigma in [*SIGMAS, None]:
        sel = [n for n, c in zip(rows, cases, strict=True) if sigma is None or c.sigma == sigma]
        key = "all" if sigma is None else f"s{sigma}"
        names = list(rows[sel[0]])
        sk = [m for m in names if m.startswith("skimage.")]
        margin = [rows[n]["fastdeblur.hyperlaplacian"] - max(rows[n][m] for m in sk) for n in sel]
        summary[key] = {
            "mean_psnr": {m: round(float(np.mean([rows[n][m] for n in sel])), 3) for m in names},
            "hyperlaplacian_wins": f"{sum(v >= 0 for v in margin)}/{len(sel)}",
            "hyperlaplacian_min_margin": round(min(margin), 3),
            "wiener_beats_skimage_wiener": f"{sum(rows[n]['fastdeblur.wiener'] >= rows[n]['skimage.wiener'] for n in sel)}/{len(sel)}",  # noqa: E501
            "rl_beats_skimage_rl": f"{sum(rows[n]['fastdeblur.rl'] >= rows[n]['skimage.richardson_lucy'] for n in sel)}/{len(sel)}",  # noqa: E501
        }
    return {"summary": summary, "cases": rows}


# λ of each case: these multiples of a provisional curve (then interpolated in log λ).
HL_STEPS = (0.3, 0.6, 1.2, 2.4)
# The first-order prior's own best curve (stage hl, variant first_order_a2/3, all 80 cases).
FIRST_ORDER_CURVE = (1742.1, 1.7)


def stage_ablation(cases: list[Case]) -> dict:
    """The defaults against: the first-order prior at its own best λ curve; the Haar noise
    estimate (the previous default) fed to the same λ curve."""
    from fastdeblur.restore import uniform
    from fastdeblur.restore.noise import estimate_noise

    rows: dict[str, dict[str, float]] = {}
    for c in cases:
        y = c.blurred.float()
        sig = max(float(estimate_noise(y)), uniform.MIN_NOISE_SIGMA)
        haar = max(float(estimate_noise(y, method="haar")), uniform.MIN_NOISE_SIGMA)
        lam_ref, p = FIRST_ORDER_CURVE
        rows[c.name] = {
            "default": psnr(run_ours(uniform.hyper_laplacian, c), c.sharp),
            "first_order": psnr(run_ours(uniform.hyper_laplacian, c, second_order=0.0,
                                         lam=lam_ref * (SIGMA_REF / sig) ** p), c.sharp),
            "haar_sigma": psnr(run_ours(uniform.hyper_laplacian, c, noise_sigma=haar), c.sharp),
        }
    return {name: group({n: r[name] for n, r in rows.items()}, cases)
            for name in ("default", "first_order", "haar_sigma")}


HL_VARIANTS: dict[str, dict] = {
    "first_order_a2/3": {"second_order": 0.0},
    "second0.25_a2/3": {"second_order": 0.25},
    "second0.5_a2/3": {"second_order": 0.5},
    "second1_a2/3": {"second_order": 1.0},
    "second0.5_a1/2": {"second_order": 0.5, "alpha": 0.5},
    "second0.5_a0.8": {"second_order": 0.5, "alpha": 0.8},
    "second0.5_a2/3_tv2": {"second_order": 0.5, "second_order_alpha": 1.0},
    "second0.25_a2/3_tv2": {"second_order": 0.25, "second_order_alpha": 1.0},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tune_deconvolution")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_IMAGES} images")
    parser.add_argument("--stage", default="all",
                        choices=["all", "noise", "hl", "wiener", "final", "ablation"])
    parser.add_argument("--variants", default=None,
                        help="comma-separated names of HL_VARIANTS (default: all)")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "tune_deconvolution.json")
    args = parser.parse_args(argv)
    if not (args.shared / "sharp").is_dir():
        print(f"error: photos not found under {args.shared}/sharp", file=sys.stderr)
        return 2
    from bench._timing import machine

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cases = make_cases(args.shared, args.quick)
    report: dict = {
        "benchmark": "tune_deconvolution",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.tune_deconvolution " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "cases": len(cases),
        "images": [n for n, _ in (IMAGES[:QUICK_IMAGES] if args.quick else IMAGES)],
        "kernels": [n for n, _ in make_kernels()],
    }
    if args.stage in ("all", "noise"):
        report["noise"] = stage_noise(cases)
        print(json.dumps(report["noise"]), flush=True)
    if args.stage in ("all", "hl"):
        names = args.variants.split(",") if args.variants else list(HL_VARIANTS)
        report["hyperlaplacian"] = stage_hl(cases, {n: HL_VARIANTS[n] for n in names},
                                            HL_STEPS)
    if args.stage in ("all", "wiener"):
        report["wiener"] = stage_wiener(cases)
        print(json.dumps(report["wiener"]), flush=True)
    if args.stage in ("all", "ablation"):
        report["ablation"] = stage_ablation(cases)
        print(json.dumps(report["ablation"]), flush=True)
    if args.stage in ("all", "final"):
        report["final"] = stage_final(cases)
        print(json.dumps(report["final"]["summary"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

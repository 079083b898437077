"""Tuning data of the free-form (camera-shake) kernel in blind ``auto``.

``PYTHONPATH=. python -m bench.tune_shake_kernel [--out bench/results/tune_shake_kernel.json]``

Two sets of camera shakes on *training* photos — ``../shared/data/sharp`` less the held-out
images of the estimator and of NAFNet (``bench.eval_blind.held_out_names``), never Levin: set 0
has 16 images, set 1 24 (drawn again, so some photos recur with other kernels). Each image: the
central 256×256 grey crop, a random :func:`fastdeblur.psf.camera_shake` kernel of 9–31 px
(speed variation 0.5), reflect border, white noise σn 0.01 on every other image (else none),
8-bit. Set 10: 24 *parametric* blurs of training photos (:func:`parametric_cases`: Gaussian,
motion, defocus in turn, parameters uniform over the supported range, the same noise and
quantisation), where the free-form kernel must not replace a good parametric fit. Per case:
PSNR of the input; of blind ``auto`` with the parametric families only
(``blind_kernel="parametric"``); of the hyper-Laplacian deconvolution with the free-form
kernel (:func:`fastdeblur.restore.kernel_estimation.estimate_kernel`, 31 px; with the noise
level raised to ``pipeline.SHAKE_NOISE_FLOOR``, as ``auto`` does, and without) and with the
true kernel; the estimate's confidence; the free-form deconvolution's residual and overshoot (the
checks of ``auto``). Then the policy table: "the free-form kernel when the confidence is below
C and its deconvolution passes the residual check and overshoots at most O, else ``auto``",
mean PSNR per set and over all cases for a grid of C and O — the data behind
``pipeline.SHAKE_CONFIDENCE`` and ``pipeline.SHAKE_OVERSHOOT``. About 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.eval_blind import SHARED, held_out_names, load_image, psnr

ROOT = Path(__file__).resolve().parents[1]
SETS = {0: 16, 1: 24}
# Parametric blurs: the free-form kernel must not replace a good parametric fit.
PARAMETRIC_SETS = {10: 24}
CONFIDENCES = [0.3, 0.5, 0.7, 0.9, 1.01]
OVERSHOOTS = [0.002, 0.005, 0.01, 0.02, 1.0]  # 1: no limit
RESIDUAL = 1.2


def training_photos(shared: Path, n: int, seed: int) -> list[tuple[str, torch.Tensor]]:
    """``(name, grey (H, W))`` of ``n`` training photos drawn with ``seed``: the central crop of
    ``../shared/data/sharp`` less the held-out images of the estimator and of NAFNet."""
    from fastdeblur.synth import image_paths

    held_out = held_out_names(shared)
    excluded = set(held_out["estimator"]) | set(held_out["nafnet"])
    names = [p.name for p in image_paths(shared / "sharp") if p.name not in excluded]
    rng = np.random.RandomState(123 + seed)
    names = [names[i] for i in rng.permutation(len(names))[:n]]
    return [(name, load_image(shared, name).mean(0)) for name in names]


def _degrade(sharp: torch.Tensor, kernel: torch.Tensor, sigma: float,
             g: torch.Generator) -> torch.Tensor:
    """``sharp`` ``(H, W)`` blurred by ``kernel`` (reflect border), white noise ``sigma``,
    8-bit."""
    from fastdeblur.convolution import convolve

    y = convolve(sharp[None, None], kernel, boundary="reflect")[0, 0]
    y = y + sigma * torch.randn(y.shape, generator=g)
    return (y.clamp(0, 1) * 255).round() / 255


def cases(shared: Path, n: int, seed: int) -> list[tuple]:
    """``(name, sharp (H, W), blurred (H, W), kernel, noise σ)`` of one set: camera shakes,
    σn 0.01 on every other image."""
    from fastdeblur import psf

    g = torch.Generator().manual_seed(77 + seed)
    out = []
    for i, (name, sharp) in enumerate(training_photos(shared, n, seed)):
        size = 9 + 2 * int(torch.randint(0, 12, (), generator=g))
        kernel = psf.camera_shake(size, generator=g, speed_variation=0.5, dtype=torch.float32)
        sigma = 0.01 if i % 2 == 0 else 0.0
        out.append((name, sharp, _degrade(sharp, kernel, sigma, g), kernel, sigma))
    return out


def parametric_cases(shared: Path, n: int, seed: int) -> list[tuple]:
    """Like :func:`cases`, with a parametric kernel instead (the families in turn, parameters
    uniform over their supported ranges, :data:`fastdeblur.synth.DEFAULT_RANGES`)."""
    from fastdeblur import psf
    from fastdeblur.synth import DEFAULT_RANGES

    g = torch.Generator().manual_seed(500 + seed)
    out = []
    for i, (name, sharp) in enumerate(training_photos(shared, n, seed)):
        family = ("gaussian", "motion", "defocus")[i % 3]
        params = {}
        for key, (lo, hi) in DEFAULT_RANGES[family].items():  # sigma | length, angle | radius
            params[key] = lo + (hi - lo) * float(torch.rand((), generator=g))
        kernel = psf.from_params(family, params, dtype=torch.float32)
        sigma = 0.01 if i % 2 == 0 else 0.0
        out.append((name, sharp, _degrade(sharp, kernel, sigma, g), kernel, sigma))
    return out


def run_case(sharp: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor) -> dict:
    from fastdeblur.restore.kernel_estimation import estimate_kernel
    from fastdeblur.restore.pipeline import (
        SHAKE_NOISE_FLOOR,
        blur_residual,
        deblur_with_details,
        overshoot,
    )
    from fastdeblur.restore.uniform import hyper_laplacian, noise_level

    ref = sharp.numpy()
    yt = y[None, None]
    t0 = time.perf_counter()
    free = estimate_kernel(y)
    seconds = time.perf_counter() - t0
    sigma = noise_level(yt, None)
    # as blind ``auto`` deconvolves it: with the noise floor of an estimated kernel
    x_free = hyper_laplacian(yt, free, noise_sigma=sigma.clamp_min(SHAKE_NOISE_FLOOR))
    x_free_unfloored = hyper_laplacian(yt, free, noise_sigma=sigma)
    auto = deblur_with_details(yt[0], blind_kernel="parametric")
    return {
        "psnr": {"blurred": psnr(y.numpy(), ref),
                 "auto_parametric": psnr(auto.image[0].numpy(), ref),
                 "free_form": psnr(x_free[0, 0].numpy(), ref),
                 "free_form_without_noise_floor": psnr(x_free_unfloored[0, 0].numpy(), ref),
                 "true_kernel": psnr(hyper_laplacian(yt, kernel)[0, 0].numpy(), ref)},
        "confidence": float(auto.estimate.confidence),
        "free_form_residual": blur_residual(yt, x_free, free,
                                            sigma.clamp_min(SHAKE_NOISE_FLOOR)),
        "free_form_overshoot": overshoot(x_free, free, yt),
        "free_form_seconds": seconds,
    }


def policy_table(rows: list[dict]) -> list[dict]:
    table = []
    for c in CONFIDENCES:
        for o in OVERSHOOTS:
            entry: dict = {"confidence_below": c, "overshoot_at_most": o}
            everything = []
            for s in sorted({r["set"] for r in rows}):
                sel = [r for r in rows if r["set"] == s]
                use = [r["confidence"] < c and r["free_form_overshoot"] <= o
                       and r["free_form_residual"] <= RESIDUAL for r in sel]
                psnrs = [r["psnr"]["free_form"] if u else r["psnr"]["auto_parametric"]
                         for r, u in zip(sel, use, strict=True)]
                entry[f"set{s}_mean_psnr"] = round(float(np.mean(psnrs)), 3)
                entry[f"set{s}_free_form_used"] = int(sum(use))
                everything += psnrs
            entry["all_mean_psnr"] = round(float(np.mean(everything)), 3)
            table.append(entry)
    return table


def tuning_parser(name: str) -> argparse.ArgumentParser:
    """The options every tuning script shares: ``--shared``, ``--out``
    (``bench/results/NAME.json``) and ``--threads``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"{name}.json")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def ready(args: argparse.Namespace) -> bool:
    """Set the thread count; False (with a one-line error) when the shared data is missing."""
    if not (args.shared / "sharp").is_dir():
        print(f"error: shared data not found under {args.shared}", file=sys.stderr)
        return False
    torch.set_num_threads(args.threads)
    return True


def main(argv: list[str] | None = None) -> int:
    args = tuning_parser("tune_shake_kernel").parse_args(argv)
    if not ready(args):
        return 2
    from bench._timing import machine

    rows = []
    t0 = time.perf_counter()
    sets = [(seed, n, cases) for seed, n in SETS.items()]
    sets += [(seed, n, parametric_cases) for seed, n in PARAMETRIC_SETS.items()]
    for seed, n, make in sets:
        for name, sharp, y, kernel, sigma in make(args.shared, n, seed):
            row = {"set": seed, "image": name, "kernel_size": kernel.shape[0], "noise": sigma,
                   "blur": "camera_shake" if make is cases else "parametric"}
            row |= run_case(sharp, y, kernel)
            rows.append(row)
            print(seed, name, row["kernel_size"], sigma,
                  {k: round(v, 2) for k, v in row["psnr"].items()},
                  f"confidence {row['confidence']:.2f}", flush=True)
    summary = {}
    for s in [*SETS, *PARAMETRIC_SETS]:
        sel = [r for r in rows if r["set"] == s]
        summary[f"set{s}"] = {
            "n": len(sel),
            "mean_psnr": {m: round(float(np.mean([r["psnr"][m] for r in sel])), 3)
                          for m in sel[0]["psnr"]},
            "free_form_beats_auto_parametric": sum(
                r["psnr"]["free_form"] > r["psnr"]["auto_parametric"] for r in sel),
            "free_form_below_input": sum(
                r["psnr"]["free_form"] < r["psnr"]["blurred"] for r in sel),
        }
    report = {
        "benchmark": "tune_shake_kernel",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "PYTHONPATH=. python -m bench.tune_shake_kernel",
        "machine": machine(),
        "protocol": __doc__,
        "summary": summary,
        "policy": policy_table(rows),
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

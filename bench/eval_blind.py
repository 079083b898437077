"""Blind deblurring quality: ``fastdeblur.deblur`` (``auto``, no kernel) against the same
deconvolution with the true kernel, and the data behind ``auto``'s fallback to NAFNet.

``PYTHONPATH=. python -m bench.eval_blind [--quick] [--out bench/results/deblur_blind.json]``

The sets can run in separate processes (``--sets levin --out a.json`` beside
``--sets synthetic,camera_shake --out b.json``) and be joined with ``--merge a.json b.json``,
which recomputes the summary and the fallback sweep from their rows.

Three sets, every blurred image with white Gaussian noise σn = 0.01 added and clipped to [0, 1]
(Levin: as shipped, noise-free up to 8-bit quantisation):

- ``synthetic`` — uniform Gaussian / motion / defocus blur (reflect border) of the *held-out*
  photos of the blur estimator: the validation split (by image, seed 0, 20 %) of
  ``../shared/data/sharp`` and of the ``skimage.data`` photos, as in ``bench/eval_estimation.py``
  (the shipped estimator weights never saw them). Each image is blurred once per type, in
  colour; the main parameter (σ, length, radius) takes evenly spaced values over the supported
  range (:data:`fastdeblur.synth.DEFAULT_RANGES`) — value ``i`` of ``n`` is the ``(i + ½)/n``
  quantile, shuffled over the images — and the motion angle is uniform in [0°, 180°).
- ``camera_shake`` — blur that the parametric models do not describe: random camera-shake
  kernels (:func:`fastdeblur.psf.camera_shake`, 9–31 px) on the photos the shipped NAFNet never
  saw (its validation split: ``fastdeblur train nafnet`` splits the sharp folder and the
  ``skimage.data`` photos together, 15 %, seed 0). Not Levin.
- ``levin`` — the 32 Levin et al. (2009) images (real camera shake); the blurred PNGs are circular
  convolutions, which the default (unknown-border) deconvolution does not assume — the same for
  the blind and the true-kernel runs (the true kernel with the circular border, the data's own
  model, is reported as a second, stricter denominator). A test set only: nothing is tuned on
  it.

Photos are cut to their central 256 × 256 pixels (a full run takes about 12 minutes on the 2
shared CPU cores, one torch thread).

Per image: PSNR (whole image, clipped, peak 1) of the blurred input; of the hyper-Laplacian
deconvolution with the true kernel (``deblur(y, kernel=k)``); of ``deblur(y)`` (``auto``: the
verdict's kernel, else the next blur family's fit that passes the checks, else NAFNet); of the
blind parametric path alone (``deblur(y, method="hyperlaplacian")``: the verdict's kernel, never
another family nor the fallback) and of the same with one kernel forced (the estimate's overall
kernel, no grid); of ``deblur(y, method="nafnet")``. Also the estimate (type, parameters,
confidence), what ``auto`` did and why, and every kernel it tried (``auto_candidates``); and
``auto`` with its two other sources of blind kernels (``blind_kernel``): ``auto_parametric``
(the blur estimate's families only: ``auto`` before the free-form kernel) and
``auto_shake_first`` (the free-form kernel of
:func:`fastdeblur.restore.kernel_estimation.estimate_kernel` tried first on every image). Levin
adds the error ratio SSD(blind) / SSD(true kernel), and the same after the best integer shift
of up to 5 px over the image less 15 px per side (``psnr_aligned``, ``error_ratio_aligned``:
Levin's kernels are not centred, so the blurred image and every blind result, deconvolved with
a centred kernel, sit up to 4 px off the sharp image; the field compares after alignment).

The fallback sweep: for a grid of thresholds — confidence C, residual R, overshoot O (see
:func:`fastdeblur.restore.pipeline.fallback_reason`) — and both kernel models (the blur map's
choice, or always one kernel), the mean PSNR over ``synthetic`` and over ``camera_shake`` of
"the parametric result unless confidence < C, residual > R or overshoot > O; then NAFNet",
computed from the per-image results (each set weighs the same): the data that set
``FALLBACK_CONFIDENCE``, ``FALLBACK_RESIDUAL`` and ``FALLBACK_OVERSHOOT``. The sweep simulates
the verdict's kernel alone; the ``auto`` column is measured, not simulated, and differs from the
sweep's entry for the current thresholds where ``auto`` went on to another family's kernel.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastdeblur.restore.pipeline import SHAKE_DESCRIPTION as SHAKE_PREFIX

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data"))
NOISE_SIGMA = 0.01
CROP = 256  # central crops of the photos: keeps a full run to minutes on 2 CPU cores
CONFIDENCES = [0.0, 0.4, 0.5, 1.01]
RESIDUALS = [1.0, 1.1, 1.2, 1.3, 1.5, 99.0]  # 99: never
OVERSHOOTS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 1.0]  # 1: never


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((np.clip(x, 0, 1) - ref) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-20)))


def ssd(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sum((np.clip(x, 0, 1) - ref) ** 2))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def held_out_names(shared: Path) -> dict[str, list[str]]:
    """The images the shipped estimator and NAFNet weights were not trained on."""
    import skimage.data
    from PIL import Image

    from fastdeblur.synth import SKIMAGE_PHOTOS, image_paths, split_images

    paths = image_paths(shared / "sharp")
    _, est_val = split_images(paths, 0.2, 0)
    _, est_val_sk = split_images(list(SKIMAGE_PHOTOS), 0.2, 0)
    estimator = [p.name for p in est_val] + [f"skimage.{n}" for n in est_val_sk
                                              if min(getattr(skimage.data, n)().shape[:2]) >= 64]
    combined = []  # fastdeblur train nafnet --images SHARP --skimage: one list, min side 64
    for p in paths:
        with Image.open(p) as im:
            if min(im.size) >= 64:
                combined.append(p.name)
    combined += [f"skimage.{n}" for n in SKIMAGE_PHOTOS
                 if min(getattr(skimage.data, n)().shape[:2]) >= 64]
    _, nafnet = split_images(combined, 0.15, 0)
    return {"estimator": estimator, "nafnet": nafnet}


def load_image(shared: Path, name: str, crop: int | None = CROP) -> torch.Tensor:
    """``(C, H, W)`` float32 in [0, 1], the central ``crop × crop`` (at most);
    ``skimage.NAME`` from ``skimage.data``."""
    from fastdeblur.synth import _to_chw, load_images

    if name.startswith("skimage."):
        import skimage.data

        image = _to_chw(getattr(skimage.data, name.split(".", 1)[1])())
    else:
        image = load_images([shared / "sharp" / name])[0]
    if crop is not None:
        H, W = image.shape[-2:]
        top, left = max(0, (H - crop) // 2), max(0, (W - crop) // 2)
        image = image[:, top:top + crop, left:left + crop].contiguous()
    return image


def _estimate_summary(est: object) -> dict:
    if est is None:
        return {}
    out = {"type": est.blur_type, "params": {k: round(v, 3) for k, v in est.params.items()},
           "confidence": round(est.confidence, 4), "warnings": list(est.warnings)}
    fits = getattr(est, "likelihood", None)
    if fits:
        out["alpha"] = fits[est.blur_type].get("alpha")
    if getattr(est, "shake_probability", None) is not None:
        out["shake_probability"] = round(est.shake_probability, 4)
    return out


def run_case(y: torch.Tensor, sharp: np.ndarray, kernel: torch.Tensor,
             circular: bool = False) -> dict:
    """All the restorations of one blurred image ``y`` ``(C, H, W)``."""
    from fastdeblur import psf
    from fastdeblur.restore.pipeline import blur_residual, deblur, deblur_with_details

    out: dict = {"psnr": {"blurred": round(psnr(_np(y), sharp), 3)}, "seconds": {}}
    results: dict[str, np.ndarray] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        value = fn()
        out["seconds"][name] = round(time.perf_counter() - t0, 3)
        return value

    floor = _noise_floor()
    compressed = floor is not None  # a JPEG input: the floor and the estimate's flag go together
    true = timed("true_kernel", lambda: deblur_with_details(y, kernel=kernel, noise_floor=floor))
    results["true_kernel"] = _np(true.image)
    residual = {"true_kernel": round(blur_residual(y[None], true.image[None], kernel,
                                                   true.noise_sigma), 4)}
    if circular:
        # the data's own border model, as in bench/eval_deblur.py: the strictest denominator
        from fastdeblur.restore import uniform

        results["true_kernel_circular"] = _np(uniform.hyper_laplacian(
            y[None], kernel, boundary="circular")[0])
    # JPEG inputs as the command treats them: a noise floor, and no spectrum classifier
    auto = timed("auto", lambda: deblur_with_details(
        y, noise_floor=floor, compressed=compressed))
    results["auto"] = _np(auto.image)
    out["auto_method"] = auto.method
    out["auto_kernel_model"] = auto.details.get("kernel_model")
    out["auto_reason"] = auto.details.get("reason")
    out["auto_timings"] = {k: round(v, 3) for k, v in auto.details.get("timings", {}).items()}
    out["auto_candidates"] = [
        {k: (round(v, 5) if isinstance(v, float) else v) for k, v in c.items()}
        for c in auto.details.get("candidates", [])]
    # auto's two other sources of kernels (blind_kernel): the blur estimate's families only
    # (auto before the free-form kernel existed), and the free-form kernel always tried first.
    # Each is the same call as auto (deterministic) when auto did not / did try the free-form
    # kernel first.
    tried_shake_first = bool(out["auto_candidates"]) and out["auto_candidates"][0][
        "kernel"].startswith(SHAKE_PREFIX)
    for name, source, same in (("auto_parametric", "parametric", not tried_shake_first),
                               ("auto_shake_first", "shake", tried_shake_first)):
        other = auto if same else timed(name, lambda source=source: deblur_with_details(
            y, noise_floor=floor, compressed=compressed, blind_kernel=source))
        results[name] = _np(other.image)
        out[f"{name}_reason"] = other.details.get("reason")
    # the blind parametric path alone (the verdict's kernel, never another family nor the
    # fallback): the same call as auto when auto kept the verdict's kernel
    parametric_candidates = [c for c in out["auto_candidates"]
                             if not c["kernel"].startswith(SHAKE_PREFIX)]
    verdict_kept = bool(parametric_candidates) and parametric_candidates[0]["accepted"]
    if verdict_kept:
        param = auto
    else:
        param = timed("parametric", lambda: deblur_with_details(
            y, method="hyperlaplacian", noise_floor=floor, compressed=compressed))
    if auto.method == "nafnet":
        results["nafnet"] = results["auto"]
    else:
        results["nafnet"] = _np(timed("nafnet", lambda: deblur(y, method="nafnet")))
    results["parametric"] = _np(param.image)
    est = param.estimate
    out["estimate"] = _estimate_summary(est)
    out["parametric_kernel_model"] = param.details.get("kernel_model")
    agreement = param.details.get("map_agreement")
    out["map_agreement"] = None if agreement is None else {
        k: (round(v, 4) if np.isfinite(v) else None) for k, v in agreement.items()}
    residual["parametric"] = round(param.details["residual"], 4)
    out["overshoot"] = {"parametric": round(param.details["overshoot"], 5)}
    if param.kernel.ndim == 4:
        overall = psf.from_params(est.blur_type, est.params, dtype=torch.float32)
        uni = timed("parametric_uniform", lambda: deblur_with_details(
            y, kernel=overall, noise_floor=floor))
        results["parametric_uniform"] = _np(uni.image)
        residual["parametric_uniform"] = round(blur_residual(
            y[None], uni.image[None], overall, uni.noise_sigma), 4)
        out["overshoot"]["parametric_uniform"] = round(_raw_overshoot(y, overall), 5)
    else:
        results["parametric_uniform"] = results["parametric"]
        residual["parametric_uniform"] = residual["parametric"]
        out["overshoot"]["parametric_uniform"] = out["overshoot"]["parametric"]
    out["residual"] = residual
    out["overshoot"]["true_kernel"] = round(_raw_overshoot(y, kernel), 5)
    for name, x in results.items():
        out["psnr"][name] = round(psnr(x, sharp), 3)
    out["_ssd"] = {name: ssd(x, sharp) for name, x in results.items()}
    if circular:
        # Levin: the kernels are not centred, so the blurred image and every blind result (whose
        # kernel is centred) sit up to 4 px off the sharp one; the field compares after the
        # best shift (Levin et al. 2009), over the image less a border
        aligned = {"blurred": aligned_ssd(_np(y), sharp)}
        aligned |= {name: aligned_ssd(x, sharp) for name, x in results.items()}
        out["psnr_aligned"] = {name: round(float(10 * np.log10(n / max(v, 1e-20))), 3)
                               for name, (v, n) in aligned.items()}
        out["_ssd_aligned"] = {name: v for name, (v, _) in aligned.items()}
    return out


ALIGN_SHIFT = 5
ALIGN_BORDER = 15


def aligned_ssd(x: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """Smallest SSD of ``x`` (clipped) against ``ref`` over integer shifts of up to
    :data:`ALIGN_SHIFT` px, on ``ref`` less :data:`ALIGN_BORDER` px per side; and the number
    of values compared (for a PSNR)."""
    x = np.clip(x, 0, 1).reshape(-1, *x.shape[-2:])
    ref = ref.reshape(-1, *ref.shape[-2:])
    b, s = ALIGN_BORDER, ALIGN_SHIFT
    H, W = ref.shape[-2:]
    target = ref[:, b:H - b, b:W - b]
    best = min(float(np.sum((x[:, b + dy:H - b + dy, b + dx:W - b + dx] - target) ** 2))
               for dy in range(-s, s + 1) for dx in range(-s, s + 1))
    return best, target.size


def _raw_overshoot(y: torch.Tensor, kernel: torch.Tensor) -> float:
    """:func:`fastdeblur.restore.pipeline.overshoot` of the unclamped deconvolution."""
    from fastdeblur.restore import uniform
    from fastdeblur.restore.pipeline import overshoot

    sigma = uniform.noise_level(y[None], None)
    floor = _noise_floor()
    if floor is not None:
        sigma = sigma.clamp_min(floor)
    return overshoot(uniform.hyper_laplacian(y[None], kernel, noise_sigma=sigma), kernel, y[None])


JPEG_QUALITY: int | None = None  # --jpeg: the noisy blurred photos go through JPEG too


def _noise_floor() -> float | None:
    """The noise floor the command uses for the inputs: JPEG_NOISE_FLOOR for JPEG ones."""
    from fastdeblur.restore.pipeline import JPEG_NOISE_FLOOR

    return JPEG_NOISE_FLOOR if JPEG_QUALITY is not None else None


def _noisy(blurred: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = (blurred + NOISE_SIGMA * torch.randn(blurred.shape, generator=g)).clamp(0, 1)
    if JPEG_QUALITY is None:
        return y
    from fastdeblur.io import jpeg_roundtrip

    # 8-bit and JPEG, as a camera writes it: what the white-noise model of the checks lacks
    return jpeg_roundtrip(y, JPEG_QUALITY)


def synthetic_rows(shared: Path, names: list[str], quick: bool) -> list[dict]:
    from fastdeblur import psf
    from fastdeblur.convolution import convolve
    from fastdeblur.synth import BLUR_TYPES, DEFAULT_RANGES, SIZE_PARAM

    g = torch.Generator().manual_seed(0)
    n = len(names)
    rows = []
    # evenly spaced quantiles of the supported range, shuffled over the images per type
    order = {t: torch.randperm(n, generator=g).tolist() for t in BLUR_TYPES}
    angles = (torch.rand(n, generator=g) * 180).tolist()
    for i, name in enumerate(names):
        sharp_t = load_image(shared, name)
        sharp = _np(sharp_t)
        for t in BLUR_TYPES:
            low, high = DEFAULT_RANGES[t][SIZE_PARAM[t]]
            params = {SIZE_PARAM[t]: low + (high - low) * (order[t][i] + 0.5) / n}
            if t == "motion":
                params["angle"] = angles[i]
            kernel = psf.from_params(t, params, dtype=torch.float32)
            blurred = convolve(sharp_t[None], kernel, boundary="reflect")[0]
            y = _noisy(blurred, 1000 * i + BLUR_TYPES.index(t))
            row = {"set": "synthetic", "image": name, "type": t,
                   "params": {k: round(v, 3) for k, v in params.items()}}
            row |= run_case(y, sharp, kernel)
            rows.append(row)
            _log(row)
        if quick and i >= 2:
            break
    return rows


def random_shake(g: torch.Generator) -> tuple[int, torch.Tensor]:
    """The benchmarks' camera shake: a side of 9-31 px (odd) and a
    :func:`fastdeblur.psf.camera_shake` kernel of it with its default path, drawn from ``g``."""
    from fastdeblur import psf

    size = 9 + 2 * int(torch.randint(0, 12, (), generator=g))
    return size, psf.camera_shake(size, generator=g, dtype=torch.float32)


def camera_shake_rows(shared: Path, names: list[str], quick: bool) -> list[dict]:
    from fastdeblur.convolution import convolve

    g = torch.Generator().manual_seed(1)
    rows = []
    for i, name in enumerate(names):
        sharp_t = load_image(shared, name)
        size, kernel = random_shake(g)
        blurred = convolve(sharp_t[None], kernel, boundary="reflect")[0]
        y = _noisy(blurred, 5000 + i)
        row = {"set": "camera_shake", "image": name, "type": "camera_shake",
               "params": {"size": size}}
        row |= run_case(y, _np(sharp_t), kernel)
        rows.append(row)
        _log(row)
        if quick and i >= 2:
            break
    return rows


def levin_rows(shared: Path, quick: bool) -> list[dict]:
    from PIL import Image

    kernels = np.load(shared / "kernels" / "levin09.npz")
    rows = []
    for i in ((1,) if quick else (1, 2, 3, 4)):
        sharp = np.asarray(Image.open(shared / "levin" / "sharp" / f"im_{i}.png"), np.float64)
        sharp = sharp / 255.0
        for j in ((1, 8) if quick else range(1, 9)):
            path = shared / "levin" / "blurred" / f"im_{i}_ker_{j}.png"
            y = torch.from_numpy(np.asarray(Image.open(path), np.float32) / 255.0)[None]
            kernel = torch.from_numpy(np.asarray(kernels[f"k{j}"], np.float32))
            row = {"set": "levin", "image": f"im_{i}_ker_{j}", "type": "camera_shake",
                   "params": {"kernel": f"k{j}"}}
            row |= run_case(y, sharp, kernel, circular=True)
            # denominators: the same call with the true kernel (unknown border, as the blind
            # run), and the true kernel with the data's circular border (stricter)
            row["error_ratio"] = {name: round(v / row["_ssd"]["true_kernel"], 3)
                                  for name, v in row["_ssd"].items()
                                  if not name.startswith("true_kernel")}
            row["error_ratio_vs_circular"] = {
                name: round(v / row["_ssd"]["true_kernel_circular"], 3)
                for name, v in row["_ssd"].items() if not name.startswith("true_kernel")}
            row["error_ratio_aligned"] = {
                name: round(v / row["_ssd_aligned"]["true_kernel"], 3)
                for name, v in row["_ssd_aligned"].items()
                if not name.startswith("true_kernel") and name != "blurred"}
            row["error_ratio_aligned_vs_circular"] = {
                name: round(v / row["_ssd_aligned"]["true_kernel_circular"], 3)
                for name, v in row["_ssd_aligned"].items()
                if not name.startswith("true_kernel") and name != "blurred"}
            rows.append(row)
            _log(row)
    return rows


def _log(row: dict) -> None:
    print(row["set"], row["image"], row["type"], row["psnr"], row.get("auto_method"),
          row.get("estimate", {}).get("confidence"), flush=True)




def _parametric(r: dict) -> list[dict]:
    """The parametric kernels auto tried (its candidates less the free-form kernel)."""
    return [c for c in r.get("auto_candidates", []) if not c["kernel"].startswith(SHAKE_PREFIX)]


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None


def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    groups = {}
    for r in rows:
        groups.setdefault(r["set"], {}).setdefault(r["type"], []).append(r)
    for name, by_type in groups.items():
        block: dict = {}
        everything = [r for rs in by_type.values() for r in rs]
        methods = list(everything[0]["psnr"])
        for label, sel in [*by_type.items(), ("all", everything)]:
            means = {m: _mean([r["psnr"][m] for r in sel]) for m in methods}
            entry = {"n": len(sel), "mean_psnr": means,
                     "gap_true_minus_auto_db": round(means["true_kernel"] - means["auto"], 3),
                     "gap_true_minus_parametric_db": round(
                         means["true_kernel"] - means["parametric"], 3),
                     "auto_ran_nafnet": sum(r["auto_method"] == "nafnet" for r in sel),
                     "auto_used_next_family": sum(
                         any(c["accepted"] for c in _parametric(r)[1:]) for r in sel),
                     "auto_used_free_form_kernel": sum(
                         any(c["accepted"] and c["kernel"].startswith(SHAKE_PREFIX)
                             for c in r.get("auto_candidates", [])) for r in sel),
                     "auto_used_kernel_grid": sum(r["auto_kernel_model"] == "field" for r in sel)}
            if name == "synthetic":
                entry["type_accuracy"] = round(float(np.mean(
                    [r["estimate"]["type"] == r["type"] for r in sel])), 3)
            if name == "levin":
                entry["mean_psnr_aligned"] = {
                    m: _mean([r["psnr_aligned"][m] for r in sel]) for m in sel[0]["psnr_aligned"]}
                for key in ("error_ratio", "error_ratio_vs_circular", "error_ratio_aligned",
                            "error_ratio_aligned_vs_circular"):
                    for m in ("auto", "auto_parametric", "auto_shake_first", "parametric",
                              "nafnet"):
                        ratios = [r[key][m] for r in sel]
                        entry[f"{key}_{m}"] = {
                            "median": round(float(np.median(ratios)), 3),
                            "share_le_2": round(float(np.mean([v <= 2 for v in ratios])), 3)}
            block[label] = entry
        out[name] = block
    if "synthetic" in out:
        gap = out["synthetic"]["all"]["gap_true_minus_auto_db"]
        out["target_synthetic_gap_le_0.5_db"] = {"gap": gap, "met": bool(gap <= 0.5)}
    if "levin" in out:
        share = out["levin"]["all"]["error_ratio_auto"]["share_le_2"]
        out["target_levin_ratio_le_2_on_90pct"] = {"share": share, "met": bool(share >= 0.9)}
        share = out["levin"]["all"]["error_ratio_aligned_auto"]["share_le_2"]
        out["target_levin_ratio_le_2_on_90pct_aligned"] = {"share": share,
                                                           "met": bool(share >= 0.9)}
    return out


def _falls_back(r: dict, confidence: float, residual: float, over: float,
                kernel_model: str) -> bool:
    name = "parametric" if kernel_model == "map" else "parametric_uniform"
    return (r["estimate"]["confidence"] < confidence or r["residual"][name] > residual
            or r["overshoot"][name] > over)


def _simulate(r: dict, confidence: float, residual: float, over: float,
              kernel_model: str) -> float:
    """PSNR that a rule would give on a row: the parametric result unless it falls back."""
    name = "parametric" if kernel_model == "map" else "parametric_uniform"
    if _falls_back(r, confidence, residual, over, kernel_model):
        return r["psnr"]["nafnet"]
    return r["psnr"][name]


def fallback_sweep(rows: list[dict]) -> dict:
    """Mean PSNR of "parametric unless confidence < C, residual > R or overshoot > O; then
    NAFNet" over a grid of (C, R, O) and both kernel models (the map's choice, or one
    kernel)."""
    from fastdeblur.restore import pipeline

    tuning = [r for r in rows if r["set"] in ("synthetic", "camera_shake")]
    sets = sorted({r["set"] for r in tuning})
    table = []
    for model in ("map", "uniform"):
        for c, rr, o in itertools.product(CONFIDENCES, RESIDUALS, OVERSHOOTS):
            entry: dict = {"kernel_model": model, "confidence": c, "residual": rr,
                           "overshoot": o}
            per_set = []
            for s in sets:
                sel = [r for r in tuning if r["set"] == s]
                entry[s] = _mean([_simulate(r, c, rr, o, model) for r in sel])
                per_set.append(entry[s])
                entry[f"{s}_nafnet_share"] = round(float(np.mean(
                    [_falls_back(r, c, rr, o, model) for r in sel])), 3)
            # each set weighs the same, however many images it has
            entry["mean_of_sets"] = round(float(np.mean(per_set)), 3)
            table.append(entry)
    table.sort(key=lambda e: -e["mean_of_sets"])
    current = {"kernel_model": "map", "confidence": pipeline.FALLBACK_CONFIDENCE,
               "residual": pipeline.FALLBACK_RESIDUAL, "overshoot": pipeline.FALLBACK_OVERSHOOT}
    oracle = {s: _mean([max(r["psnr"]["parametric_uniform"], r["psnr"]["nafnet"])
                        for r in tuning if r["set"] == s]) for s in sets}
    return {"rule": "parametric unless confidence < C, residual > R or overshoot > O; "
                    "then nafnet",
            "current": current,
            "current_in_table": [e for e in table if all(
                e[k] == v for k, v in current.items())],
            "best": table[0], "top": table[:15],
            "always_nafnet": {s: _mean([r["psnr"]["nafnet"] for r in tuning if r["set"] == s])
                              for s in sets},
            "oracle_per_image_mean_psnr": oracle, "table": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_blind")
    parser.add_argument("--quick", action="store_true", help="a few images per set")
    parser.add_argument("--sets", default="synthetic,camera_shake,levin")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "deblur_blind.json")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the machine is shared; more threads than free "
                             "cores make the OpenMP loops several times slower)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="join the rows of earlier reports instead of running")
    parser.add_argument("--jpeg", type=int, default=None,
                        help="also store the noisy blurred photos as JPEG of this quality "
                             "(synthetic and camera_shake sets); every deblur call then gets "
                             "the command's JPEG noise floor")
    parser.add_argument("--note", default="2-core x86-64 CPU",
                        help="what else the machine was doing (recorded with the machine)")
    args = parser.parse_args(argv)
    global JPEG_QUALITY
    JPEG_QUALITY = args.jpeg
    import torch

    torch.set_num_threads(args.threads)
    if not (args.shared / "sharp").is_dir():
        print(f"error: shared data not found under {args.shared}", file=sys.stderr)
        return 2
    from bench._timing import machine
    from fastdeblur.restore import pipeline

    names = held_out_names(args.shared)
    sets = args.sets.split(",")
    t0 = time.perf_counter()
    rows: list[dict] = []
    seconds = 0.0
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        rows = [r for part in parts for r in part["rows"]]
        seconds = sum(part["seconds"] for part in parts)
        sets = []
    if "synthetic" in sets:
        rows += synthetic_rows(args.shared, names["estimator"], args.quick)
    if "camera_shake" in sets:
        rows += camera_shake_rows(args.shared, names["nafnet"], args.quick)
    if "levin" in sets:
        rows += levin_rows(args.shared, args.quick)
    command = "PYTHONPATH=. python -m bench.eval_blind " + " ".join(
        argv if argv is not None else sys.argv[1:])
    if args.merge:
        command = " && ".join([part["command"] for part in parts] + [command])
    for r in rows:
        r.pop("_ssd", None)
        r.pop("_ssd_aligned", None)
        r["in_estimator_training"] = r["set"] != "levin" and r["image"] not in names["estimator"]
        r["in_nafnet_training"] = r["set"] != "levin" and r["image"] not in names["nafnet"]
    report = {
        "benchmark": "deblur_blind",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine() | {"note": args.note},
        "protocol": __doc__.split("``PYTHONPATH")[0].strip() + "\n\n" + __doc__.split(
            "(Levin: as shipped, noise-free up to 8-bit quantisation):")[1].strip(),
        "noise_sigma": NOISE_SIGMA,
        "jpeg_quality": JPEG_QUALITY,
        "held_out_images": names,
        "fallback": {"confidence": pipeline.FALLBACK_CONFIDENCE,
                     "residual": pipeline.FALLBACK_RESIDUAL,
                     "overshoot": pipeline.FALLBACK_OVERSHOOT,
                     "overshoot_margin": pipeline.OVERSHOOT_MARGIN},
        "map_agreement": {"share": pipeline.MAP_AGREE_SHARE,
                          "spread": str(pipeline.MAP_AGREE_SPREAD), "grid": pipeline.MAP_GRID},
        "seconds": round(seconds + time.perf_counter() - t0, 1),
        "summary": summarise(rows),
        "fallback_sweep": fallback_sweep(rows) if any(
            r["set"] != "levin" for r in rows) else None,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))
    if report["fallback_sweep"]:
        print("best rule", report["fallback_sweep"]["best"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

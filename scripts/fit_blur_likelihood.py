"""Fit the image-level decision of the blur estimator's likelihood stage on training images.

For every noise level σn in {0, 0.005, 0.01, 0.02}, ``--images-per-noise`` images of the
*training* split (:func:`fastdeblur.estimate.data.estimator_images`, by image, seed 0) are
blurred once per blur type with parameters drawn uniformly from the supported range (reflect
boundary, white noise, clamped to [0, 1], gray); the patch classifier's mean probabilities and
the marginal-likelihood fit (:func:`fastdeblur.estimate.likelihood.fit_likelihood`) of each are
recorded, and :class:`fastdeblur.estimate.likelihood.Combiner` is fitted on them. Whether the
patch classifier's probabilities join the verdict is decided by 2-fold cross-validation by image.

    PYTHONPATH=. python scripts/fit_blur_likelihood.py --images ../shared/data/sharp

writes ``fastdeblur/weights/blur_likelihood.json`` and its model card ``blur_likelihood.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import platform
from pathlib import Path

import torch

NOISE_LEVELS = (0.0, 0.005, 0.01, 0.02)
WEIGHTS = Path(__file__).resolve().parents[1] / "fastdeblur" / "weights"


def _records(args: tuple) -> list[dict]:
    folder, noise, n_images, seed = args
    torch.set_num_threads(1)
    from fastdeblur import psf
    from fastdeblur.convolution import convolve
    from fastdeblur.estimate.data import estimator_images
    from fastdeblur.estimate.estimator import BlurEstimator, _noise_crop
    from fastdeblur.estimate.likelihood import fit_likelihood
    from fastdeblur.estimate.patches import estimate_noise
    from fastdeblur.synth import BLUR_TYPES, DEFAULT_RANGES, sample_params

    train, _, names = estimator_images(folder)
    patch_stage = BlurEstimator.load(likelihood=False)  # the shipped classifier, no verdict
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train), generator=g)[:n_images].tolist()
    out = []
    for i in pick:
        for t in BLUR_TYPES:
            params = sample_params(t, g, DEFAULT_RANGES)
            kernel = psf.from_params(t, params, dtype=torch.float32)
            y = convolve(train[i][None], kernel, boundary="reflect")[0]
            if noise > 0:
                y = y + noise * torch.randn(y.shape, generator=g)
            y = y.clamp(0, 1)
            r = patch_stage.estimate(y, params=False)
            gray = y[0]
            fit = fit_likelihood(gray, estimate_noise(_noise_crop(gray)))
            out.append({
                "image": names["train"][i],
                "blur_type": t,
                "params": params,
                "noise": noise,
                "patch_probs": [r.probs[k] for k in BLUR_TYPES],
                "excess": fit.excess().tolist(),
                "fits": {k: f.params for k, f in fit.fits.items()},
            })
    return out


def _tensors(recs: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fastdeblur.synth import BLUR_TYPES

    probs = torch.tensor([r["patch_probs"] for r in recs], dtype=torch.float64)
    excess = torch.tensor([r["excess"] for r in recs], dtype=torch.float64)
    labels = torch.tensor([BLUR_TYPES.index(r["blur_type"]) for r in recs])
    return probs, excess, labels


def main() -> None:
    from fastdeblur.estimate.likelihood import Combiner

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", default=None, help="folder of sharp images (+ skimage photos)")
    ap.add_argument("--images-per-noise", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2, help="processes (one noise level each)")
    ap.add_argument("--records", default=None, help="cache the training records here (JSON)")
    ap.add_argument("--out", default=str(WEIGHTS))
    args = ap.parse_args()

    cache = Path(args.records) if args.records else None
    if cache is not None and cache.is_file():
        recs = json.loads(cache.read_text())
    else:
        jobs = [(args.images, n, args.images_per_noise, 1000 + j) for j, n in
                enumerate(NOISE_LEVELS)]
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            recs = [r for part in pool.map(_records, jobs) for r in part]
        if cache is not None:
            cache.write_text(json.dumps(recs))
    probs, excess, labels = _tensors(recs)
    image_ids = {name: k for k, name in enumerate(sorted({r["image"] for r in recs}))}
    fold = torch.tensor([image_ids[r["image"]] % 2 for r in recs])
    # 2-fold cross-validation by image picks the form: the excess on its own scale or log(1 + e),
    # with or without the patch classifier (the simpler form wins ties)
    cv = {}
    for scale in ("linear", "log1p"):
        for use_patch in (False, True):
            right = 0
            for f in (0, 1):
                tr, te = fold != f, fold == f
                c = Combiner.fit(
                    probs[tr], excess[tr], labels[tr], use_patch=use_patch, excess_scale=scale
                )
                right += int((c.scores(probs[te], excess[te]).argmax(1) == labels[te]).sum())
            cv[scale, use_patch] = right / len(recs)
    scale, use_patch = max(cv, key=lambda k: (cv[k], -list(cv).index(k)))
    comb = Combiner.fit(probs, excess, labels, use_patch=use_patch, excess_scale=scale)
    pred = comb.scores(probs, excess).argmax(1)
    conf = comb.confidence(probs, excess)
    sure = conf >= 0.5
    metrics = {
        "train_type_accuracy": float((pred == labels).double().mean()),
        "cv2_type_accuracy_likelihood_only": cv["linear", False],
        "cv2_type_accuracy_with_patch_classifier": cv["linear", True],
        "cv2_type_accuracy_log_excess": cv["log1p", False],
        "cv2_type_accuracy_log_excess_with_patch_classifier": cv["log1p", True],
        "likelihood_argmin_accuracy": float((excess.argmin(1) == labels).double().mean()),
        "patch_classifier_accuracy": float((probs.argmax(1) == labels).double().mean()),
        "train_type_error_rate_conf>=0.5": float((pred[sure] != labels[sure]).double().mean())
        if bool(sure.any()) else None,
        "train_fraction_conf>=0.5": float(sure.double().mean()),
        "n_records": len(recs),
    }
    command = "PYTHONPATH=. python scripts/fit_blur_likelihood.py" + (
        " --images ../shared/data/sharp" if args.images else "")
    out = Path(args.out)
    payload = {
        "combiner": comb.to_dict(),
        "uses_patch_classifier": use_patch,
        "excess_scale": scale,
        "command": command,
        "noise_levels": list(NOISE_LEVELS),
        "images_per_noise": args.images_per_noise,
        "metrics": metrics,
    }
    (out / "blur_likelihood.json").write_text(json.dumps(payload, indent=2) + "\n")
    card = f"""# Blur estimator: image-level likelihood decision

Decides the blur type of a whole image from the marginal-likelihood fit of each blur family
(`fastdeblur/estimate/likelihood.py`){" and the patch classifier's mean probabilities"
if use_patch else ""}, and calibrates its confidence. The likelihood enters as the NLL excess
of each family over the best{" on a log scale, log(1 + e)" if scale == "log1p" else ""}
(chosen by 2-fold cross-validation by image). Six numbers of a logistic model
(`Combiner`); the likelihood fit itself has no trained weights (power-law image prior, the
`fastdeblur.psf` kernels). Loaded by `fastdeblur.estimate.BlurEstimator.load` from
`blur_likelihood.json`.

## Data

{len(recs)} blurred images: for each noise level σn in {{0, 0.005, 0.01, 0.02}},
{args.images_per_noise} images of the training split of `../shared/data/sharp` and the photos
inside `skimage.data` (by image, 20 % validation, seed 0 — the validation images of
`blur_classifier.md` are never used), each blurred once per type with parameters uniform over
the supported range (Gaussian σ 0.5–5 px, motion length 3–31 px at any angle, defocus radius
1–10 px), reflect boundary, white noise, clamped to [0, 1], gray.

## Command

```
{command}
```

## Metrics (training records; held-out numbers are in `bench/results/estimation.json`)

| metric | value |
|---|---|
""" + "\n".join(f"| {k} | {v if not isinstance(v, float) else round(v, 4)} |"
                for k, v in metrics.items()) + f"""

## Weights

```
{json.dumps(comb.to_dict(), indent=2)}
```

Fitted {datetime.date.today().isoformat()} with torch {torch.__version__} on {platform.machine()}.
"""
    (out / "blur_likelihood.md").write_text(card)
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

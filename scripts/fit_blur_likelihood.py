"""Fit the image-level decision of the blur estimator's likelihood stage on training images.

For every noise level σn in {0, 0.005, 0.01, 0.02}, each image of the combiner's part of the
*training* split (:func:`fastdeblur.estimate.data.combiner_split`: the 20 % of the estimator's
training images that the spectrum classifier never saw) is blurred ``--draws`` times per blur
type with parameters drawn uniformly from the supported range (reflect boundary, white noise,
clamped to [0, 1], gray); the patch classifier's mean probabilities, the spectrum classifier's
probabilities and the marginal-likelihood fit (:func:`fastdeblur.estimate.likelihood.
fit_likelihood`) of each are recorded, and :class:`fastdeblur.estimate.likelihood.Combiner` is
fitted on them. Which of the classifiers join the verdict, and the scale of the likelihood's
excess, are decided by 2-fold cross-validation by image.

    PYTHONPATH=. python scripts/fit_blur_likelihood.py --images ../shared/data/sharp

writes ``fastdeblur/weights/blur_likelihood.json`` and its model card ``blur_likelihood.md``.

    PYTHONPATH=. python scripts/fit_blur_likelihood.py --images ../shared/data/sharp \
        --jpeg-quality 60-95

fits the verdict for compressed images the same way, on records whose blurred images were saved
as 8-bit JPEG of quality uniform in 60..95 and read back, with the spectrum classifier trained on
JPEG crops (``blur_spectrum_classifier_jpeg.safetensors``); it adds ``combiner_compressed`` to
the existing ``blur_likelihood.json`` and a section to its card, and leaves the rest as it was.
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


CARD_JPEG_HEADING = "## Compressed (JPEG) images"
EXCESS_TEXT = {
    "linear": "The likelihood enters as the NLL excess of each family over the best",
    "log1p": "The likelihood enters as the NLL excess of each family over the best on a log "
    "scale, log(1 + e)",
    "none": "The likelihood's NLL is left out of the verdict; its fit (`fastdeblur/estimate/"
    "likelihood.py`) gives the parameters",
}


def _records(args: tuple) -> list[dict]:
    folder, noise, draws, seed, weights, jpeg = args
    torch.set_num_threads(1)
    from fastdeblur import psf
    from fastdeblur.convolution import convolve
    from fastdeblur.estimate.data import combiner_split, estimator_images
    from fastdeblur.estimate.estimator import (
        COMPRESSED_NOISE_FLOOR,
        SPECTRUM_CLASSIFIER_FILE,
        SPECTRUM_CLASSIFIER_JPEG_FILE,
        WEIGHTS_DIR,
        BlurEstimator,
        _noise_crop,
    )
    from fastdeblur.estimate.likelihood import fit_likelihood
    from fastdeblur.estimate.patches import estimate_noise
    from fastdeblur.io import jpeg_roundtrip
    from fastdeblur.synth import BLUR_TYPES, DEFAULT_RANGES, sample_params

    train, _, names = estimator_images(folder)
    _, images, split = combiner_split(train, names["train"])
    # the classifiers without a verdict: their probabilities are what the combiner weighs
    patch_stage = BlurEstimator.load(weights, likelihood=False)
    patch_stage.spectrum_classifier = BlurEstimator.load_spectrum_classifier(
        Path(weights or WEIGHTS_DIR)
        / (SPECTRUM_CLASSIFIER_FILE if jpeg is None else SPECTRUM_CLASSIFIER_JPEG_FILE)
    )
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in [i for _ in range(draws) for i in range(len(images))]:
        for t in BLUR_TYPES:
            params = sample_params(t, g, DEFAULT_RANGES)
            kernel = psf.from_params(t, params, dtype=torch.float32)
            y = convolve(images[i][None], kernel, boundary="reflect")[0]
            if noise > 0:
                y = y + noise * torch.randn(y.shape, generator=g)
            y = y.clamp(0, 1)
            quality = None
            if jpeg is not None:
                quality = int(torch.randint(jpeg[0], jpeg[1] + 1, (), generator=g))
                y = jpeg_roundtrip(y, quality)
            r = patch_stage.estimate(y, params=False)
            gray = y[0]
            noise_sigma = estimate_noise(_noise_crop(gray))
            # as the estimator fits compressed images: with at least COMPRESSED_NOISE_FLOOR
            floor = 0.0 if jpeg is None else COMPRESSED_NOISE_FLOOR
            fit = fit_likelihood(gray, max(noise_sigma, floor))
            spec = patch_stage.spectrum_probs(gray, noise_sigma, fit.spectrum)
            out.append({
                "image": split["combiner"][i],
                "blur_type": t,
                "params": params,
                "noise": noise,
                "jpeg_quality": quality,
                "patch_probs": [r.probs[k] for k in BLUR_TYPES],
                "excess": fit.excess().tolist(),
                "spectrum_probs": None if spec is None else spec.tolist(),
                "fits": {k: f.params for k, f in fit.fits.items()},
            })
    return out


def _tensors(recs: list[dict]) -> tuple[torch.Tensor, ...]:
    from fastdeblur.synth import BLUR_TYPES

    probs = torch.tensor([r["patch_probs"] for r in recs], dtype=torch.float64)
    excess = torch.tensor([r["excess"] for r in recs], dtype=torch.float64)
    # images smaller than one 128×128 tile have no spectrum classifier output: uniform
    spec = torch.tensor([r["spectrum_probs"] or [1 / 3] * 3 for r in recs], dtype=torch.float64)
    labels = torch.tensor([BLUR_TYPES.index(r["blur_type"]) for r in recs])
    return probs, excess, spec, labels


def main() -> None:
    from fastdeblur.estimate.likelihood import EXCESS_SCALES, Combiner

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", default=None, help="folder of sharp images (+ skimage photos)")
    ap.add_argument("--draws", type=int, default=4,
                    help="blurred versions of each image per blur type and noise level")
    ap.add_argument("--jobs", type=int, default=2, help="processes (one noise level each)")
    ap.add_argument("--records", default=None, help="cache the training records here (JSON)")
    ap.add_argument("--weights", default=None,
                    help="folder of the classifiers (default: the shipped ones)")
    ap.add_argument("--out", default=str(WEIGHTS))
    ap.add_argument("--jpeg-quality", default=None, metavar="LO-HI",
                    help="fit the verdict for compressed images (combiner_compressed) on "
                    "records saved as JPEG of quality uniform in LO..HI")
    args = ap.parse_args()
    from fastdeblur.io import jpeg_quality_range

    try:
        jpeg = None if args.jpeg_quality is None else jpeg_quality_range(args.jpeg_quality)
    except ValueError as exc:
        ap.error(f"--jpeg-quality: {exc}")

    cache = Path(args.records) if args.records else None
    if cache is not None and cache.is_file():
        recs = json.loads(cache.read_text())
    else:
        jobs = [(args.images, n, args.draws, 1000 + j + (0 if jpeg is None else 100), args.weights,
                 jpeg) for j, n in enumerate(NOISE_LEVELS)]
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            recs = [r for part in pool.map(_records, jobs) for r in part]
        if cache is not None:
            cache.write_text(json.dumps(recs))
    probs, excess, spec, labels = _tensors(recs)
    image_ids = {name: k for k, name in enumerate(sorted({r["image"] for r in recs}))}
    fold = torch.tensor([image_ids[r["image"]] % 2 for r in recs])
    # 2-fold cross-validation by image picks the form: the excess on its own scale, log(1 + e) or
    # left out, with or without each classifier (the simpler form wins ties)
    cv = {}
    for scale in EXCESS_SCALES:
        for use_patch in (False, True):
            for use_spec in (False, True):
                if scale == "none" and not (use_patch or use_spec):
                    continue  # nothing left to decide with
                right = 0
                for f in (0, 1):
                    tr, te = fold != f, fold == f
                    c = Combiner.fit(
                        probs[tr], excess[tr], labels[tr], use_patch=use_patch,
                        spec_probs=spec[tr] if use_spec else None, excess_scale=scale,
                    )
                    pred = c.scores(probs[te], excess[te], spec[te]).argmax(1)
                    right += int((pred == labels[te]).sum())
                cv[scale, use_patch, use_spec] = right / len(recs)
    scale, use_patch, use_spec = max(cv, key=lambda k: (cv[k], -list(cv).index(k)))
    comb = Combiner.fit(probs, excess, labels, use_patch=use_patch,
                        spec_probs=spec if use_spec else None, excess_scale=scale)
    # The verdict without the spectrum classifier: for images smaller than its 128×128 tile (and
    # compressed ones when there is no combiner_compressed)
    plain_form = max((k for k in cv if not k[2]), key=lambda k: (cv[k], -list(cv).index(k)))
    plain = Combiner.fit(probs, excess, labels, use_patch=plain_form[1],
                         excess_scale=plain_form[0])
    pred = comb.scores(probs, excess, spec).argmax(1)
    conf = comb.confidence(probs, excess, spec)
    sure = conf >= 0.5
    metrics = {
        "train_type_accuracy": float((pred == labels).double().mean()),
        **{
            f"cv2_type_accuracy[excess {s}{', patches' if p else ''}{', spectrum' if q else ''}]":
            v for (s, p, q), v in cv.items()
        },
        "likelihood_argmin_accuracy": float((excess.argmin(1) == labels).double().mean()),
        "patch_classifier_accuracy": float((probs.argmax(1) == labels).double().mean()),
        "spectrum_classifier_accuracy": float((spec.argmax(1) == labels).double().mean()),
        "train_type_error_rate_conf>=0.5": float((pred[sure] != labels[sure]).double().mean())
        if bool(sure.any()) else None,
        "train_fraction_conf>=0.5": float(sure.double().mean()),
        "train_type_accuracy_without_spectrum": float(
            (plain.scores(probs, excess).argmax(1) == labels).double().mean()
        ),
        "n_records": len(recs),
    }
    command = "PYTHONPATH=. python scripts/fit_blur_likelihood.py" + (
        " --images ../shared/data/sharp" if args.images else "") + (
        f" --jpeg-quality {jpeg[0]}-{jpeg[1]}" if jpeg else "")
    out = Path(args.out)
    if jpeg is not None:
        _write_compressed(out, comb, use_patch, use_spec, scale, metrics, command, jpeg,
                          args.draws, sorted(image_ids))
        return
    payload = {
        "combiner": comb.to_dict(),
        "combiner_without_spectrum": plain.to_dict(),
        "uses_patch_classifier": use_patch,
        "uses_spectrum_classifier": use_spec,
        "excess_scale": scale,
        "command": command,
        "noise_levels": list(NOISE_LEVELS),
        "draws": args.draws,
        "images": sorted(image_ids),
        "metrics": metrics,
    }
    # the compressed images' verdict is fitted on records of its own: a refit keeps it
    old_json = out / "blur_likelihood.json"
    old = json.loads(old_json.read_text()) if old_json.is_file() else {}
    for key in ("combiner_compressed", "compressed"):
        if key in old:
            payload[key] = old[key]
    old_card = out / "blur_likelihood.md"
    jpeg_section = ""
    if old_card.is_file() and CARD_JPEG_HEADING in old_card.read_text():
        jpeg_section = "\n" + CARD_JPEG_HEADING + old_card.read_text().split(CARD_JPEG_HEADING)[1]
    (out / "blur_likelihood.json").write_text(json.dumps(payload, indent=2) + "\n")
    sources = ([] if scale == "none" else [
        "the marginal-likelihood fit of each blur family (`fastdeblur/estimate/likelihood.py`)"
    ]) + (["the patch classifier's mean probabilities"] if use_patch else []) + (
        ["the spectrum classifier's probabilities (`blur_spectrum_classifier.md`)"]
        if use_spec else [])
    card = f"""# Blur estimator: image-level likelihood decision

Decides the blur type of a whole image from {" and ".join(sources)}, and calibrates its
confidence. {EXCESS_TEXT[scale]} (the form chosen by 2-fold cross-validation by image). Seven
numbers of a logistic model (`Combiner`); the likelihood fit itself has no trained weights
(power-law image prior with a direction-dependent amplitude, the `fastdeblur.psf` kernels).
Loaded by `fastdeblur.estimate.BlurEstimator.load` from `blur_likelihood.json`.

## Data

{len(recs)} blurred images: for each noise level σn in {{0, 0.005, 0.01, 0.02}}, the
{len(image_ids)} images of the combiner's part of the training split
(`fastdeblur.estimate.data.combiner_split`: 20 % of the estimator's training images, seed 7,
never seen by the spectrum classifier; the estimator's validation images are never used:
{", ".join(sorted(image_ids))}), each blurred {args.draws} times per type with parameters uniform
over the supported range (Gaussian σ 0.5–5 px, motion length 3–31 px at any angle, defocus
radius 1–10 px), reflect boundary, white noise, clamped to [0, 1], gray.

## Command

```
{command}
```

## Metrics (training records; held-out numbers are in `bench/results/estimation.json`)

""" + _metrics_table(metrics) + f"""

## Weights

```
{json.dumps(comb.to_dict(), indent=2)}
```

Without the spectrum classifier (images smaller than 128×128; compressed ones too when the
section below is missing), {"with" if plain_form[1] else "without"} the patch
classifier, excess {plain_form[0]} (the best such form by the same cross-validation):

```
{json.dumps(plain.to_dict(), indent=2)}
```

Fitted {datetime.date.today().isoformat()} with torch {torch.__version__} on {platform.machine()}.
"""
    (out / "blur_likelihood.md").write_text(card + jpeg_section)
    print(json.dumps(payload, indent=2))


def _metrics_table(metrics: dict) -> str:
    rows = [f"| {k} | {v if not isinstance(v, float) else round(v, 4)} |"
            for k, v in metrics.items()]
    return "| metric | value |\n|---|---|\n" + "\n".join(rows)


def _write_compressed(out: Path, comb, use_patch: bool, use_spec: bool, scale: str,
                      metrics: dict, command: str, jpeg: tuple[int, int], draws: int,
                      images: list[str]) -> None:
    """Add the compressed images' verdict to ``blur_likelihood.json`` and its card."""
    path = out / "blur_likelihood.json"
    if not path.is_file():
        raise SystemExit(f"{path}: fit the uncompressed verdict first (without --jpeg-quality)")
    payload = json.loads(path.read_text())
    payload["combiner_compressed"] = comb.to_dict()
    payload["compressed"] = {
        "jpeg_quality": list(jpeg),
        "uses_patch_classifier": use_patch,
        "uses_spectrum_classifier": use_spec,
        "excess_scale": scale,
        "command": command,
        "draws": draws,
        "metrics": metrics,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    card_path = out / "blur_likelihood.md"
    card = card_path.read_text().split(CARD_JPEG_HEADING)[0].rstrip("\n")
    section = f"""

{CARD_JPEG_HEADING}

`combiner_compressed`, used by `estimate(..., compressed=True)` (the CLI sets it for JPEG files).
Fitted the same way on {metrics["n_records"]} records of the same {len(images)} images ({draws}
draws per type and noise level), each blurred image saved as 8-bit gray JPEG of quality uniform
in {jpeg[0]}–{jpeg[1]} (Pillow) and read back; the spectrum classifier here is the one trained
on JPEG crops (`blur_spectrum_classifier_jpeg.md`), and the likelihood fit assumes noise of at
least `COMPRESSED_NOISE_FLOOR` (`fastdeblur/estimate/estimator.py`), as the estimator does for
compressed images. Form chosen by 2-fold cross-validation by
image: excess {scale}{", patches" if use_patch else ""}{", spectrum" if use_spec else ""}.
{EXCESS_TEXT[scale]}.

```
{command}
```

""" + _metrics_table(metrics) + f"""

```
{json.dumps(comb.to_dict(), indent=2)}
```
"""
    card_path.write_text(card + section)
    print(json.dumps(payload["compressed"], indent=2))


if __name__ == "__main__":
    main()

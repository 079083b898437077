"""Training the estimator on synthetic data: the classifier, then one GRNN per blur type.

Both steps follow :mod:`fastdeblur.estimate.data` (36,000 patches, 12,000 per type, parameter
ranges of :data:`fastdeblur.synth.DEFAULT_RANGES`, noise σn 0–0.02) with a validation split by
image, and write safetensors weights with a model card into ``out_dir``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from fastdeblur.estimate import features as feats
from fastdeblur.estimate.classifier import (
    PAPER_LAYERS,
    BlurClassifier,
    BlurCNN,
    accuracy,
    finetune,
    predict,
    pretrain,
)
from fastdeblur.estimate.data import (
    DEAD_LEAVES_IMAGES,
    cached_patches,
    concat_patch_sets,
    dead_leaves_images,
    estimator_images,
    synth_patches,
    synth_windows,
)
from fastdeblur.estimate.estimator import (
    CLASSIFIER_FILE,
    GRNN_MANIFEST,
    PAPER_CLASSIFIER_FILE,
    BlurEstimator,
)
from fastdeblur.estimate.grnn import GRNN
from fastdeblur.synth import BLUR_TYPES, DEFAULT_RANGES
from fastdeblur.train import export_safetensors, seed_everything, write_model_card

RANGES_TEXT = (
    "Parameters drawn uniformly: Gaussian σ 0.5–5 px; motion length 3–31 px, angle 0–180°; "
    "defocus radius 1–10 px; white noise σn uniform in 0–0.02 (intensities in [0, 1]); gray "
    "32×32 patches, flat ones (texture energy below threshold) skipped."
)


def _shown_path(arg: str) -> str:
    """``/any/where/shared/data/x`` -> ``../shared/data/x``: the shared data folder sits beside
    every checkout, so cards name it relative to the repository."""
    parts = Path(arg).parts
    for i in range(len(parts) - 1):
        if parts[i] == "shared" and parts[i + 1] == "data" and Path(arg).exists():
            return str(Path("..", *parts[i:]))
    return arg


def command_line() -> str:
    """The command that is running, for model cards."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("fastdeblur", "__main__.py", "main.py")):
        argv = ["fastdeblur", *argv[1:]]
    return " ".join(shlex.quote(_shown_path(a)) for a in argv)


def _data_text(images: str | Path | None, names: dict[str, list[str]], n_train: int, n_val: int):
    source = "the photos inside `skimage.data`"
    if images is not None:
        shown = _shown_path(str(images))
        source = f"`{shown}` and {source}"
    return (
        f"Synthetic blurred patches of {source}, split by image (20 % validation, seed 0): "
        f"{len(names['train'])} training images, {len(names['val'])} validation images "
        f"({', '.join(names['val'])}). {n_train} training patches ({n_train // 3} per type), "
        f"{n_val} validation patches. {RANGES_TEXT}"
    )


def patch_sets(
    images: str | Path | None,
    *,
    n_train: int,
    n_val: int,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    dead_leaves: int = 0,
) -> tuple[dict, dict, dict[str, list[str]]]:
    """The training and validation patch sets (cached in ``cache_dir`` when given); the
    training set gains ``dead_leaves`` patches of :func:`~fastdeblur.estimate.data.
    dead_leaves_images` (after the photos' ``n_train``)."""
    train_images, val_images, names = estimator_images(images, seed=seed)
    if not val_images:
        raise ValueError("no validation images: give more images")
    tag = "shared" if images is not None else "skimage"
    train = cached_patches(
        cache_dir,
        f"{tag}_train_{n_train}_s{seed}",
        lambda: synth_patches(train_images, n_train, seed=seed, progress=progress),
    )
    val = cached_patches(
        cache_dir,
        f"{tag}_val_{n_val}_s{seed + 1}",
        lambda: synth_patches(val_images, n_val, seed=seed + 1, progress=progress),
    )
    if dead_leaves > 0:
        n_images = dead_leaves_count(dead_leaves)
        extra = cached_patches(
            cache_dir,
            f"deadleaves{n_images}_{dead_leaves}_s{seed + 2}",
            lambda: synth_patches(
                dead_leaves_images(n_images), dead_leaves, seed=seed + 2, progress=progress
            ),
        )
        train = concat_patch_sets(train, extra)
    return train, val, names


def dead_leaves_count(n_patches: int) -> int:
    """Dead-leaves images behind ``n_patches`` patches: one per 1,000 patches, at most
    :data:`~fastdeblur.estimate.data.DEAD_LEAVES_IMAGES` (each costs about 2 s to draw)."""
    return min(DEAD_LEAVES_IMAGES, max(1, n_patches // 1000))


def window_sets(
    images: str | Path | None,
    *,
    n_train: int,
    n_val: int,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Training and validation sets of 128×128 windows for the image-level GRNNs."""
    train_images, val_images, _ = estimator_images(images, seed=seed)
    tag = "shared" if images is not None else "skimage"
    train = cached_patches(
        cache_dir,
        f"{tag}_wintrain_{n_train}_s{seed}",
        lambda: synth_windows(train_images, n_train, seed=seed, progress=progress),
    )
    val = cached_patches(
        cache_dir,
        f"{tag}_winval_{n_val}_s{seed + 1}",
        lambda: synth_windows(val_images, n_val, seed=seed + 1, progress=progress),
    )
    return train, val


def window_arrays(data: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{type: (mean profiles (n, d), targets (n, p))}`` of a window set, by true type."""
    out = {}
    for k, t in enumerate(BLUR_TYPES):
        idx = torch.nonzero(data["labels"] == k).squeeze(1)
        y = torch.tensor(
            [feats.encode_params(t, data["params"][i]) for i in idx.tolist()], dtype=torch.float32
        )
        out[t] = (data["features"][idx], y)
    return out


def fit_classifier(
    train: dict,
    val: dict,
    *,
    arch: str = "cnn",
    input_kind: str = "spectrum",
    layers: tuple[int, ...] = PAPER_LAYERS,
    pretraining: bool = True,
    pretrain_epochs: int = 5,
    epochs: int = 30,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    width: int | None = None,
) -> tuple[BlurClassifier | BlurCNN, dict[str, Any]]:
    """Train a patch classifier on patch sets; returns it and its validation metrics.

    ``arch="cnn"`` trains :class:`BlurCNN` on the patches (turned and mirrored at random, no
    pre-training: ``input_kind``, ``layers`` and ``pretraining`` are the paper network's;
    ``width`` is the CNN's, default :class:`BlurCNN`'s); ``arch="paper"`` the paper's
    :class:`BlurClassifier`, optionally RBM-pre-trained.
    """
    if width is not None and width < 1:
        raise ValueError(f"width must be >= 1; got {width}")
    seed_everything(seed)
    model: BlurClassifier | BlurCNN
    if arch == "cnn":
        x = train["patches"].float().flatten(1)
        xv = val["patches"].float().flatten(1)
        model = BlurCNN() if width is None else BlurCNN(width)
        pretraining = False
    elif arch == "paper":
        x = feats.classifier_input(train["patches"], input_kind)
        xv = feats.classifier_input(val["patches"], input_kind)
        model = BlurClassifier(layers, input_kind=input_kind)
    else:
        raise ValueError(f"arch must be one of cnn, paper; got {arch!r}")
    model.set_normalisation(x)
    ckpt = None if checkpoint_dir is None else str(checkpoint_dir)
    pre = []
    if pretraining:
        pre = pretrain(
            model,
            x,
            epochs=pretrain_epochs,
            batch_size=batch_size,
            seed=seed,
            checkpoint_dir=ckpt,
            progress=progress,
        )
    history = finetune(
        model,
        x,
        train["labels"],
        val=(xv, val["labels"]),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=arch == "cnn",
        checkpoint_dir=None if ckpt is None else f"{ckpt}/finetune",
        progress=progress,
    )
    model.eval()
    metrics = classifier_metrics(model, xv, val["labels"], val["noise"])
    # on the first 36,000 training patches (photos): all 400,000 take minutes with the CNN
    metrics["train_patch_accuracy"] = accuracy(model, x[:36_000], train["labels"][:36_000])
    metrics["pretraining"] = pre
    metrics["val_accuracy_per_epoch"] = [
        round(r["val_accuracy"], 4) for r in history if "val_accuracy" in r
    ]
    return model, metrics


def classifier_metrics(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor
) -> dict[str, Any]:
    """Patch accuracy overall, per type and per noise band, and the confusion matrix."""
    return prediction_metrics(predict(model, x), y, noise, "val_patch_accuracy")


def prediction_metrics(
    pred: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, overall: str = "val_accuracy"
) -> dict[str, Any]:
    """Accuracy of predicted types ``pred (N,)`` against ``y (N,)``: overall (key ``overall``),
    per type and per band of the noise ``noise (N,)``, and the confusion matrix."""
    from fastdeblur.estimate.data import SPECTRUM_CLASSES

    out: dict[str, Any] = {overall: float((pred == y).float().mean())}
    n_classes = max(len(BLUR_TYPES), int(y.max()) + 1, int(pred.max()) + 1)
    for k, t in enumerate(SPECTRUM_CLASSES[:n_classes]):
        out[f"val_accuracy_{t}"] = float((pred[y == k] == k).float().mean())
    for lo, hi in ((0.0, 0.005), (0.005, 0.01), (0.01, 0.02)):
        band = (noise >= lo) & (noise < hi + 1e-12)
        out[f"val_accuracy_noise_{lo}-{hi}"] = float((pred[band] == y[band]).float().mean())
    conf = torch.zeros(n_classes, n_classes, dtype=torch.long)
    for a, b in zip(y.tolist(), pred.tolist(), strict=True):
        conf[a, b] += 1
    out["confusion (rows true, cols predicted)"] = conf.tolist()
    return out


def train_classifier(
    images: str | Path | None,
    out_dir: str | Path,
    *,
    n_train: int | None = None,
    n_val: int = 6_000,
    dead_leaves: int | None = None,
    arch: str = "cnn",
    input_kind: str = "spectrum",
    pretraining: bool = True,
    pretrain_epochs: int = 1,
    epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    width: int | None = None,
) -> dict[str, Any]:
    """Synthesise data, train the classifier, write ``blur_classifier.safetensors`` (``cnn``)
    or ``blur_classifier_paper.safetensors`` (``paper``) and its model card.

    ``n_train`` defaults to 300,000 patches for the CNN (its accuracy on unseen images still grew
    from 36,000 to 300,000) and to the paper's 36,000 for ``arch="paper"``. ``dead_leaves``
    extra training patches come from dead-leaves images (default: a third of ``n_train`` for the
    CNN, +3.9 points of validation accuracy at equal epochs; none for the paper's network).
    ``width`` is the CNN's first convolution's channels (default :class:`BlurCNN`'s, the
    shipped network's 16).
    ``epochs`` defaults to the shipped weights' 20 for the CNN (validation accuracy plateaued
    from epoch 17) and 8 for the paper's network.
    """
    if epochs is None:
        epochs = 20 if arch == "cnn" else 8
    if n_train is None:
        n_train = 300_000 if arch == "cnn" else 36_000
    if dead_leaves is None:
        dead_leaves = n_train // 3 if arch == "cnn" else 0
    train, val, names = patch_sets(
        images,
        n_train=n_train,
        n_val=n_val,
        seed=seed,
        cache_dir=cache_dir,
        progress=progress,
        dead_leaves=dead_leaves,
    )
    model, metrics = fit_classifier(
        train,
        val,
        arch=arch,
        input_kind=input_kind,
        pretraining=pretraining,
        pretrain_epochs=pretrain_epochs,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        width=width,
    )
    cnn = isinstance(model, BlurCNN)
    out = Path(out_dir) / (CLASSIFIER_FILE if cnn else PAPER_CLASSIFIER_FILE)
    meta: dict[str, Any] = {"arch": arch, "classes": list(BLUR_TYPES)}
    if cnn:
        meta |= {"width": model.width, "input_kind": model.input_kind}
    else:
        meta |= {"layers": list(model.layers_spec), "input_kind": input_kind}
        meta["pretraining"] = pretraining
    export_safetensors(model, out, metadata=meta)
    shown = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    if cnn:
        title = "Blur-type patch classifier (CNN on pixels + MLP on the log spectrum)"
        what = (
            "a small CNN on the standardised pixels (edge profiles) beside an MLP on the "
            "mean-free log power spectrum (Hann window), joined by an MLP head "
            "(`fastdeblur.estimate.classifier.BlurCNN`)."
        )
        details = {
            "network": f"BlurCNN width {model.width}: conv 5×5 → 4 conv 3×3 (3 with stride 2) → "
            f"4×4×{model.conv[-2].out_channels}, spectrum 1024-512-128, head "
            f"{model.head[0].in_features}-256-3 "
            "(ReLU, dropout)",
            "augmentation": "random 90° turns and mirrors of the patches",
            "pre-training": "none (RBM pre-training is the paper network's)",
        }
    else:
        title = "Blur-type patch classifier (1024-500-30-10-3)"
        what = "Yan & Shao's (TIP 2016) network on " + (
            "the patch's mean-free log power spectrum (Hann window)."
            if input_kind == "spectrum"
            else "the patch's pixels, standardised per patch."
        )
        details = {
            "layers": "-".join(map(str, model.layers_spec)) + " (sigmoid hidden, softmax out)",
            "pre-training": (
                f"greedy RBMs (Gaussian-Bernoulli visible layer, CD-1), {pretrain_epochs} "
                "epochs each"
                if pretraining
                else "none"
            ),
        }
    details["fine-tuning"] = (
        f"cross-entropy, Adam lr {lr:g} with cosine decay, batch {batch_size}, {epochs} epochs"
    )
    details["seed"] = seed
    write_model_card(
        out,
        title=title,
        description=(
            "Classifies a gray 32×32 patch as Gaussian, motion or defocus blur. Model: "
            + what
            + " Load with `fastdeblur.estimate.BlurEstimator.load_classifier`."
        ),
        data=_data_text(images, names, n_train, n_val)
        + (
            f" Plus {dead_leaves} training patches of {dead_leaves_count(dead_leaves)} synthetic "
            "dead-leaves "
            "images (`fastdeblur.synth.dead_leaves`, 256×256, disk radii 1–80 px with "
            "p(r) ∝ r⁻³), blurred the same way."
            if dead_leaves
            else ""
        ),
        command=command_line(),
        metrics=shown,
        details=details,
    )
    metrics["weights_file"] = str(out)
    return metrics


def grnn_arrays(
    estimator: BlurEstimator, data: dict
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{type: (features (n, d), targets (n, p))}`` of a patch set, by true type."""
    f = estimator.regression_features(data["patches"])
    out = {}
    for k, t in enumerate(BLUR_TYPES):
        idx = torch.nonzero(data["labels"] == k).squeeze(1)
        y = torch.tensor(
            [feats.encode_params(t, data["params"][i]) for i in idx.tolist()], dtype=torch.float32
        )
        out[t] = (f[idx], y)
    return out


def param_errors(
    estimator: BlurEstimator,
    arrays: dict[str, tuple[torch.Tensor, torch.Tensor]],
    grnns: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Mean absolute error of each parameter (angles in degrees, periodic; motion lengths
    >= 7 px for the angle, as in the quality targets). ``grnns`` replaces the estimator's
    patch-level GRNNs (e.g. the image-level ones on window features)."""
    out = {}
    for t, (f, y) in arrays.items():
        if grnns is None:
            est = estimator.regress(t, f)
        else:
            with torch.no_grad():
                est = feats.decode_params(t, grnns[t].predict(f).reshape(len(f), -1).float())
        true = feats.decode_params(t, y)
        for name, v in est.items():
            if name == "angle":
                d = (v - true[name]).abs() % 180
                d = torch.minimum(d, 180 - d)
                long = true["length"] >= 7
                out[f"{t}.{name}_mae_deg(length>=7)"] = float(d[long].mean())
            else:
                out[f"{t}.{name}_mae_px"] = float((v - true[name]).abs().mean())
    return out


def fit_grnns(
    estimator: BlurEstimator, train: dict, n_centers: int | None = None
) -> dict[str, Any]:
    """Fit one GRNN per type on ``train`` (features of ``estimator.grnn_feature``), optionally
    compressed to ``n_centers`` k-means centres."""
    grnns = {}
    for t, (f, y) in grnn_arrays(estimator, train).items():
        grnns[t] = GRNN(n_centers=_centers(n_centers, len(f))).fit(f, y)
    estimator.grnns = grnns
    return grnns


def train_grnn(
    images: str | Path | None,
    weights_dir: str | Path,
    *,
    feature: str = "profile",
    n_train: int = 36_000,
    n_val: int = 6_000,
    n_windows: int = 36_000,
    n_val_windows: int = 3_000,
    n_centers: int | None = 2048,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the patch-level GRNNs on top of the classifier in ``weights_dir`` and, when
    ``n_windows > 0``, the image-level GRNNs on 128×128 windows; write them, a manifest and
    model cards there."""
    weights_dir = Path(weights_dir)
    # the 'hidden' feature is the paper network's 30-d layer
    file = PAPER_CLASSIFIER_FILE if feature == "hidden" else CLASSIFIER_FILE
    classifier = BlurEstimator.load_classifier(weights_dir / file)
    train, val, names = patch_sets(
        images, n_train=n_train, n_val=n_val, seed=seed, cache_dir=cache_dir, progress=progress
    )
    estimator = BlurEstimator(classifier, grnn_feature=feature)
    grnns = fit_grnns(estimator, train, n_centers)
    metrics = param_errors(estimator, grnn_arrays(estimator, val))
    files = {}
    for t, g in grnns.items():
        name = f"blur_grnn_{t}.safetensors"
        g.save(weights_dir / name)
        files[t] = name
        write_model_card(
            weights_dir / name,
            title=f"GRNN regressor of {t} blur parameters",
            description=(
                f"Generalised regression network mapping a blurred 32×32 patch's "
                f"{'spectral profile (fastdeblur.estimate.features.profile_features)' if feature == 'profile' else '30-d hidden layer of the blur classifier'}"  # noqa: E501
                f" to {', '.join(_targets(t))}. Used by `fastdeblur.estimate` on patches "
                "classified as this type."
            ),
            data=_data_text(images, names, n_train, n_val)
            + f" The GRNN stores {n_centers or n_train // 3} k-means centres of the "
            f"{n_train // 3} training patches of this type.",
            command=command_line(),
            metrics={k: v for k, v in metrics.items() if k.startswith(t)},
            details={"feature": feature, "targets": ", ".join(_targets(t))},
        )
    manifest: dict[str, Any] = {"feature": feature, "files": files, "ranges": DEFAULT_RANGES}
    if n_windows > 0:
        wtrain, wval = window_sets(
            images,
            n_train=n_windows,
            n_val=n_val_windows,
            seed=seed,
            cache_dir=cache_dir,
            progress=progress,
        )
        image_grnns = {
            t: GRNN(n_centers=_centers(n_centers, len(f))).fit(f, y)
            for t, (f, y) in window_arrays(wtrain).items()
        }
        image_metrics = param_errors(estimator, window_arrays(wval), image_grnns)
        manifest["image_files"] = {}
        for t, g in image_grnns.items():
            name = f"blur_grnn_image_{t}.safetensors"
            g.save(weights_dir / name)
            manifest["image_files"][t] = name
            write_model_card(
                weights_dir / name,
                title=f"Image-level GRNN regressor of {t} blur parameters",
                description=(
                    "Generalised regression network mapping the mean spectral profile of the "
                    "textured 32×32 patches of a uniformly blurred image (or window) to "
                    f"{', '.join(_targets(t))}. `fastdeblur.estimate` uses it for the "
                    "image-level verdict."
                ),
                data=_data_text(images, names, n_train, n_val).split(". ")[0]
                + f". {n_windows} blurred 128×128 windows of the training images "
                f"({n_windows // 3} per type), {n_val_windows} of the validation images. "
                + RANGES_TEXT,
                command=command_line(),
                metrics={k: v for k, v in image_metrics.items() if k.startswith(t)},
                details={"feature": "mean profile_features over textured patches"},
            )
        metrics |= {f"image.{k}": v for k, v in image_metrics.items()}
    manifest["metrics"] = metrics
    (weights_dir / GRNN_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return metrics


def _centers(n_centers: int | None, n: int) -> int | None:
    return None if n_centers is None or n_centers <= 0 or n_centers >= n else n_centers


def _targets(t: str) -> list[str]:
    return {"gaussian": ["σ"], "motion": ["length", "(cos 2θ, sin 2θ)"], "defocus": ["radius"]}[t]


def _joined(a: dict, b: dict) -> dict:
    """Two spectrum sets of :func:`~fastdeblur.estimate.data.synth_spectra`, one after the
    other."""
    return {k: a[k] + b[k] if isinstance(a[k], list) else torch.cat([a[k], b[k]]) for k in a}


def train_spectrum_classifier(
    images: str | Path | None,
    out_dir: str | Path,
    *,
    n_train: int = 30_000,
    n_val: int = 3_000,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 24,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    jpeg_quality: tuple[int, int] | None = None,
    n_shake: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesise blurred crops, train :class:`~fastdeblur.estimate.spectrum.SpectrumCNN` and
    write ``blur_spectrum_classifier.safetensors`` and its model card into ``out_dir``.

    With ``jpeg_quality = (lo, hi)`` every crop is JPEG-compressed at a quality uniform in
    ``lo..hi`` (:func:`~fastdeblur.estimate.data.synth_spectra`) and the network is written as
    ``blur_spectrum_classifier_jpeg.safetensors``: the classifier the estimator uses for
    compressed images (``estimate(..., compressed=True)``).

    With ``n_shake > 0`` the network gets a fourth class, camera shake: ``n_shake`` more training
    crops blurred by random camera shake (:func:`~fastdeblur.estimate.data.shake_kernel`), and
    validation crops in the same proportion. The estimator then reads how likely it is that no
    blur family describes the image (:attr:`~fastdeblur.estimate.BlurEstimate.shake_probability`).

    The estimator's training images (:func:`estimator_images`) are split once more
    (:func:`~fastdeblur.estimate.data.combiner_split`): the network trains on 80 % of them, and
    its validation crops come from the other 20 %, the images the likelihood stage's combiner is
    fitted on (``scripts/fit_blur_likelihood.py``). The estimator's validation images are not
    used. AdamW with a one-cycle learning rate, cross-entropy with label smoothing 0.02, each
    batch's spectra mirrored at random. The defaults are the shipped recipe: validation accuracy
    0.967 with 12,000 crops and 15 epochs, 0.976 with 30,000 and 20 (about 12 minutes of
    spectra and 11 of training on two cores).
    """
    import torch.nn.functional as F

    from fastdeblur.estimate.data import SPECTRUM_CLASSES, combiner_split, synth_spectra
    from fastdeblur.estimate.estimator import (
        SPECTRUM_CLASSIFIER_FILE,
        SPECTRUM_CLASSIFIER_JPEG_FILE,
    )
    from fastdeblur.estimate.spectrum import WINDOW, SpectrumCNN, mirror_spectrum
    from fastdeblur.train import Trainer

    if min(n_train, n_val) < 3 or epochs < 1 or width < 1 or n_shake < 0:
        raise ValueError("n_train and n_val must be >= 3, epochs and width >= 1, n_shake >= 0")
    seed_everything(seed)
    train_images, _, names = estimator_images(images, seed=seed)
    spec_images, comb_images, split = combiner_split(train_images, names["train"])
    tag = "shared" if images is not None else "skimage"
    if jpeg_quality is not None:
        tag += f"_jpeg{jpeg_quality[0]}-{jpeg_quality[1]}"
    train = cached_patches(
        cache_dir, f"{tag}_spectra_{n_train}_s{seed}",
        lambda: synth_spectra(spec_images, n_train, seed=seed, jpeg_quality=jpeg_quality,
                              progress=progress),
    )
    val = cached_patches(
        cache_dir, f"{tag}_spectra_val_{n_val}_s{seed + 1}",
        lambda: synth_spectra(comb_images, n_val, seed=seed + 1, jpeg_quality=jpeg_quality,
                              progress=progress),
    )
    n_shake_val = round(n_shake * n_val / n_train)
    if n_shake:
        shake_train = cached_patches(
            cache_dir, f"{tag}_shake_spectra_{n_shake}_s{seed}",
            lambda: synth_spectra(spec_images, 0, shake=n_shake, seed=seed,
                                  jpeg_quality=jpeg_quality, progress=progress),
        )
        shake_val = cached_patches(
            cache_dir, f"{tag}_shake_spectra_val_{n_shake_val}_s{seed + 1}",
            lambda: synth_spectra(comb_images, 0, shake=n_shake_val, seed=seed + 1,
                                  jpeg_quality=jpeg_quality, progress=progress),
        )
        train, val = _joined(train, shake_train), _joined(val, shake_val)
    classes = SPECTRUM_CLASSES[:len(BLUR_TYPES) + (n_shake > 0)]
    model = SpectrumCNN(width, classes=len(classes))

    def val_predictions(m: torch.nn.Module) -> torch.Tensor:
        m.eval()
        with torch.no_grad():
            return torch.cat([
                m(p, s).argmax(1) for p, s in zip(val["power"].split(512),
                                                  val["noise_estimate"].split(512), strict=True)
            ])

    def val_accuracy(m: torch.nn.Module) -> float:
        accuracy = float((val_predictions(m) == val["labels"]).float().mean())
        m.train()
        return accuracy

    def loss_fn(m: torch.nn.Module, batch: tuple) -> torch.Tensor:
        power, noise, labels = batch
        flip = torch.rand(len(power)) < 0.5
        power = torch.where(flip[:, None, None], mirror_spectrum(power), power)
        return F.cross_entropy(m(power, noise), labels, label_smoothing=0.02)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    steps = epochs * -(-len(train["labels"]) // batch_size)  # the shake crops too
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    trainer = Trainer(
        model,
        opt,
        loss_fn,
        torch.utils.data.TensorDataset(train["power"], train["noise_estimate"], train["labels"]),
        batch_size=batch_size,
        epochs=epochs,
        scheduler=sched,
        val_fn=lambda m: {"val_accuracy": val_accuracy(m)},
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        log_every=50,
        name="spectrum classifier",
    )
    history = trainer.fit(resume=checkpoint_dir is not None)
    metrics = prediction_metrics(val_predictions(model), val["labels"], val["noise"])
    metrics["val_accuracy_per_epoch"] = [
        round(r["val_accuracy"], 4) for r in history if "val_accuracy" in r
    ]
    jpeg_text = (
        "" if jpeg_quality is None else
        f"; then saved as 8-bit gray JPEG of quality uniform in {jpeg_quality[0]}–"
        f"{jpeg_quality[1]} (Pillow) and read back"
    )
    out = Path(out_dir) / (
        SPECTRUM_CLASSIFIER_FILE if jpeg_quality is None else SPECTRUM_CLASSIFIER_JPEG_FILE
    )
    export_safetensors(model, out, metadata={
        "arch": "spectrum_cnn", "width": width, "tile": model.tile, "classes": list(classes),
        "jpeg_quality": list(jpeg_quality) if jpeg_quality is not None else None,
    })
    write_model_card(
        out,
        title="Image-level blur-type classifier on the Welch power spectrum"
        + ("" if jpeg_quality is None else ", for JPEG-compressed images"),
        description=(
            "Classifies a uniformly blurred gray image as Gaussian, motion or defocus blur"
            + (" or camera shake (a blur no family describes)" if n_shake else "")
            + " from the Welch power spectrum of its most textured 128×128 tiles "
            "(`fastdeblur.estimate.likelihood.tile_spectrum`) and its noise level. Model: "
            "`fastdeblur.estimate.spectrum.SpectrumCNN`; its probabilities join the likelihood "
            "stage's verdict (`blur_likelihood.json`). Loaded by "
            "`fastdeblur.estimate.BlurEstimator.load`"
            + (
                "." if jpeg_quality is None else
                "; used for compressed (JPEG) images, `estimate(..., compressed=True)` (the "
                "CLI sets it for JPEG files), with the combiner `combiner_compressed`."
            )
        ),
        data=(
            f"The estimator's training images (`{_shown_path(str(images))}` and the photos inside "
            f"`skimage.data`, {len(names['train'])} images; its {len(names['val'])} validation "
            "images are never used) split by image (20 %, seed 7): "
            f"{n_train} training crops of {len(split['spectrum'])} images, {n_val} validation "
            f"crops of the other {len(split['combiner'])} "
            f"({', '.join(split['combiner'])}), the images the combiner is fitted on. Each crop "
            f"{WINDOW}×{WINDOW} (images smaller than that plus the largest kernel are skipped), "
            "blurred uniformly (reflect boundary) with parameters drawn uniformly: Gaussian σ "
            "0.5–5 px; motion length 3–31 px, angle 0–180°; defocus radius 1–10 px; white noise "
            "σn uniform in 0–0.02 on 80 % of the crops, none on 20 %; clamped to [0, 1]"
            f"{jpeg_text}; transposed at random."
            + (
                f" Camera shake: {n_shake} more training and {n_shake_val} more validation "
                "crops, the same noise and treatment, blurred by random camera-shake kernels "
                "(`fastdeblur.estimate.data.shake_kernel`: 11–31 px, `fastdeblur.psf.camera_shake` "
                "with anxiety 0.3–1 and speed variation 0–1.5, redrawn while straighter than an "
                "axis ratio of 0.15)." if n_shake else ""
            )
            if images is not None else "The photos inside `skimage.data`."
        ),
        command=command_line(),
        metrics={k: v for k, v in metrics.items() if not isinstance(v, list)},
        details={
            "network": f"SpectrumCNN width {width}: input 4×128×65 (mean-free log power, log "
            "power above the noise, |f_y|, f_x); conv 5×5 and 3 conv 3×3 with stride 2, one "
            f"conv 3×3 (GELU) → 8×5; head 64-{len(classes)} (dropout 0.2)",
            "training": f"AdamW lr {lr:g} one-cycle, weight decay 1e-3, batch {batch_size}, "
            f"{epochs} epochs, label smoothing 0.02, random mirroring",
            "seed": seed,
        },
    )
    metrics["weights_file"] = str(out)
    return metrics

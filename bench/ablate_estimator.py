"""Ablations of the blur estimator, on the validation images (split by image).

1. Classifier: the paper's network with RBM pre-training on/off × input ``raw`` (the paper) /
   ``spectrum``, and the shipped :class:`~fastdeblur.estimate.classifier.BlurCNN` (pixels +
   spectrum, turned and mirrored patches), all on the same patches and epochs.
2. GRNN features: the spectral ``profile`` vs the classifier's 30-d ``hidden`` layer
   (parameter MAE on validation patches).

Writes ``bench/results/estimation_ablation.json``::

    PYTHONPATH=. python bench/ablate_estimator.py --images ../shared/data/sharp \
        --cache /tmp/fastdeblur-cache
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench._timing import machine
from fastdeblur.estimate.estimator import BlurEstimator
from fastdeblur.estimate.training import (
    _shown_path,
    fit_classifier,
    fit_grnns,
    grnn_arrays,
    param_errors,
    patch_sets,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", default=None, help="folder of sharp images (+ skimage photos)")
    ap.add_argument("--cache", default=None, help="folder caching the synthetic patch sets")
    ap.add_argument("--n-train", type=int, default=36_000)
    ap.add_argument("--n-val", type=int, default=6_000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--only", choices=["classifier", "grnn"], default=None)
    ap.add_argument("--out", default=str(RESULTS / "estimation_ablation.json"))
    args = ap.parse_args()

    train, val, names = patch_sets(
        args.images, n_train=args.n_train, n_val=args.n_val, cache_dir=args.cache
    )
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results |= {
        "machine": machine(),
        "command": "PYTHONPATH=. python bench/ablate_estimator.py "
        + " ".join(
            f"--{k.replace('_', '-')} {_shown_path(str(v))}"
            for k, v in vars(args).items()
            if v is not None and k != "out"
        ),
        "validation_images": names["val"],
        "n_train": args.n_train,
        "n_val": args.n_val,
    }
    models = {}
    # the same budget for every network
    budget = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    budget["progress"] = False
    paper = {"arch": "paper", "pretrain_epochs": args.pretrain_epochs, **budget}
    if args.only in (None, "classifier"):
        rows = []
        for input_kind in ("raw", "spectrum"):
            for pre in (False, True):
                t0 = time.perf_counter()
                model, m = fit_classifier(
                    train, val, input_kind=input_kind, pretraining=pre, **paper
                )
                models[(input_kind, pre)] = model
                row = {
                    "input": input_kind,
                    "pretraining": pre,
                    "train_seconds": round(time.perf_counter() - t0, 1),
                }
                row |= {k: v for k, v in m.items() if k != "pretraining"}
                rows.append(row)
                print(
                    json.dumps({k: row[k] for k in ("input", "pretraining", "val_patch_accuracy")}),
                    flush=True,
                )
        t0 = time.perf_counter()
        _, m = fit_classifier(train, val, arch="cnn", **budget)
        row = {
            "arch": "cnn",
            "input": "patch (pixels + spectrum)",
            "pretraining": False,
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row | {k: v for k, v in m.items() if k != "pretraining"})
        print(json.dumps({k: rows[-1][k] for k in ("arch", "val_patch_accuracy")}), flush=True)
        results["classifier"] = rows
        out_path.write_text(json.dumps(results, indent=2) + "\n")
    if args.only in (None, "grnn"):
        if ("spectrum", True) in models:
            classifier = models[("spectrum", True)]
        else:  # the 'hidden' feature is the paper network's 30-d layer: train one
            classifier, _ = fit_classifier(train, val, **paper)
        rows = []
        for feature in ("profile", "hidden"):
            est = BlurEstimator(classifier, grnn_feature=feature)
            t0 = time.perf_counter()
            fit_grnns(est, train)
            errs = param_errors(est, grnn_arrays(est, val))
            rows.append(
                {"feature": feature, "fit_seconds": round(time.perf_counter() - t0, 1), **errs}
            )
            print(json.dumps(rows[-1]), flush=True)
        results["grnn_features"] = rows
        out_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)  # the CPU is shared: one thread wastes no time waiting
    main()

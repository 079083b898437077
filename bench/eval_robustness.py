"""Blur robustness of a small classifier: no augmentation, blur augmentation, deblur-first.

The task: tell which of the 13 photographs inside ``skimage.data`` a 32×32 gray patch comes
from. Each patch is standardised (zero mean, unit contrast) inside the model, so the classes
differ by texture, which is what blur removes. Training patches come from the left 70 % of each
photo, test patches from the right 30 % (no overlap).

Three curves of accuracy versus strength, for Gaussian, motion and defocus blur:

* ``plain`` — trained on sharp patches;
* ``augmented`` — the same network trained with :class:`fastdeblur.augment.RandomBlur`
  (p = 0.5) over the evaluated strength range;
* ``deblur_first`` — the plain network behind :func:`fastdeblur.deblur`, with the true kernel
  and blind (skipped, with a note, when this installation has no ``fastdeblur.deblur``);
* ``deconvolve_true_kernel`` — the plain network behind a Tikhonov deconvolution with the true
  kernel (conjugate gradients, local to this script), a reference point for non-blind
  deblurring; and the augmented network behind it.

Writes ``bench/results/robustness.json`` and, when matplotlib is installed,
``bench/results/robustness.png``. A few CPU minutes::

    PYTHONPATH=. python bench/eval_robustness.py [--steps 2000] [--threads 1] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from bench._timing import machine
from fastdeblur.augment import RandomBlur, RandomDefocusBlur, RandomGaussianBlur, RandomMotionBlur
from fastdeblur.convolution import convolve
from fastdeblur.robustness import evaluate, minimal_blur_distribution
from fastdeblur.robustness.plot import have_matplotlib, plot_curves
from fastdeblur.synth import SKIMAGE_PHOTOS, load_images

HERE = Path(__file__).resolve().parent
PATCH = 32
TRAIN_FRACTION = 0.7
STRENGTHS = {
    "gaussian": [0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
    "motion": [0.0, 3.0, 5.0, 7.0, 9.0, 13.0],
    "defocus": [0.0, 1.0, 1.5, 2.0, 3.0, 4.0],
}


class PatchClassifier(nn.Module):
    """Standardise each patch, then a small strided CNN: ``(B, 1, 32, 32)`` -> logits."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            # a 5x5 first layer sees fine texture before the first subsampling
            nn.Conv2d(1, 16, 5, padding=2, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return self.features((x - mean) / (std + 0.02))


def regions(images: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Left (train) and right (test) parts of each image, split along the columns."""
    train, test = [], []
    for im in images:
        cut = int(im.shape[-1] * TRAIN_FRACTION)
        train.append(im[..., :cut])
        test.append(im[..., cut:])
    return train, test


def random_patches(images: list[torch.Tensor], n: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random patches ``(n, 1, P, P)`` and their source-image labels."""
    labels = torch.randint(len(images), (n,), generator=generator)
    patches = []
    for label in labels.tolist():
        im = images[label]
        H, W = im.shape[-2:]
        top = int(torch.randint(H - PATCH + 1, (), generator=generator))
        left = int(torch.randint(W - PATCH + 1, (), generator=generator))
        patches.append(im[:, top : top + PATCH, left : left + PATCH])
    return torch.stack(patches), labels


def train(images: list[torch.Tensor], steps: int, augment: nn.Module | None, seed: int,
          log_every: int = 100) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    aug_generator = torch.Generator().manual_seed(seed + 1)
    model = PatchClassifier(len(images))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for step in range(steps):
        x, y = random_patches(images, 64, generator)
        if augment is not None:
            x = augment(x, generator=aug_generator)
        loss = loss_fn(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps} loss {loss.item():.3f}", flush=True)
    model.eval()
    return model, time.perf_counter() - start


def deconvolve_true_kernel(images: torch.Tensor, kernels: torch.Tensor | None,
                           weight: float = 1e-3, iterations: int = 40) -> torch.Tensor:
    """Non-blind Tikhonov deconvolution with the true kernels, local to this benchmark.

    Solves ``(AᵀA + weight·I) x = Aᵀy + weight·y`` (least squares, pulled gently towards the
    blurred image where the kernel loses information) by conjugate gradients, where ``A`` is
    exactly the blur that made the images (true convolution, reflect boundary; ``Aᵀ`` by
    autograd), so the boundary is modelled rather than guessed. It stands in for
    ``fastdeblur.deblur`` and shows what non-blind deblurring recovers on these noise-free
    patches.
    """
    if kernels is None:
        raise ValueError("deconvolution needs the true kernels")
    y = images.to(torch.float32)
    k = kernels.to(torch.float32)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return convolve(x, k, boundary="reflect")

    def normal(x: torch.Tensor) -> torch.Tensor:
        _, pullback = torch.func.vjp(forward, x)
        return pullback(forward(x))[0] + weight * x

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=(1, 2, 3), keepdim=True)

    _, pullback = torch.func.vjp(forward, y)
    rhs = pullback(y)[0] + weight * y
    x = y.clone()
    residual = rhs - normal(x)
    direction = residual.clone()
    rr = dot(residual, residual)
    for _ in range(iterations):
        ad = normal(direction)
        alpha = rr / dot(direction, ad).clamp_min(1e-30)
        x = x + alpha * direction
        residual = residual - alpha * ad
        rr_new = dot(residual, residual)
        direction = residual + (rr_new / rr.clamp_min(1e-30)) * direction
        rr = rr_new
    return x.clamp(0, 1).to(images.dtype)


def deblur_available() -> bool:
    try:
        from fastdeblur import deblur  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the trained weights here and reuse them on the next run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    images = load_images(None, gray=True)
    train_images, test_images = regions(images)
    n_test = args.test_per_class * len(test_images)
    test_x, test_y = random_patches(test_images, n_test,
                                    torch.Generator().manual_seed(args.seed + 100))
    test_data = [(test_x[i : i + 128], test_y[i : i + 128]) for i in range(0, n_test, 128)]

    augment = RandomBlur([
        RandomGaussianBlur(sigma=(0.3, 3.0)),
        RandomMotionBlur(length=(2.0, 13.0)),
        RandomDefocusBlur(radius=(0.5, 4.0)),
    ], p=0.5)
    notes: list[str] = []
    trained = {}
    for name, aug in (("plain", None), ("augmented", augment)):
        cached = None if args.cache is None else \
            args.cache / f"robustness_{name}_{args.steps}_{args.seed}.pt"
        if cached is not None and cached.is_file():
            model = PatchClassifier(len(train_images))
            model.load_state_dict(torch.load(cached))
            model.eval()
            state = json.loads(cached.with_suffix(".json").read_text())
            trained[name] = (model, state["train_seconds"])
            print(f"loaded {name} from {cached}", flush=True)
            continue
        print(f"training {name}", flush=True)
        model, seconds = train(train_images, args.steps, aug, args.seed)
        print(f"  {seconds:.0f} s", flush=True)
        trained[name] = (model, seconds)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), cached)
            cached.with_suffix(".json").write_text(json.dumps({"train_seconds": seconds}))
    (plain, plain_s), (augmented, aug_s) = trained["plain"], trained["augmented"]

    curves: dict[str, dict] = {}
    print("evaluating", flush=True)
    curves["plain"] = evaluate(plain, test_data, list(STRENGTHS), STRENGTHS,
                               seed=args.seed).to_dict()
    curves["augmented"] = evaluate(augmented, test_data, list(STRENGTHS), STRENGTHS,
                                   seed=args.seed, reference=curves["plain"]).to_dict()
    if deblur_available():
        for kernel in ("true", "blind"):
            start = time.perf_counter()
            try:
                report = evaluate(plain, test_data, list(STRENGTHS), STRENGTHS, seed=args.seed,
                                  deblur_first=True, deblur_kernel=kernel,
                                  reference=curves["plain"])
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                notes.append(f"deblur_first ({kernel} kernel) failed: {exc}")
                continue
            curves[f"deblur_first_{kernel}"] = report.to_dict()
            curves[f"deblur_first_{kernel}"]["extra"]["seconds"] = time.perf_counter() - start
    else:
        notes.append("deblur-first curves with fastdeblur.deblur skipped: it is not available in "
                     "this build")
    # the benchmark's own non-blind deconvolution with the true kernel, as a reference point
    curves["deconvolve_true_kernel"] = evaluate(
        plain, test_data, list(STRENGTHS), STRENGTHS, seed=args.seed,
        deblur_first=deconvolve_true_kernel, reference=curves["plain"]).to_dict()
    curves["augmented_deconvolve_true_kernel"] = evaluate(
        augmented, test_data, list(STRENGTHS), STRENGTHS, seed=args.seed,
        deblur_first=deconvolve_true_kernel, reference=curves["plain"]).to_dict()

    minimal = {}
    for name, model in (("plain", plain), ("augmented", augmented)):
        minimal[name] = {}
        for blur_type in STRENGTHS:
            dist = minimal_blur_distribution(model, test_data, blur_type,
                                             max_strength=max(STRENGTHS[blur_type]), tol=0.2,
                                             use_labels=False,
                                             seed=args.seed)
            dist.pop("values")
            minimal[name][blur_type] = dist

    result = {
        "task": "13-way source-image classification of 32x32 gray patches (skimage.data "
                "photos; train: left 70% of each photo, test: right 30%)",
        "command": "PYTHONPATH=. python bench/eval_robustness.py "
                   f"--steps {args.steps} --test-per-class {args.test_per_class}",
        "machine": machine() | {"threads": args.threads},
        "classes": list(SKIMAGE_PHOTOS),
        "train_steps": args.steps,
        "batch_size": 64,
        "train_seconds": {"plain": plain_s, "augmented": aug_s},
        "augmentation": repr(augment),
        "n_test": n_test,
        "curves": curves,
        "minimal_blur_measures": "per test patch, the smallest strength that changes the "
                                 "prediction from the one on the sharp patch (bisection, "
                                 "tol 0.2); quantiles over the patches, null = beyond the "
                                 "largest strength evaluated",
        "minimal_blur": minimal,
        "notes": notes,
    }
    (args.out / "robustness.json").write_text(json.dumps(result, indent=1, allow_nan=False,
                                                         default=str))
    if have_matplotlib():
        plot_curves(curves, args.out / "robustness.png",
                    title="13-way patch classification (32x32) under blur")
        print(f"wrote {args.out / 'robustness.png'}")
    else:
        result["notes"].append("no plot: matplotlib is not installed")
        (args.out / "robustness.json").write_text(json.dumps(result, indent=1, allow_nan=False,
                                                             default=str))
    for name, report in curves.items():
        aucs = ", ".join(f"{t} {v:.3f}" for t, v in report["auc"].items())
        clean = report["accuracy"]["gaussian"][0]
        mce = report.get("mce")
        print(f"{name:>22}: clean {clean:.3f}; AUC {aucs}"
              + (f"; mCE {mce:.3f}" if mce is not None and math.isfinite(mce) else ""))
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()

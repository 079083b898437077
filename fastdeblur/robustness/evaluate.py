"""How a classifier degrades under blur, and what deblurring first recovers.

* :func:`evaluate` — accuracy at each blur type and strength, the area under each
  accuracy–strength curve, and the corruption error relative to a reference model
  (ImageNet-C style).
* :func:`minimal_blur` / :func:`minimal_blur_distribution` — the smallest strength that changes
  a prediction, found by bisection, per image and over a dataset.

*Strength* is the main parameter of a blur type, in pixels (Gaussian ``sigma``, motion
``length``, defocus ``radius``, camera-shake trajectory length; for spatially-varying blur
the largest blur extent over the image): see :mod:`fastdeblur.robustness.augment`. The other
parameters (motion direction, shake trajectory, field) are random but reproducible: drawn from a
generator seeded with ``(seed, blur type, batch index)``, the same at every strength, so a curve
moves one knob only. (They therefore depend on how ``data`` is batched.)

Deblur-first (``deblur_first=True``): every blurred batch goes through
:func:`fastdeblur.deblur` before the model. ``deblur_kernel`` says which kernel the deblurrer
gets:

* ``"true"`` — the kernel the images were blurred with (non-blind deconvolution): an upper
  bound of what deblurring can recover, isolating the restoration from kernel estimation;
* ``"blind"`` — none: ``fastdeblur.deblur(method="auto")`` estimates the blur itself, which
  is what a deployed pipeline gets.

Strength 0 goes through the deblurrer too (with an impulse as the true kernel), so the clean
accuracy of a deblur-first pipeline includes whatever deblurring does to sharp images.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fastdeblur.robustness.augment import BLUR_TYPES, blur_at_strengths

__all__ = [
    "DEFAULT_STRENGTHS",
    "RobustnessReport",
    "area_under_curve",
    "corruption_error",
    "evaluate",
    "minimal_blur",
    "minimal_blur_distribution",
]

DEFAULT_STRENGTHS: dict[str, tuple[float, ...]] = {
    "gaussian": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
    "motion": (0.0, 3.0, 5.0, 7.0, 9.0, 13.0, 17.0),
    "defocus": (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    "camera_shake": (0.0, 5.0, 9.0, 13.0, 17.0, 21.0),
    "spatially_varying": (0.0, 3.0, 6.0, 9.0, 12.0, 15.0),
}

DeblurFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class RobustnessReport:
    """What :func:`evaluate` measured.

    Attributes:
        strengths: ``{blur type: [strength, ...]}``.
        accuracy: ``{blur type: [accuracy at each strength]}`` in [0, 1].
        auc: ``{blur type: area under accuracy(strength) / (max - min strength)}``; the mean
            accuracy over the strength range (trapezoidal rule), in [0, 1].
        ce: ``{blur type: corruption error}`` relative to the reference, or ``None``.
        mce: Mean of ``ce`` over the types, or ``None``.
        n_images: Number of images evaluated.
        deblur_first: Whether images were deblurred before the model.
        deblur_kernel: ``"true"``, ``"blind"``, ``"custom"`` or ``None``.
        seed: Seed of the random blur parameters.
    """

    strengths: dict[str, list[float]]
    accuracy: dict[str, list[float]]
    auc: dict[str, float]
    ce: dict[str, float | None] | None = None
    mce: float | None = None
    n_images: int = 0
    deblur_first: bool = False
    deblur_kernel: str | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> dict[str, list[float]]:
        """``{blur type: [1 - accuracy at each strength]}``."""
        return {t: [1.0 - a for a in acc] for t, acc in self.accuracy.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the CLI's ``--json`` report)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobustnessReport:
        """The inverse of :meth:`to_dict` (e.g. a JSON report of a reference model)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- arithmetic -------------------------------------------------------------------------------

def area_under_curve(strengths: Sequence[float], accuracy: Sequence[float]) -> float:
    """Mean accuracy over the strength range: trapezoidal area / (max − min strength).

    Args:
        strengths: Increasing strengths.
        accuracy: Accuracy at each strength.

    Returns:
        A number in the range of ``accuracy``; the accuracy itself for a single strength.
    """
    s = np.asarray(strengths, dtype=np.float64)
    a = np.asarray(accuracy, dtype=np.float64)
    if s.shape != a.shape or s.ndim != 1 or s.size == 0:
        raise ValueError(f"strengths and accuracy must be equal-length non-empty 1-D sequences; "
                         f"got {s.shape} and {a.shape}")
    if s.size == 1:
        return float(a[0])
    order = np.argsort(s, kind="stable")
    s, a = s[order], a[order]
    span = s[-1] - s[0]
    if span == 0:
        return float(a.mean())
    return float(np.sum((s[1:] - s[:-1]) * (a[1:] + a[:-1]) / 2) / span)


def corruption_error(errors: Mapping[str, Sequence[float]],
                     reference_errors: Mapping[str, Sequence[float]],
                     strengths: Mapping[str, Sequence[float]] | None = None,
                     ) -> tuple[dict[str, float | None], float | None]:
    """ImageNet-C corruption error: ``CE_t = Σ_s err_model(t, s) / Σ_s err_ref(t, s)``.

    As in ImageNet-C, the clean condition is left out: when ``strengths`` is given, the
    strength-0 entries are dropped from both sums (unless 0 is the only strength).

    Args:
        errors: ``{blur type: [error rate at each strength]}`` of the model.
        reference_errors: The same for the reference model (same types and lengths).
        strengths: ``{blur type: [strength, ...]}`` to drop the clean entries; optional.

    Returns:
        ``({blur type: CE}, mCE)``; mCE is the mean CE over the types. A type whose reference
        error sum is 0 has CE ``None`` and is left out of the mean (``None`` if no type left).
    """
    ce: dict[str, float | None] = {}
    for blur_type, err in errors.items():
        if blur_type not in reference_errors:
            raise ValueError(f"reference has no errors for blur type {blur_type!r}")
        ref = list(reference_errors[blur_type])
        err = list(err)
        if len(ref) != len(err):
            raise ValueError(f"reference has {len(ref)} strengths for {blur_type!r}, the model "
                             f"{len(err)}")
        if strengths is not None and blur_type in strengths:
            keep = [i for i, s in enumerate(strengths[blur_type]) if s != 0]
            if keep:
                err = [err[i] for i in keep]
                ref = [ref[i] for i in keep]
        ref_sum = float(sum(ref))
        ce[blur_type] = float(sum(err)) / ref_sum if ref_sum > 0 else None
    valid = [v for v in ce.values() if v is not None]
    return ce, (float(np.mean(valid)) if valid else None)


# -- plumbing ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _eval_mode(model: Callable) -> Iterator[None]:
    """Put an ``nn.Module`` in eval mode for the duration, restoring its mode after."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    try:
        model.eval()
    except NotImplementedError:
        # exported programs (torch.export) fix their mode when exported and refuse eval()
        yield
        return
    try:
        yield
    finally:
        model.train(was_training)


def _model_device(model: Callable) -> torch.device:
    if isinstance(model, nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return torch.device("cpu")


def _predict(model: Callable, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels ``(B,)`` from logits ``(B, K)`` or labels ``(B,)``."""
    try:
        out = model(x)
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        # TorchScript puts the cause on the last line of a long message; an exported program
        # with a fixed batch size fails a guard (AssertionError)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = lines[-1] if lines else type(exc).__name__
        raise RuntimeError(f"model failed on images of shape {tuple(x.shape)}: {cause}"
                           ) from exc
    if isinstance(out, tuple | list):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return a tensor of logits; got {type(out).__name__}")
    if out.ndim == 2:
        return out.argmax(dim=1)
    if out.ndim == 1 and not out.is_floating_point():
        return out
    raise ValueError(f"model output must be logits (B, classes) or labels (B,); got shape "
                     f"{tuple(out.shape)} {out.dtype}")


def _iter_batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images (B, C, H, W), labels (B,))`` from a Dataset of pairs or an iterable of batches."""
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        n = len(data)
        for start in range(0, n, batch_size):
            items = [data[i] for i in range(start, min(n, start + batch_size))]
            shapes = {tuple(torch.as_tensor(item[0]).shape) for item in items}
            if len(shapes) > 1:
                sizes = ", ".join(map(str, sorted(shapes)))
                raise ValueError(f"data images differ in size ({sizes}); resize them to one "
                                 "size (the CLI's --size)")
            images = torch.stack([torch.as_tensor(item[0]) for item in items])
            labels = torch.as_tensor([int(item[1]) for item in items])
            yield images, labels
        return
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a Dataset of (image, label) or an iterable of (images, "
                        f"labels) batches; got {type(data).__name__}")
    for batch in data:
        if not (isinstance(batch, tuple | list) and len(batch) >= 2):
            raise ValueError("data must yield (images, labels) pairs")
        images, labels = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        if images.ndim == 3:
            images, labels = images.unsqueeze(0), labels.reshape(1)
        yield images, labels.reshape(-1)


def _check_images(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"data images must be float (B, C, H, W); got {tuple(images.shape)} "
                         f"{images.dtype}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"data labels must be (B,) with B = {images.shape[0]}; got "
                         f"{tuple(labels.shape)}")


def _batch_seed(seed: int, type_index: int, batch_index: int) -> int:
    return (seed * 1_000_003 + type_index * 10_007 + batch_index) % (2**63)


def _make_deblur(deblur_first: bool | DeblurFn, deblur_kernel: str, deblur_method: str
                 ) -> tuple[DeblurFn | None, str | None]:
    """The function that deblurs a batch given its true kernels, and its description."""
    if deblur_first is False or deblur_first is None:
        return None, None
    if callable(deblur_first):
        return deblur_first, "custom"
    if deblur_first is not True:
        raise ValueError(f"deblur_first must be a bool or a callable; got {deblur_first!r}")
    if deblur_kernel not in ("true", "blind"):
        raise ValueError(f"deblur_kernel must be 'true' or 'blind'; got {deblur_kernel!r}")
    try:
        from fastdeblur import deblur
    except ImportError:
        raise RuntimeError("deblur_first needs fastdeblur.deblur, which this installation "
                           "lacks") from None

    def run(images: torch.Tensor, kernels: torch.Tensor | None) -> torch.Tensor:
        if deblur_kernel == "blind":
            # fastdeblur.deblur restores one image at a time (its estimate is per image).
            return torch.cat([deblur(images[i : i + 1], method=deblur_method)
                              for i in range(images.shape[0])])
        if kernels is None:
            raise ValueError("deblur_kernel='true' needs one kernel per image; this blur type "
                             "is spatially varying (use deblur_kernel='blind')")
        out = [deblur(images[i : i + 1], method=deblur_method, kernel=kernels[i])
               for i in range(images.shape[0])]
        return torch.cat(out)

    return run, deblur_kernel


def _resolve_types_and_strengths(blur_types: Sequence[str] | str,
                                 strengths: Sequence[float] | Mapping[str, Sequence[float]] | None,
                                 ) -> dict[str, list[float]]:
    if isinstance(blur_types, str):
        blur_types = [blur_types]
    if not blur_types:
        raise ValueError("blur_types must name at least one blur type")
    out: dict[str, list[float]] = {}
    for t in blur_types:
        if t not in BLUR_TYPES:
            raise ValueError(f"blur type must be one of {', '.join(BLUR_TYPES)}; got {t!r}")
        if strengths is None:
            values = DEFAULT_STRENGTHS[t]
        elif isinstance(strengths, Mapping):
            if t not in strengths:
                raise ValueError(f"strengths has no entry for blur type {t!r}")
            values = strengths[t]
        else:
            values = strengths
        values = [float(v) for v in values]
        if not values or any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"strengths for {t!r} must be non-empty, finite and >= 0; "
                             f"got {values}")
        out[t] = sorted(values)
    return out


def _deblurred(x: torch.Tensor, kernels: torch.Tensor | None, deblur: DeblurFn | None
               ) -> torch.Tensor:
    return x if deblur is None else deblur(x, kernels).to(x.dtype)


# -- evaluation -------------------------------------------------------------------------------

def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    data: Any,
    blur_types: Sequence[str] | str = ("gaussian", "motion", "defocus"),
    strengths: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    *,
    reference: RobustnessReport | Mapping[str, Any] | Callable | None = None,
    deblur_first: bool | DeblurFn = False,
    deblur_kernel: str = "true",
    deblur_method: str = "auto",
    batch_size: int = 64,
    device: torch.device | str | None = None,
    seed: int = 0,
    boundary: str = "reflect",
    on_batch: Callable[[int], None] | None = None,
) -> RobustnessReport:
    """Accuracy of ``model`` under each blur type and strength.

    Args:
        model: Maps images ``(B, C, H, W)`` to logits ``(B, classes)`` (or labels ``(B,)``).
            An ``nn.Module`` is put in eval mode for the evaluation (and restored).
        data: A ``Dataset`` of ``(image (C, H, W), label)`` pairs, or an iterable of
            ``(images (B, C, H, W), labels (B,))`` batches (a ``DataLoader``); images in [0, 1].
            Iterated once.
        blur_types: Types from :data:`fastdeblur.robustness.augment.BLUR_TYPES`.
        strengths: Strengths for every type, or ``{type: strengths}``; default
            :data:`DEFAULT_STRENGTHS`.
        reference: The reference for the corruption error: a :class:`RobustnessReport` (or its
            dict / JSON form) measured with the same types and strengths, or a model to evaluate
            here on the same data (without deblurring). ``None``: no CE.
        deblur_first: Deblur the blurred images with :func:`fastdeblur.deblur` before the
            model; or a callable ``(images, kernels or None) -> images`` to use instead.
        deblur_kernel: ``"true"`` (non-blind, with the kernel used to blur) or ``"blind"``.
        deblur_method: ``method`` passed to :func:`fastdeblur.deblur`.
        batch_size: Batch size when ``data`` is a Dataset.
        device: Where to run; default the model's device.
        seed: Seed of the random blur parameters.
        boundary: Boundary mode of the blur.
        on_batch: Called with the number of images after each batch (progress bars).

    Returns:
        A :class:`RobustnessReport`.
    """
    plan = _resolve_types_and_strengths(blur_types, strengths)
    deblur, deblur_desc = _make_deblur(deblur_first, deblur_kernel, deblur_method)
    reference_model = reference if callable(reference) and not isinstance(
        reference, RobustnessReport | Mapping) else None
    dev = torch.device(device) if device is not None else _model_device(model)
    correct = {t: np.zeros(len(s), dtype=np.int64) for t, s in plan.items()}
    ref_correct = {t: np.zeros(len(s), dtype=np.int64) for t, s in plan.items()}
    total = 0
    with _eval_mode(model), (_eval_mode(reference_model) if reference_model is not None
                             else contextlib.nullcontext()), torch.no_grad():
        for batch_index, (images, labels) in enumerate(_iter_batches(data, batch_size)):
            _check_images(images, labels)
            images, labels = images.to(dev), labels.to(dev)
            for type_index, (blur_type, values) in enumerate(plan.items()):
                for j, s in enumerate(values):
                    generator = torch.Generator().manual_seed(
                        _batch_seed(seed, type_index, batch_index))
                    blurred, kernels = blur_at_strengths(images, blur_type, s,
                                                         generator=generator, boundary=boundary)
                    pred = _predict(model, _deblurred(blurred, kernels, deblur))
                    correct[blur_type][j] += int((pred == labels).sum())
                    if reference_model is not None:
                        ref_pred = _predict(reference_model, blurred)
                        ref_correct[blur_type][j] += int((ref_pred == labels).sum())
            total += images.shape[0]
            if on_batch is not None:
                on_batch(images.shape[0])
    if total == 0:
        raise ValueError("data is empty: no image to evaluate")
    accuracy = {t: (c / total).tolist() for t, c in correct.items()}
    auc = {t: area_under_curve(plan[t], accuracy[t]) for t in plan}
    report = RobustnessReport(strengths=plan, accuracy=accuracy, auc=auc, n_images=total,
                              deblur_first=deblur is not None, deblur_kernel=deblur_desc,
                              seed=seed)
    if reference is not None:
        if reference_model is not None:
            ref_errors = {t: (1.0 - c / total).tolist() for t, c in ref_correct.items()}
            report.extra["reference_accuracy"] = {t: (c / total).tolist()
                                                  for t, c in ref_correct.items()}
        else:
            ref_report = reference if isinstance(reference, RobustnessReport) else \
                RobustnessReport.from_dict(reference)
            for t in plan:
                if ref_report.strengths.get(t) is not None and \
                        [float(v) for v in ref_report.strengths[t]] != plan[t]:
                    raise ValueError(f"reference was measured at other strengths for {t!r}: "
                                     f"{ref_report.strengths[t]} vs {plan[t]}")
            ref_errors = ref_report.errors
        report.ce, report.mce = corruption_error(report.errors, ref_errors, plan)
    return report


# -- minimal blur -----------------------------------------------------------------------------

def _bisect(model: Callable, images: torch.Tensor, targets: torch.Tensor, blur_type: str,
            max_strength: float, tol: float, seed: int, boundary: str,
            deblur: DeblurFn | None) -> torch.Tensor:
    """Per-sample smallest strength in ``[0, max_strength]`` whose prediction is not ``target``.

    Returns ``(B,)`` float64 CPU: 0 where the unblurred prediction already differs, ``inf``
    where even ``max_strength`` does not change it, else the upper end of a bracket of width
    at most ``tol`` around the change.
    """
    B = images.shape[0]

    def changed(strengths: torch.Tensor) -> torch.Tensor:
        # a fresh generator with the same seed: the same directions/trajectories every time
        generator = torch.Generator().manual_seed(seed)
        blurred, kernels = blur_at_strengths(images, blur_type, strengths, generator=generator,
                                             boundary=boundary)
        pred = _predict(model, _deblurred(blurred, kernels, deblur))
        return (pred != targets).cpu()

    lo = torch.zeros(B, dtype=torch.float64)
    hi = torch.full((B,), float(max_strength), dtype=torch.float64)
    at_zero = changed(lo)
    at_max = changed(hi)
    steps = max(0, math.ceil(math.log2(max_strength / tol))) if max_strength > 0 else 0
    active = ~at_zero & at_max
    for _ in range(steps):
        if not bool(active.any()):
            break
        mid = torch.where(active, (lo + hi) / 2, lo)
        flip = changed(mid)
        hi = torch.where(active & flip, mid, hi)
        lo = torch.where(active & ~flip, mid, lo)
    result = torch.where(at_zero, torch.zeros_like(hi), hi)
    return torch.where(~at_zero & ~at_max, torch.full_like(hi, math.inf), result)


def _max_strength(blur_type: str, max_strength: float | None) -> float:
    if blur_type not in BLUR_TYPES:
        raise ValueError(f"blur_type must be one of {', '.join(BLUR_TYPES)}; got {blur_type!r}")
    value = max(DEFAULT_STRENGTHS[blur_type]) if max_strength is None else float(max_strength)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"max_strength must be a finite number > 0; got {max_strength!r}")
    return value


def minimal_blur(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    label: int | None = None,
    blur_type: str = "gaussian",
    *,
    max_strength: float | None = None,
    tol: float = 0.05,
    seed: int = 0,
    deblur_first: bool | DeblurFn = False,
    deblur_kernel: str = "true",
    deblur_method: str = "auto",
    boundary: str = "reflect",
    device: torch.device | str | None = None,
) -> float:
    """The smallest blur strength that changes the model's prediction on one image.

    Bisection on ``[0, max_strength]``: assumes that once the prediction has changed it stays
    changed at larger strengths (if not, one change point is found, within ``tol``).

    Args:
        model: As for :func:`evaluate`.
        image: ``(C, H, W)`` in [0, 1].
        label: The prediction must differ from this label; default: from the prediction on
            the unblurred image.
        blur_type: One of :data:`fastdeblur.robustness.augment.BLUR_TYPES`.
        max_strength: Upper end of the search (default the largest of
            :data:`DEFAULT_STRENGTHS` for the type).
        tol: Width of the final bracket, in strength units (> 0).
        seed: Seed of the other random parameters (motion direction, ...).
        deblur_first, deblur_kernel, deblur_method: As for :func:`evaluate`.
        boundary: Boundary mode of the blur.
        device: Where to run; default the model's device.

    Returns:
        The strength (the upper end of the final bracket, at most ``tol`` above the change);
        0.0 if the unblurred prediction already differs from ``label``; ``math.inf`` if even
        ``max_strength`` leaves the prediction unchanged.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(f"image must be a (C, H, W) tensor; got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else image!r}")
    labels = None if label is None else torch.tensor([int(label)])
    values = _minimal_blur_batch(model, image.unsqueeze(0), labels, blur_type,
                                 max_strength=max_strength, tol=tol, seed=seed,
                                 deblur_first=deblur_first, deblur_kernel=deblur_kernel,
                                 deblur_method=deblur_method, boundary=boundary, device=device)
    return float(values[0])


def _minimal_blur_batch(model: Callable, images: torch.Tensor, labels: torch.Tensor | None,
                        blur_type: str, *, max_strength: float | None, tol: float, seed: int,
                        deblur_first: bool | DeblurFn, deblur_kernel: str, deblur_method: str,
                        boundary: str, device: torch.device | str | None) -> torch.Tensor:
    limit = _max_strength(blur_type, max_strength)
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0; got {tol!r}")
    deblur, _ = _make_deblur(deblur_first, deblur_kernel, deblur_method)
    dev = torch.device(device) if device is not None else _model_device(model)
    images = images.to(dev)
    with _eval_mode(model), torch.no_grad():
        targets = _predict(model, images) if labels is None else labels.to(dev)
        return _bisect(model, images, targets, blur_type, limit, float(tol), seed, boundary,
                       deblur)


def minimal_blur_distribution(
    model: Callable[[torch.Tensor], torch.Tensor],
    data: Any,
    blur_type: str = "gaussian",
    *,
    max_strength: float | None = None,
    tol: float = 0.05,
    bins: int = 10,
    use_labels: bool = True,
    batch_size: int = 64,
    seed: int = 0,
    deblur_first: bool | DeblurFn = False,
    deblur_kernel: str = "true",
    deblur_method: str = "auto",
    boundary: str = "reflect",
    device: torch.device | str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """:func:`minimal_blur` over a dataset (batched: all images of a batch bisect together).

    Args:
        model, data: As for :func:`evaluate`.
        blur_type, max_strength, tol, seed, deblur_first, deblur_kernel, deblur_method,
        boundary, device: As for :func:`minimal_blur`.
        bins: Number of histogram bins over ``[0, max_strength]``.
        use_labels: Measure against the labels (an image the model already gets wrong counts
            0); else against the prediction on the unblurred image.
        batch_size: Batch size when ``data`` is a Dataset.
        on_batch: Called with the number of images after each batch.

    Returns:
        ``{"blur_type", "max_strength", "tol", "values": [per image, inf = never],
        "n", "never_changed": fraction with inf, "median", "q1", "q3"`` (quantiles over all
        images, inf counting as larger than any strength; ``None`` when infinite),
        ``"histogram": {"edges": [...], "counts": [...]}`` of the finite values``}``.
    """
    limit = _max_strength(blur_type, max_strength)
    values: list[torch.Tensor] = []
    for batch_index, (images, labels) in enumerate(_iter_batches(data, batch_size)):
        _check_images(images, labels)
        values.append(_minimal_blur_batch(
            model, images, labels if use_labels else None, blur_type, max_strength=limit,
            tol=tol, seed=_batch_seed(seed, BLUR_TYPES.index(blur_type), batch_index),
            deblur_first=deblur_first, deblur_kernel=deblur_kernel,
            deblur_method=deblur_method, boundary=boundary, device=device))
        if on_batch is not None:
            on_batch(images.shape[0])
    if not values:
        raise ValueError("data is empty: no image to evaluate")
    v = torch.cat(values).numpy()
    finite = v[np.isfinite(v)]

    def quantile(q: float) -> float | None:
        # inverted_cdf picks an actual value (no interpolation with inf)
        x = float(np.quantile(v, q, method="inverted_cdf"))
        return x if math.isfinite(x) else None

    counts, edges = np.histogram(finite, bins=bins, range=(0.0, limit))
    return {
        "blur_type": blur_type,
        "max_strength": limit,
        "tol": float(tol),
        "values": [float(x) if math.isfinite(x) else math.inf for x in v],
        "n": int(v.size),
        "never_changed": float(np.mean(~np.isfinite(v))),
        "median": quantile(0.5),
        "q1": quantile(0.25),
        "q3": quantile(0.75),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }

"""``fastdeblur robustness``: accuracy of a classifier versus blur strength."""

from __future__ import annotations

import json
import math
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
import typer

from fastdeblur.cli._common import CLIError, cli_errors, console, one_line, progress


class DeblurKernel(StrEnum):
    true = "true"
    blind = "blind"


def load_model(path: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A TorchScript (``.pt``/any suffix) or exported-program (``.pt2``) classifier.

    Raises:
        CLIError: the file is missing or is neither kind (one line).
    """
    if not path.is_file():
        raise CLIError(f"--model: {path} is not a file")
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module().to(device)
        except Exception as exc:  # any failure to load is the file's fault
            raise CLIError(f"--model: cannot load {path} as an exported program (.pt2): "
                           f"{one_line(exc)}") from None
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, but models exist as .pt
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise CLIError(f"--model: cannot load {path} as a TorchScript model (save it with "
                       f"torch.jit.save, or torch.export.save as .pt2): {one_line(exc)}"
                       ) from None


def _split(values: list[str] | None) -> list[str]:
    """Repeated and/or comma-separated option values, flattened."""
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out


def _parse_size(size: str | None) -> tuple[int, int] | None:
    if size is None:
        return None
    parts = size.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise CLIError(f"--size must be N or HxW with positive integers; got {size!r}")
    return h, w


def _json_safe(value: Any) -> Any:
    """inf / nan -> None, recursively (JSON has no infinities)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def register(app: typer.Typer) -> None:
    """Add ``robustness`` to the CLI."""

    @app.command("robustness")
    @cli_errors
    def robustness(
        model: Path = typer.Option(..., "--model", "-m",
                                   help="Classifier: TorchScript (.pt) or exported program "
                                        "(.pt2); images (B, C, H, W) in [0, 1] -> logits."),
        data: Path = typer.Option(..., "--data", "-d",
                                  help="ImageFolder layout: DIR/<class>/<image>."),
        types: list[str] = typer.Option(
            ["gaussian,motion,defocus"], "--types", "-t",
            help="Blur types (comma-separated or repeated): gaussian, motion, defocus, "
                 "camera_shake, spatially_varying."),
        strengths: list[str] = typer.Option(
            None, "--strengths", "-s",
            help="Strengths for every type (comma-separated or repeated); default per type "
                 "(Gaussian sigma, motion length, defocus radius, in px)."),
        plot: Path | None = typer.Option(None, "--plot", help="Write the curves to this image "
                                                              "(needs matplotlib)."),
        json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
        deblur_first: bool = typer.Option(False, "--deblur-first",
                                          help="Deblur with fastdeblur.deblur before the model."),
        deblur_kernel: DeblurKernel = typer.Option(
            DeblurKernel.true, "--deblur-kernel",
            help="With --deblur-first: 'true' gives the deblurrer the kernel used to blur "
                 "(non-blind); 'blind' lets it estimate the blur."),
        reference: Path | None = typer.Option(
            None, "--reference",
            help="JSON report of a reference model (same types and strengths) for the "
                 "corruption error (CE, mCE)."),
        gray: bool = typer.Option(False, "--gray", help="Read images as one channel."),
        size: str | None = typer.Option(None, "--size", help="Resize images to N or HxW."),
        batch_size: int = typer.Option(32, "--batch-size", min=1),
        seed: int = typer.Option(0, "--seed", help="Seed of the random blur parameters."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    ) -> None:
        """Accuracy of a classifier versus blur strength, per blur type (and its area under
        the curve); optionally after deblurring."""
        from fastdeblur.robustness import ImageFolder, RobustnessReport, evaluate
        from fastdeblur.robustness.augment import BLUR_TYPES
        from fastdeblur.robustness.plot import MISSING, have_matplotlib, plot_curves

        # every argument is checked before the (long) evaluation starts
        if plot is not None and not have_matplotlib():
            raise CLIError(f"--plot: {MISSING}")
        type_list = _split(types)
        for t in type_list:
            if t not in BLUR_TYPES:
                raise CLIError(f"--types: unknown blur type {t!r} (choose from "
                               f"{', '.join(BLUR_TYPES)})")
        if not type_list:
            raise CLIError("--types: give at least one blur type")
        strength_list = None
        if strengths:
            try:
                strength_list = [float(v) for v in _split(strengths)]
            except ValueError:
                raise CLIError(f"--strengths must be numbers; got {', '.join(strengths)}"
                               ) from None
            if not strength_list or any(not math.isfinite(v) or v < 0 for v in strength_list):
                raise CLIError("--strengths must be finite numbers >= 0")
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise CLIError(f"--device: unknown device {device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CLIError(f"--device {device}: CUDA is not available")
        ref_report = None
        if reference is not None:
            try:
                ref_report = RobustnessReport.from_dict(json.loads(reference.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                raise CLIError(f"--reference: cannot read a report from {reference}: "
                               f"{one_line(exc)}") from None
        if deblur_first:
            try:
                from fastdeblur import deblur  # noqa: F401
            except ImportError:
                raise CLIError("--deblur-first needs fastdeblur.deblur, which this "
                               "installation lacks") from None
        dataset = ImageFolder(data, gray=gray, size=_parse_size(size))
        net = load_model(model, dev)

        with progress() as bar:
            task = bar.add_task("evaluating", total=len(dataset))
            report = evaluate(
                net, dataset, type_list, strength_list, reference=ref_report,
                deblur_first=deblur_first, deblur_kernel=deblur_kernel.value,
                batch_size=batch_size, device=dev, seed=seed,
                on_batch=lambda n: bar.advance(task, n))

        from rich.table import Table

        table = Table(title=f"accuracy of {model.name} on {report.n_images} images "
                            f"({len(dataset.classes)} classes)"
                            + (f", deblurred first ({report.deblur_kernel} kernel)"
                               if report.deblur_first else ""))
        table.add_column("blur type")
        table.add_column("strength → accuracy")
        table.add_column("AUC", justify="right")
        if report.ce is not None:
            table.add_column("CE", justify="right")
        for t in report.strengths:
            cells = "  ".join(f"{s:g}: {a:.3f}"
                              for s, a in zip(report.strengths[t], report.accuracy[t],
                                              strict=True))
            row = [t, cells, f"{report.auc[t]:.3f}"]
            if report.ce is not None:
                ce = report.ce.get(t)
                row.append("—" if ce is None else f"{ce:.3f}")
            table.add_row(*row)
        console.print(table)
        if report.mce is not None:
            console.print(f"mCE {report.mce:.3f}")

        if json_out is not None:
            payload = report.to_dict()
            payload.update({"model": str(model), "data": str(data),
                            "classes": dataset.classes})
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(_json_safe(payload), indent=1, allow_nan=False))
            console.print(f"wrote {json_out}")
        if plot is not None:
            plot.parent.mkdir(parents=True, exist_ok=True)
            plot_curves({model.stem: report}, plot, title=f"{model.name} on {data.name}")
            console.print(f"wrote {plot}")

"""``fastdeblur classify``: the blur type and parameters of images, and a blur-map overlay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import typer

from fastdeblur.cli._common import CLIError, cli_errors, console


def read_image(path: Path) -> tuple[torch.Tensor, str | None]:
    """An image file as float ``(C, H, W)`` in [0, 1] (8- or 16-bit; alpha dropped) and its
    format (PIL's name: ``"JPEG"``, ``"PNG"``, ...)."""
    from PIL import Image

    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            fmt = im.format
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise CLIError(f"{path}: cannot read image ({exc})") from None
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return (t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()), fmt


def _map_path(map_option: Path, image: Path, many: bool) -> Path:
    """``--map`` as given for one image; ``<stem>.<image stem>.png`` beside it for several."""
    if not many:
        return map_option
    return map_option.with_name(f"{map_option.stem}.{image.stem}{map_option.suffix or '.png'}")


def register(app: typer.Typer) -> None:
    """Add ``classify`` to the CLI."""

    @app.command("classify")
    @cli_errors
    def classify_command(
        images: list[Path] = typer.Argument(..., help="Blurred images (PNG, JPEG, TIFF, ...)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per image."),
        map_png: Path = typer.Option(
            None,
            "--map",
            help="Write a colour overlay of the blur map (several images: map.<name>.png).",
        ),
        weights: Path = typer.Option(
            None, "--weights", help="Folder with blur_classifier.safetensors and the GRNNs."
        ),
        stride: int = typer.Option(None, "--stride", help="Patch grid step (default 32)."),
        types_only: bool = typer.Option(
            False, "--types-only", help="Classify only (skip the parameter regression)."
        ),
    ) -> None:
        """Estimate how each image is blurred: type (gaussian, motion, defocus), parameters,
        confidence."""
        from fastdeblur.estimate import BlurEstimator

        if stride is not None and stride < 1:
            raise CLIError(f"--stride must be >= 1; got {stride}")
        estimator = BlurEstimator.load(weights, with_grnn=not types_only)
        for path in images:
            image, fmt = read_image(path)
            # JPEG: the verdict leaves out the spectrum classifier (never trained on JPEGs)
            result = estimator.estimate(image, stride=stride, params=not types_only,
                                        compressed=fmt == "JPEG")
            record = {
                "file": str(path),
                "blur_type": result.blur_type,
                "params": {k: round(v, 3) for k, v in result.params.items()},
                "confidence": round(result.confidence, 3),
            }
            if as_json:
                typer.echo(json.dumps(record))
            else:
                params = ", ".join(f"{k}={v:.2f}" for k, v in result.params.items())
                console.print(
                    f"{path}: [bold]{result.blur_type}[/] {params} "
                    f"(confidence {result.confidence:.2f})",
                    highlight=False,
                )
                for w in result.warnings:
                    console.print(f"  [yellow]note:[/] {w}", highlight=False)
            if map_png is not None:
                from fastdeblur.estimate.overlay import render_map

                out = _map_path(map_png, path, len(images) > 1)
                render_map(image, result.map).save(out)
                if not as_json:
                    console.print(f"  wrote {out}", highlight=False)

"""``fastdeblur classify``: the blur type and parameters of images, and a blur-map overlay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from fastdeblur.cli._common import CLIError, cli_errors, console


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
        force: bool = typer.Option(False, "--force", help="Overwrite existing --map files."),
        allow_huge: bool = typer.Option(
            False, "--allow-huge", help="Lift the decompression-bomb limit on input size."
        ),
    ) -> None:
        """Estimate how each image is blurred: type (gaussian, motion, defocus), parameters,
        confidence."""
        from fastdeblur import io
        from fastdeblur.estimate import BlurEstimator

        if stride is not None and stride < 1:
            raise CLIError(f"--stride must be >= 1; got {stride}")
        map_paths = {}
        if map_png is not None:
            map_paths = {path: _map_path(map_png, path, len(images) > 1) for path in images}
            if map_png.suffix.lower() not in io.SUPPORTED_SUFFIXES:
                raise CLIError(f"{map_png}: the map is an image; use one of "
                               f"{', '.join(io.SUPPORTED_SUFFIXES)}")
            # Refused before any work: a run never stops half-way over an existing map.
            existing = [str(m) for m in map_paths.values() if m.exists()]
            if existing and not force:
                raise CLIError(f"{existing[0]}: exists; overwrite with --force")
        estimator = BlurEstimator.load(weights, with_grnn=not types_only)
        for path in images:
            data = io.read(path, allow_huge=allow_huge)
            image = data.pixels
            # JPEG: the estimator's verdict for compressed images
            result = estimator.estimate(image, stride=stride, params=not types_only,
                                        compressed=data.format == "JPEG")
            record = {
                "file": str(path),
                "blur_type": result.blur_type,
                "params": {k: round(v, 3) for k, v in result.params.items()},
                "confidence": round(result.confidence, 3),
            }
            if result.shake_probability is not None:
                record["shake_probability"] = round(result.shake_probability, 3)
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

                out = map_paths[path]
                overlay = np.asarray(render_map(image, result.map)).transpose(2, 0, 1) / 255.0
                io.write(out, overlay, source=path, force=force)
                if not as_json:
                    console.print(f"  wrote {out}", highlight=False)

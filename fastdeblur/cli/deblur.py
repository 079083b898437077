"""``fastdeblur deblur``: remove the blur from images (files and folders)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
import typer

from fastdeblur.cli._common import CLIError, cli_errors, console, progress


class Method(StrEnum):
    auto = "auto"
    wiener = "wiener"
    rl = "rl"
    hyperlaplacian = "hyperlaplacian"
    nafnet = "nafnet"


class BlindKernel(StrEnum):
    auto = "auto"
    parametric = "parametric"
    shake = "shake"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _per_image_path(template: Path, image: Path, several: bool) -> Path:
    """``template`` itself for one input; ``NAME.<template name>`` beside it for several."""
    return template.with_name(f"{image.stem}.{template.name}") if several else template


def _output_path(output: Path | None, image: Path, several: bool) -> Path:
    from fastdeblur import io

    if output is None:
        return io.default_output_path(image, tag="deblurred")
    if several or output.is_dir():
        return output / io.default_output_path(image.name, tag="deblurred")
    return output


def _save_kernel(path: Path, kernel: object, force: bool) -> None:
    """One kernel through ``io.write_kernel``; a grid of kernels as its ``.npy`` array."""
    from fastdeblur import io

    if getattr(kernel, "ndim", 2) == 2:
        io.write_kernel(path, kernel, force=force)
        return
    if path.exists() and not force:
        raise CLIError(f"{path}: exists; overwrite with --force")
    np.save(path, np.asarray(kernel, dtype=np.float64))


def _save_map(path: Path, estimate: object, force: bool) -> None:
    if path.exists() and not force:
        raise CLIError(f"{path}: exists; overwrite with --force")
    blur_map = getattr(estimate, "map", None)
    if blur_map is None:
        raise CLIError("the blur estimate has no map to save")
    if path.suffix.lower() != ".npz":
        raise CLIError(f"{path}: the blur map is saved as .npz")
    arrays = {}
    if isinstance(blur_map, dict):
        for key, value in blur_map.items():
            arrays[str(key)] = np.asarray(value.cpu() if hasattr(value, "cpu") else value)
    else:
        arrays["map"] = np.asarray(blur_map.cpu() if hasattr(blur_map, "cpu") else blur_map)
    np.savez(path, **arrays)


def register(app: typer.Typer) -> None:
    """Add ``deblur`` to the CLI."""

    @app.command("deblur")
    @cli_errors
    def deblur_command(
        inputs: list[Path] = typer.Argument(..., help="Images and/or folders of images."),
        output: Path = typer.Option(
            None, "--output", "-o",
            help="Output file (one input) or folder (several); default NAME.deblurred.EXT "
            "beside each input.",
        ),
        method: Method = typer.Option(Method.auto, "--method", "-m", case_sensitive=False,
                                      help="auto: blind, tries the estimated kernels and "
                                      "falls back to nafnet when none fits (or the given "
                                      "kernel with hyperlaplacian); wiener, rl, hyperlaplacian: "
                                      "deconvolution; nafnet: the learned deblurrer."),
        kernel: Path = typer.Option(
            None, "--kernel", "-k",
            help="The blur kernel (.npy, .npz[:NAME] or an image); estimated when omitted.",
        ),
        blind_kernel: BlindKernel = typer.Option(
            BlindKernel.auto, "--blind-kernel", case_sensitive=False,
            help="Without --kernel: auto (a free-form camera-shake kernel is estimated and "
            "tried first when the Gaussian/motion/defocus estimate has low confidence), "
            "parametric (those three families only) or shake (the free-form kernel first).",
        ),
        shake_size: int = typer.Option(
            None, "--shake-size", help="Support of the free-form kernel in pixels (odd, 5-101; "
            "default 31): at least the extent of the blur.",
        ),
        device: Device = typer.Option(Device.auto, "--device", case_sensitive=False),
        save_kernel: Path = typer.Option(
            None, "--save-kernel", help="Save the kernel used (.npy; NAME.F for several inputs)."
        ),
        save_map: Path = typer.Option(
            None, "--save-map", help="Save the estimated blur map (.npz; NAME.F for several)."
        ),
        tile: int = typer.Option(
            None, "--tile", help="Process in overlapping tiles of N pixels (bounded memory)."
        ),
        noise: float = typer.Option(
            None, "--noise", help="Noise sigma (0-1 units); estimated when omitted."
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
        allow_huge: bool = typer.Option(
            False, "--allow-huge", help="Lift the decompression-bomb limit on input size."
        ),
    ) -> None:
        """Remove the blur from images, with a given or an estimated kernel."""
        from fastdeblur import io
        from fastdeblur.restore.pipeline import (
            JPEG_NOISE_FLOOR,
            deblur_with_details,
            estimation_available,
        )

        if tile is not None and tile < 16:
            raise CLIError(f"--tile must be at least 16; got {tile}")
        if shake_size is not None:
            from fastdeblur.restore.kernel_estimation import check_size

            try:
                check_size(shake_size)
            except ValueError as error:
                raise CLIError(f"--shake-size: {error}") from None
        if kernel is not None and (blind_kernel != BlindKernel.auto or shake_size is not None):
            raise CLIError("--blind-kernel and --shake-size apply only without --kernel")
        if noise is not None and not 0 <= noise <= 1:
            raise CLIError(f"--noise must be between 0 and 1; got {noise}")
        if save_kernel is not None and save_kernel.suffix.lower() != ".npy":
            raise CLIError(f"{save_kernel}: --save-kernel writes .npy")
        psf = io.read_kernel(kernel) if kernel is not None else None
        if psf is None and not estimation_available():
            raise CLIError("no --kernel given and blur estimation is not available in this "
                           "installation; pass --kernel FILE")
        if save_map is not None and psf is not None:
            raise CLIError("--save-map needs an estimated blur (it does not apply with --kernel)")
        images = io.list_images(inputs)
        if not images:
            raise CLIError("no images found in the given paths")
        several = len(images) > 1
        if output is not None and several:
            if output.exists() and not output.is_dir():
                raise CLIError(f"{output}: several inputs need --output to be a folder")
            output.mkdir(parents=True, exist_ok=True)
        plan = [(image, _output_path(output, image, several)) for image in images]
        if not force:
            existing = [str(out) for _, out in plan if out.exists()]
            if existing:
                raise CLIError(f"{existing[0]}: exists; overwrite with --force")
        with progress() as bar:
            task = bar.add_task("deblurring", total=len(plan))
            for image, out in plan:
                bar.update(task, description=f"deblurring {image.name}")
                data = io.read(image, allow_huge=allow_huge)
                result = deblur_with_details(
                    data.pixels, method=method.value, kernel=psf, device=device.value,
                    noise_sigma=noise, tile=tile,
                    noise_floor=JPEG_NOISE_FLOOR if data.format == "JPEG" else None,
                    blind_kernel=blind_kernel.value, shake_size=shake_size,
                    compressed=data.format == "JPEG",
                )
                io.write(out, result.image, alpha=data.alpha, bit_depth=data.bit_depth,
                         source=image, force=force, icc_profile=data.icc_profile)
                if save_kernel is not None and result.kernel.numel() == 0:
                    console.print(f"{image.name}: no kernel to save ({result.method} ran)",
                                  soft_wrap=True, markup=False)
                elif save_kernel is not None:
                    _save_kernel(_per_image_path(save_kernel, image, several), result.kernel,
                                 force)
                if save_map is not None:
                    _save_map(_per_image_path(save_map, image, several), result.estimate, force)
                bar.advance(task)
                reason = result.details.get("reason", result.method)
                console.print(f"wrote {out} ({reason})", soft_wrap=True, markup=False)

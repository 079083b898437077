"""``fastdeblur blur`` (synthesise a blurred image) and ``fastdeblur psf`` (render a PSF)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
import typer

from fastdeblur.cli._common import CLIError, cli_errors, console


class PSFType(StrEnum):
    gaussian = "gaussian"
    motion = "motion"
    defocus = "defocus"
    kernel = "kernel"


class BoundaryName(StrEnum):
    reflect = "reflect"
    zero = "zero"
    replicate = "replicate"
    circular = "circular"


def build_psf(
    psf_type: PSFType | None,
    sigma: float | None,
    length: float | None,
    angle: float | None,
    radius: float | None,
    kernel: Path | None,
    size: int | None = None,
) -> torch.Tensor:
    """The PSF the options describe; every inconsistent combination is a one-line error."""
    from fastdeblur import io, psf

    given = {
        "--sigma": sigma,
        "--length": length,
        "--angle": angle,
        "--radius": radius,
        "--kernel": kernel,
    }
    if psf_type is None:
        raise CLIError("--type is required (gaussian, motion, defocus or kernel)")
    needs = {
        PSFType.gaussian: ("--sigma",),
        PSFType.motion: ("--length", "--angle"),
        PSFType.defocus: ("--radius",),
        PSFType.kernel: ("--kernel",),
    }[psf_type]
    for name in needs[:1]:  # the first is required; a motion angle defaults to 0
        if given[name] is None:
            raise CLIError(f"--type {psf_type.value} needs {name}")
    extra = [name for name, value in given.items() if value is not None and name not in needs]
    if extra:
        raise CLIError(f"{', '.join(extra)} does not apply to --type {psf_type.value}")
    if length is not None and length < 1:
        raise CLIError(f"--length must be >= 1 pixel; got {length}")
    if psf_type == PSFType.kernel:
        if size is not None:
            raise CLIError("--size does not apply to --type kernel")
        return io.read_kernel(kernel)
    params = {
        PSFType.gaussian: {"sigma": sigma},
        PSFType.motion: {"length": length, "angle": angle or 0.0},
        PSFType.defocus: {"radius": radius},
    }[psf_type]
    return psf.from_params(psf_type.value, params, size=size, dtype=torch.float64)


def _type_option() -> PSFType:
    return typer.Option(None, "--type", "-t", help="PSF model.", case_sensitive=False)


def register(app: typer.Typer) -> None:
    """Add ``blur`` and ``psf`` to the CLI."""

    @app.command("blur")
    @cli_errors
    def blur_command(
        image: Path = typer.Argument(..., help="Sharp input image (PNG, JPEG, TIFF, WebP)."),
        psf_type: PSFType = _type_option(),
        sigma: float = typer.Option(None, "--sigma", help="Gaussian standard deviation (px)."),
        length: float = typer.Option(None, "--length", help="Motion length (px, >= 1)."),
        angle: float = typer.Option(
            None, "--angle", help="Motion angle, degrees counter-clockwise from horizontal."
        ),
        radius: float = typer.Option(None, "--radius", help="Defocus disk radius (px)."),
        kernel: Path = typer.Option(None, "--kernel", help="Kernel file (.npy, .npz, image)."),
        field: str = typer.Option(
            None,
            "--field",
            help="Spatially-varying blur: a kernel field (.npz) or a built-in field name.",
        ),
        noise: float = typer.Option(0.0, "--noise", help="Gaussian noise sigma (0-1 units)."),
        seed: int = typer.Option(None, "--seed", help="Seed of the noise and of random fields."),
        boundary: BoundaryName = typer.Option(BoundaryName.reflect, "--boundary"),
        output: Path = typer.Option(
            None, "--output", "-o", help="Output image (default NAME.blurred.EXT)."
        ),
        save_psf: Path = typer.Option(
            None, "--save-psf", help="Also save the PSF (.npy: values; .png: enlarged view)."
        ),
        force: bool = typer.Option(False, "--force", help="Allow overwriting the input image."),
        allow_huge: bool = typer.Option(
            False, "--allow-huge", help="Lift the decompression-bomb limit on input size."
        ),
    ) -> None:
        """Blur an image with a PSF model, a kernel file or a spatially-varying field."""
        from fastdeblur import io
        from fastdeblur.convolution import add_noise, convolve

        if noise < 0 or noise > 1:
            raise CLIError(f"--noise must be between 0 and 1; got {noise}")
        out = output or io.default_output_path(image, tag="blurred")
        data = io.read(image, allow_huge=allow_huge)
        x = data.pixels.unsqueeze(0).double()
        if field is not None:
            if psf_type is not None or save_psf is not None:
                raise CLIError("--field cannot be combined with --type or --save-psf")
            y = _apply_field(x, field, seed, boundary.value)
            kernel_psf = None
        else:
            kernel_psf = build_psf(psf_type, sigma, length, angle, radius, kernel)
            y = convolve(x, kernel_psf, boundary=boundary.value)
        y = add_noise(y, noise, seed=seed).clamp(0, 1)
        io.write(
            out, y[0].float(), alpha=data.alpha, bit_depth=data.bit_depth, source=image, force=force
        )
        if save_psf is not None and kernel_psf is not None:
            _save_psf(save_psf, kernel_psf, force=force, source=image)
        console.print(f"wrote {out}")

    @app.command("psf")
    @cli_errors
    def psf_command(
        psf_type: PSFType = _type_option(),
        sigma: float = typer.Option(None, "--sigma", help="Gaussian standard deviation (px)."),
        length: float = typer.Option(None, "--length", help="Motion length (px, >= 1)."),
        angle: float = typer.Option(
            None, "--angle", help="Motion angle, degrees counter-clockwise from horizontal."
        ),
        radius: float = typer.Option(None, "--radius", help="Defocus disk radius (px)."),
        kernel: Path = typer.Option(None, "--kernel", help="Kernel file (.npy, .npz, image)."),
        size: int = typer.Option(None, "--size", help="Kernel side (odd); default from the model."),
        scale: int = typer.Option(16, "--scale", help="Enlargement factor of the PNG view."),
        output: Path = typer.Option(..., "--output", "-o", help="psf.png (view) or psf.npy."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    ) -> None:
        """Render a PSF enlarged for viewing (.png) or save its values (.npy)."""
        if size is not None and (size < 1 or size % 2 == 0):
            raise CLIError(f"--size must be a positive odd integer; got {size}")
        if not 1 <= scale <= 64:
            raise CLIError(f"--scale must be between 1 and 64; got {scale}")
        k = build_psf(psf_type, sigma, length, angle, radius, kernel, size=size)
        _save_psf(output, k, force=force, scale=scale)
        console.print(f"wrote {output} ({k.shape[0]}x{k.shape[1]} kernel)")


def _save_psf(
    path: Path, k: torch.Tensor, *, force: bool, source: Path | None = None, scale: int = 16
) -> None:
    from fastdeblur import io, psf

    suffix = path.suffix.lower()
    if suffix == ".npy":
        io.write_kernel(path, k, force=force)
    elif suffix in (".png", ".tif", ".tiff"):
        view = torch.from_numpy(psf.render(k, scale=scale).astype(np.float32) / 255.0)
        io.write(path, view.unsqueeze(0), bit_depth=8, source=source, force=force)
    else:
        raise CLIError(f"{path}: PSF output must be .npy or .png")


def _apply_field(x: torch.Tensor, field: str, seed: int | None, boundary: str) -> torch.Tensor:
    """Blur ``x (1, C, H, W)`` with a stored (.npz) or built-in kernel field."""
    from fastdeblur import fields
    from fastdeblur.spatially_varying import apply_field

    H, W = x.shape[-2:]
    if field.lower().endswith(".npz"):
        stored = fields.load_field(Path(field))
    elif field in fields.FIELD_TYPES:
        grid = fields.make_field(field, H, W, seed=seed if seed is not None else 0)
        stored = fields.KernelField(grid, "pc", tuple(grid.shape[-2:]))
    else:
        raise CLIError(
            f"--field must be a .npz kernel field or one of {', '.join(fields.FIELD_TYPES)};"
            f" got {field!r}"
        )
    return apply_field(x, stored, boundary=boundary)

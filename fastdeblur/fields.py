"""Built-in spatially-varying blur fields, and the stored field format.

A *kernel field* says which blur kernel applies where in an image of size ``H × W``. The
generators here return a grid of kernels ``(gh, gw, kh, kw)`` for the product-convolution
model (:func:`fastdeblur.ops.pc_conv.pc_conv`): kernel ``[a, b]`` is the blur at the centre of
grid cell ``(a, b)``, pixel ``((a + 0.5)·H/gh − 0.5, (b + 0.5)·W/gw − 0.5)``, and the operator
blends neighbouring kernels bilinearly. For the per-pixel model (``sv_conv``) convert with
:func:`fastdeblur.ops.pc_conv.grid_to_pixel_kernels`.

Fields (:data:`FIELD_TYPES`), each reproducible from its ``seed``:

* ``rotation`` — camera roll: motion blur tangential to circles about a centre near the image
  centre, length proportional to the distance from it.
* ``zoom`` — zooming during the exposure: radial motion blur, length proportional to the
  distance from the centre.
* ``defocus_gradient`` — depth-like defocus: a disk whose radius grows linearly across the
  image along a random direction (a tilted plane in front of the lens).
* ``motion_field`` — smoothly varying motion (e.g. a non-rigid scene or a wobbly camera):
  length and angle drawn from smooth random fields.

``strength`` is the largest blur extent in pixels over the image: the longest motion
streak, or the widest defocus disk (diameter).

Stored format (``.npz``): either ``grid_kernels`` ``(gh, gw, kh, kw)`` float32 with
``model="pc"``, or ``kernels`` ``(kh·kw, H, W)`` float32 with ``model="pixel"`` and
``kernel_size=[kh, kw]``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fastdeblur import psf as psf_models

__all__ = [
    "FIELD_MODELS",
    "FIELD_TYPES",
    "KernelField",
    "defocus_gradient_field",
    "load_field",
    "make_field",
    "motion_field",
    "rotation_field",
    "save_field",
    "zoom_field",
]

FIELD_TYPES: tuple[str, ...] = ("rotation", "zoom", "defocus_gradient", "motion_field")
FIELD_MODELS: tuple[str, ...] = ("pc", "pixel")

GridSize = int | tuple[int, int]


class KernelField(NamedTuple):
    """A stored kernel field.

    Attributes:
        kernels: ``(gh, gw, kh, kw)`` for ``model="pc"``, ``(kh·kw, H, W)`` taps-first for
            ``model="pixel"``; float32.
        model: ``"pc"`` (product-convolution over a grid) or ``"pixel"`` (per-pixel kernels).
        kernel_size: ``(kh, kw)``.
    """

    kernels: torch.Tensor
    model: str
    kernel_size: tuple[int, int]


# ---------------------------------------------------------------------------
# geometry helpers
# ---------------------------------------------------------------------------


def _check_size(H: int, W: int) -> None:
    if not (isinstance(H, int) and isinstance(W, int)) or H < 1 or W < 1:
        raise ValueError(f"image size H, W must be positive integers; got {H!r}, {W!r}")


def _grid(grid: GridSize, H: int, W: int) -> tuple[int, int]:
    gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if not (isinstance(gh, int) and isinstance(gw, int)) or gh < 1 or gw < 1:
        raise ValueError(f"grid must be a positive int or (gh, gw); got {grid!r}")
    return min(gh, H), min(gw, W)


def _strength(strength: float) -> float:
    if not isinstance(strength, (int, float)) or not math.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number of pixels >= 0; got {strength!r}")
    return float(strength)


def _kernel_size(kernel_size: int | None, extent: float) -> int:
    """Odd kernel side holding a blur of ``extent`` pixels (with the anti-aliasing margin)."""
    if kernel_size is None:
        return 2 * math.ceil(extent / 2 + 0.5 - 1e-6) + 1
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int; got {kernel_size!r}")
    return kernel_size


def _cell_centres(H: int, W: int, gh: int, gw: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (row, col) of the grid-cell centres, each ``(gh, gw)``."""
    rows = (np.arange(gh) + 0.5) * H / gh - 0.5
    cols = (np.arange(gw) + 0.5) * W / gw - 0.5
    return np.meshgrid(rows, cols, indexing="ij")


def _display_angle(d_row: np.ndarray, d_col: np.ndarray) -> np.ndarray:
    """Angle in degrees, counter-clockwise from the horizontal as displayed (rows grow
    downwards) — the convention of :func:`fastdeblur.psf.motion`."""
    return np.degrees(np.arctan2(-d_row, d_col))


def _motion_grid(lengths: np.ndarray, angles: np.ndarray, ks: int) -> torch.Tensor:
    gh, gw = lengths.shape
    out = torch.empty(gh, gw, ks, ks, dtype=torch.float32)
    for a in range(gh):
        for b in range(gw):
            length = float(min(lengths[a, b], ks - 2)) if ks > 2 else 0.0
            out[a, b] = psf_models.motion(max(length, 0.0), float(angles[a, b]), size=ks,
                                          dtype=torch.float64).float()
    return out


def _random_centre(rng: np.random.Generator, H: int, W: int) -> tuple[float, float]:
    """A centre within ±10% of the image centre."""
    return (H - 1) / 2 + rng.uniform(-0.1, 0.1) * H, (W - 1) / 2 + rng.uniform(-0.1, 0.1) * W


def _max_radius(H: int, W: int, cy: float, cx: float) -> float:
    corners = [(0.0, 0.0), (0.0, W - 1.0), (H - 1.0, 0.0), (H - 1.0, W - 1.0)]
    return max(math.hypot(r - cy, c - cx) for r, c in corners) or 1.0


# ---------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------


def rotation_field(H: int, W: int, *, strength: float = 15.0, grid: GridSize = 8,
                   kernel_size: int | None = None, seed: int | None = 0) -> torch.Tensor:
    """Camera roll during the exposure: tangential motion blur about a centre.

    The rotation centre lies within ±10% of the image centre (drawn from ``seed``); at
    distance ``r`` from it the streak is tangent to the circle and ``strength · r / r_max``
    pixels long, ``r_max`` being the distance to the farthest image corner.

    Args:
        H: Image height.
        W: Image width.
        strength: Longest streak in pixels (at the farthest corner).
        grid: Grid cells ``gh = gw`` or ``(gh, gw)`` (capped at the image size).
        kernel_size: Odd kernel side; default just fits ``strength``.
        seed: Seed of the centre.

    Returns:
        Grid kernels ``(gh, gw, ks, ks)`` float32, each summing to 1.
    """
    _check_size(H, W)
    gh, gw = _grid(grid, H, W)
    strength = _strength(strength)
    ks = _kernel_size(kernel_size, strength)
    rng = np.random.default_rng(seed)
    cy, cx = _random_centre(rng, H, W)
    rows, cols = _cell_centres(H, W, gh, gw)
    d_row, d_col = rows - cy, cols - cx
    radius = np.hypot(d_row, d_col)
    lengths = strength * radius / _max_radius(H, W, cy, cx)
    return _motion_grid(lengths, _display_angle(d_row, d_col) + 90.0, ks)


def zoom_field(H: int, W: int, *, strength: float = 15.0, grid: GridSize = 8,
               kernel_size: int | None = None, seed: int | None = 0) -> torch.Tensor:
    """Zoom during the exposure: radial motion blur, proportional to the distance from the
    zoom centre (within ±10% of the image centre, drawn from ``seed``).

    Args and returns as :func:`rotation_field`; the streak at distance ``r`` points towards
    the centre and is ``strength · r / r_max`` pixels long.
    """
    _check_size(H, W)
    gh, gw = _grid(grid, H, W)
    strength = _strength(strength)
    ks = _kernel_size(kernel_size, strength)
    rng = np.random.default_rng(seed)
    cy, cx = _random_centre(rng, H, W)
    rows, cols = _cell_centres(H, W, gh, gw)
    d_row, d_col = rows - cy, cols - cx
    lengths = strength * np.hypot(d_row, d_col) / _max_radius(H, W, cy, cx)
    return _motion_grid(lengths, _display_angle(d_row, d_col), ks)


def defocus_gradient_field(H: int, W: int, *, strength: float = 15.0, grid: GridSize = 8,
                           kernel_size: int | None = None, seed: int | None = 0,
                           min_fraction: float = 0.1) -> torch.Tensor:
    """Defocus that varies like the depth of a tilted plane: the disk radius grows linearly
    along a random direction (from ``seed``), from ``min_fraction · strength / 2`` on one side
    of the image to ``strength / 2`` (diameter ``strength``) on the other.

    Args:
        H: Image height.
        W: Image width.
        strength: Largest disk diameter in pixels.
        grid: Grid cells ``gh = gw`` or ``(gh, gw)``.
        kernel_size: Odd kernel side; default just fits the largest disk.
        seed: Seed of the direction.
        min_fraction: Smallest radius as a fraction of the largest, in [0, 1].

    Returns:
        Grid kernels ``(gh, gw, ks, ks)`` float32, each summing to 1.
    """
    _check_size(H, W)
    gh, gw = _grid(grid, H, W)
    strength = _strength(strength)
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1]; got {min_fraction!r}")
    ks = _kernel_size(kernel_size, strength)
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    rows, cols = _cell_centres(H, W, gh, gw)
    # Projection of each cell centre on the direction, scaled to [0, 1] over the image.
    proj = (rows - (H - 1) / 2) * math.sin(theta) + (cols - (W - 1) / 2) * math.cos(theta)
    half_span = abs((H - 1) / 2 * math.sin(theta)) + abs((W - 1) / 2 * math.cos(theta))
    t = 0.5 + 0.5 * proj / half_span if half_span > 0 else np.full_like(proj, 0.5)
    r_max = min(strength / 2, (ks - 1) / 2)
    radius = r_max * (min_fraction + (1.0 - min_fraction) * t)
    out = torch.empty(gh, gw, ks, ks, dtype=torch.float32)
    for a in range(gh):
        for b in range(gw):
            out[a, b] = psf_models.defocus(float(radius[a, b]), size=ks,
                                           dtype=torch.float64).float()
    return out


def _smooth_random(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, H: int,
                   W: int, waves: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1]: a few random low-frequency plane waves."""
    field = np.zeros_like(rows)
    scale = max(H, W)
    for _ in range(waves):
        freq = rng.uniform(0.3, 1.5) * 2 * math.pi / scale
        direction = rng.uniform(0, 2 * math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        field += np.cos(freq * (rows * math.sin(direction) + cols * math.cos(direction)) + phase)
    return field / waves


def motion_field(H: int, W: int, *, strength: float = 15.0, grid: GridSize = 8,
                 kernel_size: int | None = None, seed: int | None = 0,
                 angle_spread: float = 60.0) -> torch.Tensor:
    """Smoothly varying linear motion: length in ``[0.25, 1] · strength`` and angle within
    ``± angle_spread`` degrees of a random dominant direction, both from smooth random fields
    (sums of low-frequency plane waves drawn from ``seed``).

    Args:
        H: Image height.
        W: Image width.
        strength: Longest streak in pixels.
        grid: Grid cells ``gh = gw`` or ``(gh, gw)``.
        kernel_size: Odd kernel side; default just fits ``strength``.
        seed: Seed of the fields.
        angle_spread: Largest deviation from the dominant direction, degrees.

    Returns:
        Grid kernels ``(gh, gw, ks, ks)`` float32, each summing to 1.
    """
    _check_size(H, W)
    gh, gw = _grid(grid, H, W)
    strength = _strength(strength)
    ks = _kernel_size(kernel_size, strength)
    rng = np.random.default_rng(seed)
    rows, cols = _cell_centres(H, W, gh, gw)
    base_angle = rng.uniform(0.0, 180.0)
    length_noise = _smooth_random(rng, rows, cols, H, W)
    angle_noise = _smooth_random(rng, rows, cols, H, W)
    lengths = strength * (0.625 + 0.375 * length_noise)
    angles = base_angle + angle_spread * angle_noise
    return _motion_grid(lengths, angles, ks)


_GENERATORS = {
    "rotation": rotation_field,
    "zoom": zoom_field,
    "defocus_gradient": defocus_gradient_field,
    "motion_field": motion_field,
}


def make_field(name: str, H: int, W: int, *, seed: int | None = 0, strength: float = 15.0,
               grid: GridSize = 8, kernel_size: int | None = None) -> torch.Tensor:
    """Make a built-in field by name.

    Args:
        name: One of :data:`FIELD_TYPES`.
        H: Image height.
        W: Image width.
        seed: Seed (same seed, same field).
        strength: Largest blur extent in pixels (see the module docstring).
        grid: Grid cells ``gh = gw`` or ``(gh, gw)``.
        kernel_size: Odd kernel side; default just fits ``strength``.

    Returns:
        Grid kernels ``(gh, gw, ks, ks)`` float32 for :func:`fastdeblur.ops.pc_conv.pc_conv`.
    """
    if name not in _GENERATORS:
        raise ValueError(f"field name must be one of {', '.join(FIELD_TYPES)}; got {name!r}")
    return _GENERATORS[name](H, W, strength=strength, grid=grid, kernel_size=kernel_size,
                             seed=seed)


# ---------------------------------------------------------------------------
# stored format
# ---------------------------------------------------------------------------


def _as_field(field: KernelField | torch.Tensor | np.ndarray,
              kernel_size: tuple[int, int] | None) -> KernelField:
    if isinstance(field, KernelField):
        return field
    t = torch.as_tensor(np.asarray(field) if not isinstance(field, torch.Tensor) else field)
    if t.ndim == 4:
        return KernelField(t, "pc", (int(t.shape[2]), int(t.shape[3])))
    if t.ndim == 3:
        if kernel_size is None:
            side = math.isqrt(int(t.shape[0]))
            if side * side != t.shape[0]:
                raise ValueError("per-pixel kernels (kh*kw, H, W) with kh*kw not a square "
                                 "need kernel_size=(kh, kw)")
            kernel_size = (side, side)
        return KernelField(t, "pixel", (int(kernel_size[0]), int(kernel_size[1])))
    raise ValueError(
        "field must be grid kernels (gh, gw, kh, kw) or per-pixel kernels (kh*kw, H, W); "
        f"got shape {tuple(t.shape)}"
    )


def _validate(kernels: torch.Tensor, model: str, kernel_size: tuple[int, int], where: str
              ) -> None:
    if model not in FIELD_MODELS:
        raise ValueError(f"{where}: model must be one of {', '.join(FIELD_MODELS)}; "
                         f"got {model!r}")
    expected = 4 if model == "pc" else 3
    if kernels.ndim != expected or min(kernels.shape, default=0) < 1:
        shape = "(gh, gw, kh, kw)" if model == "pc" else "(kh*kw, H, W)"
        raise ValueError(f"{where}: model {model!r} needs non-empty kernels {shape}; got "
                         f"shape {tuple(kernels.shape)}")
    kh, kw = kernel_size
    if kh < 1 or kw < 1:
        raise ValueError(f"{where}: kernel_size must be positive; got {kernel_size}")
    if model == "pixel" and kernels.shape[0] != kh * kw:
        raise ValueError(f"{where}: per-pixel kernels have {kernels.shape[0]} taps, but "
                         f"kernel_size {kh}x{kw} needs {kh * kw}")
    if not kernels.is_floating_point():
        raise ValueError(f"{where}: kernels must be floating point; got {kernels.dtype}")
    if not bool(torch.isfinite(kernels).all()):
        raise ValueError(f"{where}: kernels contain NaN or infinite values")


def save_field(path: str | os.PathLike, field: KernelField | torch.Tensor | np.ndarray, *,
               kernel_size: tuple[int, int] | None = None) -> Path:
    """Write a kernel field to ``path`` (``.npz``).

    Args:
        path: Destination; ``.npz`` is appended by numpy when missing, so pass it.
        field: A :class:`KernelField`, grid kernels ``(gh, gw, kh, kw)`` (model ``pc``) or
            per-pixel kernels ``(kh·kw, H, W)`` (model ``pixel``).
        kernel_size: ``(kh, kw)`` of per-pixel kernels when ``kh·kw`` is not a square.

    Returns:
        The path written.
    """
    f = _as_field(field, kernel_size)
    _validate(f.kernels, f.model, f.kernel_size, "field")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npz; got {str(path)!r}")
    data = f.kernels.detach().cpu().to(torch.float32).numpy()
    key = "grid_kernels" if f.model == "pc" else "kernels"
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{key: data, "model": np.array(f.model),
                     "kernel_size": np.array(f.kernel_size, dtype=np.int64)})
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path


def load_field(path: str | os.PathLike) -> KernelField:
    """Read a kernel field written by :func:`save_field` (or by hand, same keys).

    Args:
        path: An ``.npz`` with ``grid_kernels`` ``(gh, gw, kh, kw)`` and ``model="pc"``, or
            ``kernels`` ``(kh·kw, H, W)`` and ``model="pixel"`` (plus ``kernel_size``
            ``[kh, kw]`` when ``kh·kw`` is not a square).

    Returns:
        A :class:`KernelField` with float32 kernels.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an npz field, or missing / inconsistent keys (the message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"field file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise ValueError(f"{path}: not a readable .npz field file ({exc})") from exc
    with archive:
        keys = set(archive.files)
        if "model" not in keys:
            raise ValueError(f"{path}: missing key 'model' (\"pc\" or \"pixel\"); keys: "
                             f"{sorted(keys)}")
        model = str(archive["model"])
        if model not in FIELD_MODELS:
            raise ValueError(f"{path}: model must be one of {', '.join(FIELD_MODELS)}; got "
                             f"{model!r}")
        key = "grid_kernels" if model == "pc" else "kernels"
        if key not in keys:
            raise ValueError(f"{path}: model {model!r} needs key {key!r}; keys: {sorted(keys)}")
        arr = archive[key]
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{path}: {key} must be floating point; got {arr.dtype}")
        kernels = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        size = archive["kernel_size"] if "kernel_size" in keys else None
    if model == "pc" and kernels.ndim != 4:
        raise ValueError(f"{path}: model 'pc' needs grid_kernels (gh, gw, kh, kw); got shape "
                         f"{tuple(kernels.shape)}")
    if size is not None:
        if size.shape != (2,):
            raise ValueError(f"{path}: kernel_size must be [kh, kw]; got {size.tolist()}")
        kernel_size = (int(size[0]), int(size[1]))
    elif model == "pc" and kernels.ndim == 4:
        kernel_size = (int(kernels.shape[2]), int(kernels.shape[3]))
    else:
        side = math.isqrt(int(kernels.shape[0])) if kernels.ndim == 3 else 0
        if kernels.ndim != 3 or side * side != kernels.shape[0]:
            raise ValueError(f"{path}: per-pixel kernels need key 'kernel_size' [kh, kw] "
                             f"(shape {tuple(kernels.shape)})")
        kernel_size = (side, side)
    if model == "pc" and kernels.ndim == 4 and kernel_size != tuple(kernels.shape[2:]):
        raise ValueError(f"{path}: kernel_size {kernel_size} does not match grid_kernels "
                         f"{tuple(kernels.shape)}")
    _validate(kernels, model, kernel_size, str(path))
    return KernelField(kernels, model, kernel_size)

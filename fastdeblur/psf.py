"""Point-spread functions (blur kernels): Gaussian, linear motion, defocus, camera shake.

Every PSF is an odd-sized ``(kh, kw)`` tensor that sums to 1 and is centred at
``(kh // 2, kw // 2)``; it is applied as a true convolution (flipped). Blurring with
any PSF made here does not shift the image: its centroid is the centre pixel.

Parameters follow MATLAB's ``fspecial('gaussian' | 'motion' | 'disk')`` — the reference
of the blur-estimation literature — and differ where noted (anti-aliasing, default
sizes). Angles are in degrees, counter-clockwise from the horizontal *as displayed*
(row index growing downwards): at 45 degrees a motion streak runs from bottom-left
to top-right. ``docs/psf_conventions.md`` compares these kernels with fspecial
(GNU Octave), kornia and albumentations.

The parametric kernels are differentiable with respect to their parameters: ``sigma``,
``length``, ``angle``, ``radius`` may be 0-dim tensors with ``requires_grad``; the
kernel size is then chosen from the detached value, or given with ``size=``.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "PSF_TYPES",
    "camera_shake",
    "defocus",
    "from_array",
    "from_params",
    "gaussian",
    "motion",
    "motion_batch",
    "render",
]

PSF_TYPES: tuple[str, ...] = ("gaussian", "motion", "defocus")

Size = int | tuple[int, int] | None
Param = float | int | torch.Tensor

# A distance this close to a whole number counts as whole when sizes are chosen,
# so that length 9.0 computed as 9.000000000001 does not grow the kernel.
_SIZE_SLACK = 1e-6


# ---------------------------------------------------------------------------
# argument handling
# ---------------------------------------------------------------------------

def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the arithmetic runs in: fp64 for fp64, fp32 for every other float."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return torch.float64 if dtype == torch.float64 else torch.float32


def _pick_device(device: torch.device | str | None, *values: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def _param(value: Param, name: str, dtype: torch.dtype, device: torch.device,
           minimum: float | None = 0.0) -> tuple[torch.Tensor, float]:
    """A parameter as a 0-dim tensor (keeping its autograd graph) and as a float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, "
                             f"got a tensor of shape {tuple(value.shape)}")
        if not (value.dtype.is_floating_point or value.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"{name} must be a real number, got a {value.dtype} tensor")
        tensor = value.reshape(()).to(dtype=dtype, device=device)
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        tensor = torch.tensor(float(value), dtype=dtype, device=device)
    else:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    number = float(tensor.detach())
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {number:g}")
    return tensor, number


def _kernel_size(size: Size, default: int) -> tuple[int, int]:
    """``(kh, kw)`` from ``size`` (odd int or pair of odd ints) or the default."""
    if size is None:
        return default, default
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)):
        pair = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an odd int or a pair (kh, kw) of odd ints, got {size!r}")
    if any(s < 1 or s % 2 == 0 for s in pair):
        raise ValueError(f"size must be odd and positive, got {size!r}")
    return pair


def _half_extent(distance: float) -> int:
    """Smallest whole ``h`` with ``h >= distance``, forgiving rounding just above a whole number."""
    return max(0, math.ceil(distance - _SIZE_SLACK))


def _offsets(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel offsets from the centre along one axis of length ``n`` (odd): ``-(n//2) .. n//2``."""
    return torch.arange(n, dtype=dtype, device=device) - (n // 2)


def _delta(kh: int, kw: int, dtype: torch.dtype, device: torch.device,
           *params: torch.Tensor) -> torch.Tensor:
    """A centred impulse, kept in the autograd graph of ``params`` (with zero gradient)."""
    kernel = torch.zeros(kh, kw, dtype=dtype, device=device)
    kernel[kh // 2, kw // 2] = 1.0
    for p in params:
        kernel = kernel + 0.0 * p
    return kernel


def _finish(kernel: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Normalise to sum 1 and cast to the requested dtype."""
    return (kernel / kernel.sum()).to(dtype)


def _splat(cols: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, kh: int, kw: int,
           cell_cols: torch.Tensor | None = None,
           cell_rows: torch.Tensor | None = None,
           limit: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear (tent) splatting of weighted points into a ``(kh, kw)`` grid, or a batch of them.

    Args:
        cols, rows: ``(N,)`` point positions as offsets from the kernel centre, in pixels
            (columns to the right, rows downwards); or ``(B, N)``: ``B`` grids at once.
        weights: ``(N,)`` (or ``(B, N)``) mass of each point.
        kh, kw: output size (odd).
        cell_cols, cell_rows: integer lower corner of the cell each point is splatted into
            (the shape of ``cols``); default ``floor`` of the position. Passing them lets a point
            that lies exactly on a grid line be splatted from a chosen side (the weights are
            linear in the position either way, so this only matters for the gradient's
            one-sided limit).
        limit: ``(B,)``: mass further than this many pixels from the centre (along either axis)
            is dropped too, per grid (a smaller kernel inside the common grid).

    Each point gives ``(1 - fx)(1 - fy)``, ``fx (1 - fy)``, ... of its mass to the four
    pixels around it, which keeps its centre of mass exactly where the point is.
    Mass that lands outside the grid is dropped.

    Returns:
        ``(kh, kw)`` tensor (``(B, kh, kw)`` for batched points), differentiable with respect to
        positions and weights.
    """
    batched = cols.dim() == 2
    if not batched:
        cols, rows, weights = cols[None], rows[None], weights[None]
        cell_cols = None if cell_cols is None else cell_cols[None]
        cell_rows = None if cell_rows is None else cell_rows[None]
    if cell_cols is None:
        cell_cols = torch.floor(cols.detach())
    if cell_rows is None:
        cell_rows = torch.floor(rows.detach())
    frac_c = cols - cell_cols
    frac_r = rows - cell_rows
    c0 = cell_cols.long() + kw // 2
    r0 = cell_rows.long() + kh // 2
    batch = cols.shape[0]
    base = (torch.arange(batch, device=weights.device) * (kh * kw))[:, None]
    flat = torch.zeros(batch * kh * kw, dtype=weights.dtype, device=weights.device)
    for dr, wr in ((0, 1.0 - frac_r), (1, frac_r)):
        for dc, wc in ((0, 1.0 - frac_c), (1, frac_c)):
            r = r0 + dr
            c = c0 + dc
            inside = (r >= 0) & (r < kh) & (c >= 0) & (c < kw)
            if limit is not None:
                reach = limit.to(r.device)[:, None]
                inside &= ((r - kh // 2).abs() <= reach) & ((c - kw // 2).abs() <= reach)
            index = torch.where(inside, base + r * kw + c, torch.zeros_like(r))
            mass = torch.where(inside, weights * wr * wc, torch.zeros_like(weights))
            flat = flat.index_add(0, index.reshape(-1), mass.reshape(-1))
    return flat.view(batch, kh, kw) if batched else flat.view(kh, kw)


# ---------------------------------------------------------------------------
# Gaussian
# ---------------------------------------------------------------------------

def gaussian(sigma: Param, sigma_y: Param | None = None, theta: Param = 0.0, *,
             size: Size = None, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> torch.Tensor:
    """Gaussian PSF, isotropic or anisotropic (rotated).

    ``k[r, c] ∝ exp(-u² / (2 sigma²) - w² / (2 sigma_y²))`` sampled at the pixel centres and
    normalised to sum 1, where ``u`` is the offset from the centre along the direction
    ``theta`` (degrees, counter-clockwise from the horizontal as displayed) and ``w`` the
    offset across it. With ``sigma_y=None`` the kernel is isotropic; that case equals
    ``fspecial('gaussian', size, sigma)`` (point sampling, as fspecial and kornia do).

    Args:
        sigma: standard deviation in pixels along the direction ``theta`` (>= 0; 0 gives an
            impulse). A float or a 0-dim tensor (may require grad).
        sigma_y: standard deviation across ``theta``; default ``sigma``.
        theta: direction of the ``sigma`` axis in degrees.
        size: odd int or ``(kh, kw)``; default ``2 * ceil(3 * max(sigma, sigma_y)) + 1``
            (the usual fspecial call; fspecial's own default is 3).
        dtype: output dtype (float32 by default; float64 on request).
        device: output device; default the parameters' device, else CPU.

    Returns:
        ``(kh, kw)`` kernel summing to 1.
    """
    work = _compute_dtype(dtype)
    dev = _pick_device(device, sigma, sigma_y, theta)
    sx, sx_value = _param(sigma, "sigma", work, dev)
    if sigma_y is None:
        sy, sy_value = sx, sx_value
    else:
        sy, sy_value = _param(sigma_y, "sigma_y", work, dev)
    th, _ = _param(theta, "theta", work, dev, minimum=None)
    kh, kw = _kernel_size(size, 2 * _half_extent(3.0 * max(sx_value, sy_value)) + 1)
    if max(sx_value, sy_value) == 0.0:
        return _delta(kh, kw, work, dev, sx, sy, th).to(dtype)

    rows = _offsets(kh, work, dev)[:, None]
    cols = _offsets(kw, work, dev)[None, :]
    angle = torch.deg2rad(th)
    cos, sin = torch.cos(angle), torch.sin(angle)
    up = -rows  # "up" as displayed, so that theta turns counter-clockwise on screen
    along = cols * cos + up * sin
    across = -cols * sin + up * cos
    # A zero sigma on one axis (a line) is the limit of a tiny one; the floor keeps the
    # division finite and the exponent underflows to an exact 0 off the line.
    tiny = 1e-6
    exponent = -(along**2 / (2 * sx.clamp_min(tiny) ** 2)
                 + across**2 / (2 * sy.clamp_min(tiny) ** 2))
    kernel = torch.exp(exponent - exponent.detach().max())
    return _finish(kernel, dtype)


# ---------------------------------------------------------------------------
# linear motion
# ---------------------------------------------------------------------------

def motion(length: Param, angle: Param, *, size: Size = None,
           dtype: torch.dtype = torch.float32,
           device: torch.device | str | None = None) -> torch.Tensor:
    """Linear-motion PSF: a uniform segment of ``length`` pixels, centred, anti-aliased.

    The segment runs from ``-length/2`` to ``+length/2`` through the centre pixel in the
    direction ``angle`` (degrees, counter-clockwise from the horizontal as displayed; at
    45 the streak runs from bottom-left to top-right). The kernel is the exact integral
    along the segment of a bilinear (tent) pixel footprint::

        k[p] = (1 / length) ∫_{-length/2}^{length/2} T(t cos a - c_p) T(-t sin a - r_p) dt,
        T(d) = max(0, 1 - |d|)

    computed exactly (the integrand is quadratic between grid-line crossings, so Simpson's
    rule on each piece is exact). Hence: any real length and angle, sub-pixel accuracy,
    centroid exactly at the centre (the tent keeps every point's centre of mass), a kernel
    that changes smoothly with ``length`` and ``angle`` (differentiable), and a spread
    ``sqrt(12 · variance)`` along the motion of about ``sqrt(length² + 2)`` at every angle.

    Difference from ``fspecial('motion', len, theta)``: fspecial samples the segment at
    pixel centres (horizontal ``len=9`` gives 9 taps of 1/9 and a spread of
    ``sqrt(len² - 1)``); ours anti-aliases the ends too (horizontal ``length=9`` gives 9 taps
    plus 0.014 at each end), and its spread does not shrink at oblique angles as
    fspecial's does (about ``len - 1.5`` at 45 degrees). ``length`` means the same: the
    number of pixels the motion covers. ``length`` 0 gives an impulse.

    Args:
        length: motion length in pixels (>= 0), float or 0-dim tensor (may require grad).
        angle: direction in degrees, float or 0-dim tensor (may require grad).
        size: odd int or ``(kh, kw)``; default ``2 * ceil(length / 2) + 1`` (square, the same
            for every angle). A smaller size truncates the segment (then renormalised).
        dtype: output dtype (float32 by default; float64 on request).
        device: output device; default the parameters' device, else CPU.

    Returns:
        ``(kh, kw)`` kernel summing to 1, point-symmetric about the centre.
    """
    work = _compute_dtype(dtype)
    dev = _pick_device(device, length, angle)
    ln, ln_value = _param(length, "length", work, dev)
    an, an_value = _param(angle, "angle", work, dev, minimum=None)
    kh, kw = _kernel_size(size, 2 * _half_extent(ln_value / 2) + 1)
    if ln_value == 0.0:
        return _delta(kh, kw, work, dev, ln, an).to(dtype)

    radians = torch.deg2rad(an)
    cos, sin = torch.cos(radians), torch.sin(radians)
    half = ln / 2
    # Breakpoints: the segment ends and every t where the column (t cos) or the row
    # (-t sin) is a whole number; between two of them the point stays in one grid cell.
    # Which whole numbers are crossed is read from the detached values (piecewise constant).
    pieces = [torch.stack([-half, half])]
    for direction in (cos, sin):
        reach = ln_value / 2 * abs(float(direction.detach()))
        count = math.ceil(reach) - 1 if reach > 0 else -1  # |k| < reach
        if count >= 0:
            k = torch.arange(-count, count + 1, dtype=work, device=dev)
            pieces.append(k / direction)
    breaks = torch.cat(pieces)
    breaks = torch.minimum(torch.maximum(breaks, -half), half)
    breaks, _ = torch.sort(breaks)
    t0, t1 = breaks[:-1], breaks[1:]
    width = t1 - t0
    middle = (t0 + t1) / 2
    cell_cols = torch.floor((middle * cos).detach())
    cell_rows = torch.floor((-middle * sin).detach())
    cols, rows, weights = [], [], []
    for t, w in ((t0, 1.0 / 6.0), (middle, 4.0 / 6.0), (t1, 1.0 / 6.0)):
        cols.append(t * cos)
        rows.append(-t * sin)
        weights.append(width * w)
    kernel = _splat(torch.cat(cols), torch.cat(rows), torch.cat(weights), kh, kw,
                    cell_cols.repeat(3), cell_rows.repeat(3))
    return _finish(kernel, dtype)


def motion_batch(lengths: Sequence[float], angles: Sequence[float], *,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Many :func:`motion` kernels at once (no gradient), centred in one common grid.

    Kernel ``i`` equals ``motion(lengths[i], angles[i])`` (its default size) zero-padded to the
    common ``S × S``, ``S`` the default size of the longest; up to rounding (float32 sums in
    another order). One call instead of one per kernel: the likelihood stage of the blur
    estimate builds a few hundred per image.

    Args:
        lengths: ``N`` motion lengths in pixels (>= 0).
        angles: ``N`` directions in degrees.
        dtype: output dtype.

    Returns:
        ``(N, S, S)`` kernels, each summing to 1.
    """
    work = _compute_dtype(dtype)
    ln = torch.as_tensor(list(lengths), dtype=work).reshape(-1)
    an = torch.as_tensor(list(angles), dtype=work).reshape(-1)
    if ln.shape != an.shape or len(ln) == 0:
        raise ValueError(f"lengths and angles must be two non-empty lists of one length; got "
                         f"{len(ln)} and {len(an)}")
    if not bool(torch.isfinite(ln).all() & (ln >= 0).all()) or not bool(torch.isfinite(an).all()):
        raise ValueError("lengths must be finite and >= 0, angles finite")
    own = torch.tensor([_half_extent(float(v) / 2) for v in ln.tolist()])  # each default size
    half_size = int(own.max())
    S = 2 * half_size + 1
    radians = torch.deg2rad(an)
    cos, sin = torch.cos(radians), torch.sin(radians)
    half = ln / 2
    # the breakpoints of motion(): the ends and the whole-number crossings of column and row;
    # the kernels have different numbers of them, so the rest are padded with the end point
    # (pieces of zero width, zero mass)
    pieces = [-half[:, None], half[:, None]]
    for direction in (cos, sin):
        reach = ln / 2 * direction.abs()
        count = torch.where(reach > 0, torch.ceil(reach) - 1, torch.full_like(reach, -1))
        top = int(count.max()) if len(count) else -1
        if top < 0:
            continue
        k = torch.arange(-top, top + 1, dtype=work)[None, :]
        valid = (k.abs() <= count[:, None]) & (count[:, None] >= 0)
        safe = torch.where(direction == 0, torch.ones_like(direction), direction)[:, None]
        pieces.append(torch.where(valid, k / safe, half[:, None]))
    breaks = torch.cat(pieces, dim=1)
    breaks = torch.minimum(torch.maximum(breaks, -half[:, None]), half[:, None])
    breaks, _ = torch.sort(breaks, dim=1)
    t0, t1 = breaks[:, :-1], breaks[:, 1:]
    width = t1 - t0
    middle = (t0 + t1) / 2
    cell_cols = torch.floor(middle * cos[:, None]).repeat(1, 3)
    cell_rows = torch.floor(-middle * sin[:, None]).repeat(1, 3)
    ts = torch.cat([t0, middle, t1], dim=1)
    cols = ts * cos[:, None]
    rows = -ts * sin[:, None]
    weights = torch.cat([width / 6.0, width * (4.0 / 6.0), width / 6.0], dim=1)
    # each kernel into its own default grid (mass outside it is dropped, as motion() drops it),
    # placed in the common one
    kernels = _splat(cols, rows, weights, S, S, cell_cols, cell_rows, limit=own)
    still = ln == 0
    if bool(still.any()):  # length 0: an impulse
        kernels[still] = 0.0
        kernels[still, half_size, half_size] = 1.0
    return (kernels / kernels.sum((1, 2), keepdim=True)).to(dtype)


# ---------------------------------------------------------------------------
# defocus (disk)
# ---------------------------------------------------------------------------

def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` with a zero (not infinite) gradient at and below 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))),
                       torch.zeros_like(x))


def _circle_primitive(u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``∫_0^u sqrt(r² - s²) ds`` for ``0 <= u <= r`` (a quarter disk at ``u = r``)."""
    full = u >= r
    u_safe = torch.where(full, torch.zeros_like(u), u)
    value = 0.5 * (u_safe * _safe_sqrt(r * r - u_safe * u_safe)
                   + r * r * torch.asin(u_safe / r))
    return torch.where(full, (math.pi / 4) * r * r, value)


def _quadrant_area(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed area of the disk of radius ``r`` (centre 0) inside the rectangle spanned by
    the origin and ``(x, y)``: ``sign(x) sign(y) · |disk ∩ [0, |x|] × [0, |y|]|``."""
    ax = torch.minimum(x.abs(), r)
    ay = torch.minimum(y.abs(), r)
    inside = ax * ax + ay * ay <= r * r
    # Outside the circle: the rectangle's part left of where the circle meets height ay,
    # plus the area under the arc from there to ax.
    x_meet = _safe_sqrt(r * r - ay * ay)
    x_meet = torch.minimum(x_meet, ax)
    outside = ay * x_meet + _circle_primitive(ax, r) - _circle_primitive(x_meet, r)
    area = torch.where(inside, ax * ay, outside)
    return torch.sign(x) * torch.sign(y) * area


def defocus(radius: Param, *, size: Size = None, dtype: torch.dtype = torch.float32,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Defocus PSF: a uniform disk of ``radius`` pixels with an exact area-coverage edge.

    Each pixel holds the exact area of its unit square inside the disk (closed form), so
    the kernel changes smoothly with the radius (differentiable) and is symmetric under
    flips and 90-degree turns. Same parameter and default size as ``fspecial('disk', radius)``;
    GNU Octave's fspecial, which also integrates the area exactly, gives the same kernel
    (to 1e-10).

    Args:
        radius: disk radius in pixels (>= 0; 0 gives an impulse), float or 0-dim tensor
            (may require grad).
        size: odd int or ``(kh, kw)``; default ``2 * ceil(radius) + 1`` (as fspecial).
        dtype: output dtype (float32 by default; float64 on request).
        device: output device; default the parameter's device, else CPU.

    Returns:
        ``(kh, kw)`` kernel summing to 1.
    """
    _compute_dtype(dtype)
    # fp64 inside whatever the output dtype: the inclusion-exclusion of areas below
    # cancels, and in fp32 leaves ~1e-8 specks (and negatives) outside the disk.
    work = torch.float64
    dev = _pick_device(device, radius)
    r, r_value = _param(radius, "radius", work, dev)
    kh, kw = _kernel_size(size, 2 * _half_extent(r_value) + 1)
    if r_value == 0.0:
        return _delta(kh, kw, work, dev, r).to(dtype)
    rows = _offsets(kh, work, dev)[:, None]
    cols = _offsets(kw, work, dev)[None, :]
    area = (_quadrant_area(cols + 0.5, rows + 0.5, r) - _quadrant_area(cols - 0.5, rows + 0.5, r)
            - _quadrant_area(cols + 0.5, rows - 0.5, r)
            + _quadrant_area(cols - 0.5, rows - 0.5, r))
    return _finish(area.clamp_min(0), dtype)


# ---------------------------------------------------------------------------
# camera shake
# ---------------------------------------------------------------------------

def _dwell_times(n: int, variation: float, generator: torch.Generator | None) -> np.ndarray:
    """Time spent on each of ``n`` equal path steps, summing to 1, when the log-speed is
    Gaussian noise smoothed over a tenth of the path and scaled to std ``variation``."""
    width = max(3, n // 10) | 1
    noise = torch.randn(n + width, generator=generator, dtype=torch.float64).numpy()
    window = np.hanning(width + 2)[1:-1]
    smooth = np.convolve(noise, window / window.sum(), mode="valid")[:n]
    std = smooth.std()
    log_speed = variation * (smooth - smooth.mean()) / (std if std > 0 else 1.0)
    dwell = np.exp(-log_speed)
    return dwell / dwell.sum()


def _shake_trajectory(num_steps: int, path_length: float, anxiety: float,
                      generator: torch.Generator | None) -> np.ndarray:
    """A random camera-shake trajectory, complex positions ``(num_steps,)`` (x + i·y_down).

    After Boracchi & Foi (2012, "Modeling the performance of image restoration from motion
    blur"): a point moving at constant speed whose heading is jittered by Gaussian noise,
    steered back towards the start (centripetal term) and now and then reversed sharply
    (an abrupt shake); ``anxiety`` scales the jitter and the rate of abrupt shakes. Unlike
    their per-sample constants, ours are per unit of path, so ``num_steps`` only sets the
    resolution, not the shape statistics.
    """
    draws = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    centripetal = 0.7 * draws[0]
    jitter = 0.5 + draws[1]  # total heading std over the path is about pi * anxiety * jitter
    shakes_per_path = 3.0 * draws[2] * anxiety
    start_angle = 2.0 * math.pi * draws[3]
    uniform = torch.rand(num_steps, 2, generator=generator, dtype=torch.float64).tolist()
    normal = torch.randn(num_steps, 2, generator=generator, dtype=torch.float64).tolist()

    steps = max(num_steps - 1, 1)
    step = path_length / steps
    heading_noise = math.pi * anxiety * jitter / math.sqrt(2.0 * steps)
    # pull towards the start: turns the heading at a rate that grows with the distance
    pull = 20.0 * centripetal * step / max(path_length, 1e-12) ** 2
    shake_probability = shakes_per_path / steps
    velocity = cmath.exp(1j * start_angle) * step
    position = 0j
    points = [position]
    for i in range(steps):
        if uniform[i][0] < shake_probability:
            velocity += 2.0 * velocity * cmath.exp(1j * (math.pi + (uniform[i][1] - 0.5)))
        noise = complex(normal[i][0], normal[i][1])
        velocity += heading_noise * noise * abs(velocity) - pull * position * step
        speed = abs(velocity)
        velocity = velocity / speed * step if speed > 0 else cmath.exp(1j * start_angle) * step
        position += velocity
        points.append(position)
    return np.asarray(points, dtype=np.complex128)


def camera_shake(size: int = 31, *, seed: int | None = None,
                 generator: torch.Generator | None = None, max_length: float | None = None,
                 anxiety: float | None = None, num_steps: int = 1000,
                 speed_variation: float = 0.0,
                 dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Random camera-shake PSF: a random-walk trajectory rendered with sub-pixel accuracy.

    The trajectory follows Boracchi & Foi (2012): constant speed, Gaussian jitter of the
    velocity, a pull back towards the start and occasional abrupt shakes, all scaled by
    ``anxiety``. The camera is taken to spend equal time on every step, so the PSF is the
    trajectory's path with uniform mass, splatted bilinearly. The trajectory is then
    translated so that the PSF's centroid is exactly the centre pixel (a sub-pixel shift:
    blurring with it does not move the image), and shrunk about its centroid if it would
    not fit inside ``size - 2`` pixels.

    Args:
        size: kernel side, odd, >= 3.
        seed: makes the kernel reproducible (same seed, same kernel, on any device).
        generator: a CPU ``torch.Generator`` to draw from instead (not with ``seed``). With
            neither, torch's global generator is used.
        max_length: total path length in pixels; default drawn uniformly in
            ``[0.25, 1] × (size - 3)``.
        anxiety: amount of jitter and abrupt shakes, ``[0, 1]`` is the useful range (0: a
            straight or gently curved path); default drawn uniformly in ``[0, 1]``.
        num_steps: number of trajectory points (>= 2).
        speed_variation: how much the camera's speed varies along the path (>= 0). 0: constant
            speed, every step carries the same mass. Above 0 the log-speed is a smooth random
            curve (Gaussian noise smoothed over a tenth of the path) scaled to this standard
            deviation, and each step's mass is the time spent on it: the camera slowing at turns
            leaves the bright dwell points of recorded shake (the 8 kernels of Levin et al. 2009
            have a coefficient of variation of 0.59–1.09 over their support; constant speed
            gives about 0.5–0.7, ``speed_variation`` drawn uniformly in [0, 1.5] about 0.6–1.05).
            Draws from the generator only when > 0, so kernels of speed 0 are unchanged.
        dtype: output dtype (float32 by default).
        device: output device (CPU by default). The trajectory is always drawn on the CPU in
            float64, so the kernel does not depend on the device.

    Returns:
        ``(size, size)`` kernel summing to 1.
    """
    if (not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 3
            or size % 2 == 0):
        raise ValueError(f"size must be an odd int >= 3, got {size!r}")
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    _compute_dtype(dtype)
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    span = float(size - 3)
    if max_length is None:
        max_length = span * (0.25 + 0.75 * float(torch.rand((), generator=generator,
                                                            dtype=torch.float64)))
    elif not (math.isfinite(max_length) and max_length >= 0):
        raise ValueError(f"max_length must be a finite number >= 0, got {max_length!r}")
    if anxiety is None:
        anxiety = float(torch.rand((), generator=generator, dtype=torch.float64))
    elif not (math.isfinite(anxiety) and anxiety >= 0):
        raise ValueError(f"anxiety must be a finite number >= 0, got {anxiety!r}")
    if not (isinstance(speed_variation, (int, float)) and math.isfinite(speed_variation)
            and speed_variation >= 0):
        raise ValueError(f"speed_variation must be a finite number >= 0, got {speed_variation!r}")

    path = _shake_trajectory(int(num_steps), float(max_length), float(anxiety), generator)
    points = (path[1:] + path[:-1]) / 2
    if speed_variation > 0:
        mass = _dwell_times(len(points), float(speed_variation), generator)
    else:
        # Equal time per step: each step's midpoint carries the same mass.
        mass = np.full(len(points), 1.0 / len(points))
    # the PSF's centroid at the origin
    points = points - ((points * mass).sum() if speed_variation > 0 else points.mean())
    # Keep every point at least one pixel inside the border, so no mass is lost by the
    # splatting and the centroid stays exact.
    reach = max(np.abs(points.real).max(), np.abs(points.imag).max())
    limit = span / 2
    if reach > limit:
        points = points * (limit / reach)
    cols = torch.from_numpy(np.ascontiguousarray(points.real))
    rows = torch.from_numpy(np.ascontiguousarray(points.imag))
    weights = torch.from_numpy(mass)
    kernel = _splat(cols, rows, weights, size, size)
    return _finish(kernel, torch.float64).to(dtype=dtype, device=_pick_device(device))


# ---------------------------------------------------------------------------
# user kernels, dispatch, viewing
# ---------------------------------------------------------------------------

def from_array(k: np.ndarray | torch.Tensor, *, clip_negative: bool = False,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Validate a user kernel and normalise it to sum 1.

    Rules:
        * 2-D, non-empty, finite.
        * Even sides are padded with one zero row/column at the end (bottom/right), so the
          odd result's centre ``kh // 2`` is the element the even kernel was centred on
          under ``scipy.ndimage.convolve`` and MATLAB ``conv2(..., 'same')`` (index ``h // 2``).
          Note ``scipy.signal.convolve(..., 'same')`` centres even kernels one element
          earlier.
        * Negative entries are kept (set ``clip_negative=True`` to zero them first, e.g. for
          estimated kernels); a kernel whose sum is not positive (all zero, or
          negative-dominated) is rejected.

    Args:
        k: ``(h, w)`` numpy array or tensor.
        clip_negative: zero negative entries before normalising.
        dtype: output dtype; default the input's if it is float32/float64, else float32.

    Returns:
        ``(kh, kw)`` tensor with odd sides summing to 1 (on the input tensor's device;
        differentiable with respect to a tensor input).

    Raises:
        ValueError: naming what is wrong with ``k``.
    """
    if isinstance(k, np.ndarray):
        if k.dtype == np.bool_ or not (np.issubdtype(k.dtype, np.floating)
                                       or np.issubdtype(k.dtype, np.integer)):
            raise ValueError(f"kernel must hold real numbers, got dtype {k.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(k))
    elif isinstance(k, torch.Tensor):
        if k.dtype == torch.bool or k.is_complex():
            raise ValueError(f"kernel must hold real numbers, got dtype {k.dtype}")
        tensor = k
    else:
        raise ValueError(f"kernel must be a numpy array or a torch tensor, got {type(k).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"kernel must be 2-D (h, w), got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"kernel must not be empty, got shape {tuple(tensor.shape)}")
    if dtype is None:
        dtype = tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32
    _compute_dtype(dtype)
    tensor = tensor.to(torch.float64 if dtype == torch.float64 else torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("kernel must be finite, got NaN or infinite entries")
    if clip_negative:
        tensor = tensor.clamp_min(0)
    total = float(tensor.detach().sum())
    if not bool((tensor != 0).any()):
        raise ValueError("kernel must not be all zero")
    if total <= 0:
        raise ValueError(f"kernel must have a positive sum (it is not a PSF otherwise), "
                         f"got sum {total:.3g}")
    h, w = tensor.shape
    tensor = torch.nn.functional.pad(tensor, (0, 1 - w % 2, 0, 1 - h % 2))
    return (tensor / tensor.sum()).to(dtype)


_PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # blur type: (required keys, optional keys)
    "gaussian": (("sigma",), ("sigma_y", "theta")),
    "motion": (("length", "angle"), ()),
    "defocus": (("radius",), ()),
}


def from_params(blur_type: str, params: Mapping[str, Param], *, size: Size = None,
                dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """A parametric PSF from its type name and parameters.

    Args:
        blur_type: one of :data:`PSF_TYPES`: ``"gaussian"`` (``sigma``, optional ``sigma_y``,
            ``theta``), ``"motion"`` (``length``, ``angle``), ``"defocus"`` (``radius``).
        params: the parameters by name (floats or 0-dim tensors).
        size, dtype, device: as for the individual functions.

    Returns:
        ``(kh, kw)`` kernel summing to 1.
    """
    if blur_type not in _PARAMS:
        raise ValueError(f"blur_type must be one of {', '.join(PSF_TYPES)}, got {blur_type!r}")
    required, optional = _PARAMS[blur_type]
    missing = [key for key in required if key not in params]
    if missing:
        raise ValueError(f"params for {blur_type!r} blur lack {', '.join(missing)} "
                         f"(expected {', '.join(required + optional)})")
    unknown = [key for key in params if key not in required + optional]
    if unknown:
        raise ValueError(f"params for {blur_type!r} blur have unknown keys {', '.join(unknown)} "
                         f"(expected {', '.join(required + optional)})")
    options = {"size": size, "dtype": dtype, "device": device}
    if blur_type == "gaussian":
        return gaussian(params["sigma"], params.get("sigma_y"), params.get("theta", 0.0),
                        **options)
    if blur_type == "motion":
        return motion(params["length"], params["angle"], **options)
    return defocus(params["radius"], **options)


def render(psf: torch.Tensor | np.ndarray, scale: int | None = None) -> np.ndarray:
    """An enlarged picture of a PSF for viewing: nearest-neighbour upscaling, brightest = 255.

    Args:
        psf: ``(kh, kw)`` kernel (tensor or numpy).
        scale: enlargement factor (int >= 1); default the largest that keeps the picture
            within 256 pixels (at least 1).

    Returns:
        ``(kh * scale, kw * scale)`` uint8 numpy array (gray image).
    """
    array = psf.detach().cpu().double().numpy() if isinstance(psf, torch.Tensor) else \
        np.asarray(psf, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"psf must be a non-empty 2-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("psf must be finite")
    if scale is None:
        scale = max(1, 256 // max(array.shape))
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    peak = array.max()
    image = np.clip(array / peak, 0, 1) if peak > 0 else np.zeros_like(array)
    image = np.rint(image * 255).astype(np.uint8)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)

"""Per-sample parametric PSFs rendered as one batch on one common odd-sized grid.

:mod:`fastdeblur.psf` makes one kernel at a time, each of its own size. Augmentation and
evaluation need a different kernel for every image of a batch, made on the device of the batch
without a Python loop, and stacked for one grouped convolution. The functions here render
``(B, K, K)`` kernels for ``(B,)`` parameter tensors, where ``K`` is the largest of the
per-sample default sizes: kernel ``b`` equals the kernel of its own default size (the size
:mod:`fastdeblur.psf` would choose) zero-padded, centred, to ``K × K``. Kornia's batched
filters used a single kernel size for a whole batch; here sizes differ per sample and only the
padding is shared.

Conventions are those of :mod:`fastdeblur.psf`: each kernel sums to 1, is centred at
``(K // 2, K // 2)`` and applied as a true convolution; angles are degrees counter-clockwise
from the horizontal as displayed (row index growing downwards). A zero parameter gives an
impulse.
"""

from __future__ import annotations

import torch

# Segment points per pixel of motion length (plus a floor for short segments): the midpoint
# rule over the tent footprint is then within about 2e-5 of the exact integral that
# fastdeblur.psf.motion computes.
MOTION_SAMPLES_PER_PIXEL = 32
MOTION_MIN_SAMPLES = 32


def _as_param(value: torch.Tensor | float, name: str, device: torch.device | None
              ) -> torch.Tensor:
    """A ``(B,)`` float64 tensor of finite values >= 0 (angles may be negative)."""
    t = torch.as_tensor(value, dtype=torch.float64, device=device)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor of per-sample values; got shape "
                         f"{tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    if name != "angle" and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0; got min {float(t.min()):g}")
    return t


def _half_sizes(extent: torch.Tensor) -> torch.Tensor:
    """Whole half-sizes ``ceil(extent)`` forgiving float noise just above a whole number."""
    return torch.ceil(extent - 1e-6).clamp_min(0).long()


def _grid(half: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column offsets ``(1, K, 1)``, ``(1, 1, K)`` of a ``K = 2 half + 1`` grid."""
    offsets = torch.arange(-half, half + 1, dtype=torch.float64, device=device)
    return offsets.view(1, -1, 1), offsets.view(1, 1, -1)


def _finish(kernels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (kernels / kernels.sum(dim=(-2, -1), keepdim=True)).to(dtype)


def default_sizes(blur_type: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample default kernel sides (odd), as :mod:`fastdeblur.psf` chooses them.

    Args:
        blur_type: ``gaussian`` | ``motion`` | ``defocus``.
        params: ``{name: (B,) tensor}`` (``sigma``; ``length``; ``radius``).

    Returns:
        ``(B,)`` int64 odd sizes: ``2 ceil(3 sigma) + 1``, ``2 ceil(length / 2) + 1``,
        ``2 ceil(radius) + 1``.
    """
    if blur_type == "gaussian":
        sigma = params["sigma"]
        if "sigma_y" in params:
            sigma = torch.maximum(sigma, params["sigma_y"])
        half = _half_sizes(3.0 * torch.as_tensor(sigma, dtype=torch.float64))
    elif blur_type == "motion":
        half = _half_sizes(torch.as_tensor(params["length"], dtype=torch.float64) / 2)
    elif blur_type == "defocus":
        half = _half_sizes(torch.as_tensor(params["radius"], dtype=torch.float64))
    else:
        raise ValueError(f"blur_type must be gaussian, motion or defocus; got {blur_type!r}")
    return 2 * half + 1


def gaussian(sigma: torch.Tensor, sigma_y: torch.Tensor | None = None,
             theta: torch.Tensor | None = None, *, dtype: torch.dtype = torch.float32
             ) -> torch.Tensor:
    """Per-sample Gaussian PSFs (point-sampled, truncated at each one's ``ceil(3 sigma)``).

    Args:
        sigma: ``(B,)`` standard deviations in pixels along ``theta``.
        sigma_y: ``(B,)`` standard deviations across ``theta``; default ``sigma`` (isotropic).
        theta: ``(B,)`` directions of the ``sigma`` axis in degrees; default 0.

    Returns:
        ``(B, K, K)`` kernels, ``K`` the largest default size of the batch.
    """
    sx = _as_param(sigma, "sigma", None)
    device = sx.device
    sy = sx if sigma_y is None else _as_param(sigma_y, "sigma_y", device)
    th = torch.zeros_like(sx) if theta is None else _as_param(theta, "angle", device)
    if not (sx.shape == sy.shape == th.shape):
        raise ValueError("sigma, sigma_y and theta must have the same shape (B,)")
    own_half = _half_sizes(3.0 * torch.maximum(sx, sy))
    half = int(own_half.max()) if sx.numel() else 0
    rows, cols = _grid(half, device)
    radians = torch.deg2rad(th).view(-1, 1, 1)
    up = -rows  # "up" as displayed, so that theta turns counter-clockwise on screen
    along = cols * torch.cos(radians) + up * torch.sin(radians)
    across = -cols * torch.sin(radians) + up * torch.cos(radians)
    tiny = 1e-6  # a zero sigma is the limit of a tiny one: exp underflows to 0 off-centre
    exponent = -(along**2 / (2 * sx.clamp_min(tiny).view(-1, 1, 1) ** 2)
                 + across**2 / (2 * sy.clamp_min(tiny).view(-1, 1, 1) ** 2))
    kernels = torch.exp(exponent)
    inside = (rows.abs() <= own_half.view(-1, 1, 1)) & (cols.abs() <= own_half.view(-1, 1, 1))
    return _finish(kernels * inside, dtype)


def motion(length: torch.Tensor, angle: torch.Tensor, *, dtype: torch.dtype = torch.float32
           ) -> torch.Tensor:
    """Per-sample linear-motion PSFs: a centred segment with a bilinear (tent) footprint.

    ``k[p] = (1 / L) ∫_{-L/2}^{L/2} T(t cos a - c_p) T(-t sin a - r_p) dt`` with
    ``T(d) = max(0, 1 - |d|)``, the same kernel as :func:`fastdeblur.psf.motion`, integrated by
    the midpoint rule with :data:`MOTION_SAMPLES_PER_PIXEL` points per pixel of length (within
    about 2e-5 of the exact integral). The tent
    is separable, so the kernel is a product of per-point row and column weights summed over
    the points: one batched matrix product.

    Args:
        length: ``(B,)`` lengths in pixels.
        angle: ``(B,)`` directions in degrees.

    Returns:
        ``(B, K, K)`` kernels, ``K`` the largest ``2 ceil(L / 2) + 1`` of the batch.
    """
    ln = _as_param(length, "length", None)
    an = _as_param(angle, "angle", ln.device)
    if ln.shape != an.shape:
        raise ValueError("length and angle must have the same shape (B,)")
    half = int(_half_sizes(ln / 2).max()) if ln.numel() else 0
    # Each sample gets ceil(MOTION_SAMPLES_PER_PIXEL * L) + MOTION_MIN_SAMPLES points of its
    # own (padded with weightless ones), so its kernel does not depend on the rest of the batch.
    own_points = torch.ceil(MOTION_SAMPLES_PER_PIXEL * ln) + MOTION_MIN_SAMPLES
    points = int(own_points.max()) if ln.numel() else 2
    index = torch.arange(points, dtype=torch.float64, device=ln.device)
    count = own_points.view(-1, 1)
    valid = index < count  # (B, S)
    # positions along the segment, as fractions of the length, at the midpoints of equal pieces
    fraction = ((index + 0.5) / count - 0.5).clamp(-0.5, 0.5)
    weight = valid / count  # (B, S)
    t = ln.view(-1, 1) * fraction  # (B, S)
    radians = torch.deg2rad(an).view(-1, 1)
    x = t * torch.cos(radians)  # columns to the right
    y = -t * torch.sin(radians)  # rows downwards
    offsets = torch.arange(-half, half + 1, dtype=torch.float64, device=ln.device)
    col_weight = (1 - (x.unsqueeze(-1) - offsets).abs()).clamp_min(0)  # (B, S, K)
    row_weight = (1 - (y.unsqueeze(-1) - offsets).abs()).clamp_min(0) * weight.unsqueeze(-1)
    kernels = torch.einsum("bsr,bsc->brc", row_weight, col_weight)
    return _finish(kernels, dtype)


def _circle_primitive(u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``∫_0^u sqrt(r² - s²) ds`` for ``0 <= u <= r``."""
    ratio = torch.where(r > 0, u / r.clamp_min(1e-300), torch.zeros_like(u)).clamp(0, 1)
    return 0.5 * (u * torch.sqrt((r * r - u * u).clamp_min(0)) + r * r * torch.asin(ratio))


def _corner_area(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed area of the disk (radius ``r``, centre 0) inside the rectangle from 0 to ``(x, y)``.

    For ``a = min(|x|, r)``, ``b = min(|y|, r)``: the columns ``s < s0 = sqrt(r² - b²)`` are
    covered up to height ``b``; from ``s0`` to ``a`` the arc is below ``b``. Signs follow the
    quadrant, so areas of pixel squares come out of inclusion-exclusion.
    """
    a = torch.minimum(x.abs(), r)
    b = torch.minimum(y.abs(), r)
    s0 = torch.minimum(torch.sqrt((r * r - b * b).clamp_min(0)), a)
    area = b * s0 + _circle_primitive(a, r) - _circle_primitive(s0, r)
    return torch.sign(x) * torch.sign(y) * area


def defocus(radius: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample defocus PSFs: uniform disks with the exact area of each pixel inside them.

    The same kernel as :func:`fastdeblur.psf.defocus` (and ``fspecial('disk')``), computed in
    float64 for all samples at once.

    Args:
        radius: ``(B,)`` radii in pixels.

    Returns:
        ``(B, K, K)`` kernels, ``K`` the largest ``2 ceil(radius) + 1`` of the batch.
    """
    r = _as_param(radius, "radius", None)
    half = int(_half_sizes(r).max()) if r.numel() else 0
    rows, cols = _grid(half, r.device)
    rr = r.view(-1, 1, 1)
    area = (_corner_area(cols + 0.5, rows + 0.5, rr) - _corner_area(cols - 0.5, rows + 0.5, rr)
            - _corner_area(cols + 0.5, rows - 0.5, rr)
            + _corner_area(cols - 0.5, rows - 0.5, rr)).clamp_min(0)
    # pixels whose square lies wholly outside the disk get an exact 0 (the inclusion-exclusion
    # above leaves rounding specks there)
    nearest = torch.hypot((rows.abs() - 0.5).clamp_min(0), (cols.abs() - 0.5).clamp_min(0))
    area = torch.where(nearest < rr, area, torch.zeros_like(area))
    centre = torch.zeros_like(area)
    centre[:, half, half] = 1.0
    area = torch.where(rr > 0, area, centre)  # radius 0: an impulse
    return _finish(area, dtype)


def render(blur_type: str, params: dict[str, torch.Tensor], *,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample kernels of one parametric type.

    Args:
        blur_type: ``gaussian`` (``sigma``, optional ``sigma_y``, ``theta``) | ``motion``
            (``length``, ``angle``) | ``defocus`` (``radius``).
        params: ``{name: (B,) tensor}``.
        dtype: Output dtype.

    Returns:
        ``(B, K, K)`` kernels on the parameters' device.
    """
    if blur_type == "gaussian":
        return gaussian(params["sigma"], params.get("sigma_y"), params.get("theta"), dtype=dtype)
    if blur_type == "motion":
        return motion(params["length"], params["angle"], dtype=dtype)
    if blur_type == "defocus":
        return defocus(params["radius"], dtype=dtype)
    raise ValueError(f"blur_type must be gaussian, motion or defocus; got {blur_type!r}")


def pad_to(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad ``(B, k, k)`` kernels (k odd) to ``(B, size, size)``, keeping them centred."""
    k = kernels.shape[-1]
    if size < k or (size - k) % 2:
        raise ValueError(f"cannot pad kernels of side {k} to side {size} (odd, >= {k})")
    m = (size - k) // 2
    return torch.nn.functional.pad(kernels, (m, m, m, m))

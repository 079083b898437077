"""Blur augmentation: random per-sample blur as ``nn.Module`` transforms.

Each transform takes float images ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1] and returns the
same shape. For a batch, every sample gets its own parameters (and so its own kernel size):
the kernels are rendered together on the batch's device (:mod:`fastdeblur.robustness.batch_psf`),
zero-padded to the largest odd size of the batch, centred, and applied in one grouped
convolution (:func:`fastdeblur.convolution.convolve`).

They are plain callables: they go in a list run in order (:class:`Compose`, or torchvision's
``v2.Compose``), in ``DataLoader`` workers, and inside ``nn.Sequential``.

Randomness:
    * ``forward(x, generator=g)`` draws everything from ``g`` (a CPU ``torch.Generator``);
    * else, a transform built with ``seed=`` owns a generator seeded with it: the n-th call
      gives the same output in every run. In a ``DataLoader`` worker the seed is combined with
      the worker id, so workers do not repeat each other;
    * else torch's global generator is used (``DataLoader`` seeds it per worker).
    Parameters are drawn on the CPU, so a seed gives the same kernels on every device; noise
    (``noise_sigma > 0``) is drawn on the images' device from a seed drawn on the CPU.

Parameter ranges are ``(low, high)`` pairs drawn uniformly (a single number fixes the value);
defaults come from :data:`fastdeblur.synth.DEFAULT_RANGES`. :func:`at_strength` builds the
transform of one type with its main parameter fixed to one *strength*, the single knob of
:mod:`fastdeblur.robustness.evaluate`:

================  =================================  =====================================
blur type         strength is                        other parameters
================  =================================  =====================================
gaussian          ``sigma`` (px)                     isotropic
motion            ``length`` (px)                    angle uniform in [0, 180)
defocus           ``radius`` (px)                    —
camera_shake      trajectory ``length`` (px)         anxiety uniform in [0, 1]
spatially_varying largest blur extent (px)         field type and seed drawn at random
================  =================================  =====================================

Strength 0 leaves images unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from fastdeblur.convolution import check_boundary, convolve
from fastdeblur.robustness import batch_psf
from fastdeblur.synth import DEFAULT_RANGES

__all__ = [
    "BLUR_TYPES",
    "BlurTransform",
    "Compose",
    "RandomBlur",
    "RandomCameraShake",
    "RandomDefocusBlur",
    "RandomGaussianBlur",
    "RandomMotionBlur",
    "RandomSpatiallyVaryingBlur",
    "at_strength",
    "blur_at_strengths",
]

BLUR_TYPES: tuple[str, ...] = ("gaussian", "motion", "defocus", "camera_shake",
                               "spatially_varying")

Range = float | tuple[float, float]


def _range(value: Range, name: str, minimum: float | None = 0.0) -> tuple[float, float]:
    """A ``(low, high)`` pair from a number or a pair, validated."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        low = high = float(value)
    elif isinstance(value, Sequence) and len(value) == 2:
        low, high = float(value[0]), float(value[1])
    else:
        raise ValueError(f"{name} must be a number or a (low, high) pair; got {value!r}")
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name} must be finite with low <= high; got {value!r}")
    if minimum is not None and low < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}; got {value!r}")
    return low, high


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator | None
             ) -> torch.Tensor:
    """``(n,)`` float64 values drawn uniformly in ``bounds`` on the CPU."""
    low, high = bounds
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return low + (high - low) * u


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be (C, H, W) or (B, C, H, W); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1]; got {x.dtype}")
    return (x if x.ndim == 4 else x.unsqueeze(0)), x.ndim == 3


def _device_generator(generator: torch.Generator | None, device: torch.device
                      ) -> torch.Generator:
    """A generator on ``device`` seeded from a draw of the CPU ``generator``."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class BlurTransform(nn.Module):
    """Common machinery: probability, generator handling, batching, noise.

    Subclasses implement :meth:`sample_params` (draw per-sample parameters) and :meth:`apply`
    (blur a batch with given parameters); a mixture overrides :meth:`_blur` instead.

    Args:
        p: Probability that a sample is blurred (drawn per sample).
        seed: Seed of the transform's own generator (see the module docstring).
        noise_sigma: Std of white Gaussian noise added after the blur (a number or a range).
        clip: Clamp the result to [0, 1] (only matters with noise).
        boundary: Boundary mode of the convolution.
    """

    def __init__(self, *, p: float = 1.0, seed: int | None = None, noise_sigma: Range = 0.0,
                 clip: bool = True, boundary: str = "reflect") -> None:
        super().__init__()
        if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
            raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
        self.p = float(p)
        self.seed = seed
        self.noise_sigma = _range(noise_sigma, "noise_sigma")
        self.clip = clip
        self.boundary = check_boundary(boundary)
        self._generator: torch.Generator | None = None
        self._generator_worker: int | None = None
        self.last_params: dict[str, torch.Tensor] | None = None

    # -- randomness ------------------------------------------------------------------------
    def _own_generator(self) -> torch.Generator | None:
        """The seeded generator, reseeded once per DataLoader worker (None without a seed)."""
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        worker = None if info is None else info.id
        if self._generator is None or worker != self._generator_worker:
            seed = self.seed if worker is None else self.seed * 1_000_003 + worker + 1
            self._generator = torch.Generator().manual_seed(seed % (2**63))
            self._generator_worker = worker
        return self._generator

    def reset(self) -> None:
        """Restart the seeded generator: the next calls repeat the first ones."""
        self._generator = None

    # -- the transform ---------------------------------------------------------------------
    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Blur each sample with probability ``p``, with its own random parameters.

        Args:
            images: ``(C, H, W)`` or ``(B, C, H, W)`` float images in [0, 1].
            generator: CPU generator to draw from (overrides the transform's ``seed``).

        Returns:
            Images of the same shape, dtype and device. ``self.last_params`` holds the
            parameters of the blurred samples (``{"index": (n,), name: (n,) ...}``).
        """
        x, single = _batched(images)
        if generator is None:
            generator = self._own_generator()
        elif generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator; got one on "
                             f"{generator.device}")
        B = x.shape[0]
        chosen = torch.rand(B, generator=generator) < self.p
        index = chosen.nonzero().flatten()
        out = x
        params: dict[str, torch.Tensor] = {"index": index}
        if index.numel():
            subset = x if index.numel() == B else x.index_select(0, index.to(x.device))
            blurred, drawn = self._blur(subset, generator)
            blurred = self._add_noise(blurred, generator)
            params.update(drawn)
            if index.numel() == B:
                out = blurred.to(x.dtype)
            else:
                out = x.index_copy(0, index.to(x.device), blurred.to(x.dtype))
        self.last_params = params
        return out[0] if single else out

    def _add_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        low, high = self.noise_sigma
        if high == 0:
            return x
        sigma = _uniform(x.shape[0], self.noise_sigma, generator).to(x.device, x.dtype)
        device_gen = _device_generator(generator, x.device)
        noise = torch.randn(x.shape, generator=device_gen, device=x.device, dtype=x.dtype)
        y = x + sigma.view(-1, 1, 1, 1) * noise
        return y.clamp(0, 1) if self.clip else y

    #: name of the parameter that :func:`at_strength` fixes
    strength_param: str = ""

    def sample_params(self, n: int, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        """Draw ``n`` parameter sets: ``{name: (n,) CPU tensor}``."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Blur ``x`` ``(n, C, H, W)`` with given per-sample parameters.

        Returns:
            The blurred batch and the ``(n, K, K)`` kernels used (``None`` for a blur that is
            not one kernel per sample).
        """
        raise NotImplementedError

    def _blur(self, x: torch.Tensor, generator: torch.Generator | None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        params = self.sample_params(x.shape[0], generator)
        y, _ = self.apply(x, params)
        return y, params

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


class _ParametricBlur(BlurTransform):
    """A uniform parametric blur: per-sample parameters -> per-sample kernels -> grouped conv."""

    blur_type: str = ""

    def kernels(self, params: dict[str, torch.Tensor], *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
        """The ``(n, K, K)`` kernels of drawn parameters, padded to a common odd size."""
        on_device = {k: v.to(device) for k, v in params.items()}
        return batch_psf.render(self.blur_type, on_device, dtype=dtype)

    def kernel_sizes(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each sample's own (unpadded) odd kernel side, ``(n,)`` int64."""
        return batch_psf.default_sizes(self.blur_type, params)

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = self.kernels(params, dtype=torch.float64 if x.dtype == torch.float64
                         else torch.float32, device=x.device)
        return convolve(x, k, boundary=self.boundary), k


class RandomGaussianBlur(_ParametricBlur):
    """Gaussian blur with a random ``sigma`` per sample.

    Args:
        sigma: Range of the standard deviation in pixels (default
            ``DEFAULT_RANGES["gaussian"]["sigma"]``, 0.5–5).
        sigma_y: Range of the standard deviation across ``theta`` for anisotropic blur;
            ``None`` (default) for isotropic.
        theta: Range of the direction of the ``sigma`` axis in degrees (anisotropic only).
        **kwargs: ``p``, ``seed``, ``noise_sigma``, ``clip``, ``boundary`` (see
            :class:`BlurTransform`).
    """

    blur_type = "gaussian"
    strength_param = "sigma"

    def __init__(self, sigma: Range = DEFAULT_RANGES["gaussian"]["sigma"],
                 sigma_y: Range | None = None, theta: Range = (0.0, 180.0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.sigma = _range(sigma, "sigma")
        self.sigma_y = None if sigma_y is None else _range(sigma_y, "sigma_y")
        self.theta = _range(theta, "theta", minimum=None)

    def sample_params(self, n: int, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        params = {"sigma": _uniform(n, self.sigma, generator)}
        if self.sigma_y is not None:
            params["sigma_y"] = _uniform(n, self.sigma_y, generator)
            params["theta"] = _uniform(n, self.theta, generator)
        return params


class RandomMotionBlur(_ParametricBlur):
    """Linear motion blur with a random length and direction per sample.

    Args:
        length: Range of the motion length in pixels (default 3–31).
        angle: Range of the direction in degrees, counter-clockwise as displayed (0–180).
        **kwargs: see :class:`BlurTransform`.
    """

    blur_type = "motion"
    strength_param = "length"

    def __init__(self, length: Range = DEFAULT_RANGES["motion"]["length"],
                 angle: Range = DEFAULT_RANGES["motion"]["angle"], **kwargs) -> None:
        super().__init__(**kwargs)
        self.length = _range(length, "length")
        self.angle = _range(angle, "angle", minimum=None)

    def sample_params(self, n: int, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        return {"length": _uniform(n, self.length, generator),
                "angle": _uniform(n, self.angle, generator)}


class RandomDefocusBlur(_ParametricBlur):
    """Defocus (disk) blur with a random radius per sample.

    Args:
        radius: Range of the disk radius in pixels (default 1–10).
        **kwargs: see :class:`BlurTransform`.
    """

    blur_type = "defocus"
    strength_param = "radius"

    def __init__(self, radius: Range = DEFAULT_RANGES["defocus"]["radius"], **kwargs) -> None:
        super().__init__(**kwargs)
        self.radius = _range(radius, "radius")

    def sample_params(self, n: int, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        return {"radius": _uniform(n, self.radius, generator)}


class RandomCameraShake(_ParametricBlur):
    """Camera-shake blur: a random trajectory per sample (:func:`fastdeblur.psf.camera_shake`).

    Each sample's kernel side is ``2 ceil(length / 2) + 3`` (the trajectory keeps one pixel
    off the border); kernels are padded to the largest side of the batch. The trajectories are
    drawn one by one on the CPU (they are random walks), the convolution is batched.

    Args:
        length: Range of the trajectory length in pixels (default 5–25).
        anxiety: Range of the jitter / abrupt-shake amount (default 0–1).
        **kwargs: see :class:`BlurTransform`.
    """

    blur_type = "camera_shake"
    strength_param = "length"

    def __init__(self, length: Range = (5.0, 25.0), anxiety: Range = (0.0, 1.0),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.length = _range(length, "length")
        self.anxiety = _range(anxiety, "anxiety")

    def sample_params(self, n: int, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        params = {"length": _uniform(n, self.length, generator),
                  "anxiety": _uniform(n, self.anxiety, generator)}
        # one seed per trajectory, so the kernels are a function of the drawn parameters
        params["trajectory_seed"] = torch.randint(0, 2**62, (n,), generator=generator)
        return params

    def kernels(self, params: dict[str, torch.Tensor], *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
        from fastdeblur import psf

        sizes = camera_shake_sizes(params["length"])
        side = int(sizes.max()) if sizes.numel() else 1
        kernels = []
        for length, anxiety, seed, size in zip(params["length"].tolist(),
                                               params["anxiety"].tolist(),
                                               params["trajectory_seed"].tolist(),
                                               sizes.tolist(), strict=True):
            if length <= 0:
                k = torch.zeros(side, side, dtype=torch.float64)
                k[side // 2, side // 2] = 1.0
            else:
                k = psf.camera_shake(int(size), seed=int(seed), max_length=float(length),
                                     anxiety=float(anxiety), dtype=torch.float64)
                k = batch_psf.pad_to(k[None], side)[0]
            kernels.append(k)
        if not kernels:
            return torch.zeros(0, 1, 1, dtype=dtype, device=device)
        return torch.stack(kernels).to(dtype=dtype, device=device)

    def kernel_sizes(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return camera_shake_sizes(params["length"])


def camera_shake_sizes(length: torch.Tensor) -> torch.Tensor:
    """Kernel sides ``2 ceil(length / 2) + 3`` that hold a trajectory of ``length`` pixels."""
    return 2 * torch.ceil(torch.as_tensor(length, dtype=torch.float64) / 2 - 1e-6
                          ).clamp_min(0).long() + 3


class RandomSpatiallyVaryingBlur(BlurTransform):
    """Spatially-varying blur: a built-in field (:func:`fastdeblur.fields.make_field`) per sample.

    Each sample gets a field type drawn from ``fields``, a strength drawn from ``strength`` (the
    largest blur extent over the image, in pixels) and a field seed; the grid kernels are
    applied by product-convolution (:func:`fastdeblur.ops.pc_conv.pc_conv`,
    ``y = Σ_i h_i ⋆ (w_i ⊙ x)``), all samples in one call, their kernels zero-padded to the
    largest side of the batch. Fields are made on the CPU one sample at a time (each is a grid
    of parametric kernels), so this transform is slower than the uniform ones.

    Args:
        fields: Field types to draw from (default: all of
            :data:`fastdeblur.fields.FIELD_TYPES`).
        strength: Range of the largest blur extent in pixels (default 2–15).
        grid: Grid cells per side of the fields.
        **kwargs: see :class:`BlurTransform`.
    """

    blur_type = "spatially_varying"
    strength_param = "strength"

    def __init__(self, fields: Sequence[str] | None = None, strength: Range = (2.0, 15.0),
                 grid: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fields = tuple(fields) if fields is not None else None
        if self.fields is not None and not self.fields:
            raise ValueError("fields must name at least one field type")
        self.strength = _range(strength, "strength")
        if not (isinstance(grid, int) and grid >= 1):
            raise ValueError(f"grid must be a positive int; got {grid!r}")
        self.grid = grid

    def _field_names(self) -> tuple[str, ...]:
        if self.fields is not None:
            return self.fields
        from fastdeblur import fields

        return tuple(fields.FIELD_TYPES)

    def sample_params(self, n: int, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        names = self._field_names()
        return {"field": torch.randint(len(names), (n,), generator=generator),
                "strength": _uniform(n, self.strength, generator),
                "field_seed": torch.randint(0, 2**31, (n,), generator=generator)}

    def grid_kernels(self, params: dict[str, torch.Tensor], H: int, W: int
                     ) -> torch.Tensor:
        """``(n, gh, gw, K, K)`` grid kernels of drawn parameters for ``H × W`` images."""
        from fastdeblur import fields as field_models

        names = self._field_names()
        grids = [field_models.make_field(names[int(i)], H, W, seed=int(seed),
                                         strength=float(amount), grid=self.grid)
                 for i, seed, amount in zip(params["field"].tolist(),
                                            params["field_seed"].tolist(),
                                            params["strength"].tolist(), strict=True)]
        side = max(g.shape[-1] for g in grids)
        return torch.stack([batch_psf.pad_to(g.flatten(0, 1), side).view(*g.shape[:2], side,
                                                                           side)
                            for g in grids])

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        from fastdeblur.ops.pc_conv import pc_conv

        grids = self.grid_kernels(params, *x.shape[-2:]).to(device=x.device, dtype=x.dtype)
        return pc_conv(x, grids, boundary=self.boundary), None


class RandomBlur(BlurTransform):
    """A mixture: each sample is blurred by one of ``transforms``, picked with ``weights``.

    The children's own ``p`` still applies after they are picked; the mixture's ``p`` is the
    probability that a sample is blurred at all.

    Args:
        transforms: The blur transforms (default: Gaussian, motion and defocus with their
            default ranges).
        weights: Relative probabilities of the transforms (default equal).
        **kwargs: see :class:`BlurTransform` (``noise_sigma`` of the mixture is added after
            whichever blur was picked).
    """

    def __init__(self, transforms: Sequence[BlurTransform] | None = None,
                 weights: Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if transforms is None:
            transforms = [RandomGaussianBlur(), RandomMotionBlur(), RandomDefocusBlur()]
        if not transforms:
            raise ValueError("transforms must not be empty")
        for t in transforms:
            if not isinstance(t, BlurTransform):
                raise TypeError(f"transforms must be blur transforms; got {type(t).__name__}")
        self.transforms = nn.ModuleList(transforms)
        w = torch.ones(len(transforms), dtype=torch.float64) if weights is None else \
            torch.as_tensor([float(v) for v in weights], dtype=torch.float64)
        if w.shape != (len(transforms),) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be {len(transforms)} numbers >= 0 with a positive "
                             f"sum; got {weights!r}")
        self.weights = (w / w.sum()).tolist()

    def _blur(self, x: torch.Tensor, generator: torch.Generator | None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = x.shape[0]
        which = torch.multinomial(torch.tensor(self.weights), n, replacement=True,
                                  generator=generator)
        out = x
        for i, transform in enumerate(self.transforms):
            index = (which == i).nonzero().flatten()
            if index.numel() == 0:
                continue
            idx = index.to(x.device)
            blurred = transform(x.index_select(0, idx), generator=generator)
            out = out.index_copy(0, idx, blurred)
        return out, {"transform": which}


class Compose:
    """Apply callables in order (for pipelines without torchvision).

    Args:
        transforms: Callables taking and returning an image tensor.
    """

    def __init__(self, transforms: Iterable[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


def at_strength(blur_type: str, strength: float, **kwargs) -> BlurTransform:
    """The transform of ``blur_type`` with its main parameter fixed to ``strength`` (p = 1).

    See the table in the module docstring for what strength means per type.

    Args:
        blur_type: One of :data:`BLUR_TYPES`.
        strength: Value of the main parameter (>= 0).
        **kwargs: Passed to the transform (``seed``, ``boundary``, ``angle``, ``fields``, ...).

    Returns:
        A :class:`BlurTransform`.
    """
    if not (isinstance(strength, int | float) and math.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength must be a finite number >= 0; got {strength!r}")
    s = float(strength)
    if blur_type == "gaussian":
        return RandomGaussianBlur(sigma=s, **kwargs)
    if blur_type == "motion":
        return RandomMotionBlur(length=s, **kwargs)
    if blur_type == "defocus":
        return RandomDefocusBlur(radius=s, **kwargs)
    if blur_type == "camera_shake":
        return RandomCameraShake(length=s, **kwargs)
    if blur_type == "spatially_varying":
        return RandomSpatiallyVaryingBlur(strength=s, **kwargs)
    raise ValueError(f"blur_type must be one of {', '.join(BLUR_TYPES)}; got {blur_type!r}")


def blur_at_strengths(x: torch.Tensor, blur_type: str, strengths: float | torch.Tensor, *,
                      generator: torch.Generator | None = None, boundary: str = "reflect",
                      **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Blur every sample of a batch at its own strength (the other parameters drawn at random).

    The random draws do not depend on the strengths: the same generator state gives the same
    angles, trajectories and fields at every strength, so a sweep over strengths (or a
    bisection) changes one knob only.

    Args:
        x: Images ``(B, C, H, W)``.
        blur_type: One of :data:`BLUR_TYPES`.
        strengths: One strength for all, or ``(B,)`` per sample (>= 0).
        generator: CPU generator for the other parameters.
        boundary: Boundary mode.
        **kwargs: Passed to the transform (e.g. ``angle=(0, 0)`` to fix the motion direction).

    Returns:
        ``(blurred (B, C, H, W), kernels (B, K, K) or None)``; ``kernels`` is ``None`` for
        spatially-varying blur.
    """
    x, _ = _batched(x)
    B = x.shape[0]
    s = torch.as_tensor(strengths, dtype=torch.float64).flatten().cpu()
    if s.numel() == 1:
        s = s.expand(B)
    if s.shape != (B,) or not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"strengths must be one number or {B} numbers, finite and >= 0")
    transform = at_strength(blur_type, 0.0, boundary=boundary, **kwargs)
    params = transform.sample_params(B, generator)
    params[transform.strength_param] = s.clone()
    if B == 0:
        return x.clone(), None
    return transform.apply(x, params)

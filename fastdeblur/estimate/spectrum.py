"""Image-level blur-type classifier on the Welch power spectrum of the whole image.

The likelihood stage (:mod:`fastdeblur.estimate.likelihood`) explains an image's spectrum with a
parametric kernel and an *isotropic power-law* image; images that are not like that (a fence of
vertical bars looks like vertical motion blur to it; a soft or JPEG-compressed photo like a
Gaussian one) fool it. :class:`SpectrumCNN` instead learns the blur type from the same Welch
spectrum (the most textured 128×128 tiles, Hann-windowed, :func:`~fastdeblur.estimate.likelihood.
tile_spectrum`) on thousands of blurred photo crops: the ring-shaped zeros of a disk, the
parallel zero lines of a streak and the smooth fall-off of a Gaussian, whatever the scene's own
spectrum. Its class probabilities join the verdict in the
:class:`~fastdeblur.estimate.likelihood.Combiner`.
"""

from __future__ import annotations

import torch
from torch import nn

# The classifier reads the likelihood stage's spectrum (its tile), and floors the noise as the
# likelihood does: an estimate of 0 on a clean image would make the "power above noise" channel
# unbounded.
from fastdeblur.estimate.likelihood import NOISE_FLOOR, TILE

# The training crops' side: 25 half-overlapping 128×128 tiles, near the 32 read from a photo.
WINDOW = 384


def mirror_spectrum(power: torch.Tensor) -> torch.Tensor:
    """The half-plane spectrum ``(..., T, T // 2 + 1)`` of the mirrored image
    (``f_y → −f_y``): the training augmentation that turns each crop into two."""
    T = power.shape[-2]
    return power[..., (-torch.arange(T, device=power.device)) % T, :]


class SpectrumCNN(nn.Module):
    """Blur type from the Welch power spectrum of an image.

    Input channels (on the ``rfft2`` half-plane, rows shifted so that ``f_y = 0`` is central):
    the mean-free log power (the spectrum's *shape*: invariant to exposure and contrast), the log
    power above the noise variance (where the signal sinks into the noise), and the frequency
    coordinates ``|f_y|``, ``f_x`` (what a zero at a given radius means). Five 3×3/5×5
    convolutions (four with stride 2) down to 8×5, then a 64-unit MLP head.

    Args:
        width: Channels of the first convolution.
        tile: Side of the spectrum's tiles (the input is ``(tile, tile // 2 + 1)``).
        classes: Number of classes: 3 (the blur families, :data:`fastdeblur.synth.BLUR_TYPES`)
            or 4 (then camera shake: :data:`fastdeblur.estimate.data.SPECTRUM_CLASSES`).
    """

    def __init__(self, width: int = 24, tile: int = TILE, classes: int = 3) -> None:
        super().__init__()
        if classes not in (3, 4):
            raise ValueError(f"classes must be 3 or 4; got {classes}")
        self.width = int(width)
        self.tile = int(tile)
        self.classes = int(classes)
        c = self.width
        ch = (4, c, c + 8, 2 * c, 2 * c + 16, 2 * c + 16)
        layers: list[nn.Module] = []
        for i in range(5):
            k = 5 if i == 0 else 3
            layers += [
                nn.Conv2d(ch[i], ch[i + 1], k, stride=2 if i < 4 else 1, padding=k // 2),
                nn.GELU(),
            ]
        self.body = nn.Sequential(*layers)
        rows, cols = self.tile, self.tile // 2 + 1
        for _ in range(4):
            rows, cols = (rows + 1) // 2, (cols + 1) // 2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(ch[-1] * rows * cols, 64),
            nn.GELU(),
            nn.Linear(64, self.classes),
        )

    def inputs(self, power: torch.Tensor, noise_sigma: torch.Tensor) -> torch.Tensor:
        """The network's input ``(N, 4, T, T // 2 + 1)`` from spectra ``(N, T, T // 2 + 1)``
        (:func:`~fastdeblur.estimate.likelihood.tile_spectrum`) and noise levels ``(N,)``."""
        T = self.tile
        if power.shape[-2:] != (T, T // 2 + 1):
            raise ValueError(
                f"power must be (N, {T}, {T // 2 + 1}) spectra; got {tuple(power.shape)}"
            )
        logp = torch.fft.fftshift(power.float().clamp_min(1e-12).log(), dim=-2)
        shape = logp - logp.mean((-2, -1), keepdim=True)
        noise_var = noise_sigma.float().clamp_min(NOISE_FLOOR).pow(2)
        above = (logp - noise_var.log()[:, None, None]).clamp(-5, 20)
        fy = torch.fft.fftshift(torch.fft.fftfreq(T, device=power.device)).abs()
        fx = torch.fft.rfftfreq(T, device=power.device)
        coords = torch.stack(torch.meshgrid(2 * fy, 2 * fx, indexing="ij"))
        return torch.cat(
            [shape[:, None] / 5, above[:, None] / 5, coords.expand(len(power), -1, -1, -1)], 1
        )

    def forward(self, power: torch.Tensor, noise_sigma: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, classes)`` (order :data:`fastdeblur.estimate.data.
        SPECTRUM_CLASSES`) of spectra ``power (N, T, T // 2 + 1)`` with noise levels
        ``noise_sigma (N,)``."""
        return self.head(self.body(self.inputs(power, noise_sigma)))

"""Make ``fastdeblur/data/sample_blurred.png``, the example image of the README.

Source: ``kodim23.png`` (Kodak Lossless True Color Image Suite, as shipped in the sporco
0.2.2 wheel), 768 x 512, downscaled by 2 (Lanczos) to 384 x 256.
Blur: ``fastdeblur.psf.motion(length=10, angle=30)`` (float64, 11 x 11), applied as a
true convolution with ``scipy.ndimage.convolve(..., mode="mirror")`` — the ``reflect``
boundary of fastdeblur (mirror about the edge samples without repeating them).
Noise: Gaussian, sigma 0.01 (numpy ``default_rng(2016)``), then clipped to [0, 1] and
stored as 8-bit RGB PNG.

Run from the repository root::

    python scripts/make_sample.py [path/to/kodim23.png]

The default source path is ``../shared/data/sharp/kodim23.png`` beside the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastdeblur import io, psf  # noqa: E402

LENGTH, ANGLE = 10.0, 30.0
NOISE_SIGMA = 0.01
SEED = 2016


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / \
        "sharp" / "kodim23.png"
    with Image.open(source) as image:
        sharp = image.convert("RGB").resize((image.width // 2, image.height // 2),
                                           Image.Resampling.LANCZOS)
    x = np.asarray(sharp, dtype=np.float64) / 255.0
    kernel = psf.motion(LENGTH, ANGLE, dtype=torch.float64).numpy()
    blurred = np.stack([scipy.ndimage.convolve(x[..., c], kernel, mode="mirror")
                        for c in range(3)], axis=-1)
    noisy = blurred + NOISE_SIGMA * np.random.default_rng(SEED).standard_normal(blurred.shape)
    pixels = torch.from_numpy(np.moveaxis(np.clip(noisy, 0.0, 1.0), -1, 0))
    out = io.write(REPO / "fastdeblur" / "data" / "sample_blurred.png", pixels, bit_depth=8)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB, {sharp.width}x{sharp.height}, "
          f"kernel {kernel.shape[0]}x{kernel.shape[1]})")


if __name__ == "__main__":
    main()

"""Speed of non-blind deconvolution on a 1024×768 RGB image (uniform kernel, CPU/GPU).

Rows: fastdeblur ``wiener`` and ``hyperlaplacian`` (the default border handling, ``taper``),
and the whole ``fastdeblur.deblur`` call with a kernel; baseline: scikit-image's ``wiener``
on the same image, channel by channel (it has no colour path), in the same process.
"""

from __future__ import annotations

import numpy as np
import torch

from bench._timing import measure


def run(quick: bool) -> list[dict]:
    from skimage import restoration

    from fastdeblur import restore
    from fastdeblur.convolution import convolve
    from fastdeblur.restore.pipeline import deblur

    H, W = (384, 512) if quick else (768, 1024)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, H, W, generator=gen)
    k = torch.rand(19, 19, generator=gen)
    k = k / k.sum()
    y = convolve(x, k).clamp(0, 1).to(device)
    ynp = y[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)
    knp = k.numpy().astype(np.float64)
    repeat = 2 if quick else 3
    base = measure(lambda: [restoration.wiener(ynp[..., c], knp, 0.01) for c in range(3)],
                   warmup=1, repeat=repeat)
    rows = []
    cases = {
        "wiener": lambda: restore.wiener(y, k.to(device)),
        "hyperlaplacian": lambda: restore.hyper_laplacian(y, k.to(device)),
        "deblur(auto, kernel)": lambda: deblur(y[0], kernel=k, device=device),
    }
    for name, fn in cases.items():
        t = measure(fn, warmup=1, repeat=repeat)
        rows.append({"op": name, "shape": f"3x{H}x{W} k19", "backend": device,
                     "dtype": "float32", "median_ms": t * 1e3, "baseline": "skimage.wiener",
                     "ratio": base / t})
    return rows

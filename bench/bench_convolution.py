"""Uniform blur: direct (conv2d) versus FFT convolution across kernel sizes.

This is where :data:`fastdeblur.convolution.FFT_MIN_TAPS` comes from: the ratio column is
direct time / FFT time, so the FFT path pays off where it exceeds 1.
"""

from __future__ import annotations

import torch

from bench._timing import measure
from fastdeblur.convolution import convolve


def run(quick: bool = False) -> list[dict]:
    """Time both paths of :func:`fastdeblur.convolution.convolve` for several kernel sizes."""
    sizes = [(1, 3, 128, 128)] if quick else [(1, 3, 512, 512), (1, 3, 1024, 1024)]
    kernels = [5, 11, 15, 31] if quick else [5, 7, 9, 11, 13, 15, 21, 31, 51]
    rows = []
    for shape in sizes:
        x = torch.rand(shape)
        for k in kernels:
            psf = torch.rand(k, k)
            psf /= psf.sum()
            repeat = 3 if quick else 5
            t_direct = measure(
                lambda x=x, psf=psf: convolve(x, psf, method="direct"), warmup=1, repeat=repeat
            )
            t_fft = measure(
                lambda x=x, psf=psf: convolve(x, psf, method="fft"), warmup=1, repeat=repeat
            )
            for method, t in (("direct", t_direct), ("fft", t_fft)):
                rows.append(
                    {
                        "op": f"convolve[{method}]",
                        "shape": f"{'x'.join(map(str, shape))} k{k}x{k}",
                        "backend": "torch",
                        "dtype": "float32",
                        "median_ms": t * 1e3,
                        "baseline": "convolve[fft]" if method == "direct" else "convolve[direct]",
                        "ratio": (t_fft / t_direct) if method == "direct" else (t_direct / t_fft),
                    }
                )
    return rows

"""Removing a known or estimated blur: non-blind deconvolution, tiling, the blind pipeline."""

from fastdeblur.restore.noise import estimate_noise
from fastdeblur.restore.shrink import shrink
from fastdeblur.restore.tiling import tiled
from fastdeblur.restore.uniform import hyper_laplacian, richardson_lucy, wiener

__all__ = ["estimate_noise", "hyper_laplacian", "richardson_lucy", "shrink", "tiled", "wiener"]

"""fastdeblur: estimate how an image is blurred and remove the blur, fast."""

from fastdeblur import io, psf
from fastdeblur._version import __version__
from fastdeblur.convolution import blur
from fastdeblur.estimate import classify, estimate
from fastdeblur.product_convolution import ProductConvolutionBlur
from fastdeblur.restore.kernel_estimation import estimate_kernel
from fastdeblur.restore.pipeline import deblur
from fastdeblur.spatially_varying import SpatiallyVaryingBlur, sv_blur

__all__ = [
    "ProductConvolutionBlur",
    "SpatiallyVaryingBlur",
    "__version__",
    "blur",
    "classify",
    "deblur",
    "estimate",
    "estimate_kernel",
    "io",
    "psf",
    "sv_blur",
]

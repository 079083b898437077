"""fastdeblur: estimate how an image is blurred and remove the blur, fast."""

from fastdeblur._version import __version__
from fastdeblur.convolution import blur
from fastdeblur.restore.pipeline import deblur

__all__ = ["__version__", "blur", "deblur"]

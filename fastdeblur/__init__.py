"""fastdeblur: estimate how an image is blurred and remove the blur, fast."""

from fastdeblur._version import __version__
from fastdeblur.convolution import blur

__all__ = ["__version__", "blur"]

"""fastdeblur."""
from fastdeblur._version import __version__

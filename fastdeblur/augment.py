"""Blur augmentation transforms: the public name of :mod:`fastdeblur.robustness.augment`."""

from fastdeblur.robustness import augment as _augment
from fastdeblur.robustness.augment import *  # noqa: F403 (the same names, one definition)

__all__ = list(_augment.__all__)

"""Blur augmentation transforms; see :mod:`fastdeblur.robustness.augment`."""

from fastdeblur.robustness.augment import (
    BLUR_TYPES,
    BlurTransform,
    Compose,
    RandomBlur,
    RandomCameraShake,
    RandomDefocusBlur,
    RandomGaussianBlur,
    RandomMotionBlur,
    RandomSpatiallyVaryingBlur,
    at_strength,
    blur_at_strengths,
)

__all__ = [
    "BLUR_TYPES",
    "BlurTransform",
    "Compose",
    "RandomBlur",
    "RandomCameraShake",
    "RandomDefocusBlur",
    "RandomGaussianBlur",
    "RandomMotionBlur",
    "RandomSpatiallyVaryingBlur",
    "at_strength",
    "blur_at_strengths",
]

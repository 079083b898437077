"""Blur robustness of classifiers: augmentation, evaluation, deblur-first.

* :mod:`fastdeblur.robustness.augment` (also :mod:`fastdeblur.augment`) — random per-sample
  blur transforms for training.
* :mod:`fastdeblur.robustness.evaluate` — accuracy versus blur strength, area under the curve,
  corruption error, minimal blur that flips a prediction; optionally deblurring first.
* :mod:`fastdeblur.robustness.data` — a small ImageFolder reader.
"""

from fastdeblur.robustness.data import ImageFolder
from fastdeblur.robustness.evaluate import (
    DEFAULT_STRENGTHS,
    RobustnessReport,
    area_under_curve,
    corruption_error,
    evaluate,
    minimal_blur,
    minimal_blur_distribution,
)

__all__ = [
    "DEFAULT_STRENGTHS",
    "ImageFolder",
    "RobustnessReport",
    "area_under_curve",
    "corruption_error",
    "evaluate",
    "minimal_blur",
    "minimal_blur_distribution",
]

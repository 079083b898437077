"""Blind blur estimation (Yan & Shao, TIP 2016): patch classifier, GRNN regressors, blur maps.

``estimate(image)`` returns a :class:`BlurEstimate` (type, parameters, confidence, per-patch
map); ``classify(image)`` the type only. Both use the weights shipped in ``fastdeblur/weights``
unless given an :class:`BlurEstimator`.
"""

from fastdeblur.estimate.estimator import (
    BlurEstimate,
    BlurEstimator,
    BlurMap,
    classify,
    default_estimator,
    estimate,
)

__all__ = [
    "BlurEstimate",
    "BlurEstimator",
    "BlurMap",
    "classify",
    "default_estimator",
    "estimate",
]

"""Blind blur estimation (Yan & Shao, TIP 2016): patch classifier (RBM + DNN), GRNN parameter
regressors, blur maps.

``estimate(image)`` returns a :class:`BlurEstimate` (type, parameters, confidence, per-patch
map); ``classify(image)`` the type only. Both use the weights shipped in ``fastdeblur/weights``
unless given a :class:`BlurEstimator`.
"""

from fastdeblur.estimate.estimator import (
    BlurEstimate,
    BlurEstimator,
    BlurMap,
    classify,
    default_estimator,
    estimate,
)
from fastdeblur.estimate.grnn import GRNN, kmeans

__all__ = [
    "GRNN",
    "BlurEstimate",
    "BlurEstimator",
    "BlurMap",
    "classify",
    "default_estimator",
    "estimate",
    "kmeans",
]

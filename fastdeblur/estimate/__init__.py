"""Blur estimation: patch classifier (RBM + DNN), GRNN parameter regressors, blur map."""

from fastdeblur.estimate.grnn import GRNN, kmeans

__all__ = ["GRNN", "kmeans"]

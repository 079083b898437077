"""Custom ops of fastdeblur: public functional forms, each with a PyTorch reference
(:mod:`fastdeblur.ops.reference`), native CPU/CUDA kernels and a Triton version."""

from fastdeblur.ops.grnn import grnn

__all__ = ["grnn"]

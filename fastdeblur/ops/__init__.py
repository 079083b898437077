"""Custom ops of fastdeblur: public functional forms, each with a PyTorch reference
(:mod:`fastdeblur.ops.reference`), native CPU/CUDA kernels and a Triton version."""

from fastdeblur.ops.grnn import grnn
from fastdeblur.ops.naf import naf_block
from fastdeblur.ops.pc_conv import grid_to_pixel_kernels, pc_conv, pc_conv_adjoint
from fastdeblur.ops.sv_conv import sv_conv, sv_conv_adjoint

__all__ = [
    "grid_to_pixel_kernels",
    "grnn",
    "naf_block",
    "pc_conv",
    "pc_conv_adjoint",
    "sv_conv",
    "sv_conv_adjoint",
]

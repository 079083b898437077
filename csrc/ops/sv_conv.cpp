// Schemas of the per-pixel spatially-varying convolution (fastdeblur.ops.sv_conv).
//   sv_conv:              y[b,c,i,j] = sum_{u,v} K[b, u*kw+v, i, j] * x[b,c, i-u+cy, j-v+cx]
//   sv_conv_adjoint:      its exact adjoint (scatter form, folded through the boundary)
//   _sv_conv_kernel_grad: g[b, u*kw+v, i, j] = sum_c gy[b,c,i,j] * x[b,c, i-u+cy, j-v+cx]
//                         (summed over b when shared): the kernel gradient of both ops.
// kernels is (B, kh*kw, H, W) or (kh*kw, H, W) shared by the batch.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  m.def("sv_conv(Tensor x, Tensor kernels, int kh, int kw, str boundary) -> Tensor");
  m.def("sv_conv_adjoint(Tensor y, Tensor kernels, int kh, int kw, str boundary) -> Tensor");
  m.def(
      "_sv_conv_kernel_grad(Tensor grad_y, Tensor x, int kh, int kw, str boundary, bool shared)"
      " -> Tensor");
}

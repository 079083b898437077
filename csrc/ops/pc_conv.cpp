// Schemas of the product-convolution ops (fastdeblur/ops/pc_conv.py documents them).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  // y = Σ_i h_i ⋆ (w_i ⊙ x); grid_kernels (gh, gw, kh, kw) or (B, gh, gw, kh, kw).
  m.def("pc_conv(Tensor x, Tensor grid_kernels, str boundary) -> Tensor");
  // x = Σ_i w_i ⊙ Pᵀ(h_iᵀ ⋆ y), the exact adjoint of pc_conv.
  m.def("pc_conv_adjoint(Tensor y, Tensor grid_kernels, str boundary) -> Tensor");
  // Backward of pc_conv (adjoint=False: input is x) or of pc_conv_adjoint (adjoint=True:
  // input is y). Returns (grad_input, grad_grid_kernels); an entry whose output_mask is
  // false comes back empty (shape (0,)).
  m.def(
      "_pc_conv_backward(Tensor grad, Tensor input, Tensor grid_kernels, str boundary, "
      "bool adjoint, bool[2] output_mask) -> (Tensor, Tensor)");
}

// Schemas of the GRNN (Gaussian-kernel regression) ops.
//
// grnn: out[n] = sum_m softmax_m(s[n, m]) values[m] with s[n, m] = (q_n . k_m - |k_m|^2 / 2)
// / sigma^2, i.e. Nadaraya-Watson regression with the kernel exp(-|q - k|^2 / (2 sigma^2)).
// Returns (out (N, p) in the input dtype, lse (N,) = log sum_m exp(s[n, m]) in the compute
// dtype: float for float/half/bfloat16 inputs, double for double). exclude_self drops the
// pair n == m (leave-one-out; needs N == M >= 2). sigma is a scalar; fastdeblur.ops.grnn
// reduces per-dimension widths to sigma = 1 by scaling the inputs.
//
// _grnn_backward: gradients w.r.t. (queries, keys, values) from grad_out and the forward's
// out and lse; output_mask says which are wanted, the others come back with 0 elements.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  m.def(
      "grnn(Tensor queries, Tensor keys, Tensor values, float sigma, bool exclude_self=False)"
      " -> (Tensor, Tensor)");
  m.def(
      "_grnn_backward(Tensor grad_out, Tensor queries, Tensor keys, Tensor values, Tensor out,"
      " Tensor lse, float sigma, bool exclude_self, bool[3] output_mask)"
      " -> (Tensor, Tensor, Tensor)");
}

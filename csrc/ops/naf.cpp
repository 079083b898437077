// Schemas of the fused NAF block (NAFNet) and its backward.
//
// naf_block computes fastdeblur.ops.reference.naf_block. _naf_block_backward returns the
// gradients of x and of the 18 parameters, in argument order; it recomputes the block's
// intermediates from x (nothing but x is saved between forward and backward).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  m.def(
      "naf_block(Tensor x, Tensor norm1_weight, Tensor norm1_bias, Tensor conv1_weight, "
      "Tensor conv1_bias, Tensor conv2_weight, Tensor conv2_bias, Tensor sca_weight, "
      "Tensor sca_bias, Tensor conv3_weight, Tensor conv3_bias, Tensor beta, "
      "Tensor norm2_weight, Tensor norm2_bias, Tensor conv4_weight, Tensor conv4_bias, "
      "Tensor conv5_weight, Tensor conv5_bias, Tensor gamma, float eps) -> Tensor");
  m.def(
      "_naf_block_backward(Tensor grad_out, Tensor x, Tensor norm1_weight, Tensor norm1_bias, "
      "Tensor conv1_weight, Tensor conv1_bias, Tensor conv2_weight, Tensor conv2_bias, "
      "Tensor sca_weight, Tensor sca_bias, Tensor conv3_weight, Tensor conv3_bias, "
      "Tensor beta, Tensor norm2_weight, Tensor norm2_bias, Tensor conv4_weight, "
      "Tensor conv4_bias, Tensor conv5_weight, Tensor conv5_bias, Tensor gamma, "
      "float eps) -> Tensor[]");
}

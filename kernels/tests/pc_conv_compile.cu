// Compile check of kernels/cuda/pc_conv.cuh: instantiates every kernel for float and double.
#include "cuda/pc_conv.cuh"

namespace pc = fastdeblur::kernels::cuda::pc_conv;

template <typename T>
void launch_all(const T* x, const T* k, const T* wy, const T* wx, pc::Geometry g, T* y, T* xpad,
                T* grad) {
  const dim3 block(pc::kThreadsX, pc::kThreadsY);
  const dim3 grid((g.W + pc::kTile - 1) / pc::kTile, (g.H + pc::kTile - 1) / pc::kTile, 3);
  pc::pc_conv_tiled_kernel<T><<<grid, block, pc::forward_smem_bytes<T>(g.kh, g.kw)>>>(
      x, k, wy, wx, g, 3, 0, y);
  pc::pc_conv_gather_kernel<T><<<dim3(1, 3), 256>>>(x, k, wy, wx, g, 3, 0, y);
  pc::pc_conv_adjoint_padded_kernel<T><<<dim3(1, 3), 256>>>(y, k, wy, wx, g, 3, 0, xpad);
  pc::pc_conv_fold_kernel<T><<<dim3(1, 3), 256>>>(xpad, g, y);
  pc::pc_conv_kernel_grad_kernel<T, 256><<<dim3(9, 4, 1), 256>>>(x, y, wy, wx, g, 1, 3, 1, grad);
}

template void launch_all<float>(const float*, const float*, const float*, const float*,
                                pc::Geometry, float*, float*, float*);
template void launch_all<double>(const double*, const double*, const double*, const double*,
                                 pc::Geometry, double*, double*, double*);

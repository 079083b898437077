// Compile check of kernels/cuda/sv_conv.cuh: instantiates every kernel for the storage
// types the glue uses (built by CMakeLists.txt where nvcc is found; nothing runs it).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/sv_conv.cuh"

namespace fc = fastdeblur::cuda;

#define SV_INSTANTIATE(T, Acc, CB)                                                           \
  template __global__ void fc::sv_conv_forward_kernel<T, Acc, CB>(                           \
      const T*, const T*, T*, int, int, int, int, int, int, int64_t);                        \
  template __global__ void fc::sv_conv_adjoint_gather_kernel<T, Acc, CB>(                    \
      const T*, const T*, Acc*, T*, int, int, int, int, int, int, int, int, int, int64_t);   \
  template __global__ void fc::sv_conv_kernel_grad_kernel<T, Acc, CB>(                       \
      const T*, const T*, T*, int, int, int, int, int, int, bool);

SV_INSTANTIATE(float, float, 1)
SV_INSTANTIATE(float, float, 3)
SV_INSTANTIATE(float, float, 4)
SV_INSTANTIATE(double, double, 4)
SV_INSTANTIATE(__half, float, 4)
SV_INSTANTIATE(__nv_bfloat16, float, 3)
SV_INSTANTIATE(__nv_bfloat16, float, 4)

template __global__ void fc::sv_conv_adjoint_fold_kernel<float, float>(const float*, float*,
                                                                      int64_t, int, int, int,
                                                                      int, int);
template __global__ void fc::sv_conv_adjoint_fold_kernel<__nv_bfloat16, float>(
    const float*, __nv_bfloat16*, int64_t, int, int, int, int, int);
template __global__ void fc::sv_conv_adjoint_fold_kernel<double, double>(const double*, double*,
                                                                        int64_t, int, int, int,
                                                                        int, int);

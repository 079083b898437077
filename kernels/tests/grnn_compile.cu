// Compile check of kernels/cuda/grnn.cuh: instantiates every kernel the glue launches.
#include "cuda/grnn.cuh"

namespace K = fastdeblur::kernels::grnn_cuda;

template cudaError_t K::launch_forward_simt<float, float, 1>(
    const float*, const float*, const float*, const float*, float*, float*, int64_t, int64_t,
    int64_t, int64_t, float, bool, cudaStream_t);
template cudaError_t K::launch_forward_simt<float, float, 4>(
    const float*, const float*, const float*, const float*, float*, float*, int64_t, int64_t,
    int64_t, int64_t, float, bool, cudaStream_t);
template cudaError_t K::launch_forward_simt<float, float, 16>(
    const float*, const float*, const float*, const float*, float*, float*, int64_t, int64_t,
    int64_t, int64_t, float, bool, cudaStream_t);
template cudaError_t K::launch_forward_simt<double, double, 16>(
    const double*, const double*, const double*, const double*, double*, double*, int64_t,
    int64_t, int64_t, int64_t, double, bool, cudaStream_t);
template cudaError_t K::launch_forward_simt<__half, float, 4>(
    const __half*, const __half*, const __half*, const float*, __half*, float*, int64_t, int64_t,
    int64_t, int64_t, float, bool, cudaStream_t);
template cudaError_t K::launch_forward_simt<__nv_bfloat16, float, 1>(
    const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const float*,
    __nv_bfloat16*, float*, int64_t, int64_t, int64_t, int64_t, float, bool, cudaStream_t);
template cudaError_t K::launch_forward_wmma<__half, 1>(
    const __half*, const __half*, const __half*, const float*, __half*, float*, int64_t, int64_t,
    int64_t, int64_t, float, bool, cudaStream_t);
template cudaError_t K::launch_forward_wmma<__nv_bfloat16, 2>(
    const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const float*,
    __nv_bfloat16*, float*, int64_t, int64_t, int64_t, int64_t, float, bool, cudaStream_t);
template cudaError_t K::launch_forward_wmma<__nv_bfloat16, 4>(
    const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const float*,
    __nv_bfloat16*, float*, int64_t, int64_t, int64_t, int64_t, float, bool, cudaStream_t);
template cudaError_t K::launch_backward_tile<float>(float*, float*, const float*, const float*,
                                                    const float*, int64_t, int64_t, int64_t,
                                                    float, bool, cudaStream_t);
template cudaError_t K::launch_backward_tile<double>(double*, double*, const double*,
                                                     const double*, const double*, int64_t,
                                                     int64_t, int64_t, double, bool,
                                                     cudaStream_t);

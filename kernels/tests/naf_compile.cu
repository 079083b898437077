// Compile check of kernels/cuda/naf.cuh: instantiates the kernels for every dtype.
#include "cuda/naf.cuh"

namespace fn = fastdeblur::cuda::naf;

template void fn::launch_dwconv_gate_pool<float>(const float*, const float*, const float*, float*,
                                                 float*, int64_t, int64_t, int64_t, int64_t,
                                                 cudaStream_t);
template void fn::launch_dwconv_gate_pool<__nv_bfloat16>(const __nv_bfloat16*,
                                                         const __nv_bfloat16*,
                                                         const __nv_bfloat16*, __nv_bfloat16*,
                                                         float*, int64_t, int64_t, int64_t,
                                                         int64_t, cudaStream_t);
template void fn::launch_dwconv_gate_pool<__half>(const __half*, const __half*, const __half*,
                                                  __half*, float*, int64_t, int64_t, int64_t,
                                                  int64_t, cudaStream_t);

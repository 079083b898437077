// Compile check of kernels/cuda/grnn.cuh: instantiates every kernel the glue launches.
#include "cuda/grnn.cuh"

namespace K = fastdeblur::kernels::grnn_cuda;

#define SIMT(T, ACC, PCHUNK)                                                                  \
  template cudaError_t K::launch_forward_simt<T, ACC, PCHUNK>(                                \
      const T*, const T*, const T*, const ACC*, T*, ACC*, int64_t, int64_t, int64_t, int64_t, \
      ACC, bool, int, ACC*, cudaStream_t);
#define WMMA(T, PFRAG)                                                                        \
  template cudaError_t K::launch_forward_wmma<T, PFRAG>(                                      \
      const T*, const T*, const T*, const float*, T*, float*, int64_t, int64_t, int64_t,      \
      int64_t, float, bool, cudaStream_t);

SIMT(float, float, 1)
SIMT(float, float, 4)
SIMT(float, float, 16)
SIMT(double, double, 1)
SIMT(double, double, 4)
SIMT(double, double, 16)
SIMT(__half, float, 4)
SIMT(__nv_bfloat16, float, 16)
WMMA(__half, 1)
WMMA(__half, 2)
WMMA(__half, 4)
WMMA(__nv_bfloat16, 1)
WMMA(__nv_bfloat16, 2)
WMMA(__nv_bfloat16, 4)

template cudaError_t K::launch_backward_tile<float>(float*, float*, const float*, const float*,
                                                    const float*, int64_t, int64_t, int64_t,
                                                    float, bool, cudaStream_t);
template cudaError_t K::launch_backward_tile<double>(double*, double*, const double*,
                                                     const double*, const double*, int64_t,
                                                     int64_t, int64_t, double, bool,
                                                     cudaStream_t);

// CUDA kernel of the NAF block's depthwise 3x3 convolution + bias + SimpleGate, with
// the channel sums of its output for the channel-attention pool (torch-free).
//
// Channels-last: z is (N, H, W, 2C) and g is (N, H, W, C), pixel rows contiguous.
// g[p, c] = u[p, c] * u[p, C + c],  u = dwconv3x3(z) + bias (zero padding),
// pool[n, c] += sum over the image's pixels of g[p, c] (float, atomics).
//
// Launch: threads (kChannels, kPixels) = (32, 8): threadIdx.x walks channels (coalesced
// loads of a pixel row), threadIdx.y pixels; grid (ceil(H*W / (kPixels * kPerThread)),
// ceil(C / kChannels), N). Each thread handles kPerThread pixels, keeps its pool partial
// in a register, and the block reduces the partials in shared memory before one atomic
// per channel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fastdeblur {
namespace cuda {
namespace naf {

constexpr int kChannels = 32;
constexpr int kPixels = 8;
constexpr int kPerThread = 4;

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half(v);
}

// weight: (2C, 9) taps of conv2 (weight[c, 0, ky, kx] at c * 9 + ky * 3 + kx); bias (2C).
template <typename T>
__global__ void __launch_bounds__(kChannels * kPixels)
    dwconv_gate_pool_kernel(const T* __restrict__ z, const T* __restrict__ weight,
                            const T* __restrict__ bias, T* __restrict__ g,
                            float* __restrict__ pool, int64_t H, int64_t W, int64_t C) {
  __shared__ float partial[kPixels][kChannels];
  const int64_t n = blockIdx.z;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kChannels + threadIdx.x;
  const int64_t HW = H * W;
  const int64_t C2 = 2 * C;
  const bool channel_ok = c < C;
  float wa[9], wb[9];
  float ba = 0.f, bb = 0.f;
  if (channel_ok) {
#pragma unroll
    for (int k = 0; k < 9; ++k) {
      wa[k] = to_float(weight[c * 9 + k]);
      wb[k] = to_float(weight[(C + c) * 9 + k]);
    }
    ba = to_float(bias[c]);
    bb = to_float(bias[C + c]);
  }
  const T* img = z + n * HW * C2;
  float sum = 0.f;
  const int64_t p_base = static_cast<int64_t>(blockIdx.x) * kPixels * kPerThread;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t p = p_base + i * kPixels + threadIdx.y;
    if (!channel_ok || p >= HW) continue;
    const int64_t h = p / W, w = p % W;
    float a = ba, b = bb;
#pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
      const int64_t hh = h + ky - 1;
      if (hh < 0 || hh >= H) continue;
#pragma unroll
      for (int kx = 0; kx < 3; ++kx) {
        const int64_t ww = w + kx - 1;
        if (ww < 0 || ww >= W) continue;
        const T* src = img + (hh * W + ww) * C2;
        a += wa[ky * 3 + kx] * to_float(src[c]);
        b += wb[ky * 3 + kx] * to_float(src[C + c]);
      }
    }
    const float v = a * b;
    g[(n * HW + p) * C + c] = from_float<T>(v);
    sum += v;
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && channel_ok) {
    float total = 0.f;
#pragma unroll
    for (int j = 0; j < kPixels; ++j) total += partial[j][threadIdx.x];
    atomicAdd(pool + n * C + c, total);
  }
}

// Launches dwconv_gate_pool_kernel on `stream`; `pool` (N, C) must be zeroed first.
template <typename T>
inline void launch_dwconv_gate_pool(const T* z, const T* weight, const T* bias, T* g, float* pool,
                                    int64_t N, int64_t H, int64_t W, int64_t C,
                                    cudaStream_t stream) {
  if (N == 0 || H == 0 || W == 0 || C == 0) return;
  const int64_t per_block = static_cast<int64_t>(kPixels) * kPerThread;
  const dim3 grid(static_cast<unsigned>((H * W + per_block - 1) / per_block),
                  static_cast<unsigned>((C + kChannels - 1) / kChannels),
                  static_cast<unsigned>(N));
  const dim3 block(kChannels, kPixels);
  dwconv_gate_pool_kernel<T><<<grid, block, 0, stream>>>(z, weight, bias, g, pool, H, W, C);
}

}  // namespace naf
}  // namespace cuda
}  // namespace fastdeblur

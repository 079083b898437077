// Per-pixel spatially-varying convolution on NVIDIA GPUs: forward (gather), adjoint
// (gather onto the padded grid + boundary fold) and kernel gradient. Torch-free: raw
// pointers to contiguous buffers, launched by csrc/cuda/sv_conv.cu.
//
// Meaning (fastdeblur.ops.reference.sv_conv), taps t = u * kw + v, centre (cy, cx) =
// (kh / 2, kw / 2):  y[c, i, j] = sum_t K[t, i, j] * x[c, map(i - u + cy), map(j - v + cx)].
//
// A block owns a tile of kSvTileH x kSvTileW pixels (one per thread; threadIdx.x runs along
// a row, so every read of a tap of K is a coalesced 128-byte row segment) and a block of
// CB channels. The input tile plus its halo sits in shared memory (in the accumulator
// type), gathered once through the boundary map; the loop over taps then reads K once per
// channel block and the image from shared memory. Accumulation in Acc (fp32 for
// fp16/bf16/fp32 storage, fp64 for fp64).
#pragma once

#include <cstdint>

namespace fastdeblur {
namespace cuda {

constexpr int kSvTileW = 32;
constexpr int kSvTileH = 8;
constexpr int kSvMaxChannelBlock = 4;

enum SvBoundary : int { kSvReflect = 0, kSvZero = 1, kSvReplicate = 2, kSvCircular = 3 };

// fastdeblur.convolution.boundary_index: -1 for outside under zero boundary.
__host__ __device__ inline int sv_boundary_index(int i, int n, int boundary) {
  if (i >= 0 && i < n) return i;
  if (boundary == kSvReflect) {
    if (n == 1) return 0;
    const int period = 2 * (n - 1);
    int f = i % period;
    if (f < 0) f += period;
    return f >= n ? period - f : f;
  }
  if (boundary == kSvReplicate) return i < 0 ? 0 : n - 1;
  if (boundary == kSvCircular) {
    int f = i % n;
    return f < 0 ? f + n : f;
  }
  return -1;
}

// Shared-memory bytes of the forward / kernel-gradient tile for cb channels.
inline size_t sv_tile_bytes(int cb, int kh, int kw, size_t acc_bytes) {
  return static_cast<size_t>(cb) * (kSvTileH + kh - 1) * (kSvTileW + kw - 1) * acc_bytes;
}

// Gathers the input tile (rows i0 - (kh-1-cy) ..., columns j0 - (kw-1-cx) ...) of channels
// [c0, c0 + CB) into tile[CB][TH + kh - 1][TW + kw - 1] through the boundary map.
template <typename T, typename Acc, int CB>
__device__ inline void sv_load_tile(const T* __restrict__ x, int C, int H, int W, int kh, int kw,
                                    int boundary, int i0, int j0, int c0, Acc* tile) {
  const int th = kSvTileH + kh - 1, tw = kSvTileW + kw - 1;
  const int r_base = i0 - (kh - 1 - kh / 2), c_base = j0 - (kw - 1 - kw / 2);
  const int64_t plane = static_cast<int64_t>(H) * W;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int nthreads = blockDim.x * blockDim.y;
  for (int e = tid; e < th * tw; e += nthreads) {
    const int r = e / tw, q = e - r * tw;
    const int si = sv_boundary_index(r_base + r, H, boundary);
    const int sj = sv_boundary_index(c_base + q, W, boundary);
    const bool ok = si >= 0 && sj >= 0;
    const int64_t off = ok ? static_cast<int64_t>(si) * W + sj : 0;
#pragma unroll
    for (int c = 0; c < CB; ++c) {
      Acc val = Acc(0);
      if (ok && c0 + c < C) val = static_cast<Acc>(x[(c0 + c) * plane + off]);
      tile[c * th * tw + e] = val;
    }
  }
}

// Forward. Grid: (ceil(W / TW), ceil(H / TH), B * ceil(C / CB)); block (TW, TH).
// k_batch_stride is 0 for kernels shared by the batch.
template <typename T, typename Acc, int CB>
__global__ void __launch_bounds__(kSvTileW * kSvTileH)
    sv_conv_forward_kernel(const T* __restrict__ x, const T* __restrict__ k, T* __restrict__ y,
                           int C, int H, int W, int kh, int kw, int boundary,
                           int64_t k_batch_stride) {
  extern __shared__ unsigned char sv_smem[];
  Acc* tile = reinterpret_cast<Acc*>(sv_smem);
  const int cblocks = (C + CB - 1) / CB;
  const int b = blockIdx.z / cblocks, c0 = (blockIdx.z % cblocks) * CB;
  const int i0 = blockIdx.y * kSvTileH, j0 = blockIdx.x * kSvTileW;
  const int64_t plane = static_cast<int64_t>(H) * W;
  x += static_cast<int64_t>(b) * C * plane;
  y += static_cast<int64_t>(b) * C * plane;
  k += b * k_batch_stride;
  sv_load_tile<T, Acc, CB>(x, C, H, W, kh, kw, boundary, i0, j0, c0, tile);
  __syncthreads();
  const int i = i0 + threadIdx.y, j = j0 + threadIdx.x;
  if (i >= H || j >= W) return;
  const int th = kSvTileH + kh - 1, tw = kSvTileW + kw - 1;
  Acc acc[CB];
#pragma unroll
  for (int c = 0; c < CB; ++c) acc[c] = Acc(0);
  const T* kp = k + static_cast<int64_t>(i) * W + j;
  for (int u = 0; u < kh; ++u) {
    // Tap (u, v) reads tile row threadIdx.y + kh - 1 - u, column threadIdx.x + kw - 1 - v.
    const Acc* trow = tile + (threadIdx.y + kh - 1 - u) * tw + threadIdx.x + kw - 1;
    const T* ku = kp + static_cast<int64_t>(u) * kw * plane;
#pragma unroll 4
    for (int v = 0; v < kw; ++v) {
      const Acc w = static_cast<Acc>(__ldg(ku + v * plane));
#pragma unroll
      for (int c = 0; c < CB; ++c) acc[c] += w * trow[c * th * tw - v];
    }
  }
  const int64_t out = static_cast<int64_t>(i) * W + j;
#pragma unroll
  for (int c = 0; c < CB; ++c)
    if (c0 + c < C) y[(c0 + c) * plane + out] = static_cast<T>(acc[c]);
}

// Adjoint, step 1: z[s, q] over padded rows [row0, row0 + HO), columns [col0, col0 + WO):
//   z[s, q] = sum_t K[t, i, j] * y[i, j],  i = s - (kh-1) + u,  j = q - (kw-1) + v,
// over (i, j) inside the image. Zero boundary: row0/col0 = top/left and HO x WO = H x W is
// the result itself. Grid: (ceil(WO / TW), ceil(HO / TH), B * ceil(C / CB)).
template <typename T, typename Acc, int CB>
__global__ void __launch_bounds__(kSvTileW * kSvTileH)
    sv_conv_adjoint_gather_kernel(const T* __restrict__ y, const T* __restrict__ k,
                                  Acc* __restrict__ z, T* __restrict__ z_out, int C, int H, int W,
                                  int kh, int kw, int HO, int WO, int row0, int col0,
                                  int64_t k_batch_stride) {
  extern __shared__ unsigned char sv_smem[];
  Acc* tile = reinterpret_cast<Acc*>(sv_smem);
  const int cblocks = (C + CB - 1) / CB;
  const int b = blockIdx.z / cblocks, c0 = (blockIdx.z % cblocks) * CB;
  const int s0 = blockIdx.y * kSvTileH + row0, q0 = blockIdx.x * kSvTileW + col0;
  const int64_t plane = static_cast<int64_t>(H) * W;
  y += static_cast<int64_t>(b) * C * plane;
  k += b * k_batch_stride;
  // y tile over image rows [s0 - (kh-1), s0 + TH) and columns [q0 - (kw-1), q0 + TW), 0 outside.
  const int th = kSvTileH + kh - 1, tw = kSvTileW + kw - 1;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  for (int e = tid; e < th * tw; e += blockDim.x * blockDim.y) {
    const int r = e / tw, q = e - r * tw;
    const int ii = s0 - (kh - 1) + r, jj = q0 - (kw - 1) + q;
    const bool ok = ii >= 0 && ii < H && jj >= 0 && jj < W;
#pragma unroll
    for (int c = 0; c < CB; ++c) {
      Acc val = Acc(0);
      if (ok && c0 + c < C) val = static_cast<Acc>(y[(c0 + c) * plane + static_cast<int64_t>(ii) * W + jj]);
      tile[c * th * tw + e] = val;
    }
  }
  __syncthreads();
  const int s = s0 + threadIdx.y, q = q0 + threadIdx.x;
  if (s - row0 >= HO || q - col0 >= WO) return;
  Acc acc[CB];
#pragma unroll
  for (int c = 0; c < CB; ++c) acc[c] = Acc(0);
  for (int u = 0; u < kh; ++u) {
    const int i = s - (kh - 1) + u;
    if (i < 0 || i >= H) continue;
    const Acc* trow = tile + (threadIdx.y + u) * tw + threadIdx.x;
    const T* ku = k + static_cast<int64_t>(u) * kw * plane + static_cast<int64_t>(i) * W;
    const int j_first = q - (kw - 1);
#pragma unroll 4
    for (int v = 0; v < kw; ++v) {
      const int j = j_first + v;
      if (j < 0 || j >= W) continue;
      const Acc w = static_cast<Acc>(__ldg(ku + v * plane + j));
#pragma unroll
      for (int c = 0; c < CB; ++c) acc[c] += w * trow[c * th * tw + v];
    }
  }
  const int64_t out_plane = static_cast<int64_t>(HO) * WO;
  const int64_t out = (static_cast<int64_t>(b) * C) * out_plane +
                      static_cast<int64_t>(s - row0) * WO + (q - col0);
#pragma unroll
  for (int c = 0; c < CB; ++c) {
    if (c0 + c >= C) continue;
    if (z_out != nullptr) {
      z_out[out + (c0 + c) * out_plane] = static_cast<T>(acc[c]);
    } else {
      z[out + (c0 + c) * out_plane] = acc[c];
    }
  }
}

// First and last padded index p (p in [-before, n_pad - before)) of each arithmetic
// progression of indices that the boundary rule maps to r; calls f(p) for each.
template <typename F>
__device__ inline void sv_for_each_preimage(int r, int n, int before, int n_pad, int boundary,
                                            F f) {
  const int lo = -before, hi = n_pad - before;  // [lo, hi)
  auto progression = [&](int a, int period) {
    // smallest p >= lo with p = a (mod period)
    int d = lo - a;
    int steps = d > 0 ? (d + period - 1) / period : -((-d) / period);
    for (int p = a + steps * period; p < hi; p += period) f(p);
  };
  if (boundary == kSvZero) {
    f(r);
  } else if (boundary == kSvReplicate) {
    const int first = r == 0 ? lo : r, last = r == n - 1 ? hi - 1 : r;
    for (int p = first; p <= last; ++p) f(p);
  } else if (boundary == kSvCircular) {
    progression(r, n);
  } else if (n == 1) {
    for (int p = lo; p < hi; ++p) f(p);
  } else {
    const int period = 2 * (n - 1);
    progression(r, period);
    if (r != 0 && r != n - 1) progression(period - r, period);
  }
}

// Adjoint, step 2: x[c, ri, rj] = sum over padded (s, q) mapping to (ri, rj) of z[c, s, q].
// z is (B*C, H + kh - 1, W + kw - 1); one thread per output element (deterministic).
template <typename T, typename Acc>
__global__ void sv_conv_adjoint_fold_kernel(const Acc* __restrict__ z, T* __restrict__ x,
                                            int64_t planes, int H, int W, int kh, int kw,
                                            int boundary) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= planes * H * W) return;
  const int64_t p = idx / (static_cast<int64_t>(H) * W);
  const int rem = static_cast<int>(idx - p * H * W);
  const int ri = rem / W, rj = rem - ri * W;
  const int Hp = H + kh - 1, Wp = W + kw - 1;
  const int top = kh - 1 - kh / 2, left = kw - 1 - kw / 2;
  const Acc* zp = z + p * Hp * Wp;
  Acc acc = Acc(0);
  sv_for_each_preimage(ri, H, top, Hp, boundary, [&](int si) {
    const Acc* zrow = zp + static_cast<int64_t>(si + top) * Wp;
    sv_for_each_preimage(rj, W, left, Wp, boundary, [&](int sj) { acc += zrow[sj + left]; });
  });
  x[idx] = static_cast<T>(acc);
}

// Kernel gradient of one image b: g[t, i, j] (+)= sum_c gy[c, i, j] x[c, map(...)].
// Grid: (ceil(W / TW), ceil(H / TH)); channels looped in blocks of CB; accumulate adds into
// g (kernels shared by the batch: one launch per image, in order).
template <typename T, typename Acc, int CB>
__global__ void __launch_bounds__(kSvTileW * kSvTileH)
    sv_conv_kernel_grad_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                               T* __restrict__ g, int C, int H, int W, int kh, int kw,
                               int boundary, bool accumulate) {
  extern __shared__ unsigned char sv_smem[];
  Acc* tile = reinterpret_cast<Acc*>(sv_smem);
  const int i0 = blockIdx.y * kSvTileH, j0 = blockIdx.x * kSvTileW;
  const int i = i0 + threadIdx.y, j = j0 + threadIdx.x;
  const bool inside = i < H && j < W;
  const int64_t plane = static_cast<int64_t>(H) * W;
  const int64_t pix = inside ? static_cast<int64_t>(i) * W + j : 0;
  const int th = kSvTileH + kh - 1, tw = kSvTileW + kw - 1;
  for (int c0 = 0; c0 < C; c0 += CB) {
    if (c0 > 0) __syncthreads();  // the previous channel block is done with the tile
    sv_load_tile<T, Acc, CB>(x, C, H, W, kh, kw, boundary, i0, j0, c0, tile);
    __syncthreads();
    if (!inside) continue;
    Acc grad[CB];
#pragma unroll
    for (int c = 0; c < CB; ++c) grad[c] = c0 + c < C ? static_cast<Acc>(gy[(c0 + c) * plane + pix]) : Acc(0);
    const bool add = accumulate || c0 > 0;
    for (int u = 0; u < kh; ++u) {
      const Acc* trow = tile + (threadIdx.y + kh - 1 - u) * tw + threadIdx.x + kw - 1;
      T* gu = g + static_cast<int64_t>(u) * kw * plane + pix;
#pragma unroll 4
      for (int v = 0; v < kw; ++v) {
        Acc s = Acc(0);
#pragma unroll
        for (int c = 0; c < CB; ++c) s += grad[c] * trow[c * th * tw - v];
        T* dst = gu + v * plane;
        *dst = static_cast<T>(add ? static_cast<Acc>(*dst) + s : s);
      }
    }
  }
}

}  // namespace cuda
}  // namespace fastdeblur

// Product-convolution over a grid of kernels on CUDA GPUs, free of torch.
//
//   y = Σ_i h_i ⋆ (w_i ⊙ x)        (fastdeblur/ops/reference.py, section pc_conv)
//
// Padded coordinates as in kernels/cpu/pc_conv.h: padded row pr in [0, H + kh - 1) reads image
// row row_map[pr] (-1: zero padding); wy[a * Hp + pr] is grid row a's weight there (0 where
// the padding is zero); likewise columns. cell_rows[2a], cell_rows[2a+1] bound the padded
// rows where grid row a's weight is non-zero (inclusive; the union of its runs), likewise
// cell_cols.
//
// Forward: one block per TILE × TILE output tile of one plane. The block stages the
// boundary-mapped input window (TILE + kh - 1) × (TILE + kw - 1) in shared memory once, then
// for each grid cell whose weights reach the window (4 to 9 of them) forms z = w_i ⊙ x on
// the window in shared memory, stages h_i, and every thread accumulates its outputs over all
// taps from shared memory. Kernels too large for shared memory use the gather kernel
// (pc_conv_gather_kernel), which reads the source pixel and the 2 × 2 surrounding grid
// kernels per tap from global memory.
//
// Adjoint: pc_conv_adjoint_padded_kernel computes, per padded position s,
//   xp[s] = Σ_cells wy[a][s_r] wx[b][s_c] Σ_{u,v} h_ab[u][v] · y[s_r - kh + 1 + u][s_c - kw + 1 + v]
// and pc_conv_fold_kernel adds every padded sample into the pixel it copies (atomicAdd into a
// zeroed output). Kernel gradient: pc_conv_kernel_grad_kernel, one block per (tap, cell,
// kernel batch), reducing over the cell's output box.
#pragma once

#include <cstdint>

namespace fastdeblur {
namespace kernels {
namespace cuda {
namespace pc_conv {

constexpr int kTile = 32;        // output tile side of the shared-memory forward kernel
constexpr int kRowsPerThread = 4;  // each thread computes kRowsPerThread rows of one column
constexpr int kThreadsX = kTile;
constexpr int kThreadsY = kTile / kRowsPerThread;

struct Geometry {
  int H, W, kh, kw, gh, gw;
  const int* row_map;    // (Hp)
  const int* col_map;    // (Wp)
  const int* cell_rows;  // (gh, 2): first and last padded row of non-zero weight
  const int* cell_cols;  // (gw, 2)
};

// Shared memory bytes of the tiled forward kernel for a kernel size.
template <typename T>
__host__ __device__ inline size_t forward_smem_bytes(int kh, int kw) {
  const size_t window = static_cast<size_t>(kTile + kh - 1) * (kTile + kw - 1);
  return (2 * window + static_cast<size_t>(kh) * kw) * sizeof(T);
}

// x, y: (planes, H, W); k: (Bk, gh, gw, kh, kw) NOT flipped; k_batch_stride 0 when shared.
// wy: (gh, Hp), wx: (gw, Wp). Grid: (ceil(W / kTile), ceil(H / kTile), planes);
// block (kThreadsX, kThreadsY); dynamic shared memory forward_smem_bytes<T>(kh, kw).
template <typename T>
__global__ void pc_conv_tiled_kernel(const T* __restrict__ x, const T* __restrict__ k,
                                     const T* __restrict__ wy, const T* __restrict__ wx,
                                     Geometry g, int channels, int64_t k_batch_stride,
                                     T* __restrict__ y) {
  extern __shared__ unsigned char smem_raw[];
  T* xs = reinterpret_cast<T*>(smem_raw);
  const int win_h = kTile + g.kh - 1, win_w = kTile + g.kw - 1;
  T* zs = xs + win_h * win_w;
  T* hs = zs + win_h * win_w;
  const int Hp = g.H + g.kh - 1, Wp = g.W + g.kw - 1;
  const int64_t plane = blockIdx.z;
  const int r0 = blockIdx.y * kTile, c0 = blockIdx.x * kTile;  // output tile origin
  const T* xp = x + plane * g.H * g.W;
  const T* kb = k + (plane / channels) * k_batch_stride;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int nthreads = blockDim.x * blockDim.y;

  // Stage the boundary-mapped input window: padded rows [r0, r0 + win_h) etc.
  for (int idx = tid; idx < win_h * win_w; idx += nthreads) {
    const int pr = r0 + idx / win_w, pc = c0 + idx % win_w;
    T v = T(0);
    if (pr < Hp && pc < Wp) {
      const int sr = g.row_map[pr], sc = g.col_map[pc];
      if (sr >= 0 && sc >= 0) v = xp[static_cast<int64_t>(sr) * g.W + sc];
    }
    xs[idx] = v;
  }
  T acc[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) acc[i] = T(0);
  const int out_c = threadIdx.x;                      // column within the tile
  const int out_r = threadIdx.y * kRowsPerThread;     // first row within the tile
  const int last_pr = min(r0 + win_h, Hp) - 1, last_pc = min(c0 + win_w, Wp) - 1;

  for (int a = 0; a < g.gh; ++a) {
    if (g.cell_rows[2 * a + 1] < r0 || g.cell_rows[2 * a] > last_pr) continue;
    for (int b = 0; b < g.gw; ++b) {
      if (g.cell_cols[2 * b + 1] < c0 || g.cell_cols[2 * b] > last_pc) continue;
      __syncthreads();  // previous cell's zs / hs no longer read
      const T* h = kb + (static_cast<int64_t>(a) * g.gw + b) * g.kh * g.kw;
      // Flipped so that the tap loop below is a correlation.
      for (int idx = tid; idx < g.kh * g.kw; idx += nthreads) hs[idx] = h[g.kh * g.kw - 1 - idx];
      for (int idx = tid; idx < win_h * win_w; idx += nthreads) {
        const int pr = r0 + idx / win_w, pc = c0 + idx % win_w;
        T w = T(0);
        if (pr < Hp && pc < Wp) w = wy[a * Hp + pr] * wx[b * Wp + pc];
        zs[idx] = w * xs[idx];
      }
      __syncthreads();
      for (int u = 0; u < g.kh; ++u) {
        for (int v = 0; v < g.kw; ++v) {
          const T hv = hs[u * g.kw + v];
          const T* zcol = zs + (out_r + u) * win_w + out_c + v;
#pragma unroll
          for (int i = 0; i < kRowsPerThread; ++i) acc[i] += hv * zcol[i * win_w];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int r = r0 + out_r + i, c = c0 + out_c;
    if (r < g.H && c < g.W) y[plane * g.H * g.W + static_cast<int64_t>(r) * g.W + c] = acc[i];
  }
}

// Σ over the 2 × 2 grid cells around padded position (pr, pc) of w_cell · h_cell[tap].
template <typename T>
__device__ inline T blended_tap(const T* kb, const T* wy, const T* wx, const Geometry& g, int Hp,
                                int Wp, int pr, int pc, int tap) {
  T sum = T(0);
  const int taps = g.kh * g.kw;
  for (int a = 0; a < g.gh; ++a) {
    const T wr = wy[a * Hp + pr];
    if (wr == T(0)) continue;
    for (int b = 0; b < g.gw; ++b) {
      const T wc = wx[b * Wp + pc];
      if (wc == T(0)) continue;
      sum += wr * wc * kb[(static_cast<int64_t>(a) * g.gw + b) * taps + tap];
    }
  }
  return sum;
}

// Fallback forward for kernels whose window does not fit in shared memory: one thread per
// output pixel. Grid: (ceil(H*W / 256), planes); block 256.
template <typename T>
__global__ void pc_conv_gather_kernel(const T* __restrict__ x, const T* __restrict__ k,
                                      const T* __restrict__ wy, const T* __restrict__ wx,
                                      Geometry g, int channels, int64_t k_batch_stride,
                                      T* __restrict__ y) {
  const int64_t plane = blockIdx.y;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= g.H * g.W) return;
  const int i = p / g.W, j = p % g.W;
  const int Hp = g.H + g.kh - 1, Wp = g.W + g.kw - 1;
  const T* xp = x + plane * g.H * g.W;
  const T* kb = k + (plane / channels) * k_batch_stride;
  T acc = T(0);
  for (int u = 0; u < g.kh; ++u) {
    const int pr = i + g.kh - 1 - u;
    const int sr = g.row_map[pr];
    if (sr < 0) continue;
    for (int v = 0; v < g.kw; ++v) {
      const int pc = j + g.kw - 1 - v;
      const int sc = g.col_map[pc];
      if (sc < 0) continue;
      acc += blended_tap(kb, wy, wx, g, Hp, Wp, pr, pc, u * g.kw + v) *
             xp[static_cast<int64_t>(sr) * g.W + sc];
    }
  }
  y[plane * g.H * g.W + p] = acc;
}

// Adjoint onto the padded grid: one thread per padded position. Grid: (ceil(Hp*Wp / 256),
// planes); block 256. Writes every element of xpad (planes, Hp, Wp).
template <typename T>
__global__ void pc_conv_adjoint_padded_kernel(const T* __restrict__ y, const T* __restrict__ k,
                                              const T* __restrict__ wy, const T* __restrict__ wx,
                                              Geometry g, int channels, int64_t k_batch_stride,
                                              T* __restrict__ xpad) {
  const int Hp = g.H + g.kh - 1, Wp = g.W + g.kw - 1;
  const int64_t plane = blockIdx.y;
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= Hp * Wp) return;
  const int pr = s / Wp, pc = s % Wp;
  const T* yp = y + plane * g.H * g.W;
  const T* kb = k + (plane / channels) * k_batch_stride;
  T acc = T(0);
  if (g.row_map[pr] >= 0 && g.col_map[pc] >= 0) {
    for (int u = 0; u < g.kh; ++u) {
      const int yr = pr - (g.kh - 1 - u);
      if (yr < 0 || yr >= g.H) continue;
      for (int v = 0; v < g.kw; ++v) {
        const int yc = pc - (g.kw - 1 - v);
        if (yc < 0 || yc >= g.W) continue;
        acc += blended_tap(kb, wy, wx, g, Hp, Wp, pr, pc, u * g.kw + v) *
               yp[static_cast<int64_t>(yr) * g.W + yc];
      }
    }
  }
  xpad[plane * Hp * Wp + s] = acc;
}

// Fold the padded planes onto zeroed images: x[map(s)] += xpad[s]. Grid: (ceil(Hp*Wp / 256),
// planes); block 256.
template <typename T>
__global__ void pc_conv_fold_kernel(const T* __restrict__ xpad, Geometry g, T* __restrict__ x) {
  const int Hp = g.H + g.kh - 1, Wp = g.W + g.kw - 1;
  const int64_t plane = blockIdx.y;
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= Hp * Wp) return;
  const int r = g.row_map[s / Wp], c = g.col_map[s % Wp];
  if (r < 0 || c < 0) return;
  atomicAdd(x + plane * g.H * g.W + static_cast<int64_t>(r) * g.W + c, xpad[plane * Hp * Wp + s]);
}

// Kernel gradient: block (tap, cell, kb); threads reduce over samples of the kernel batch,
// channels and the cell's output box. grad: (Bk, gh, gw, kh, kw), every element written.
//   grad[kb][a][b][u][v] = Σ g[p] · wy[a][s_r] wx[b][s_c] x(s),  s = p + (kh-1-u, kw-1-v)
template <typename T, int kBlock>
__global__ void pc_conv_kernel_grad_kernel(const T* __restrict__ x, const T* __restrict__ gy,
                                           const T* __restrict__ wy, const T* __restrict__ wx,
                                           Geometry g, int batch, int channels, int k_batch,
                                           T* __restrict__ grad) {
  const int tap = blockIdx.x, cell = blockIdx.y, kb = blockIdx.z;
  const int u = tap / g.kw, v = tap % g.kw;
  const int a = cell / g.gw, b = cell % g.gw;
  const int Hp = g.H + g.kh - 1, Wp = g.W + g.kw - 1;
  // Outputs whose source row lies in the cell's support: p_r = s_r - (kh - 1 - u).
  const int i0 = max(0, g.cell_rows[2 * a] - (g.kh - 1 - u));
  const int i1 = min(g.H - 1, g.cell_rows[2 * a + 1] - (g.kh - 1 - u));
  const int j0 = max(0, g.cell_cols[2 * b] - (g.kw - 1 - v));
  const int j1 = min(g.W - 1, g.cell_cols[2 * b + 1] - (g.kw - 1 - v));
  const int b_lo = k_batch == 1 ? 0 : kb, b_hi = k_batch == 1 ? batch : kb + 1;
  T acc = T(0);
  if (i0 <= i1 && j0 <= j1) {
    const int bh = i1 - i0 + 1, bw = j1 - j0 + 1;
    const int64_t box = static_cast<int64_t>(bh) * bw;
    const int64_t total = static_cast<int64_t>(b_hi - b_lo) * channels * box;
    for (int64_t idx = threadIdx.x; idx < total; idx += kBlock) {
      const int64_t plane = (b_lo * channels) + idx / box;
      const int64_t rem = idx % box;
      const int i = i0 + static_cast<int>(rem / bw), j = j0 + static_cast<int>(rem % bw);
      const int pr = i + g.kh - 1 - u, pc = j + g.kw - 1 - v;
      const int sr = g.row_map[pr], sc = g.col_map[pc];
      if (sr < 0 || sc < 0) continue;
      const T w = wy[a * Hp + pr] * wx[b * Wp + pc];
      acc += gy[plane * g.H * g.W + static_cast<int64_t>(i) * g.W + j] * w *
             x[plane * g.H * g.W + static_cast<int64_t>(sr) * g.W + sc];
    }
  }
  __shared__ T partial[kBlock];
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kBlock / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    grad[(static_cast<int64_t>(kb) * g.gh * g.gw + cell) * g.kh * g.kw + tap] = partial[0];
  }
}

}  // namespace pc_conv
}  // namespace cuda
}  // namespace kernels
}  // namespace fastdeblur

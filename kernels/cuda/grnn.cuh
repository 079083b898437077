// GRNN (Gaussian-kernel regression) as attention: CUDA kernels, torch-free.
//
//   out[n] = sum_m softmax_m(s[n, m]) values[m],  s[n, m] = scale (q_n . k_m - half_norm[m]),
//   half_norm[m] = |k_m|^2 / 2,  scale = 1 / sigma^2,  lse[n] = log sum_m exp(s[n, m]).
//
// Forward, flash style: a block owns BN query rows and walks the keys in tiles of BM; the
// tile's logits live in registers / shared memory only, the row maximum and sum run online
// (fp32, or fp64 for double inputs), so the N x M matrix is never stored and tiny sigma
// cannot overflow. Two kernels:
//   * grnn_forward_simt: any dtype (float, double, half, bfloat16), CUDA-core FMAs, a 4 x 4
//     register micro-tile of logits per thread; the one for fp32/fp64 (exact products).
//     With few query blocks the keys are split over blockIdx.z (split-K); each split leaves
//     its (max, sum, acc) state and grnn_combine_splits merges them.
//   * grnn_forward_wmma: half / bfloat16 on sm_80+, the logits Q K^T and the product P V on
//     tensor cores (nvcuda::wmma, fp32 accumulation), fp32 softmax.
// Values wider than one kernel's column chunk are split over blockIdx.y (the logits are
// recomputed per chunk).
// Backward: grnn_backward_tile turns a chunk of recomputed logits S and of dP = dO V^T into
// P and dS = P (dP - delta) in place; the glue does the GEMMs (cuBLAS) around it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>

namespace fastdeblur {
namespace kernels {
namespace grnn_cuda {

// ---- conversions ---------------------------------------------------------------------------

template <typename Acc>
__device__ __forceinline__ Acc to_acc(float x) { return static_cast<Acc>(x); }
template <typename Acc>
__device__ __forceinline__ Acc to_acc(double x) { return static_cast<Acc>(x); }
template <typename Acc>
__device__ __forceinline__ Acc to_acc(__half x) { return static_cast<Acc>(__half2float(x)); }
template <typename Acc>
__device__ __forceinline__ Acc to_acc(__nv_bfloat16 x) {
  return static_cast<Acc>(__bfloat162float(x));
}

template <typename T>
__device__ __forceinline__ T from_acc(float x) { return static_cast<T>(x); }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <typename T>
__device__ __forceinline__ T from_acc(double x) { return static_cast<T>(x); }

__device__ __forceinline__ float exp_acc(float x) { return __expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return __logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

template <typename Acc>
__device__ __forceinline__ Acc neg_inf() {
  return -static_cast<Acc>(INFINITY);
}

// ---- SIMT forward --------------------------------------------------------------------------

struct SimtConfig {
  static constexpr int kRows = 64;     // queries per block (BN)
  static constexpr int kCols = 64;     // keys per tile (BM)
  static constexpr int kDepth = 16;    // feature chunk (BD)
  static constexpr int kThreads = 256; // 16 x 16 threads, 4 x 4 logits each
};

// Grid: (ceil(N / 64), ceil(P / PCHUNK)); block: 256 threads. Thread (ty, tx) = (t / 16,
// t % 16) owns rows 4 ty .. 4 ty + 3 and, in every key tile, columns 4 tx .. 4 tx + 3. The 16
// threads of a row group sit in one half-warp, so row reductions are shuffles. Row sums and
// P V partial products stay per thread (they rescale by the same alpha) and are reduced once
// at the end.
template <typename T, typename Acc, int PCHUNK>
__global__ void __launch_bounds__(SimtConfig::kThreads)
grnn_forward_simt(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                  const Acc* __restrict__ half_norm, T* __restrict__ out, Acc* __restrict__ lse,
                  int64_t n, int64_t m, int64_t dim, int64_t p, Acc scale, bool exclude_self,
                  int64_t keys_per_split, Acc* __restrict__ partial) {
  constexpr int BN = SimtConfig::kRows, BM = SimtConfig::kCols, BD = SimtConfig::kDepth;
  // Split-K over blockIdx.z: this block sees keys [k_begin, k_end). With partial != nullptr
  // it writes its unnormalised state there for grnn_combine_splits instead of the output.
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * keys_per_split;
  const int64_t k_end = k_begin + keys_per_split < m ? k_begin + keys_per_split : m;
  __shared__ Acc sq[BD][BN + 4];  // transposed: sq[j][r] = q[row0 + r][d0 + j]
  __shared__ Acc sk[BD][BM + 4];
  __shared__ Acc sv[BM][PCHUNK];
  __shared__ Acc shn[BM];

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int64_t p0 = static_cast<int64_t>(blockIdx.y) * PCHUNK;

  Acc row_max[4], row_sum[4], acc[4][PCHUNK];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    row_max[i] = neg_inf<Acc>();
    row_sum[i] = 0;
#pragma unroll
    for (int j = 0; j < PCHUNK; ++j) acc[i][j] = 0;
  }

  for (int64_t k0 = k_begin; k0 < k_end; k0 += BM) {
    Acc s[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[i][c] = 0;

    for (int64_t d0 = 0; d0 < dim; d0 += BD) {
      // 64 x 16 elements of each operand, 4 per thread; consecutive threads read
      // consecutive features of a row (coalesced for row-major inputs).
      for (int e = tid; e < BN * BD; e += SimtConfig::kThreads) {
        const int r = e / BD, j = e % BD;
        const int64_t gr = row0 + r, gj = d0 + j;
        sq[j][r] = (gr < n && gj < dim) ? to_acc<Acc>(q[gr * dim + gj]) : Acc(0);
        const int64_t gk = k0 + r;
        sk[j][r] = (gk < k_end && gj < dim) ? to_acc<Acc>(k[gk * dim + gj]) : Acc(0);
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < BD; ++j) {
        Acc a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = sq[j][ty * 4 + i];
#pragma unroll
        for (int c = 0; c < 4; ++c) b[c] = sk[j][tx * 4 + c];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int c = 0; c < 4; ++c) s[i][c] += a[i] * b[c];
      }
      __syncthreads();
    }

    // Values and key norms of the tile (all reads of the previous tile's sv ended at the
    // syncs above).
    __syncthreads();
    for (int e = tid; e < BM * PCHUNK; e += SimtConfig::kThreads) {
      const int c = e / PCHUNK, j = e % PCHUNK;
      const int64_t gk = k0 + c, gj = p0 + j;
      sv[c][j] = (gk < k_end && gj < p) ? to_acc<Acc>(v[gk * p + gj]) : Acc(0);
    }
    for (int c = tid; c < BM; c += SimtConfig::kThreads) {
      shn[c] = (k0 + c < k_end) ? half_norm[k0 + c] : Acc(0);
    }
    __syncthreads();

#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t gr = row0 + ty * 4 + i;
      Acc tile_max = neg_inf<Acc>();
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t gc = k0 + tx * 4 + c;
        const bool valid = gc < k_end && !(exclude_self && gc == gr);
        s[i][c] = valid ? scale * (s[i][c] - shn[tx * 4 + c]) : neg_inf<Acc>();
        tile_max = s[i][c] > tile_max ? s[i][c] : tile_max;
      }
#pragma unroll
      for (int off = 8; off > 0; off >>= 1) {
        const Acc other = __shfl_xor_sync(0xffffffffu, tile_max, off);
        tile_max = other > tile_max ? other : tile_max;
      }
      const Acc new_max = row_max[i] > tile_max ? row_max[i] : tile_max;
      // A row that has seen only excluded keys keeps -inf; 0 avoids -inf - -inf there.
      const Acc safe = new_max == neg_inf<Acc>() ? Acc(0) : new_max;
      const Acc alpha = exp_acc(row_max[i] - safe);
      Acc part = 0;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        s[i][c] = exp_acc(s[i][c] - safe);
        part += s[i][c];
      }
      row_sum[i] = row_sum[i] * alpha + part;
#pragma unroll
      for (int j = 0; j < PCHUNK; ++j) {
        Acc dot = 0;
#pragma unroll
        for (int c = 0; c < 4; ++c) dot += s[i][c] * sv[tx * 4 + c][j];
        acc[i][j] = acc[i][j] * alpha + dot;
      }
      row_max[i] = new_max;
    }
  }

  // Reduce the per-thread partial sums over the 16 threads of each row group.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int off = 8; off > 0; off >>= 1) {
      row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], off);
#pragma unroll
      for (int j = 0; j < PCHUNK; ++j) acc[i][j] += __shfl_xor_sync(0xffffffffu, acc[i][j], off);
    }
    const int64_t gr = row0 + ty * 4 + i;
    if (gr < n && partial != nullptr) {
      // Layout per split z: max (n), sum (n), acc (n, p).
      Acc* pmax = partial + blockIdx.z * n * (p + 2);
      Acc* psum = pmax + n;
      Acc* pacc = psum + n;
#pragma unroll
      for (int j = 0; j < PCHUNK; ++j) {
        if (j % 16 == tx && p0 + j < p) pacc[gr * p + p0 + j] = acc[i][j];
      }
      if (tx == 0 && blockIdx.y == 0) {
        pmax[gr] = row_max[i];
        psum[gr] = row_sum[i];
      }
    } else if (gr < n) {
      const Acc inv = row_sum[i] > 0 ? Acc(1) / row_sum[i] : Acc(0);
      // Spread the column writes over the row group's threads.
#pragma unroll
      for (int j = 0; j < PCHUNK; ++j) {
        if (j % 16 == tx && p0 + j < p) out[gr * p + p0 + j] = from_acc<T>(acc[i][j] * inv);
      }
      if (tx == 0 && blockIdx.y == 0) {
        lse[gr] = row_sum[i] > 0 ? row_max[i] + log_acc(row_sum[i]) : neg_inf<Acc>();
      }
    }
  }
}

// Merges the split-K partial states: M = max_z m_z, L = sum_z l_z e^(m_z - M),
// out = sum_z acc_z e^(m_z - M) / L, lse = M + log L. One thread per query row.
template <typename T, typename Acc>
__global__ void grnn_combine_splits(const Acc* __restrict__ partial, int splits, int64_t n,
                                    int64_t p, T* __restrict__ out, Acc* __restrict__ lse) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (row >= n) return;
  const int64_t stride = n * (p + 2);
  Acc best = neg_inf<Acc>();
  for (int z = 0; z < splits; ++z) {
    const Acc mz = partial[z * stride + row];
    best = mz > best ? mz : best;
  }
  const Acc safe = best == neg_inf<Acc>() ? Acc(0) : best;
  Acc total = 0;
  for (int z = 0; z < splits; ++z) {
    total += partial[z * stride + n + row] * exp_acc(partial[z * stride + row] - safe);
  }
  const Acc inv = total > 0 ? Acc(1) / total : Acc(0);
  for (int64_t j = 0; j < p; ++j) {
    Acc a = 0;
    for (int z = 0; z < splits; ++z) {
      a += partial[z * stride + 2 * n + row * p + j] * exp_acc(partial[z * stride + row] - safe);
    }
    out[row * p + j] = from_acc<T>(a * inv);
  }
  lse[row] = total > 0 ? safe + log_acc(total) : neg_inf<Acc>();
}

// Number of key splits that fills the GPU: about two blocks per SM, each split keeping at
// least 8 key tiles. workspace_elems() is the size of the partial buffer it needs.
inline int simt_key_splits(int64_t n, int64_t m, int64_t p, int pchunk, int sm_count) {
  const int64_t blocks = ((n + SimtConfig::kRows - 1) / SimtConfig::kRows) *
                         (p > 0 ? (p + pchunk - 1) / pchunk : 1);
  const int64_t want = (2 * static_cast<int64_t>(sm_count) + blocks - 1) / blocks;
  const int64_t most = m / (8 * SimtConfig::kCols);
  int64_t splits = want < most ? want : most;
  splits = splits < 1 ? 1 : splits;
  return static_cast<int>(splits > 64 ? 64 : splits);
}

inline int64_t simt_workspace_elems(int splits, int64_t n, int64_t p) {
  return splits > 1 ? static_cast<int64_t>(splits) * n * (p + 2) : 0;
}

// workspace: simt_workspace_elems(splits, n, p) elements of Acc (unused when splits == 1).
template <typename T, typename Acc, int PCHUNK>
inline cudaError_t launch_forward_simt(const T* q, const T* k, const T* v, const Acc* half_norm,
                                       T* out, Acc* lse, int64_t n, int64_t m, int64_t dim,
                                       int64_t p, Acc scale, bool exclude_self, int splits,
                                       Acc* workspace, cudaStream_t stream) {
  splits = splits < 1 ? 1 : splits;
  // Whole key tiles per split, so only the last split has a ragged tile.
  const int64_t tiles = (m + SimtConfig::kCols - 1) / SimtConfig::kCols;
  const int64_t keys_per_split = ((tiles + splits - 1) / splits) * SimtConfig::kCols;
  splits = static_cast<int>((m + keys_per_split - 1) / keys_per_split);
  const dim3 grid(static_cast<unsigned>((n + SimtConfig::kRows - 1) / SimtConfig::kRows),
                  static_cast<unsigned>(p > 0 ? (p + PCHUNK - 1) / PCHUNK : 1),
                  static_cast<unsigned>(splits));
  Acc* partial = splits > 1 ? workspace : nullptr;
  grnn_forward_simt<T, Acc, PCHUNK><<<grid, SimtConfig::kThreads, 0, stream>>>(
      q, k, v, half_norm, out, lse, n, m, dim, p, scale, exclude_self, keys_per_split, partial);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || splits == 1) return err;
  const int threads = 128;
  grnn_combine_splits<T, Acc><<<static_cast<unsigned>((n + threads - 1) / threads), threads, 0,
                                stream>>>(partial, splits, n, p, out, lse);
  return cudaGetLastError();
}

// ---- tensor-core forward (half / bfloat16, sm_80+) ------------------------------------------

struct WmmaConfig {
  static constexpr int kWarps = 4;
  static constexpr int kRows = 16 * kWarps;  // 64 queries per block, 16 per warp
  static constexpr int kCols = 64;           // keys per tile
  static constexpr int kDepth = 64;          // feature chunk staged in shared memory
  static constexpr int kThreads = 32 * kWarps;
};

// PFRAG 16-column fragments of values per block (PCHUNK = 16 PFRAG columns); blockIdx.y
// walks the chunks. Shared memory (dynamic): see wmma_smem_bytes.
template <int PFRAG>
constexpr size_t wmma_smem_bytes() {
  constexpr int BN = WmmaConfig::kRows, BM = WmmaConfig::kCols, BD = WmmaConfig::kDepth;
  constexpr int PC = 16 * PFRAG;
  return sizeof(uint16_t) * (BN * (BD + 8) + BM * (BD + 8) + WmmaConfig::kWarps * 16 * (BM + 8) +
                             BM * (PC + 8)) +
         sizeof(float) * (WmmaConfig::kWarps * 16 * (BM + 4) + BM);
}

template <typename T, int PFRAG>
__global__ void __launch_bounds__(WmmaConfig::kThreads)
grnn_forward_wmma(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                  const float* __restrict__ half_norm, T* __restrict__ out,
                  float* __restrict__ lse, int64_t n, int64_t m, int64_t dim, int64_t p,
                  float scale, bool exclude_self, bool vec16) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int BN = WmmaConfig::kRows, BM = WmmaConfig::kCols, BD = WmmaConfig::kDepth;
  constexpr int PC = 16 * PFRAG;
  constexpr int LDQ = BD + 8, LDP = BM + 8, LDV = PC + 8, LDS = BM + 4;
  static_assert(PC <= BM, "a value chunk must fit the logits staging buffer");
  static_assert(BN == BM, "the staging loop loads query and key rows with one index");
  extern __shared__ __align__(128) unsigned char smem[];
  T* sq = reinterpret_cast<T*>(smem);               // [BN][LDQ]
  T* sk = sq + BN * LDQ;                            // [BM][LDQ]
  T* sp = sk + BM * LDQ;                            // [warps][16][LDP] probabilities
  T* sv = sp + WmmaConfig::kWarps * 16 * LDP;       // [BM][LDV]
  float* ss = reinterpret_cast<float*>(sv + BM * LDV);  // [warps][16][LDS] logits / P V
  float* shn = ss + WmmaConfig::kWarps * 16 * LDS;  // [BM]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int64_t p0 = static_cast<int64_t>(blockIdx.y) * PC;
  float* my_s = ss + warp * 16 * LDS;
  T* my_p = sp + warp * 16 * LDP;
  // Lane pair (2r, 2r + 1) owns row r of the warp's 16; each lane half of its columns.
  const int r = lane / 2, half = lane % 2;
  const int64_t grow = row0 + warp * 16 + r;
  float row_max = -INFINITY, row_sum = 0.f;
  float acc[PC / 2];
#pragma unroll
  for (int j = 0; j < PC / 2; ++j) acc[j] = 0.f;

  for (int64_t k0 = 0; k0 < m; k0 += BM) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_frag[BM / 16];
#pragma unroll
    for (int f = 0; f < BM / 16; ++f) wmma::fill_fragment(s_frag[f], 0.f);
    for (int64_t d0 = 0; d0 < dim; d0 += BD) {
      if (vec16) {
        // 16-byte loads (8 elements): rows are 16-byte aligned when dim % 8 == 0 and the
        // base pointers are (the glue checks), and so are the padded shared rows.
        for (int e = tid; e < BN * BD / 8; e += WmmaConfig::kThreads) {
          const int rr = e / (BD / 8), j = (e % (BD / 8)) * 8;
          const int64_t gj = d0 + j;
          const int64_t gq = row0 + rr, gk = k0 + rr;
          uint4 qv = make_uint4(0u, 0u, 0u, 0u), kv = make_uint4(0u, 0u, 0u, 0u);
          if (gq < n && gj < dim) qv = *reinterpret_cast<const uint4*>(q + gq * dim + gj);
          if (gk < m && gj < dim) kv = *reinterpret_cast<const uint4*>(k + gk * dim + gj);
          *reinterpret_cast<uint4*>(sq + rr * LDQ + j) = qv;
          *reinterpret_cast<uint4*>(sk + rr * LDQ + j) = kv;
        }
      } else {
        for (int e = tid; e < BN * BD; e += WmmaConfig::kThreads) {
          const int rr = e / BD, j = e % BD;
          const int64_t gj = d0 + j;
          const int64_t gq = row0 + rr, gk = k0 + rr;
          sq[rr * LDQ + j] = (gq < n && gj < dim) ? q[gq * dim + gj] : from_acc<T>(0.f);
          sk[rr * LDQ + j] = (gk < m && gj < dim) ? k[gk * dim + gj] : from_acc<T>(0.f);
        }
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BD; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, sq + warp * 16 * LDQ + kk, LDQ);
#pragma unroll
        for (int f = 0; f < BM / 16; ++f) {
          // B = K^T: element (kk', c) = k[c][kk'], i.e. K row-major read as column-major.
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, sk + f * 16 * LDQ + kk, LDQ);
          wmma::mma_sync(s_frag[f], a, b, s_frag[f]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int f = 0; f < BM / 16; ++f) {
      wmma::store_matrix_sync(my_s + f * 16, s_frag[f], LDS, wmma::mem_row_major);
    }
    for (int e = tid; e < BM * PC; e += WmmaConfig::kThreads) {
      const int c = e / PC, j = e % PC;
      const int64_t gk = k0 + c, gj = p0 + j;
      sv[c * LDV + j] = (gk < m && gj < p) ? v[gk * p + gj] : from_acc<T>(0.f);
    }
    for (int c = tid; c < BM; c += WmmaConfig::kThreads) {
      shn[c] = (k0 + c < m) ? half_norm[k0 + c] : 0.f;
    }
    __syncthreads();

    // Online softmax of row r over this lane's 32 columns, combined with the partner lane.
    float* srow = my_s + r * LDS + half * (BM / 2);
    float tile_max = -INFINITY;
#pragma unroll 8
    for (int c = 0; c < BM / 2; ++c) {
      const int col = half * (BM / 2) + c;
      const int64_t gc = k0 + col;
      const bool valid = gc < m && !(exclude_self && gc == grow);
      const float val = valid ? scale * (srow[c] - shn[col]) : -INFINITY;
      srow[c] = val;
      tile_max = fmaxf(tile_max, val);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float new_max = fmaxf(row_max, tile_max);
    const float safe = new_max == -INFINITY ? 0.f : new_max;
    const float alpha = __expf(row_max - safe);
    float part = 0.f;
    T* prow = my_p + r * LDP + half * (BM / 2);
#pragma unroll 8
    for (int c = 0; c < BM / 2; ++c) {
      const float e = __expf(srow[c] - safe);
      part += e;
      prow[c] = from_acc<T>(e);
    }
    row_sum = row_sum * alpha + part;
    row_max = new_max;
    __syncwarp();

    // P (16 x BM) @ V (BM x PC) on tensor cores, staged through the logits buffer.
#pragma unroll
    for (int f = 0; f < PFRAG; ++f) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::fill_fragment(o, 0.f);
#pragma unroll
      for (int kk = 0; kk < BM; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(a, my_p + kk, LDP);
        wmma::load_matrix_sync(b, sv + kk * LDV + f * 16, LDV);
        wmma::mma_sync(o, a, b, o);
      }
      __syncwarp();
      wmma::store_matrix_sync(my_s + f * 16, o, LDS, wmma::mem_row_major);
    }
    __syncwarp();
    const float* orow = my_s + r * LDS + half * (PC / 2);
#pragma unroll
    for (int j = 0; j < PC / 2; ++j) acc[j] = acc[j] * alpha + orow[j];
    __syncthreads();  // sq/sk/sv/ss are rewritten by the next tile
  }

  row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);
  if (grow < n) {
    const float inv = row_sum > 0.f ? 1.f / row_sum : 0.f;
#pragma unroll
    for (int j = 0; j < PC / 2; ++j) {
      const int64_t gj = p0 + half * (PC / 2) + j;
      if (gj < p) out[grow * p + gj] = from_acc<T>(acc[j] * inv);
    }
    if (half == 0 && blockIdx.y == 0) lse[grow] = row_sum > 0.f ? row_max + __logf(row_sum) : -INFINITY;
  }
#endif
}

template <typename T, int PFRAG>
inline cudaError_t launch_forward_wmma(const T* q, const T* k, const T* v, const float* half_norm,
                                       T* out, float* lse, int64_t n, int64_t m, int64_t dim,
                                       int64_t p, float scale, bool exclude_self,
                                       cudaStream_t stream) {
  constexpr size_t smem = wmma_smem_bytes<PFRAG>();
  cudaError_t err = cudaFuncSetAttribute(grnn_forward_wmma<T, PFRAG>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((n + WmmaConfig::kRows - 1) / WmmaConfig::kRows),
                  static_cast<unsigned>(p > 0 ? (p + 16 * PFRAG - 1) / (16 * PFRAG) : 1));
  // 16-byte staging loads need dim % 8 == 0 and 16-byte aligned bases.
  const bool vec16 = dim % 8 == 0 && reinterpret_cast<uintptr_t>(q) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(k) % 16 == 0;
  grnn_forward_wmma<T, PFRAG><<<grid, WmmaConfig::kThreads, smem, stream>>>(
      q, k, v, half_norm, out, lse, n, m, dim, p, scale, exclude_self, vec16);
  return cudaGetLastError();
}

// ---- backward tile --------------------------------------------------------------------------

// For a chunk of `rows` queries (global offset q0) against all m keys: on entry s holds the
// dots q . k and dp holds grad_out . v (both rows x m, row-major); on exit s = P =
// exp(scale (s - half_norm) - lse) and dp = dS = P (dp - delta), zero on excluded pairs.
template <typename Acc>
__global__ void grnn_backward_tile(Acc* __restrict__ s, Acc* __restrict__ dp,
                                   const Acc* __restrict__ half_norm,
                                   const Acc* __restrict__ lse, const Acc* __restrict__ delta,
                                   int64_t rows, int64_t m, int64_t q0, Acc scale,
                                   bool exclude_self) {
  const int64_t total = rows * m;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / m, c = e % m;
    const bool valid = !(exclude_self && c == q0 + r);
    Acc logit = scale * (s[e] - half_norm[c]) - lse[q0 + r];
    logit = logit < Acc(0) ? logit : Acc(0);  // rounding: a logit cannot exceed the lse
    const Acc prob = valid ? exp_acc(logit) : Acc(0);
    s[e] = prob;
    dp[e] = prob * (dp[e] - delta[q0 + r]);
  }
}

template <typename Acc>
inline cudaError_t launch_backward_tile(Acc* s, Acc* dp, const Acc* half_norm, const Acc* lse,
                                        const Acc* delta, int64_t rows, int64_t m, int64_t q0,
                                        Acc scale, bool exclude_self, cudaStream_t stream) {
  const int64_t total = rows * m;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t want = (total + threads - 1) / threads;
  const unsigned blocks = static_cast<unsigned>(want < 65535 * 8 ? want : 65535 * 8);
  grnn_backward_tile<Acc><<<blocks, threads, 0, stream>>>(s, dp, half_norm, lse, delta, rows, m,
                                                          q0, scale, exclude_self);
  return cudaGetLastError();
}

}  // namespace grnn_cuda
}  // namespace kernels
}  // namespace fastdeblur

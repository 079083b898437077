// GRNN (Gaussian-kernel regression) as attention: the per-block math of the CPU kernel.
//
//   out[n] = sum_m P[n, m] values[m],   P[n, m] = softmax_m(s[n, m]),
//   s[n, m] = scale * (q_n . k_m - |k_m|^2 / 2),   scale = 1 / sigma^2.
//
// The caller tiles queries into row blocks and keys into column blocks, computes the raw
// dot products S = Q_blk K_blk^T of a tile with a GEMM, and hands the tile to the functions
// here. They keep the running row maximum and row sum of an online softmax, so the N x M
// matrix is never stored and tiny sigma (huge logits) cannot overflow: every exponent is
// (logit - running maximum) <= 0. Everything accumulates in `Acc` (float for float/half
// inputs, double for double). Torch-free: raw pointers, sizes and leading dimensions;
// threading is the caller's.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace fastdeblur {
namespace kernels {
namespace grnn {

// exp(x) for x <= 0 (larger x are clamped to 88), written so that loops over it vectorise:
// x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-7 Taylor polynomial (error below
// one ulp), 2^n assembled in the exponent bits. Returns exactly 0 below -87 (and for -inf),
// which the leave-one-out mask relies on.
inline float exp_nonpositive(float x) {
  // Branch-free so that the compiler vectorises the loops calling it: clamp, then zero
  // the result by a 0/1 factor (a select here becomes a scalar branch with GCC).
  const float keep = x >= -87.0f ? 1.0f : 0.0f;
  float xc = x < -87.0f ? -87.0f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  const float t = xc * 1.44269504088896341f;
  // Round to nearest with the 1.5 * 2^23 trick (|t| < 2^22 here).
  const float fn = (t + 12582912.0f) - 12582912.0f;
  const float r = (xc - fn * 0.693145751953125f) - fn * 1.42860682030941723212e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  // __builtin_bit_cast (GCC >= 11, Clang) keeps the loop vectorisable; memcpy does not.
  const float two_n = __builtin_bit_cast(float, bits);
  return p * two_n * keep;
}

inline double exp_nonpositive(double x) { return std::exp(x); }

// Reductions keep kLanes partial sums (fixed-length inner loops the compiler turns into
// SIMD code without -ffast-math; `omp simd reduction` loops stayed scalar with GCC 12).
constexpr int kLanes = 16;

template <typename Acc>
inline Acc sum_lanes(const Acc* lanes) {
  Acc total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

template <typename Acc>
inline Acc dot(const Acc* a, const Acc* b, int64_t n) {
  Acc lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += a[i + l] * b[i + l];
  }
  Acc total = sum_lanes(lanes);
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

template <typename Acc>
inline Acc row_maximum(const Acc* a, int64_t n) {
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();
  Acc lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = neg_inf;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] = a[i + l] > lanes[l] ? a[i + l] : lanes[l];
  }
  Acc best = neg_inf;
  for (int l = 0; l < kLanes; ++l) best = lanes[l] > best ? lanes[l] : best;
  for (; i < n; ++i) best = a[i] > best ? a[i] : best;
  return best;
}

// half_norm[m] = |keys[m]|^2 / 2 for m in [0, rows).
template <typename T, typename Acc>
void half_squared_norms(const T* keys, int64_t rows, int64_t dim, int64_t ld, Acc* half_norm) {
  for (int64_t m = 0; m < rows; ++m) {
    const T* k = keys + m * ld;
    Acc sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < dim; ++j) {
      const Acc v = static_cast<Acc>(k[j]);
      sum += v * v;
    }
    half_norm[m] = Acc(0.5) * sum;
  }
}

// State of the online softmax of a block of rows.
template <typename Acc>
struct OnlineState {
  Acc* row_max;  // (rows,) running maximum of the logits, -inf before the first key
  Acc* row_sum;  // (rows,) running sum of exp(logit - row_max)
  Acc* acc;      // (rows, p) running sum of exp(logit - row_max) * values, leading dim ld_acc
  int64_t ld_acc;
};

template <typename Acc>
void online_init(const OnlineState<Acc>& st, int64_t rows, int64_t p) {
  for (int64_t r = 0; r < rows; ++r) {
    st.row_max[r] = -std::numeric_limits<Acc>::infinity();
    st.row_sum[r] = 0;
    for (int64_t c = 0; c < p; ++c) st.acc[r * st.ld_acc + c] = 0;
  }
}

// One key tile of the online softmax.
//
// S (rows x cols, leading dim ld_s) holds the raw dots q . k of the tile on entry and the
// unnormalised probabilities exp(s - new row_max) on exit. half_norm (cols,) is |k|^2/2 of
// the tile's keys. With exclude_self, row r skips column r + self_offset (global query
// index minus global key index of the tile's first key: self_offset = q0 - k0). The state's
// sums and acc are rescaled to the new maximum; when values_t is given (p x cols, leading
// dim ld_v: the tile's values transposed) acc += P values here, otherwise the caller adds
// P @ V_tile to acc itself (a GEMM, for wide values) after this returns.
template <typename Acc>
void online_tile(Acc* S, int64_t ld_s, int64_t rows, int64_t cols, const Acc* half_norm,
                 Acc scale, bool exclude_self, int64_t self_offset, const OnlineState<Acc>& st,
                 int64_t p, const Acc* values_t, int64_t ld_v) {
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    Acc* s = S + r * ld_s;
    // Two passes (bias, then maximum) vectorise better than one fused pass.
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) s[c] = scale * (s[c] - half_norm[c]);
    Acc tile_max = row_maximum(s, cols);
    const int64_t self_col = r + self_offset;
    if (exclude_self && self_col >= 0 && self_col < cols) {
      s[self_col] = neg_inf;
      // The excluded logit may have been the maximum: recompute it.
      tile_max = row_maximum(s, cols);
    }
    const Acc old_max = st.row_max[r];
    const Acc new_max = std::max(old_max, tile_max);
    Acc* acc = st.acc + r * st.ld_acc;
    if (new_max == neg_inf) {
      // Nothing seen yet in this row (only possible for a tile holding just the excluded
      // key): leave the state alone, contribute zeros.
      for (int64_t c = 0; c < cols; ++c) s[c] = 0;
      continue;
    }
    // old_max == -inf gives alpha = 0: the (zero) state is simply replaced.
    const Acc alpha = exp_nonpositive(old_max - new_max);
    Acc lanes[kLanes] = {};
    int64_t c = 0;
    for (; c + kLanes <= cols; c += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const Acc e = exp_nonpositive(s[c + l] - new_max);
        s[c + l] = e;
        lanes[l] += e;
      }
    }
    Acc tile_sum = sum_lanes(lanes);
    for (; c < cols; ++c) {
      const Acc e = exp_nonpositive(s[c] - new_max);
      s[c] = e;
      tile_sum += e;
    }
    st.row_max[r] = new_max;
    st.row_sum[r] = alpha * st.row_sum[r] + tile_sum;
    if (values_t != nullptr) {
      for (int64_t j = 0; j < p; ++j) {
        const Acc* v = values_t + j * ld_v;
        acc[j] = alpha * acc[j] + dot(s, v, cols);
      }
    } else {
      for (int64_t j = 0; j < p; ++j) acc[j] *= alpha;
    }
  }
}

// Final normalisation: out[r] = acc[r] / row_sum[r], lse[r] = row_max[r] + log(row_sum[r]).
// A row that saw no key (impossible with M >= 1 unless every key was excluded) gives 0 and
// lse = -inf.
template <typename T, typename Acc>
void online_finish(const OnlineState<Acc>& st, int64_t rows, int64_t p, T* out, int64_t ld_out,
                   Acc* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    const Acc sum = st.row_sum[r];
    const Acc inv = sum > 0 ? Acc(1) / sum : Acc(0);
    for (int64_t j = 0; j < p; ++j) out[r * ld_out + j] = static_cast<T>(st.acc[r * st.ld_acc + j] * inv);
    lse[r] = sum > 0 ? st.row_max[r] + std::log(sum) : -std::numeric_limits<Acc>::infinity();
  }
}

// Backward of one tile (flash-attention style recomputation).
//
// On entry S holds the raw dots q . k and dP holds grad_out . v for the tile (both rows x
// cols, leading dims ld_s, ld_dp). With lse (rows,) from the forward pass and
// delta[r] = grad_out[r] . out[r], on exit
//   S  = P  = exp(s - lse)                   (the probabilities)
//   dP = dS = P * (dP - delta)               (gradient w.r.t. the logit s)
// The caller then forms grad_q += scale dS K, grad_v += P^T grad_out and
// grad_k += scale (dS^T Q - colsum(dS) k) with GEMMs. Excluded pairs get P = dS = 0.
template <typename Acc>
void backward_tile(Acc* S, int64_t ld_s, Acc* dP, int64_t ld_dp, int64_t rows, int64_t cols,
                   const Acc* half_norm, Acc scale, bool exclude_self, int64_t self_offset,
                   const Acc* lse, const Acc* delta) {
  for (int64_t r = 0; r < rows; ++r) {
    Acc* s = S + r * ld_s;
    Acc* dp = dP + r * ld_dp;
    const Acc l = lse[r];
    const Acc dl = delta[r];
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) {
      // min(., 0) guards rounding: a logit cannot exceed its row's log-sum-exp.
      const Acc e = exp_nonpositive(std::min(scale * (s[c] - half_norm[c]) - l, Acc(0)));
      s[c] = e;
      dp[c] = e * (dp[c] - dl);
    }
    const int64_t self_col = r + self_offset;
    if (exclude_self && self_col >= 0 && self_col < cols) {
      s[self_col] = 0;
      dp[self_col] = 0;
    }
  }
}

// colsum[c] += sum_r dS[r, c] (the |k|^2 / 2 term of grad_k).
template <typename Acc>
void add_column_sums(const Acc* dS, int64_t ld, int64_t rows, int64_t cols, Acc* colsum) {
  for (int64_t r = 0; r < rows; ++r) {
    const Acc* row = dS + r * ld;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) colsum[c] += row[c];
  }
}

}  // namespace grnn
}  // namespace kernels
}  // namespace fastdeblur

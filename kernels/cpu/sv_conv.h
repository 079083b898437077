// Per-pixel spatially-varying convolution on the CPU: forward (gather), adjoint and the
// kernel gradient (a per-pixel correlation). Torch-free: raw pointers to contiguous
// buffers; the caller splits the work into bands of rows and runs them on threads.
//
// Meaning (fastdeblur.ops.reference.sv_conv), with taps t = u * kw + v and the kernel
// centred at (cy, cx) = (kh / 2, kw / 2):
//   y[c, i, j] = sum_t K[t, i, j] * x[c, map(i - u + cy), map(j - v + cx)]
// where map() is the boundary rule of fastdeblur.convolution.boundary_index.
//
// Layout of every routine: for an output row, for each tap, a loop over j that reads a
// contiguous row of K and a contiguous, shifted row of a padded input, and updates a
// contiguous row of the output for all channels at once (K is read once). The loops carry
// no branches, so the compiler vectorises them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastdeblur {
namespace cpu {

// Same numbering as fastdeblur::Boundary in csrc/common.h.
enum SvBoundary : int { kSvReflect = 0, kSvZero = 1, kSvReplicate = 2, kSvCircular = 3 };

// Maps an index along an axis of length n into [0, n); -1 for outside under zero boundary.
// Exactly fastdeblur.convolution.boundary_index (reflect keeps mirroring for any distance).
inline int64_t sv_boundary_index(int64_t i, int64_t n, int boundary) {
  if (i >= 0 && i < n) return i;
  switch (boundary) {
    case kSvReflect: {
      if (n == 1) return 0;
      const int64_t period = 2 * (n - 1);
      int64_t f = i % period;
      if (f < 0) f += period;
      return f >= n ? period - f : f;
    }
    case kSvReplicate:
      return i < 0 ? 0 : n - 1;
    case kSvCircular: {
      int64_t f = i % n;
      return f < 0 ? f + n : f;
    }
    default:
      return -1;
  }
}

// dst[0, left + n + right) = src[map(j - left)], 0 where map() is -1.
template <typename T>
inline void sv_pad_row(const T* src, int64_t n, int64_t left, int64_t right, int boundary,
                       T* dst) {
  for (int64_t j = 0; j < left; ++j) {
    const int64_t s = sv_boundary_index(j - left, n, boundary);
    dst[j] = s < 0 ? T(0) : src[s];
  }
  std::memcpy(dst + left, src, sizeof(T) * n);
  for (int64_t j = 0; j < right; ++j) {
    const int64_t s = sv_boundary_index(n + j, n, boundary);
    dst[left + n + j] = s < 0 ? T(0) : src[s];
  }
}

// Pads the rows [r0, r1) of a (C, H, W) image (rows may lie outside [0, H): mapped by the
// boundary rule) into band[c][(r - r0) * Wp + ...], Wp = W + left + right.
template <typename T>
inline void sv_pad_band(const T* x, int64_t C, int64_t H, int64_t W, int64_t r0, int64_t r1,
                        int64_t left, int64_t right, int boundary, T* band) {
  const int64_t Wp = W + left + right;
  const int64_t rows = r1 - r0;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t r = r0; r < r1; ++r) {
      T* dst = band + (c * rows + (r - r0)) * Wp;
      const int64_t src_row = sv_boundary_index(r, H, boundary);
      if (src_row < 0) {
        std::fill(dst, dst + Wp, T(0));
      } else {
        sv_pad_row(x + (c * H + src_row) * W, W, left, right, boundary, dst);
      }
    }
  }
}

// ---- inner loops (CB channels at a time, CB a compile-time constant) ----

// The kernel field is read one 4 KiB-ish row per tap, each row H*W elements from the next:
// every row starts a new page, where the hardware prefetcher stops. The loops below ask for
// the rows of the tap FASTDEBLUR_SV_PREFETCH_TAPS ahead themselves, one cache line per cache
// line they process, so the requests spread over the pass instead of queueing in a burst.
#ifndef FASTDEBLUR_SV_PREFETCH_TAPS
#define FASTDEBLUR_SV_PREFETCH_TAPS 8
#endif
constexpr int64_t kSvLineBytes = 64;

// out[c][j] += k0[j] * a0[c][j]  (+ k1[j] * a1[c][j] when TWO)  for c < CB, j < n.
// pf0 / pf1: rows to prefetch alongside (read when kRead, else for writing), or null.
template <typename T, int CB, bool TWO, bool kRead = true>
inline void sv_axpy_rows(const T* __restrict k0, const T* __restrict k1, const T* const* a0,
                         const T* const* a1, T* const* out, int64_t n, const T* pf0 = nullptr,
                         const T* pf1 = nullptr) {
  constexpr int64_t L = kSvLineBytes / static_cast<int64_t>(sizeof(T));
  const T* __restrict p[CB];
  const T* __restrict q[CB];
  T* __restrict o[CB];
  for (int c = 0; c < CB; ++c) {
    p[c] = a0[c];
    q[c] = TWO ? a1[c] : a0[c];
    o[c] = out[c];
  }
  auto step = [&](int64_t j) {
    const T x0 = k0[j];
    const T x1 = TWO ? k1[j] : T(0);
    for (int c = 0; c < CB; ++c) o[c][j] += TWO ? x0 * p[c][j] + x1 * q[c][j] : x0 * p[c][j];
  };
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    if (pf0 != nullptr) __builtin_prefetch(pf0 + j, kRead ? 0 : 1, 1);
    if (pf1 != nullptr) __builtin_prefetch(pf1 + j, kRead ? 0 : 1, 1);
#pragma omp simd
    for (int64_t jj = j; jj < j + L; ++jj) step(jj);
  }
  for (; j < n; ++j) step(j);
}

// out[j] (+)= sum_c g[c][j] * a[c][j] for j in [0, n); pf: a row to prefetch for writing.
template <typename T, int CB>
inline void sv_dot_rows(const T* const* g, const T* const* a, T* __restrict out, int64_t n,
                        bool accumulate, const T* pf) {
  constexpr int64_t L = kSvLineBytes / static_cast<int64_t>(sizeof(T));
  const T* __restrict gp[CB];
  const T* __restrict ap[CB];
  for (int c = 0; c < CB; ++c) {
    gp[c] = g[c];
    ap[c] = a[c];
  }
  // Plain store when not accumulating: the output may hold garbage (or NaN poison) before.
  auto step = [&](int64_t j) {
    T s = gp[0][j] * ap[0][j];
    for (int c = 1; c < CB; ++c) s += gp[c][j] * ap[c][j];
    out[j] = accumulate ? out[j] + s : s;
  };
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    if (pf != nullptr) __builtin_prefetch(pf + j, 1, 1);
#pragma omp simd
    for (int64_t jj = j; jj < j + L; ++jj) step(jj);
  }
  for (; j < n; ++j) step(j);
}

// Calls f(std::integral_constant<int, CB>{}, c0) over blocks of at most 4 channels covering
// [0, C) (6 channels as two blocks of 3 rather than 4 + 2).
template <typename F>
inline void sv_for_channel_blocks(int64_t C, F&& f) {
  int64_t c0 = 0;
  for (; c0 + 4 <= C && C != 6; c0 += 4) f(std::integral_constant<int, 4>{}, c0);
  switch (C - c0) {
    case 6:
      f(std::integral_constant<int, 3>{}, c0);
      f(std::integral_constant<int, 3>{}, c0 + 3);
      break;
    case 3:
      f(std::integral_constant<int, 3>{}, c0);
      break;
    case 2:
      f(std::integral_constant<int, 2>{}, c0);
      break;
    case 1:
      f(std::integral_constant<int, 1>{}, c0);
      break;
    default:
      break;
  }
}

// ---- forward ----

// Channel block of the forward for one output row i: y[c0 : c0 + CB] of that row.
// k_row0: row i of tap 0; taps are tap_stride (= H*W) apart. k_next: row i + 1 of tap 0
// (prefetched during the last taps), or null.
template <typename T, int CB>
inline void sv_conv_row_block(const T* __restrict k_row0, const T* k_next, int64_t tap_stride,
                              const T* band, int64_t band_rows, int64_t Wp, int64_t band_row_of_u0,
                              int64_t c0, T* y_row0, int64_t y_channel_stride, int64_t W,
                              int64_t kh, int64_t kw) {
  T* out[CB];
  const T* in0[CB];
  const T* in1[CB];
  for (int c = 0; c < CB; ++c) out[c] = y_row0 + (c0 + c) * y_channel_stride;
  const int64_t taps = kh * kw;
  const bool prefetch = c0 == 0;  // later channel blocks find K in the cache
  // Input row of tap t (u = t / kw, v = t % kw): band row band_row_of_u0 - u, shifted by v.
  auto input = [&](int64_t t, const T** in) {
    const T* base = band + (band_row_of_u0 - t / kw) * Wp + (kw - 1 - t % kw);
    for (int c = 0; c < CB; ++c) in[c] = base + (c0 + c) * band_rows * Wp;
  };
  auto ahead = [&](int64_t t) -> const T* {
    if (!prefetch) return nullptr;
    const int64_t a = t + FASTDEBLUR_SV_PREFETCH_TAPS;
    if (a < taps) return k_row0 + a * tap_stride;
    return k_next != nullptr && a - taps < taps ? k_next + (a - taps) * tap_stride : nullptr;
  };
  // Taps in pairs over the flattened (u, v) order: one pass over the output row per pair.
  int64_t t = 0;
  for (; t + 1 < taps; t += 2) {
    input(t, in0);
    input(t + 1, in1);
    sv_axpy_rows<T, CB, true>(k_row0 + t * tap_stride, k_row0 + (t + 1) * tap_stride, in0, in1,
                              out, W, ahead(t), ahead(t + 1));
  }
  if (t < taps) {
    input(t, in0);
    sv_axpy_rows<T, CB, false>(k_row0 + t * tap_stride, nullptr, in0, nullptr, out, W,
                               ahead(t));
  }
}

// Row stride of the per-thread accumulator: W rounded up plus 16 elements, so that the
// accumulator rows do not share their address bits modulo 4 KiB with the rows of K and y
// (which lie H*W elements apart); stores to an aliasing address would stall the loads of K.
inline int64_t sv_acc_stride(int64_t W) { return ((W + 15) / 16) * 16 + 16; }

// Scratch elements needed by sv_conv_forward_rows / sv_kernel_grad_rows for a band.
inline int64_t sv_band_scratch(int64_t C, int64_t band, int64_t W, int64_t kh, int64_t kw) {
  return C * (band + kh - 1) * (W + kw - 1) + C * sv_acc_stride(W);
}

// Forward for output rows [i0, i1) of one image.
//   x: (C, H, W), k: (kh*kw, H, W), y: (C, H, W), all contiguous.
//   scratch: sv_band_scratch(C, i1 - i0, W, kh, kw) elements.
template <typename T>
void sv_conv_forward_rows(const T* x, const T* k, T* y, int64_t C, int64_t H, int64_t W,
                          int64_t kh, int64_t kw, int boundary, int64_t i0, int64_t i1,
                          T* scratch) {
  const int64_t cy = kh / 2, cx = kw / 2;
  const int64_t top = kh - 1 - cy, left = kw - 1 - cx;
  const int64_t Wp = W + kw - 1;
  const int64_t band_rows = i1 - i0 + kh - 1;
  T* band = scratch;
  T* acc = scratch + C * band_rows * Wp;
  const int64_t acc_stride = sv_acc_stride(W);
  // Padded row p holds image row p - top; output row i with tap u reads image row
  // i - u + cy, i.e. padded row i - u + kh - 1, i.e. band row i - i0 + kh - 1 - u.
  sv_pad_band(x, C, H, W, i0 - top, i1 + cy, left, cx, boundary, band);
  const int64_t plane = H * W;
  for (int64_t i = i0; i < i1; ++i) {
    std::fill(acc, acc + C * acc_stride, T(0));
    const T* k_row = k + i * W;
    const T* k_next = i + 1 < i1 ? k_row + W : nullptr;
    const int64_t r_u0 = i - i0 + kh - 1;
    sv_for_channel_blocks(C, [&](auto cb, int64_t c0) {
      sv_conv_row_block<T, decltype(cb)::value>(k_row, k_next, plane, band, band_rows, Wp, r_u0,
                                                c0, acc, acc_stride, W, kh, kw);
    });
    for (int64_t c = 0; c < C; ++c) std::memcpy(y + c * plane + i * W, acc + c * acc_stride, sizeof(T) * W);
  }
}

// ---- adjoint ----
//
// Gather form of the scatter. On the padded grid (padded row s holds image row s - top,
// padded column q holds image column q - left), the scatter of y is
//   z[c, s, q] = sum_t K[t, i, j] * y[c, i, j],  i = s - (kh-1) + u,  j = q - (kw-1) + v,
// over the taps whose (i, j) lies in the image. Each z row is computed by one thread (no
// races), then folded back through the boundary map: x'[map(s), map(q)] += z[s, q].

// Channel block of one padded row s of z (width Wp = W + kw - 1), zeroed first.
template <typename T, int CB>
inline void sv_adjoint_row_block(const T* k, const T* y, int64_t H, int64_t W, int64_t kh,
                                 int64_t kw, int64_t s, int64_t c0, T* z_row0, int64_t Wp) {
  const int64_t plane = H * W;
  T* out[CB];
  const T* in[CB];
  const T* in1[CB];
  T* o[CB];
  for (int c = 0; c < CB; ++c) {
    out[c] = z_row0 + (c0 + c) * Wp;
    std::fill(out[c], out[c] + Wp, T(0));
  }
  const int64_t u_lo = std::max<int64_t>(0, kh - 1 - s);
  const int64_t u_hi = std::min<int64_t>(kh, H + kh - 1 - s);
  // K row of tap t at the image row that tap row t / kw reads: i = s - (kh - 1) + t / kw.
  auto k_at = [&](int64_t t) { return k + t * plane + (s - (kh - 1) + t / kw) * W; };
  // The taps of padded row s + 1 (which the calling thread does next, as a rule) that the
  // last taps of this row prefetch, so that no row starts on cold rows of K.
  const int64_t s1 = s + 1;
  const int64_t u_lo1 = std::max<int64_t>(0, kh - 1 - s1);
  const int64_t u_hi1 = std::min<int64_t>(kh, H + kh - 1 - s1);
  auto ahead = [&](int64_t t) -> const T* {
    if (c0 != 0) return nullptr;  // later channel blocks find K in the cache
    const int64_t a = t + FASTDEBLUR_SV_PREFETCH_TAPS;
    if (a < u_hi * kw) return k_at(a);
    const int64_t a1 = u_lo1 * kw + (a - u_hi * kw);
    if (a1 >= u_hi1 * kw) return nullptr;
    return k + a1 * plane + (s1 - (kh - 1) + a1 / kw) * W;
  };
  // The last tap of a kernel row (v = kw - 1, output offset 0) when it is left unpaired
  // (kw odd), kept until the next row's, so that the two share one pass.
  const T* pending = nullptr;
  const T* pending_in[CB];
  int64_t pending_t = 0;
  for (int64_t u = u_lo; u < u_hi; ++u) {
    const T* y_i = y + (s - (kh - 1) + u) * W;
    for (int c = 0; c < CB; ++c) {
      in[c] = y_i + (c0 + c) * plane;
      in1[c] = in[c] + 1;
    }
    // Tap v adds K_v[j] * y[j] into z[j + kw - 1 - v] for j in [0, W). Taps v and v + 1
    // together: z[q] += K_v[j] y[j] + K_{v+1}[j+1] y[j+1] with q = j + kw - 1 - v over
    // j in [0, W - 1), plus one end element of each tap.
    int64_t v = 0;
    for (; v + 1 < kw && W > 1; v += 2) {
      const int64_t t = u * kw + v;
      const T* k0 = k_at(t);
      const T* k1 = k_at(t + 1);
      const int64_t q0 = kw - 1 - v;
      for (int c = 0; c < CB; ++c) o[c] = out[c] + q0;
      sv_axpy_rows<T, CB, true>(k0, k1 + 1, in, in1, o, W - 1, ahead(t), ahead(t + 1));
      for (int c = 0; c < CB; ++c) {
        out[c][q0 + W - 1] += k0[W - 1] * in[c][W - 1];
        out[c][q0 - 1] += k1[0] * in[c][0];
      }
    }
    for (; v < kw; ++v) {
      const int64_t t = u * kw + v;
      const int64_t q0 = kw - 1 - v;
      for (int c = 0; c < CB; ++c) o[c] = out[c] + q0;
      if (v == kw - 1 && pending != nullptr) {
        // the unpaired last taps of two kernel rows land on the same output offset: one pass
        sv_axpy_rows<T, CB, true>(pending, k_at(t), pending_in, in, o, W, ahead(pending_t),
                                  ahead(t));
        pending = nullptr;
      } else if (v == kw - 1) {
        pending = k_at(t);
        pending_t = t;
        for (int c = 0; c < CB; ++c) pending_in[c] = in[c];
      } else {
        sv_axpy_rows<T, CB, false>(k_at(t), nullptr, in, nullptr, o, W, ahead(t));
      }
    }
  }
  if (pending != nullptr) {
    for (int c = 0; c < CB; ++c) o[c] = out[c];
    sv_axpy_rows<T, CB, false>(pending, nullptr, pending_in, nullptr, o, W, ahead(pending_t));
  }
}

// One padded row s of z for all channels: z_row is (C, Wp) scratch.
template <typename T>
void sv_adjoint_padded_row(const T* k, const T* y, int64_t C, int64_t H, int64_t W, int64_t kh,
                           int64_t kw, int64_t s, T* z_row) {
  const int64_t Wp = W + kw - 1;
  sv_for_channel_blocks(C, [&](auto cb, int64_t c0) {
    sv_adjoint_row_block<T, decltype(cb)::value>(k, y, H, W, kh, kw, s, c0, z_row, Wp);
  });
}

// Adds the columns of a padded row (width W + left + right) into an image row (width W)
// through the boundary map: dst[map(q - left)] += src[q]. dst must be initialised.
template <typename T>
inline void sv_fold_row(const T* src, int64_t W, int64_t left, int64_t right, int boundary,
                        T* dst) {
  for (int64_t q = 0; q < left; ++q) {
    const int64_t j = sv_boundary_index(q - left, W, boundary);
    if (j >= 0) dst[j] += src[q];
  }
  const T* __restrict mid = src + left;
  T* __restrict d = dst;
#pragma omp simd
  for (int64_t j = 0; j < W; ++j) d[j] += mid[j];
  for (int64_t q = 0; q < right; ++q) {
    const int64_t j = sv_boundary_index(W + q, W, boundary);
    if (j >= 0) dst[j] += src[left + W + q];
  }
}

// Adjoint, padded rows [s0, s1) of one image (padded rows run over [0, H + kh - 1)).
// The rows inside the image (top <= s < top + H) go straight to x_out (C, H, W): image row
// s - top, column-folded for the other boundaries than zero. The halo rows above and below
// are skipped under the zero boundary (they fall outside); for the other boundaries they go,
// column-folded, to zc (C, H + kh - 1, W; only its halo rows are written), which
// sv_adjoint_fold_rows then adds into x_out once every interior row is written.
//   z_row: scratch of C * (W + kw - 1).
template <typename T>
void sv_adjoint_rows(const T* k, const T* y, int64_t C, int64_t H, int64_t W, int64_t kh,
                     int64_t kw, int boundary, int64_t s0, int64_t s1, T* x_out, T* zc,
                     T* z_row) {
  const int64_t cy = kh / 2, cx = kw / 2;
  const int64_t top = kh - 1 - cy, left = kw - 1 - cx;
  const int64_t Wp = W + kw - 1, Hp = H + kh - 1;
  const int64_t plane = H * W;
  for (int64_t s = s0; s < s1; ++s) {
    const bool interior = s >= top && s < top + H;
    if (boundary == kSvZero && !interior) continue;
    sv_adjoint_padded_row(k, y, C, H, W, kh, kw, s, z_row);
    for (int64_t c = 0; c < C; ++c) {
      T* dst = interior ? x_out + c * plane + (s - top) * W : zc + (c * Hp + s) * W;
      if (boundary == kSvZero) {
        std::memcpy(dst, z_row + c * Wp + left, sizeof(T) * W);
      } else {
        std::fill(dst, dst + W, T(0));
        sv_fold_row(z_row + c * Wp, W, left, cx, boundary, dst);
      }
    }
  }
}

// Row fold of the halo rows of one channel plane, columns [j0, j1):
// x[map(s - top), j] += zc[s, j] for the padded rows s outside the image.
//   zc: (H + kh - 1, W) of this plane; x: (H, W) of this plane, interior rows written.
template <typename T>
void sv_adjoint_fold_rows(const T* zc, T* x, int64_t H, int64_t W, int64_t kh, int boundary,
                          int64_t j0, int64_t j1) {
  const int64_t top = kh - 1 - kh / 2;
  const int64_t Hp = H + kh - 1;
  const int64_t n = j1 - j0;
  for (int64_t s = 0; s < Hp; ++s) {
    if (s >= top && s < top + H) continue;
    const int64_t i = sv_boundary_index(s - top, H, boundary);
    if (i < 0) continue;
    const T* __restrict src = zc + s * W + j0;
    T* __restrict dst = x + i * W + j0;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
  }
}

// ---- kernel gradient (per-pixel correlation) ----
//
//   g[t, i, j] (+)= sum_c gy[c, i, j] * x[c, map(i - u + cy), map(j - v + cx)]
// for output rows [i0, i1) of one image; accumulate adds into g (for kernels shared by the
// batch). scratch: sv_band_scratch(C, i1 - i0, W, kh, kw) elements.
template <typename T>
void sv_kernel_grad_rows(const T* gy, const T* x, T* g, int64_t C, int64_t H, int64_t W,
                         int64_t kh, int64_t kw, int boundary, int64_t i0, int64_t i1,
                         T* scratch, bool accumulate) {
  const int64_t cy = kh / 2, cx = kw / 2;
  const int64_t top = kh - 1 - cy, left = kw - 1 - cx;
  const int64_t Wp = W + kw - 1;
  const int64_t band_rows = i1 - i0 + kh - 1;
  const int64_t plane = H * W;
  T* band = scratch;
  T* gy_row = scratch + C * band_rows * Wp;
  const int64_t gy_stride = sv_acc_stride(W);
  sv_pad_band(x, C, H, W, i0 - top, i1 + cy, left, cx, boundary, band);
  const T* gp[4];
  const T* xp[4];
  for (int64_t i = i0; i < i1; ++i) {
    // A copy of the gradient row away from the 4 KiB-aliasing addresses of the g rows.
    for (int64_t c = 0; c < C; ++c)
      std::memcpy(gy_row + c * gy_stride, gy + c * plane + i * W, sizeof(T) * W);
    for (int64_t u = 0; u < kh; ++u) {
      const T* row_base = band + (i - i0 + kh - 1 - u) * Wp;
      for (int64_t v = 0; v < kw; ++v) {
        T* out = g + (u * kw + v) * plane + i * W;
        const int64_t ahead = u * kw + v + FASTDEBLUR_SV_PREFETCH_TAPS;
        const T* pf = ahead < kh * kw ? g + ahead * plane + i * W : nullptr;
        sv_for_channel_blocks(C, [&](auto cb, int64_t c0) {
          constexpr int CB = decltype(cb)::value;
          for (int c = 0; c < CB; ++c) {
            gp[c] = gy_row + (c0 + c) * gy_stride;
            xp[c] = row_base + (c0 + c) * band_rows * Wp + (kw - 1 - v);
          }
          sv_dot_rows<T, CB>(gp, xp, out, W, accumulate || c0 > 0, c0 == 0 ? pf : nullptr);
        });
      }
    }
  }
}

}  // namespace cpu
}  // namespace fastdeblur

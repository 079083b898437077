// Element-wise and stencil kernels of the fused NAF block on the CPU (torch-free).
//
// Activations are channels-last: a tensor of N images, H x W pixels and K channels is
// stored as N*H*W contiguous rows of K values ("pixel rows"). The 1x1 convolutions are
// GEMMs on those (pixels, channels) matrices and live in the glue; these kernels fuse
// everything between the GEMMs. Each function handles a range [begin, end) of pixel
// rows or image rows (row r = n*H + h); threading is the caller's.
//
// Reductions over pixels (parameter gradients, pooled sums) are written to a partial
// buffer owned by the calling chunk, so the caller can sum the chunks in a fixed order
// (deterministic results whatever the thread count).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace fastdeblur {
namespace cpu {
namespace naf {

// LayerNorm over the C channels of each pixel row in [p0, p1):
// xn = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps). Saves mean and rstd.
template <typename T>
void layer_norm_rows(const T* x, const T* w, const T* b, T* xn, T* mean, T* rstd, int64_t p0,
                     int64_t p1, int64_t C, T eps) {
  const T inv_c = T(1) / T(C);
  for (int64_t p = p0; p < p1; ++p) {
    const T* xr = x + p * C;
    T* out = xn + p * C;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const T mu = sum * inv_c;
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) sq += (xr[c] - mu) * (xr[c] - mu);
    const T rs = T(1) / std::sqrt(sq * inv_c + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[c] = (xr[c] - mu) * rs * w[c] + b[c];
    mean[p] = mu;
    rstd[p] = rs;
  }
}

// y = x + beta * (t + tbias), then yn = LayerNorm(y) (see layer_norm_rows); beta and
// tbias (the bias of the GEMM that produced t) are per channel.
template <typename T>
void residual_layer_norm_rows(const T* x, const T* t, const T* tbias, const T* beta, const T* w,
                              const T* b, T* y, T* yn, T* mean, T* rstd, int64_t p0, int64_t p1,
                              int64_t C, T eps) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* xr = x + p * C;
    const T* tr = t + p * C;
    T* yr = y + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] + beta[c] * (tr[c] + tbias[c]);
  }
  layer_norm_rows(y + p0 * C, w, b, yn + p0 * C, mean + p0, rstd + p0, 0, p1 - p0, C, eps);
}

// The nine input pointers of a 3x3 stencil at pixel (h, w) of an image of width W whose
// rows [row_lo, row_hi) are stored from `img` on (row row_lo first), K channels a pixel;
// taps outside those rows or outside [0, W) point at `zeros` (zero padding).
// Tap k = ky * 3 + kx reads pixel (h + sy * (ky - 1), w + sy * (kx - 1)), sy = +1 for the
// convolution and -1 for its transpose.
template <typename T>
inline void stencil_taps(const T* img, const T* zeros, int64_t h, int64_t w, int64_t row_lo,
                         int64_t row_hi, int64_t W, int64_t K, int sy, const T* taps[9]) {
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t hh = h + sy * (ky - 1);
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t ww = w + sy * (kx - 1);
      const bool inside = hh >= row_lo && hh < row_hi && ww >= 0 && ww < W;
      taps[ky * 3 + kx] = inside ? img + ((hh - row_lo) * W + ww) * K : zeros;
    }
  }
}

// The convolution input is stored without its per-channel bias zbias (the bias of the
// GEMM that produced it): z = stored + zbias inside the image, 0 outside. Taps outside
// the image read `pad` = -zbias, so that sum_k wt_k * (tap_k + zbias) becomes
// bias_eff + sum_k wt_k * tap_k with bias_eff = bias + zbias * sum_k wt_k.
template <typename T>
void folded_bias(const T* wt, const T* bias, const T* zbias, int64_t C2, std::vector<T>& pad,
                 std::vector<T>& bias_eff) {
  pad.assign(C2, T(0));
  bias_eff.assign(bias, bias + C2);
  for (int64_t c = 0; c < C2; ++c) {
    T sum = 0;
    for (int k = 0; k < 9; ++k) sum += wt[k * C2 + c];
    pad[c] = -zbias[c];
    bias_eff[c] += zbias[c] * sum;
  }
}

// dwconv_gate_rows for rows [h0, h1) of one image whose convolution input is held only
// for rows [zlo, zhi) (zlo <= h0 - 1 or 0, zhi >= h1 + 1 or H) at `zband`; g_band and
// rowsum_band receive rows h0.. of that image (W * C and C values a row).
template <typename T>
void dwconv_gate_band(const T* zband, const T* zbias, int64_t zlo, int64_t zhi, const T* wt,
                      const T* bias_in, T* g_band, T* rowsum_band, int64_t h0, int64_t h1,
                      int64_t W, int64_t C) {
  const int64_t C2 = 2 * C;
  std::vector<T> zeros, bias_eff;
  folded_bias(wt, bias_in, zbias, C2, zeros, bias_eff);
  const T* bias = bias_eff.data();
  const T* taps[9];
  for (int64_t h = h0; h < h1; ++h) {
    T* rs = rowsum_band + (h - h0) * C;
    for (int64_t c = 0; c < C; ++c) rs[c] = 0;
    for (int64_t w = 0; w < W; ++w) {
      stencil_taps(zband, zeros.data(), h, w, zlo, zhi, W, C2, +1, taps);
      T* out = g_band + ((h - h0) * W + w) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        T a = bias[c], b = bias[C + c];
        for (int k = 0; k < 9; ++k) {
          a += wt[k * C2 + c] * taps[k][c];
          b += wt[k * C2 + C + c] * taps[k][C + c];
        }
        const T v = a * b;
        out[c] = v;
        rs[c] += v;
      }
    }
  }
}

// Depthwise 3x3 convolution (zero padding) + bias + SimpleGate for image rows [r0, r1).
//   z:      (N, H, W, 2C) input of the convolution, less its bias zbias (2C)
//   wt:     (9, 2C) taps, tap-major (wt[k * 2C + c] = weight[c, 0, k / 3, k % 3])
//   bias:   (2C)
//   g:      (N, H, W, C) output, g = u[:C] * u[C:] with u = dwconv(z) + bias
//   rowsum: (N*H, C) output, sum of g over each image row (for the channel attention pool)
template <typename T>
void dwconv_gate_rows(const T* z, const T* zbias, const T* wt, const T* bias, T* g, T* rowsum,
                      int64_t r0, int64_t r1, int64_t H, int64_t W, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / H, h = r % H;
    dwconv_gate_band(z + n * H * W * 2 * C, zbias, 0, H, wt, bias, g + r * W * C,
                     rowsum + r * C, h, h + 1, W, C);
  }
}

// SimpleGate of pixel rows [p0, p1) of v + vbias: h = (v + vbias)[:, :C] * (v + vbias)[:, C:],
// v (P, 2C), vbias (2C), h (P, C).
template <typename T>
void gate_rows(const T* v, const T* vbias, T* h, int64_t p0, int64_t p1, int64_t C) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* vr = v + p * 2 * C;
    T* hr = h + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) hr[c] = (vr[c] + vbias[c]) * (vr[C + c] + vbias[C + c]);
  }
}

// out = y + gamma * (f + fbias) for pixel rows [p0, p1).
template <typename T>
void scaled_residual_rows(const T* y, const T* f, const T* fbias, const T* gamma, T* out,
                          int64_t p0, int64_t p1, int64_t C) {
  for (int64_t p = p0; p < p1; ++p) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c)
      out[p * C + c] = y[p * C + c] + gamma[c] * (f[p * C + c] + fbias[c]);
  }
}

// ---- backward ----

// Backward of out = y + gamma * (f + fbias) with respect to f and gamma:
// df = dout * gamma; dgamma_partial[c] += sum_p dout * (f + fbias).
template <typename T>
void scaled_residual_backward_rows(const T* dout, const T* f, const T* fbias, const T* gamma,
                                   T* df, T* dgamma_partial, int64_t p0, int64_t p1, int64_t C) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* d = dout + p * C;
    const T* fr = f + p * C;
    T* o = df + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      o[c] = d[c] * gamma[c];
      dgamma_partial[c] += d[c] * (fr[c] + fbias[c]);
    }
  }
}

// Backward of the SimpleGate of v + vbias: dv[:, :C] = dh * (v + vbias)[:, C:],
// dv[:, C:] = dh * (v + vbias)[:, :C].
template <typename T>
void gate_backward_rows(const T* dh, const T* v, const T* vbias, T* dv, int64_t p0, int64_t p1,
                        int64_t C) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* d = dh + p * C;
    const T* vr = v + p * 2 * C;
    T* o = dv + p * 2 * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      o[c] = d[c] * (vr[C + c] + vbias[C + c]);
      o[C + c] = d[c] * (vr[c] + vbias[c]);
    }
  }
}

// Backward of xn = LayerNorm(x) for pixel rows [p0, p1), with an optional residual
// gradient added: dx = dres + rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
// dxhat = dxn * w. Partial parameter gradients: dw += dxn * xhat, db += dxn.
// `dres` may be null.
template <typename T>
void layer_norm_backward_rows(const T* dxn, const T* x, const T* mean, const T* rstd,
                              const T* w, const T* dres, T* dx, T* dw_partial, T* db_partial,
                              int64_t p0, int64_t p1, int64_t C) {
  const T inv_c = T(1) / T(C);
  for (int64_t p = p0; p < p1; ++p) {
    const T* d = dxn + p * C;
    const T* xr = x + p * C;
    const T mu = mean[p], rs = rstd[p];
    T s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t c = 0; c < C; ++c) {
      const T xhat = (xr[c] - mu) * rs;
      const T dxhat = d[c] * w[c];
      s1 += dxhat;
      s2 += dxhat * xhat;
      dw_partial[c] += d[c] * xhat;
      db_partial[c] += d[c];
    }
    s1 *= inv_c;
    s2 *= inv_c;
    T* o = dx + p * C;
    const T* dr = dres != nullptr ? dres + p * C : nullptr;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const T xhat = (xr[c] - mu) * rs;
      const T v = rs * (d[c] * w[c] - s1 - xhat * s2);
      o[c] = dr != nullptr ? dr[c] + v : v;
    }
  }
}

// Backward of y = x + beta * (t + tbias) (y is also normalised by LN2): given dy
// (complete), dt = dy * beta and dbeta_partial += dy * (t + tbias).
template <typename T>
void residual_backward_rows(const T* dy, const T* t, const T* tbias, const T* beta, T* dt,
                            T* dbeta_partial, int64_t p0, int64_t p1, int64_t C) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* d = dy + p * C;
    const T* tr = t + p * C;
    T* o = dt + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      o[c] = d[c] * beta[c];
      dbeta_partial[c] += d[c] * (tr[c] + tbias[c]);
    }
  }
}

// Backward of the depthwise conv + SimpleGate, first pass, for image rows [r0, r1):
// recomputes u = dwconv(z + zbias) + bias (z stored less its bias, see folded_bias), takes the gradient of g as dg = dgs * s[n] + dpool[n]
// (the channel-attention scale and the pooled-mean gradient already divided by H*W),
// writes du (N, H, W, 2C) and accumulates the partial tap and bias gradients
// dwt_partial (9, 2C), db_partial (2C).
template <typename T>
void dwconv_gate_backward_rows(const T* z, const T* zbias, const T* wt, const T* bias_in,
                               const T* dgs, const T* s, const T* dpool, T* du, T* dwt_partial,
                               T* db_partial, int64_t r0, int64_t r1, int64_t H, int64_t W,
                               int64_t C) {
  const int64_t C2 = 2 * C;
  std::vector<T> zeros, bias_eff;
  folded_bias(wt, bias_in, zbias, C2, zeros, bias_eff);
  const T* bias = bias_eff.data();
  const T* taps[9];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / H, h = r % H;
    const T* img = z + n * H * W * C2;
    const T* sn = s + n * C;
    const T* dpn = dpool + n * C;
    for (int64_t w = 0; w < W; ++w) {
      stencil_taps(img, zeros.data(), h, w, int64_t(0), H, W, C2, +1, taps);
      const int64_t p = (n * H + h) * W + w;
      const T* dgr = dgs + p * C;
      T* dur = du + p * C2;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        T a = bias[c], b = bias[C + c];
        for (int k = 0; k < 9; ++k) {
          a += wt[k * C2 + c] * taps[k][c];
          b += wt[k * C2 + C + c] * taps[k][C + c];
        }
        const T dg = dgr[c] * sn[c] + dpn[c];
        const T da = dg * b, dbv = dg * a;
        dur[c] = da;
        dur[C + c] = dbv;
        db_partial[c] += da;
        db_partial[C + c] += dbv;
        for (int k = 0; k < 9; ++k) {
          dwt_partial[k * C2 + c] += da * (taps[k][c] + zbias[c]);
          dwt_partial[k * C2 + C + c] += dbv * (taps[k][C + c] + zbias[C + c]);
        }
      }
    }
  }
}

// Transposed depthwise 3x3 convolution (the input gradient of dwconv) for image rows
// [r0, r1): dz[h, w, c] = sum_k wt[k, c] * du[h - (ky - 1), w - (kx - 1), c], K channels.
template <typename T>
void dwconv_transpose_rows(const T* du, const T* wt, T* dz, int64_t r0, int64_t r1, int64_t H,
                           int64_t W, int64_t K) {
  std::vector<T> zeros(K, T(0));
  const T* taps[9];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / H, h = r % H;
    const T* img = du + n * H * W * K;
    for (int64_t w = 0; w < W; ++w) {
      stencil_taps(img, zeros.data(), h, w, int64_t(0), H, W, K, -1, taps);
      T* o = dz + ((n * H + h) * W + w) * K;
#pragma omp simd
      for (int64_t c = 0; c < K; ++c) {
        T a = 0;
        for (int k = 0; k < 9; ++k) a += wt[k * K + c] * taps[k][c];
        o[c] = a;
      }
    }
  }
}

}  // namespace naf
}  // namespace cpu
}  // namespace fastdeblur

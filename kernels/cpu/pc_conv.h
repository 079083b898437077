// Product-convolution over a grid of kernels on the CPU, free of torch.
//
//   y = Σ_i h_i ⋆ (w_i ⊙ x)        (fastdeblur/ops/reference.py, section pc_conv)
//
// Everything works in *padded coordinates*: padded row pr in [0, H + kh - 1) is image row
// row_map[pr] (-1 for zero padding), with kh - 1 - kh/2 rows before the image; columns alike.
// The padded product of cell (a, b) is wy[a][pr] · wx[b][pc] · x[row_map[pr]][col_map[pc]],
// and y[i][j] = Σ_{u,v} hf[u][v] · z[i + u][j + v] with hf the kernel flipped (true
// convolution as a correlation of the padded window).
//
// Each cell's padded weights are non-zero on a few runs ("segments") of rows and columns,
// about two cells long (more runs only where a boundary folds the image onto itself). A
// segment of rows [s0, s1) feeds output rows [s0 - kh + 1, s1), so an output tile only visits
// the 4 to 9 cells whose segments reach it, and each of them only on the part it reaches.
//
// Threading is the caller's: every function takes a range of work items.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fastdeblur {
namespace kernels {
namespace pc_conv {

// A run [start, stop) of padded rows (or columns) where the weights of grid row (or
// column) `cell` are non-zero.
struct Segment {
  int64_t cell;
  int64_t start;
  int64_t stop;
};

// What every kernel needs to know about one call.
template <typename T>
struct Geometry {
  int64_t H, W;     // image size
  int64_t kh, kw;   // kernel size
  int64_t gh, gw;   // grid size
  const int64_t* row_map;  // (H + kh - 1): padded row -> image row, -1 = zero padding
  const int64_t* col_map;  // (W + kw - 1)
  const T* wy;             // (gh, H + kh - 1): weights of the grid rows on padded rows
  const T* wx;             // (gw, W + kw - 1)
  const Segment* row_segs;
  int64_t n_row_segs;
  const Segment* col_segs;
  int64_t n_col_segs;
  int64_t Hp() const { return H + kh - 1; }
  int64_t Wp() const { return W + kw - 1; }
};

// Register block of the correlation: kRows output rows × vec_width<T> output columns.
constexpr int kRows = 4;
// kVecBytes: bytes of one SIMD register the code is written for (32: AVX2, 64: AVX-512).
template <typename T, int kVecBytes = 32>
constexpr int vec_width() {
  return static_cast<int>(2 * kVecBytes / sizeof(T));  // two registers per row
}

// The tiled kernels are force-inlined into their callers so that a caller compiled for a
// wider instruction set (the AVX-512 entry points of csrc/cpu/pc_conv.cpp) compiles them for
// it too.
#if defined(__GNUC__)
#define FASTDEBLUR_PC_INLINE inline __attribute__((always_inline))
#else
#define FASTDEBLUR_PC_INLINE inline
#endif
// Output tiles of the forward and adjoint passes.
constexpr int64_t kTileRows = 32;
constexpr int64_t kTileCols = 128;

// Kernel rows as the correlation reads them: kRows - 1 zero rows above and below, so every
// row of a register block can index it without a branch. Size (kh + 2 (kRows - 1)) × kw.
inline int64_t extended_rows(int64_t kh) { return kh + 2 * (kRows - 1); }

// out[i][j] += Σ_{u<kh, v<kw} k[u][v] · z[i + u][j + v]   for i < oh, j < round_up(ow, V).
// Only z rows in [zr0, zr1) are read (the others are zero by the caller's construction);
// z rows must have round_up(ow, V) + kw - 1 readable, finite columns, out rows
// round_up(ow, V) writable columns. kext is the kernel in the extended_rows layout.
// Builds without AVX (the CMake test build) pass these 32-byte vectors in two SSE registers;
// GCC warns that this ABI differs from an AVX build, which does not matter for inline code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

// SIMD vector of 32 bytes (an AVX register) through the GCC/Clang vector extension, so the
// register block below stays in registers whatever the auto-vectoriser decides.
template <typename T, int kVecBytes = 32>
struct Simd {
  typedef T type __attribute__((vector_size(kVecBytes)));
  static constexpr int lanes = static_cast<int>(kVecBytes / sizeof(T));
  FASTDEBLUR_PC_INLINE static type load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  FASTDEBLUR_PC_INLINE static void store(T* p, type v) { std::memcpy(p, &v, sizeof(v)); }
  FASTDEBLUR_PC_INLINE static type splat(T s) { return type{} + s; }  // scalars broadcast
};

template <typename T, int kVecBytes = 32>
FASTDEBLUR_PC_INLINE void correlate_accumulate(const T* z, int64_t zs, int64_t zr0, int64_t zr1,
                                 const T* kext, int64_t kh, int64_t kw, T* out, int64_t os,
                                 int64_t oh, int64_t ow) {
  using S = Simd<T, kVecBytes>;
  using vec = typename S::type;
  constexpr int V = vec_width<T, kVecBytes>();
  constexpr int L = S::lanes;
  static_assert(V == 2 * L, "register block is two SIMD vectors wide");
  for (int64_t i = 0; i < oh; i += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, oh - i);
    const int64_t r_lo = std::max(i, zr0);
    const int64_t r_hi = std::min(i + rows - 1 + kh, zr1);
    for (int64_t j = 0; j < ow; j += V) {
      vec acc[kRows][2];
      for (int rr = 0; rr < kRows; ++rr) acc[rr][0] = acc[rr][1] = S::splat(T(0));
      for (int64_t r = r_lo; r < r_hi; ++r) {
        const T* zrow = z + r * zs + j;
        // Block row rr uses kernel row u = r - i - rr, stored at u + kRows - 1.
        const T* krow = kext + (r - i + kRows - 1) * kw;
        for (int64_t v = 0; v < kw; ++v) {
          const vec z0 = S::load(zrow + v), z1 = S::load(zrow + v + L);
          for (int rr = 0; rr < kRows; ++rr) {
            const T kv = krow[v - rr * kw];
            acc[rr][0] += kv * z0;
            acc[rr][1] += kv * z1;
          }
        }
      }
      for (int64_t rr = 0; rr < rows; ++rr) {
        T* orow = out + (i + rr) * os + j;
        S::store(orow, S::load(orow) + acc[rr][0]);
        S::store(orow + L, S::load(orow + L) + acc[rr][1]);
      }
    }
  }
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
inline int64_t ceil_div(int64_t n, int64_t m) { return (n + m - 1) / m; }

template <typename T>
inline int64_t num_tiles(int64_t rows, int64_t cols) {
  return ceil_div(rows, kTileRows) * ceil_div(cols, kTileCols);
}

// Forward pass over work items [begin, end); item = b * tiles + tile of the H × W output.
//   x, y: (B, C, H, W) contiguous. kf: (Bk, gh, gw, extended_rows(kh), kw), the kernels
//   flipped and extended; Bk = 1 (shared) or B.
template <typename T, int kVecBytes = 32>
FASTDEBLUR_PC_INLINE void forward(const Geometry<T>& g, const T* x, const T* kf, int64_t Bk,
                                  int64_t C, T* y, int64_t begin, int64_t end) {
  constexpr int V = vec_width<T, kVecBytes>();
  const int64_t H = g.H, W = g.W, kh = g.kh, kw = g.kw;
  const int64_t tiles_x = ceil_div(W, kTileCols);
  const int64_t tiles = ceil_div(H, kTileRows) * tiles_x;
  const int64_t kext_size = extended_rows(kh) * kw;
  const int64_t os = kTileCols + V;
  const int64_t zs = kTileCols + V + kw;
  std::vector<T> acc(static_cast<size_t>(C * kTileRows * os));
  std::vector<T> z(static_cast<size_t>((kTileRows + kh) * zs));
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / tiles, tile = item % tiles;
    const int64_t r0 = tile / tiles_x * kTileRows, c0 = tile % tiles_x * kTileCols;
    const int64_t r1 = std::min(H, r0 + kTileRows), c1 = std::min(W, c0 + kTileCols);
    std::fill(acc.begin(), acc.end(), T(0));
    const T* kb = kf + (Bk == 1 ? 0 : b) * g.gh * g.gw * kext_size;
    for (int64_t rsi = 0; rsi < g.n_row_segs; ++rsi) {
      const Segment rs = g.row_segs[rsi];
      const int64_t oi0 = std::max(r0, rs.start - kh + 1), oi1 = std::min(r1, rs.stop);
      if (oi0 >= oi1) continue;
      // Window rows [oi0, oi1 + kh - 1); non-zero on [zr0, zr1) (window coordinates).
      const int64_t zr0 = std::max(oi0, rs.start) - oi0;
      const int64_t zr1 = std::min(oi1 + kh - 1, rs.stop) - oi0;
      const T* wy = g.wy + rs.cell * g.Hp();
      for (int64_t csi = 0; csi < g.n_col_segs; ++csi) {
        const Segment cs = g.col_segs[csi];
        const int64_t oj0 = std::max(c0, cs.start - kw + 1), oj1 = std::min(c1, cs.stop);
        if (oj0 >= oj1) continue;
        const int64_t ow = oj1 - oj0;
        const int64_t zw = round_up(ow, V) + kw - 1;
        const int64_t zc0 = std::max(oj0, cs.start) - oj0;
        const int64_t zc1 = std::min(oj0 + zw, cs.stop) - oj0;
        const T* wx = g.wx + cs.cell * g.Wp();
        const T* kern = kb + (rs.cell * g.gw + cs.cell) * kext_size;
        for (int64_t c = 0; c < C; ++c) {
          const T* xc = x + (b * C + c) * H * W;
          for (int64_t r = zr0; r < zr1; ++r) {
            T* zrow = z.data() + r * zs;
            const int64_t pr = oi0 + r;
            const int64_t src_r = g.row_map[pr];
            std::fill(zrow, zrow + zw, T(0));
            if (src_r < 0) continue;
            const T wr = wy[pr];
            const T* xrow = xc + src_r * W;
            for (int64_t cc = zc0; cc < zc1; ++cc) {
              const int64_t pc = oj0 + cc;
              const int64_t src_c = g.col_map[pc];
              zrow[cc] = src_c < 0 ? T(0) : wr * wx[pc] * xrow[src_c];
            }
          }
          T* out = acc.data() + c * kTileRows * os + (oi0 - r0) * os + (oj0 - c0);
          correlate_accumulate<T, kVecBytes>(z.data(), zs, zr0, zr1, kern, kh, kw, out, os,
                                             oi1 - oi0, ow);
        }
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      T* yc = y + (b * C + c) * H * W;
      for (int64_t r = r0; r < r1; ++r) {
        const T* src = acc.data() + c * kTileRows * os + (r - r0) * os;
        std::copy(src, src + (c1 - c0), yc + r * W + c0);
      }
    }
  }
}

// Adjoint, first half, over work items [begin, end); item = b * tiles + tile of the padded
// Hp × Wp grid. Writes every element of xp (B, C, Hp, Wp):
//   xp[pr][pc] = Σ_cells wy[a][pr] · wx[b][pc] · Σ_{u,v} h[u][v] · y[pr - kh + 1 + u][pc - kw + 1 + v]
// (y zero outside the image). k: (Bk, gh, gw, extended_rows(kh), kw), NOT flipped.
template <typename T, int kVecBytes = 32>
FASTDEBLUR_PC_INLINE void adjoint_padded(const Geometry<T>& g, const T* y, const T* k,
                                         int64_t Bk, int64_t C, T* xp, int64_t begin,
                                         int64_t end) {
  constexpr int V = vec_width<T, kVecBytes>();
  const int64_t H = g.H, W = g.W, kh = g.kh, kw = g.kw, Hp = g.Hp(), Wp = g.Wp();
  const int64_t tiles_x = ceil_div(Wp, kTileCols);
  const int64_t tiles = ceil_div(Hp, kTileRows) * tiles_x;
  const int64_t kext_size = extended_rows(kh) * kw;
  const int64_t os = kTileCols + V;
  const int64_t zs = kTileCols + V + kw;
  std::vector<T> acc(static_cast<size_t>(C * kTileRows * os));
  std::vector<T> dz(static_cast<size_t>(kTileRows * os));
  std::vector<T> win(static_cast<size_t>((kTileRows + kh) * zs));
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / tiles, tile = item % tiles;
    const int64_t r0 = tile / tiles_x * kTileRows, c0 = tile % tiles_x * kTileCols;
    const int64_t r1 = std::min(Hp, r0 + kTileRows), c1 = std::min(Wp, c0 + kTileCols);
    std::fill(acc.begin(), acc.end(), T(0));
    const T* kb = k + (Bk == 1 ? 0 : b) * g.gh * g.gw * kext_size;
    for (int64_t rsi = 0; rsi < g.n_row_segs; ++rsi) {
      const Segment rs = g.row_segs[rsi];
      const int64_t si0 = std::max(r0, rs.start), si1 = std::min(r1, rs.stop);
      if (si0 >= si1) continue;
      const int64_t oh = si1 - si0;
      // y window rows [si0 - kh + 1, si1), image rows only: [wr0, wr1) in window coordinates.
      const int64_t wbase_r = si0 - kh + 1;
      const int64_t wr0 = std::max<int64_t>(0, -wbase_r);
      const int64_t wr1 = std::min<int64_t>(oh + kh - 1, H - wbase_r);
      const T* wy = g.wy + rs.cell * Hp;
      for (int64_t csi = 0; csi < g.n_col_segs; ++csi) {
        const Segment cs = g.col_segs[csi];
        const int64_t sj0 = std::max(c0, cs.start), sj1 = std::min(c1, cs.stop);
        if (sj0 >= sj1 || wr0 >= wr1) continue;
        const int64_t ow = sj1 - sj0;
        const int64_t ww = round_up(ow, V) + kw - 1;
        const int64_t wbase_c = sj0 - kw + 1;
        const int64_t wc0 = std::max<int64_t>(0, -wbase_c);
        const int64_t wc1 = std::min<int64_t>(ww, W - wbase_c);
        const T* wx = g.wx + cs.cell * Wp;
        const T* kern = kb + (rs.cell * g.gw + cs.cell) * kext_size;
        for (int64_t c = 0; c < C; ++c) {
          const T* yc = y + (b * C + c) * H * W;
          for (int64_t r = wr0; r < wr1; ++r) {
            T* wrow = win.data() + r * zs;
            std::fill(wrow, wrow + ww, T(0));
            if (wc0 < wc1) {
              const T* src = yc + (wbase_r + r) * W + wbase_c;
              std::copy(src + wc0, src + wc1, wrow + wc0);
            }
          }
          std::fill(dz.begin(), dz.end(), T(0));
          correlate_accumulate<T, kVecBytes>(win.data(), zs, wr0, wr1, kern, kh, kw, dz.data(),
                                             os, oh, ow);
          for (int64_t r = 0; r < oh; ++r) {
            const T wr = wy[si0 + r];
            const T* d = dz.data() + r * os;
            T* a = acc.data() + c * kTileRows * os + (si0 - r0 + r) * os + (sj0 - c0);
            const T* wxs = wx + sj0;
            for (int64_t j = 0; j < ow; ++j) a[j] += wr * wxs[j] * d[j];
          }
        }
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      T* xc = xp + (b * C + c) * Hp * Wp;
      for (int64_t r = r0; r < r1; ++r) {
        const T* src = acc.data() + c * kTileRows * os + (r - r0) * os;
        std::copy(src, src + (c1 - c0), xc + r * Wp + c0);
      }
    }
  }
}

// Adjoint, second half: fold padded planes [begin, end) of xp (planes, Hp, Wp) onto the image
// (planes, H, W), adding each padded sample into the pixel it was copied from.
template <typename T>
void fold_padded(const Geometry<T>& g, const T* xp, T* x, int64_t begin, int64_t end) {
  const int64_t H = g.H, W = g.W, Hp = g.Hp(), Wp = g.Wp();
  for (int64_t plane = begin; plane < end; ++plane) {
    T* xo = x + plane * H * W;
    const T* src = xp + plane * Hp * Wp;
    std::fill(xo, xo + H * W, T(0));
    const int64_t left = g.kw - 1 - g.kw / 2;
    for (int64_t pr = 0; pr < Hp; ++pr) {
      const int64_t r = g.row_map[pr];
      if (r < 0) continue;
      T* __restrict orow = xo + r * W;
      const T* __restrict srow = src + pr * Wp;
      // Padded columns [left, left + W) are the image's own, in order.
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) orow[c] += srow[left + c];
      for (int64_t pc = 0; pc < Wp; ++pc) {
        if (pc == left) pc = left + W;
        if (pc >= Wp) break;
        const int64_t c = g.col_map[pc];
        if (c >= 0) orow[c] += srow[pc];
      }
    }
  }
}

// Gradient of <forward(x, h), gy> w.r.t. the kernels, over work items [begin, end); item =
// kb * gh * gw + cell. Writes grad (Bk, gh, gw, kh, kw) of the *unflipped* kernels:
//   grad[kb][a][c][kh-1-u][kw-1-v] = Σ_{b ∈ batch(kb), ch, i, j} gy[i][j] · z_cell[i + u][j + v]
// where batch(kb) is every sample when Bk = 1, else sample kb.
template <typename T>
void kernel_grad(const Geometry<T>& g, const T* x, const T* gy, int64_t B, int64_t Bk, int64_t C,
                 T* grad, int64_t begin, int64_t end) {
  const int64_t H = g.H, W = g.W, kh = g.kh, kw = g.kw, Hp = g.Hp(), Wp = g.Wp();
  const int64_t cells = g.gh * g.gw;
  std::vector<T> z;
  std::vector<T> acc(static_cast<size_t>(kh * kw));
  for (int64_t item = begin; item < end; ++item) {
    const int64_t kb = item / cells, cell = item % cells;
    const int64_t ga = cell / g.gw, gb = cell % g.gw;
    std::fill(acc.begin(), acc.end(), T(0));
    const int64_t b_lo = Bk == 1 ? 0 : kb, b_hi = Bk == 1 ? B : kb + 1;
    for (int64_t rsi = 0; rsi < g.n_row_segs; ++rsi) {
      const Segment rs = g.row_segs[rsi];
      if (rs.cell != ga) continue;
      const int64_t oi0 = std::max<int64_t>(0, rs.start - kh + 1), oi1 = std::min(H, rs.stop);
      if (oi0 >= oi1) continue;
      const int64_t zr0 = std::max(oi0, rs.start) - oi0;
      const int64_t zr1 = std::min(oi1 + kh - 1, rs.stop) - oi0;
      for (int64_t csi = 0; csi < g.n_col_segs; ++csi) {
        const Segment cs = g.col_segs[csi];
        if (cs.cell != gb) continue;
        const int64_t oj0 = std::max<int64_t>(0, cs.start - kw + 1), oj1 = std::min(W, cs.stop);
        if (oj0 >= oj1) continue;
        const int64_t ow = oj1 - oj0, zw = ow + kw - 1;
        const int64_t zc0 = std::max(oj0, cs.start) - oj0;
        const int64_t zc1 = std::min(oj1 + kw - 1, cs.stop) - oj0;
        z.assign(static_cast<size_t>((oi1 - oi0 + kh - 1) * zw), T(0));
        for (int64_t b = b_lo; b < b_hi; ++b) {
          for (int64_t ch = 0; ch < C; ++ch) {
            const T* xc = x + (b * C + ch) * H * W;
            const T* gc = gy + (b * C + ch) * H * W;
            for (int64_t r = zr0; r < zr1; ++r) {
              T* zrow = z.data() + r * zw;
              const int64_t pr = oi0 + r, src_r = g.row_map[pr];
              if (src_r < 0) continue;  // stays zero
              const T wr = g.wy[ga * Hp + pr];
              const T* xrow = xc + src_r * W;
              for (int64_t cc = zc0; cc < zc1; ++cc) {
                const int64_t pc = oj0 + cc, src_c = g.col_map[pc];
                zrow[cc] = src_c < 0 ? T(0) : wr * g.wx[gb * Wp + pc] * xrow[src_c];
              }
            }
            for (int64_t i = oi0; i < oi1; ++i) {
              const T* grow = gc + i * W + oj0;
              const int64_t u_lo = std::max<int64_t>(0, zr0 - (i - oi0));
              const int64_t u_hi = std::min<int64_t>(kh, zr1 - (i - oi0));
              for (int64_t u = u_lo; u < u_hi; ++u) {
                const T* zrow = z.data() + (i - oi0 + u) * zw;
                T* arow = acc.data() + u * kw;
                for (int64_t v = 0; v < kw; ++v) {
                  const T* zp = zrow + v;
                  T s = T(0);
#pragma omp simd reduction(+ : s)
                  for (int64_t j = 0; j < ow; ++j) s += grow[j] * zp[j];
                  arow[v] += s;
                }
              }
            }
          }
        }
      }
    }
    T* out = grad + item * kh * kw;
    for (int64_t u = 0; u < kh; ++u)
      for (int64_t v = 0; v < kw; ++v) out[(kh - 1 - u) * kw + (kw - 1 - v)] = acc[u * kw + v];
  }
}


// ---- local-FFT path (large kernels) ----
//
// The padded domain is cut into tiles on which at most two grid rows and two grid columns
// have non-zero weight: along each axis, runs of positions with the same set of non-zero
// lines (about one cell spacing, between two cell centres), short runs merged into a
// neighbour while the union keeps at most two lines. A tile then carries at most four
// kernels. The caller transforms each tile's weighted products, multiplies by the kernels'
// transfer functions, sums the (up to four) products in the frequency domain, transforms
// back once per tile and overlap-adds; the adjoint runs the same tiles the other way.

// A run [start, stop) of one padded axis and the grid lines (1 or 2; 0: all weights zero)
// that have non-zero weight somewhere on it.
struct FftInterval {
  int64_t start;
  int64_t stop;
  int n_lines;
  int64_t lines[2];
};

inline bool fft_union(const FftInterval& a, const FftInterval& b, FftInterval* out) {
  FftInterval u{a.start, b.stop, a.n_lines, {a.lines[0], a.lines[1]}};
  for (int i = 0; i < b.n_lines; ++i) {
    bool seen = false;
    for (int j = 0; j < u.n_lines; ++j) seen = seen || u.lines[j] == b.lines[i];
    if (seen) continue;
    if (u.n_lines == 2) return false;
    u.lines[u.n_lines++] = b.lines[i];
  }
  if (u.n_lines == 2 && u.lines[0] > u.lines[1]) std::swap(u.lines[0], u.lines[1]);
  *out = u;
  return true;
}

// Tiles of a padded axis of length np, from its weights (lines, np). Empty when some
// position has more than two non-zero lines (a grid finer than the pixels): no FFT path.
template <typename T>
std::vector<FftInterval> fft_intervals(const T* weights, int64_t lines, int64_t np) {
  std::vector<FftInterval> runs;
  for (int64_t s = 0; s < np; ++s) {
    FftInterval cur{s, s + 1, 0, {-1, -1}};
    for (int64_t a = 0; a < lines; ++a) {
      if (weights[a * np + s] == T(0)) continue;
      if (cur.n_lines == 2) return {};
      cur.lines[cur.n_lines++] = a;
    }
    FftInterval& last = runs.empty() ? cur : runs.back();
    const bool same = !runs.empty() && last.n_lines == cur.n_lines &&
                      last.lines[0] == cur.lines[0] && last.lines[1] == cur.lines[1];
    if (same) {
      last.stop = s + 1;
    } else {
      runs.push_back(cur);
    }
  }
  int64_t longest = 0;
  for (const FftInterval& r : runs) longest = std::max(longest, r.stop - r.start);
  std::vector<FftInterval> tiles;
  for (const FftInterval& r : runs) {
    FftInterval merged;
    if (!tiles.empty() && r.stop - tiles.back().start <= longest &&
        fft_union(tiles.back(), r, &merged)) {
      tiles.back() = merged;
    } else {
      tiles.push_back(r);
    }
  }
  return tiles;
}

// Smallest n' >= n whose prime factors are 2, 3, 5 and 7 (sizes the FFT library is fast on).
inline int64_t fft_size(int64_t n) {
  for (int64_t m = std::max<int64_t>(n, 1);; ++m) {
    int64_t r = m;
    for (int64_t p : {2, 3, 5, 7})
      while (r % p == 0) r /= p;
    if (r == 1) return m;
  }
}

// dst (Hp, Wp) = the padded image plane: dst[pr][pc] = x[row_map[pr]][col_map[pc]] (0 at -1).
template <typename T>
void pad_plane(const T* x, int64_t W, const int64_t* row_map, const int64_t* col_map,
               int64_t left, int64_t Hp, int64_t Wp, T* dst) {
  for (int64_t pr = 0; pr < Hp; ++pr) {
    T* d = dst + pr * Wp;
    const int64_t r = row_map[pr];
    if (r < 0) {
      std::fill(d, d + Wp, T(0));
      continue;
    }
    const T* src = x + r * W;
    for (int64_t pc = 0; pc < left; ++pc) d[pc] = col_map[pc] < 0 ? T(0) : src[col_map[pc]];
    std::copy(src, src + W, d + left);
    for (int64_t pc = left + W; pc < Wp; ++pc) d[pc] = col_map[pc] < 0 ? T(0) : src[col_map[pc]];
  }
}

// buf (Fr, Fc) = wr ⊗ wc ⊙ src on its top-left (lr, lc) corner, zero elsewhere. src rows are
// src_stride apart; wr, wc the tile's row and column weights.
template <typename T>
void fft_fill_weighted(const T* src, int64_t src_stride, const T* wr, const T* wc, int64_t lr,
                       int64_t lc, T* buf, int64_t Fr, int64_t Fc) {
  for (int64_t m = 0; m < lr; ++m) {
    T* __restrict d = buf + m * Fc;
    const T* __restrict s = src + m * src_stride;
    const T w = wr[m];
    if (w == T(0)) {
      std::fill(d, d + Fc, T(0));
      continue;
    }
#pragma omp simd
    for (int64_t n = 0; n < lc; ++n) d[n] = w * wc[n] * s[n];
    std::fill(d + lc, d + Fc, T(0));
  }
  std::fill(buf + lr * Fc, buf + Fr * Fc, T(0));
}

// buf (Fr, Fc) = the (lr, lc) window of an image plane (H, W) whose top-left corner is at
// (r0, c0) (possibly outside), zero outside the image and beyond (lr, lc).
template <typename T>
void fft_fill_window(const T* plane, int64_t H, int64_t W, int64_t r0, int64_t c0, int64_t lr,
                     int64_t lc, T* buf, int64_t Fr, int64_t Fc) {
  std::fill(buf, buf + Fr * Fc, T(0));
  const int64_t n0 = std::max<int64_t>(0, -c0), n1 = std::min(lc, W - c0);
  for (int64_t m = std::max<int64_t>(0, -r0); m < std::min(lr, H - r0); ++m) {
    if (n0 < n1) std::copy(plane + (r0 + m) * W + c0 + n0, plane + (r0 + m) * W + c0 + n1,
                           buf + m * Fc + n0);
  }
}

// out[f] (=, or += when accumulate) h[f] · z[f] over n complex numbers stored as (re, im)
// pairs; conj_h uses the conjugate of h (a correlation instead of a convolution).
template <typename T>
void fft_multiply(const T* __restrict h, const T* __restrict z, T* __restrict out, int64_t n,
                  bool conj_h, bool accumulate) {
  const T sign = conj_h ? T(-1) : T(1);
  if (accumulate) {
#pragma omp simd
    for (int64_t f = 0; f < n; ++f) {
      const T hr = h[2 * f], hi = sign * h[2 * f + 1], zr = z[2 * f], zi = z[2 * f + 1];
      out[2 * f] += hr * zr - hi * zi;
      out[2 * f + 1] += hr * zi + hi * zr;
    }
  } else {
#pragma omp simd
    for (int64_t f = 0; f < n; ++f) {
      const T hr = h[2 * f], hi = sign * h[2 * f + 1], zr = z[2 * f], zi = z[2 * f + 1];
      out[2 * f] = hr * zr - hi * zi;
      out[2 * f + 1] = hr * zi + hi * zr;
    }
  }
}

}  // namespace pc_conv
}  // namespace kernels
}  // namespace fastdeblur

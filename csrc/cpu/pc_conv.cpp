// CPU glue of the product-convolution ops: checks, geometry (boundary maps, bilinear weights
// on the padded axes, their non-zero segments), and at::parallel_for over the kernels of
// kernels/cpu/pc_conv.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "checks.h"
#include "common.h"
#include "pc_conv_entry.h"
#include "cpu/pc_conv.h"
#include "pc_conv_axis.h"

namespace fastdeblur {
namespace {

namespace k = kernels::pc_conv;

// One padded axis with its runs as the CPU kernels' segments.
template <typename T>
struct Axis : pc_conv_geometry::Axis<T> {
  std::vector<k::Segment> segments;

  Axis(int64_t n, int64_t cells, int64_t before, int64_t after, Boundary boundary)
      : pc_conv_geometry::Axis<T>(n, cells, before, after, boundary) {
    for (const auto& r : this->runs) segments.push_back({r.cell, r.start, r.stop});
  }
};

// (Bk, gh, gw, kh, kw) -> (Bk, gh, gw, extended_rows(kh), kw), optionally flipped.
template <typename T>
std::vector<T> extend_kernels(const at::Tensor& kernels, bool flip) {
  const int64_t n = kernels.size(0) * kernels.size(1) * kernels.size(2);
  const int64_t kh = kernels.size(3), kw = kernels.size(4);
  const int64_t rows = k::extended_rows(kh);
  std::vector<T> out(n * rows * kw, T(0));
  const T* src = kernels.data_ptr<T>();
  for (int64_t c = 0; c < n; ++c)
    for (int64_t u = 0; u < kh; ++u)
      for (int64_t v = 0; v < kw; ++v) {
        const int64_t su = flip ? kh - 1 - u : u, sv = flip ? kw - 1 - v : v;
        out[(c * rows + u + k::kRows - 1) * kw + v] = src[(c * kh + su) * kw + sv];
      }
  return out;
}

// Validates; returns the kernels as a contiguous (Bk, gh, gw, kh, kw) tensor.
at::Tensor check_args(const at::Tensor& x, const at::Tensor& kernels, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && kernels.device().is_cpu(),
              "pc_conv CPU kernel needs CPU tensors");
  return checks::pc_grid_kernels(x, kernels, name);
}

template <typename T>
struct Plan {
  Axis<T> rows, cols;
  k::Geometry<T> geometry;

  Plan(int64_t H, int64_t W, const at::Tensor& kk, Boundary boundary)
      : rows(H, kk.size(1), kk.size(3) - 1 - kk.size(3) / 2, kk.size(3) / 2, boundary),
        cols(W, kk.size(2), kk.size(4) - 1 - kk.size(4) / 2, kk.size(4) / 2, boundary) {
    geometry = {H, W, kk.size(3), kk.size(4), kk.size(1), kk.size(2),
                rows.map.data(), cols.map.data(), rows.weights.data(), cols.weights.data(),
                rows.segments.data(), static_cast<int64_t>(rows.segments.size()),
                cols.segments.data(), static_cast<int64_t>(cols.segments.size())};
  }
};

// Grain sizes: a tile is tens of microseconds of work at least.
constexpr int64_t kTileGrain = 1;

// The tiled kernels in two builds: AVX2 (the extension's baseline flags) and AVX-512, picked
// at run time from the CPU's features (the AVX-512 build halves the instructions per tap).
#if defined(__GNUC__) && defined(__x86_64__)
#define FASTDEBLUR_PC_AVX512 1
#define FASTDEBLUR_AVX512_TARGET __attribute__((target("avx512f,avx512vl,avx2,fma")))

template <typename T>
FASTDEBLUR_AVX512_TARGET void forward_avx512(const k::Geometry<T>& g, const T* x, const T* kf,
                                             int64_t Bk, int64_t C, T* y, int64_t begin,
                                             int64_t end) {
  k::forward<T, 64>(g, x, kf, Bk, C, y, begin, end);
}

template <typename T>
FASTDEBLUR_AVX512_TARGET void adjoint_avx512(const k::Geometry<T>& g, const T* y, const T* kk,
                                             int64_t Bk, int64_t C, T* xp, int64_t begin,
                                             int64_t end) {
  k::adjoint_padded<T, 64>(g, y, kk, Bk, C, xp, begin, end);
}
#endif

bool use_avx512() {
#ifdef FASTDEBLUR_PC_AVX512
  static const bool on = [] {
    const char* off = std::getenv("FASTDEBLUR_NO_AVX512");
    if (off != nullptr && std::string(off) == "1") return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  }();
  return on;
#else
  return false;
#endif
}

template <typename T>
void run_forward(const k::Geometry<T>& g, const T* x, const T* kf, int64_t Bk, int64_t C, T* y,
                 int64_t begin, int64_t end) {
#ifdef FASTDEBLUR_PC_AVX512
  if (use_avx512()) return forward_avx512<T>(g, x, kf, Bk, C, y, begin, end);
#endif
  k::forward<T, 32>(g, x, kf, Bk, C, y, begin, end);
}

template <typename T>
void run_adjoint(const k::Geometry<T>& g, const T* y, const T* kk, int64_t Bk, int64_t C, T* xp,
                 int64_t begin, int64_t end) {
#ifdef FASTDEBLUR_PC_AVX512
  if (use_avx512()) return adjoint_avx512<T>(g, y, kk, Bk, C, xp, begin, end);
#endif
  k::adjoint_padded<T, 32>(g, y, kk, Bk, C, xp, begin, end);
}

// ---- local-FFT path (large kernels; kernels/cpu/pc_conv.h, "local-FFT path") ----

// The FFT tiling of both padded axes, with every tile's FFT size.
struct FftTiling {
  std::vector<k::FftInterval> rows, cols;
  std::vector<int64_t> fr, fc;  // FFT sizes: interval length + kernel size - 1, rounded up

  bool ok() const { return !rows.empty() && !cols.empty(); }
};

template <typename T>
FftTiling fft_tiling(const Plan<T>& plan) {
  const k::Geometry<T>& g = plan.geometry;
  FftTiling t;
  t.rows = k::fft_intervals(g.wy, g.gh, g.Hp());
  t.cols = k::fft_intervals(g.wx, g.gw, g.Wp());
  for (const auto& r : t.rows) t.fr.push_back(k::fft_size(r.stop - r.start + g.kh - 1));
  for (const auto& c : t.cols) t.fc.push_back(k::fft_size(c.stop - c.start + g.kw - 1));
  return t;
}

// Which path runs: FASTDEBLUR_PC_CONV_METHOD = auto (default) | direct | fft.
enum class Method { kAuto, kDirect, kFft };

Method requested_method() {
  const char* v = std::getenv("FASTDEBLUR_PC_CONV_METHOD");
  const std::string s = v == nullptr ? "auto" : std::string(v);
  if (s == "direct") return Method::kDirect;
  if (s == "fft") return Method::kFft;
  TORCH_CHECK(s == "auto" || s.empty(),
              "FASTDEBLUR_PC_CONV_METHOD must be auto, direct or fft; got '", s, "'");
  return Method::kAuto;
}

// Relative cost of one multiply-add of the direct path and of one point of a tile's FFT work
// (per log2 of the FFT size), measured on a 2-core x86-64 CPU at 1024 x 1024, 8 x 8 grid
// (docs/spatially_varying.md): the FFT path wins from about 13 x 13 taps on.
constexpr double kDirectPerTap = 1.0;
constexpr double kFftPerPointLog = 8.0;

// Cost model of the two paths for one image plane: direct ≈ Σ_tiles kernels · area · taps,
// FFT ≈ Σ_tiles (kernels + 1) · Fr · Fc · log2(Fr · Fc).
template <typename T>
bool use_fft(const Plan<T>& plan, const FftTiling& t) {
  const Method m = requested_method();
  if (m == Method::kDirect || !t.ok()) return false;
  if (m == Method::kFft) return true;
  const k::Geometry<T>& g = plan.geometry;
  double direct = 0.0, fft = 0.0;
  for (size_t ri = 0; ri < t.rows.size(); ++ri) {
    for (size_t ci = 0; ci < t.cols.size(); ++ci) {
      const int pairs = t.rows[ri].n_lines * t.cols[ci].n_lines;
      if (pairs == 0) continue;
      const double area = static_cast<double>(t.rows[ri].stop - t.rows[ri].start) *
                          static_cast<double>(t.cols[ci].stop - t.cols[ci].start);
      const double points = static_cast<double>(t.fr[ri]) * static_cast<double>(t.fc[ci]);
      direct += kDirectPerTap * pairs * area * static_cast<double>(g.kh * g.kw);
      fft += kFftPerPointLog * (pairs + 1) * points * std::log2(points);
    }
  }
  return fft < direct;
}

// One tile of the FFT tiling: row interval ri × column interval ci, with its kernels.
struct FftTile {
  int64_t ri, ci;
  int64_t fr, fc;  // FFT size
  int pairs;       // kernels: row line p / n_col_lines × column line p % n_col_lines
};

std::vector<FftTile> fft_tiles(const FftTiling& t) {
  std::vector<FftTile> tiles;
  for (size_t ri = 0; ri < t.rows.size(); ++ri)
    for (size_t ci = 0; ci < t.cols.size(); ++ci) {
      const int pairs = t.rows[ri].n_lines * t.cols[ci].n_lines;
      if (pairs > 0)
        tiles.push_back({static_cast<int64_t>(ri), static_cast<int64_t>(ci), t.fr[ri], t.fc[ci],
                         pairs});
    }
  return tiles;
}

// Grid cell of kernel p of a tile.
inline int64_t tile_cell(const FftTiling& t, const FftTile& tile, int p, int64_t gw) {
  const k::FftInterval& R = t.rows[tile.ri];
  const k::FftInterval& C = t.cols[tile.ci];
  return R.lines[p / C.n_lines] * gw + C.lines[p % C.n_lines];
}

// Transfer functions of the kernels at every FFT size some tile uses, for the cells that
// tiles of that size carry: spectra[(shape)] is a real view (Bk, gh * gw, Fr, Fc/2 + 1, 2)
// whose unused cells are left unset.
using ShapeKey = std::pair<int64_t, int64_t>;

template <typename T>
std::map<ShapeKey, at::Tensor> fft_otfs(const at::Tensor& kk, const FftTiling& t,
                                        const std::vector<FftTile>& tiles) {
  const int64_t Bk = kk.size(0), gh = kk.size(1), gw = kk.size(2), kh = kk.size(3),
                kw = kk.size(4);
  std::map<ShapeKey, std::vector<char>> used;
  for (const FftTile& tile : tiles) {
    auto& u = used[{tile.fr, tile.fc}];
    u.resize(gh * gw, 0);
    for (int p = 0; p < tile.pairs; ++p) u[tile_cell(t, tile, p, gw)] = 1;
  }
  std::map<ShapeKey, at::Tensor> out;
  std::vector<std::pair<ShapeKey, int64_t>> work;  // (shape, cell)
  for (const auto& [shape, cells] : used) {
    out[shape] = at::empty({Bk, gh * gw, shape.first, shape.second / 2 + 1, 2}, kk.options());
    for (int64_t c = 0; c < gh * gw; ++c)
      if (cells[c]) work.push_back({shape, c});
  }
  const T* src = kk.data_ptr<T>();
  // Small transforms, one cell each, spread over the threads (each runs single-threaded).
  at::parallel_for(0, static_cast<int64_t>(work.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const auto [shape, cell] = work[w];
      const int64_t Fr = shape.first, Fc = shape.second;
      at::Tensor padded = at::zeros({Bk, Fr, Fc}, kk.options());
      T* d = padded.data_ptr<T>();
      for (int64_t b = 0; b < Bk; ++b) {
        const T* kern = src + (b * gh * gw + cell) * kh * kw;
        for (int64_t u = 0; u < kh; ++u)
          std::copy(kern + u * kw, kern + (u + 1) * kw, d + (b * Fr + u) * Fc);
      }
      out.at(shape).select(1, cell).copy_(at::view_as_real(at::fft_rfft2(padded)));
    }
  });
  return out;
}

template <typename T>
at::Tensor padded_image(const k::Geometry<T>& g, const at::Tensor& x) {
  const int64_t planes = x.size(0) * x.size(1), H = g.H, W = g.W, Hp = g.Hp(), Wp = g.Wp();
  at::Tensor xp = at::empty({x.size(0), x.size(1), Hp, Wp}, x.options());
  const T* src = x.data_ptr<T>();
  T* dst = xp.data_ptr<T>();
  const int64_t left = g.kw - 1 - g.kw / 2;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      k::pad_plane(src + p * H * W, W, g.row_map, g.col_map, left, Hp, Wp, dst + p * Hp * Wp);
  });
  return xp;
}

// y = Σ_i h_i ⋆ (w_i ⊙ x) by local FFTs. x contiguous (B, C, H, W); y is overwritten.
// Each thread runs whole tiles (fill, transform, multiply-accumulate, inverse transform) on
// buffers that stay in its cache; the tiles' outputs, which overlap by the kernel size, are
// summed into y by a second pass over the output rows.
template <typename T>
void forward_fft(const Plan<T>& plan, const FftTiling& t, const at::Tensor& x,
                 const at::Tensor& kk, at::Tensor& y) {
  const k::Geometry<T>& g = plan.geometry;
  const int64_t B = x.size(0), C = x.size(1), H = g.H, W = g.W, kh = g.kh, kw = g.kw;
  const int64_t Hp = g.Hp(), Wp = g.Wp(), gw = g.gw, Bk = kk.size(0), planes = B * C;
  const at::Tensor xp = padded_image<T>(g, x);
  const std::vector<FftTile> tiles = fft_tiles(t);
  const std::map<ShapeKey, at::Tensor> otfs = fft_otfs<T>(kk, t, tiles);
  // Output box of a tile in image coordinates: rows [R.start - kh + 1, R.stop) ∩ [0, H).
  auto out_rows = [&](const FftTile& tile) {
    const k::FftInterval& R = t.rows[tile.ri];
    return std::make_pair(std::max<int64_t>(0, R.start - kh + 1), std::min(H, R.stop));
  };
  auto out_cols = [&](const FftTile& tile) {
    const k::FftInterval& Cc = t.cols[tile.ci];
    return std::make_pair(std::max<int64_t>(0, Cc.start - kw + 1), std::min(W, Cc.stop));
  };
  std::vector<int64_t> offset(tiles.size() + 1, 0);  // of each tile's (planes, rows, cols) box
  for (size_t n = 0; n < tiles.size(); ++n) {
    const auto [i0, i1] = out_rows(tiles[n]);
    const auto [j0, j1] = out_cols(tiles[n]);
    offset[n + 1] = offset[n] + planes * std::max<int64_t>(0, i1 - i0) * std::max<int64_t>(0, j1 - j0);
  }
  at::Tensor boxes = at::empty({offset.back()}, x.options());
  const T* xpp = xp.data_ptr<T>();
  T* bxp = boxes.data_ptr<T>();
  at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const FftTile& tile = tiles[n];
      const k::FftInterval& R = t.rows[tile.ri];
      const k::FftInterval& Cc = t.cols[tile.ci];
      const int64_t Fr = tile.fr, Fc = tile.fc, Fh = Fc / 2 + 1, spec = Fr * Fh;
      const int64_t lr = R.stop - R.start, lc = Cc.stop - Cc.start;
      at::Tensor buf = at::empty({planes * tile.pairs, Fr, Fc}, x.options());
      T* bp = buf.data_ptr<T>();
      for (int64_t plane = 0; plane < planes; ++plane)
        for (int p = 0; p < tile.pairs; ++p) {
          const int64_t a = R.lines[p / Cc.n_lines], bb = Cc.lines[p % Cc.n_lines];
          k::fft_fill_weighted(xpp + plane * Hp * Wp + R.start * Wp + Cc.start, Wp,
                               g.wy + a * Hp + R.start, g.wx + bb * Wp + Cc.start, lr, lc,
                               bp + (plane * tile.pairs + p) * Fr * Fc, Fr, Fc);
        }
      const at::Tensor Z = at::view_as_real(at::fft_rfft2(buf)).contiguous();
      const T* zp = Z.data_ptr<T>();
      const at::Tensor& otf = otfs.at({Fr, Fc});
      const T* hp = otf.data_ptr<T>();
      at::Tensor S = at::empty({planes, Fr, Fh, 2}, x.options());
      T* sp = S.data_ptr<T>();
      for (int64_t plane = 0; plane < planes; ++plane) {
        const int64_t kb = Bk == 1 ? 0 : plane / C;
        for (int p = 0; p < tile.pairs; ++p) {
          const T* h = hp + (kb * g.gh * gw + tile_cell(t, tile, p, gw)) * spec * 2;
          k::fft_multiply(h, zp + (plane * tile.pairs + p) * spec * 2, sp + plane * spec * 2,
                          spec, /*conj_h=*/false, p > 0);
        }
      }
      const at::Tensor O =
          at::fft_irfft2(at::view_as_complex(S), at::IntArrayRef{Fr, Fc}).contiguous();
      const T* op = O.data_ptr<T>();
      // Tile output row m is image row R.start - (kh - 1) + m, column n is Cc.start - (kw - 1) + n.
      const auto [i0, i1] = out_rows(tile);
      const auto [j0, j1] = out_cols(tile);
      T* box = bxp + offset[n];
      for (int64_t plane = 0; plane < planes; ++plane)
        for (int64_t i = i0; i < i1; ++i) {
          const T* src = op + (plane * Fr + i - (R.start - kh + 1)) * Fc + (j0 - (Cc.start - kw + 1));
          std::copy(src, src + (j1 - j0), box + ((plane * (i1 - i0)) + i - i0) * (j1 - j0));
        }
    }
  });
  // Sum the boxes into y, one output row at a time.
  T* yp = y.data_ptr<T>();
  at::parallel_for(0, planes * H, 16, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / H, i = item % H;
      T* __restrict yrow = yp + plane * H * W + i * W;
      std::fill(yrow, yrow + W, T(0));
      for (size_t n = 0; n < tiles.size(); ++n) {
        const auto [i0, i1] = out_rows(tiles[n]);
        if (i < i0 || i >= i1) continue;
        const auto [j0, j1] = out_cols(tiles[n]);
        const T* __restrict src = bxp + offset[n] + ((plane * (i1 - i0)) + i - i0) * (j1 - j0);
        T* __restrict dst = yrow + j0;
#pragma omp simd
        for (int64_t j = 0; j < j1 - j0; ++j) dst[j] += src[j];
      }
    }
  });
}

// xp = Σ_i w_i ⊙ (h_iᵀ ⋆ y) on the padded grid (B, C, Hp, Wp), by local FFTs; the caller
// folds it onto the image. Tiles partition the padded grid: each thread writes its own.
template <typename T>
void adjoint_fft(const Plan<T>& plan, const FftTiling& t, const at::Tensor& y,
                 const at::Tensor& kk, at::Tensor& xpad) {
  const k::Geometry<T>& g = plan.geometry;
  const int64_t B = y.size(0), C = y.size(1), H = g.H, W = g.W, kh = g.kh, kw = g.kw;
  const int64_t Hp = g.Hp(), Wp = g.Wp(), gw = g.gw, Bk = kk.size(0), planes = B * C;
  const std::vector<FftTile> tiles = fft_tiles(t);
  const std::map<ShapeKey, at::Tensor> otfs = fft_otfs<T>(kk, t, tiles);
  // Every padded pixel has a non-zero weight on some grid line, so the tiles normally cover the
  // padded grid and each zeroes its own part while it is in cache; otherwise zero it all first.
  const bool tiles_cover = tiles.size() == t.rows.size() * t.cols.size();
  if (!tiles_cover) xpad.zero_();
  const T* ypp = y.data_ptr<T>();
  T* xpp = xpad.data_ptr<T>();
  at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const FftTile& tile = tiles[n];
      const k::FftInterval& R = t.rows[tile.ri];
      const k::FftInterval& Cc = t.cols[tile.ci];
      const int64_t Fr = tile.fr, Fc = tile.fc, Fh = Fc / 2 + 1, spec = Fr * Fh;
      const int64_t lr = R.stop - R.start, lc = Cc.stop - Cc.start;
      // The y window the tile reads: rows [R.start - kh + 1, R.stop), columns alike.
      at::Tensor buf = at::empty({planes, Fr, Fc}, y.options());
      T* bp = buf.data_ptr<T>();
      for (int64_t plane = 0; plane < planes; ++plane)
        k::fft_fill_window(ypp + plane * H * W, H, W, R.start - kh + 1, Cc.start - kw + 1,
                           lr + kh - 1, lc + kw - 1, bp + plane * Fr * Fc, Fr, Fc);
      const at::Tensor Yf = at::view_as_real(at::fft_rfft2(buf)).contiguous();
      const T* yfp = Yf.data_ptr<T>();
      const T* hp = otfs.at({Fr, Fc}).data_ptr<T>();
      at::Tensor S = at::empty({planes * tile.pairs, Fr, Fh, 2}, y.options());
      T* sp = S.data_ptr<T>();
      for (int64_t plane = 0; plane < planes; ++plane) {
        const int64_t kb = Bk == 1 ? 0 : plane / C;
        for (int p = 0; p < tile.pairs; ++p) {
          const T* h = hp + (kb * g.gh * gw + tile_cell(t, tile, p, gw)) * spec * 2;
          k::fft_multiply(h, yfp + plane * spec * 2, sp + (plane * tile.pairs + p) * spec * 2,
                          spec, /*conj_h=*/true, false);
        }
      }
      // One inverse call per image plane (its <= 4 products): MKL's batched complex-to-real
      // transform was several times slower per transform past 4 (measured, 160 x 160).
      const at::Tensor Sc = at::view_as_complex(S);
      for (int64_t plane = 0; plane < planes; ++plane) {
        const at::Tensor O =
            at::fft_irfft2(Sc.narrow(0, plane * tile.pairs, tile.pairs), at::IntArrayRef{Fr, Fc})
                .contiguous();
        const T* op = O.data_ptr<T>();  // (pairs, Fr, Fc) of this plane
        for (int64_t m = 0; m < lr; ++m) {
          T* __restrict dst = xpp + plane * Hp * Wp + (R.start + m) * Wp + Cc.start;
          if (tiles_cover) std::fill(dst, dst + lc, T(0));
          for (int p = 0; p < tile.pairs; ++p) {
            const int64_t a = R.lines[p / Cc.n_lines], bb = Cc.lines[p % Cc.n_lines];
            const T wr = g.wy[a * Hp + R.start + m];
            if (wr == T(0)) continue;
            const T* __restrict wc = g.wx + bb * Wp + Cc.start;
            const T* __restrict src = op + (p * Fr + m) * Fc;
#pragma omp simd
            for (int64_t c = 0; c < lc; ++c) dst[c] += wr * wc[c] * src[c];
          }
        }
      }
    }
  });
}

at::Tensor forward_impl(const at::Tensor& x_in, const at::Tensor& kk, Boundary boundary) {
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor y = alloc_output({B, C, H, W}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pc_conv", [&] {
    Plan<scalar_t> plan(H, W, kk, boundary);
    const FftTiling tiling = fft_tiling(plan);
    if (use_fft(plan, tiling)) {
      forward_fft<scalar_t>(plan, tiling, x, kk, y);
      return;
    }
    const std::vector<scalar_t> kf = extend_kernels<scalar_t>(kk, /*flip=*/true);
    const int64_t items = B * k::num_tiles<scalar_t>(H, W);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, items, kTileGrain, [&](int64_t begin, int64_t end) {
      run_forward(plan.geometry, xp, kf.data(), kk.size(0), C, yp, begin, end);
    });
  });
  return y;
}

at::Tensor adjoint_impl(const at::Tensor& y_in, const at::Tensor& kk, Boundary boundary) {
  const at::Tensor y = y_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  at::Tensor x = alloc_output({B, C, H, W}, y.options());
  if (x.numel() == 0) return x;
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "pc_conv_adjoint", [&] {
    Plan<scalar_t> plan(H, W, kk, boundary);
    const int64_t Hp = plan.geometry.Hp(), Wp = plan.geometry.Wp();
    at::Tensor padded = at::empty({B, C, Hp, Wp}, y.options());
    scalar_t* pp = padded.data_ptr<scalar_t>();
    const FftTiling tiling = fft_tiling(plan);
    if (use_fft(plan, tiling)) {
      adjoint_fft<scalar_t>(plan, tiling, y, kk, padded);
    } else {
      const std::vector<scalar_t> ke = extend_kernels<scalar_t>(kk, /*flip=*/false);
      const scalar_t* yp = y.data_ptr<scalar_t>();
      const int64_t items = B * k::num_tiles<scalar_t>(Hp, Wp);
      at::parallel_for(0, items, kTileGrain, [&](int64_t begin, int64_t end) {
        run_adjoint(plan.geometry, yp, ke.data(), kk.size(0), C, pp, begin, end);
      });
    }
    scalar_t* xo = x.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      k::fold_padded(plan.geometry, pp, xo, begin, end);
    });
  });
  return x;
}

// Gradient of <pc_conv(x, h), gy> w.r.t. h, shaped like `kernels`.
at::Tensor kernel_grad_impl(const at::Tensor& x_in, const at::Tensor& gy_in, const at::Tensor& kk,
                            const at::Tensor& kernels, Boundary boundary) {
  const at::Tensor x = x_in.contiguous(), gy = gy_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor grad = alloc_output(kk.sizes(), x.options());
  if (x.numel() == 0) {
    grad.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pc_conv_kernel_grad", [&] {
      Plan<scalar_t> plan(H, W, kk, boundary);
      const int64_t items = kk.size(0) * kk.size(1) * kk.size(2);
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* gp = gy.data_ptr<scalar_t>();
      scalar_t* out = grad.data_ptr<scalar_t>();
      at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
        k::kernel_grad(plan.geometry, xp, gp, B, kk.size(0), C, out, begin, end);
      });
    });
  }
  return kernels.dim() == 4 ? grad.squeeze(0) : grad;
}

// This backend's implementations, for csrc/pc_conv_entry.h.
struct Impl {
  static at::Tensor check(const at::Tensor& x, const at::Tensor& kernels, const char* name) {
    return check_args(x, kernels, name);
  }
  static at::Tensor forward(const at::Tensor& x, const at::Tensor& kk, Boundary boundary) {
    return forward_impl(x, kk, boundary);
  }
  static at::Tensor adjoint(const at::Tensor& y, const at::Tensor& kk, Boundary boundary) {
    return adjoint_impl(y, kk, boundary);
  }
  static at::Tensor kernel_grad(const at::Tensor& x, const at::Tensor& gy, const at::Tensor& kk,
                                const at::Tensor& kernels, Boundary boundary) {
    return kernel_grad_impl(x, gy, kk, kernels, boundary);
  }
};

}  // namespace
}  // namespace fastdeblur

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) {
  namespace entry = fastdeblur::pc_conv_entry;
  m.impl("pc_conv", &entry::forward<fastdeblur::Impl>);
  m.impl("pc_conv_adjoint", &entry::adjoint<fastdeblur::Impl>);
  m.impl("_pc_conv_backward", &entry::backward<fastdeblur::Impl>);
}

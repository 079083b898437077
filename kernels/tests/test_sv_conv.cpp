// kernels/cpu/sv_conv.h against naive loops: forward, adjoint (through <Ax, y> = <x, A^T y>
// and against a naive scatter) and kernel gradient, every boundary, kernels larger than
// the image included. Returns non-zero on failure.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/sv_conv.h"

namespace fc = fastdeblur::cpu;

namespace {

struct Case {
  int64_t C, H, W, kh, kw;
};

double rnd(std::mt19937& gen) { return std::uniform_real_distribution<double>(-1, 1)(gen); }

// y = A x by the definition.
std::vector<double> naive_forward(const std::vector<double>& x, const std::vector<double>& k,
                                  const Case& c, int boundary) {
  std::vector<double> y(c.C * c.H * c.W, 0.0);
  for (int64_t ch = 0; ch < c.C; ++ch)
    for (int64_t i = 0; i < c.H; ++i)
      for (int64_t j = 0; j < c.W; ++j) {
        double s = 0;
        for (int64_t u = 0; u < c.kh; ++u)
          for (int64_t v = 0; v < c.kw; ++v) {
            const int64_t si = fc::sv_boundary_index(i - u + c.kh / 2, c.H, boundary);
            const int64_t sj = fc::sv_boundary_index(j - v + c.kw / 2, c.W, boundary);
            if (si < 0 || sj < 0) continue;
            s += k[((u * c.kw + v) * c.H + i) * c.W + j] * x[(ch * c.H + si) * c.W + sj];
          }
        y[(ch * c.H + i) * c.W + j] = s;
      }
  return y;
}

// x' = A^T y by the scatter.
std::vector<double> naive_adjoint(const std::vector<double>& y, const std::vector<double>& k,
                                  const Case& c, int boundary) {
  std::vector<double> x(c.C * c.H * c.W, 0.0);
  for (int64_t ch = 0; ch < c.C; ++ch)
    for (int64_t i = 0; i < c.H; ++i)
      for (int64_t j = 0; j < c.W; ++j)
        for (int64_t u = 0; u < c.kh; ++u)
          for (int64_t v = 0; v < c.kw; ++v) {
            const int64_t si = fc::sv_boundary_index(i - u + c.kh / 2, c.H, boundary);
            const int64_t sj = fc::sv_boundary_index(j - v + c.kw / 2, c.W, boundary);
            if (si < 0 || sj < 0) continue;
            x[(ch * c.H + si) * c.W + sj] +=
                k[((u * c.kw + v) * c.H + i) * c.W + j] * y[(ch * c.H + i) * c.W + j];
          }
  return x;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t n = 0; n < a.size(); ++n) m = std::fmax(m, std::fabs(a[n] - b[n]));
  return m;
}

}  // namespace

int main() {
  std::mt19937 gen(0);
  const Case cases[] = {{3, 7, 9, 3, 3}, {5, 5, 6, 7, 5}, {1, 4, 3, 9, 11}, {2, 1, 5, 3, 3},
                        {6, 8, 7, 5, 5}, {4, 3, 4, 1, 1}};
  int failures = 0;
  for (int boundary = 0; boundary < 4; ++boundary) {
    for (const Case& c : cases) {
      const int64_t n = c.C * c.H * c.W, taps = c.kh * c.kw;
      std::vector<double> x(n), y(n), k(taps * c.H * c.W);
      for (auto& e : x) e = rnd(gen);
      for (auto& e : y) e = rnd(gen);
      for (auto& e : k) e = rnd(gen);
      // forward, two bands of rows
      std::vector<double> out(n, NAN);
      const int64_t mid = c.H / 2;
      std::vector<double> scratch(fc::sv_band_scratch(c.C, c.H, c.W, c.kh, c.kw));
      fc::sv_conv_forward_rows(x.data(), k.data(), out.data(), c.C, c.H, c.W, c.kh, c.kw,
                               boundary, 0, mid, scratch.data());
      fc::sv_conv_forward_rows(x.data(), k.data(), out.data(), c.C, c.H, c.W, c.kh, c.kw,
                               boundary, mid, c.H, scratch.data());
      const double e_fwd = max_diff(out, naive_forward(x, k, c, boundary));
      // adjoint: padded rows, then the row fold
      const int64_t Hp = c.H + c.kh - 1, Wp = c.W + c.kw - 1;
      std::vector<double> adj(n, NAN), zc(c.C * Hp * c.W), z_row(c.C * Wp);
      fc::sv_adjoint_rows(k.data(), y.data(), c.C, c.H, c.W, c.kh, c.kw, boundary, 0, Hp,
                          adj.data(), zc.data(), z_row.data());
      if (boundary != fc::kSvZero)
        for (int64_t ch = 0; ch < c.C; ++ch)
          fc::sv_adjoint_fold_rows(zc.data() + ch * Hp * c.W, adj.data() + ch * c.H * c.W, c.H,
                                   c.W, c.kh, boundary, 0, c.W);
      const double e_adj = max_diff(adj, naive_adjoint(y, k, c, boundary));
      // kernel gradient: g[t, i, j] = sum_c y[c, i, j] * x[c, map(...)]
      std::vector<double> g(taps * c.H * c.W, NAN), g_ref(taps * c.H * c.W, 0.0);
      fc::sv_kernel_grad_rows(y.data(), x.data(), g.data(), c.C, c.H, c.W, c.kh, c.kw, boundary,
                              0, c.H, scratch.data(), false);
      for (int64_t t = 0; t < taps; ++t) {
        std::vector<double> unit(taps * c.H * c.W, 0.0);
        for (int64_t p = 0; p < c.H * c.W; ++p) unit[t * c.H * c.W + p] = 1.0;
        const std::vector<double> shifted = naive_forward(x, unit, c, boundary);
        for (int64_t ch = 0; ch < c.C; ++ch)
          for (int64_t p = 0; p < c.H * c.W; ++p)
            g_ref[t * c.H * c.W + p] += y[ch * c.H * c.W + p] * shifted[ch * c.H * c.W + p];
      }
      const double e_kg = max_diff(g, g_ref);
      const bool ok = e_fwd < 1e-12 && e_adj < 1e-12 && e_kg < 1e-12;
      if (!ok) {
        ++failures;
        std::printf("FAIL boundary %d C%ld H%ld W%ld k%ldx%ld: fwd %.3g adj %.3g kgrad %.3g\n",
                    boundary, long(c.C), long(c.H), long(c.W), long(c.kh), long(c.kw), e_fwd,
                    e_adj, e_kg);
      }
    }
  }
  std::printf("%s\n", failures ? "sv_conv kernel tests FAILED" : "sv_conv kernel tests passed");
  return failures ? 1 : 0;
}

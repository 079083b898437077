// kernels/cpu/pc_conv.h against naive loops of the definition (zero and circular boundaries).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/pc_conv.h"

namespace k = fastdeblur::kernels::pc_conv;

namespace {

int64_t map_index(int64_t i, int64_t n, bool circular) {
  if (circular) return ((i % n) + n) % n;
  return (i >= 0 && i < n) ? i : -1;
}

struct Axis {
  std::vector<int64_t> map;
  std::vector<double> w;  // (cells, np)
  std::vector<k::Segment> segs;
};

Axis make_axis(int64_t n, int64_t cells, int64_t before, int64_t after, bool circular) {
  Axis ax;
  const int64_t np = n + before + after;
  for (int64_t s = 0; s < np; ++s) ax.map.push_back(map_index(s - before, n, circular));
  ax.w.assign(cells * np, 0.0);
  for (int64_t a = 0; a < cells; ++a) {
    int64_t start = -1;
    for (int64_t s = 0; s < np; ++s) {
      double w = 0.0;
      if (ax.map[s] >= 0) {
        double t = (ax.map[s] + 0.5) * (double(cells) / double(n)) - 0.5;
        t = std::min(std::max(t, 0.0), double(cells) - 1.0);
        w = std::max(0.0, 1.0 - std::abs(t - double(a)));
      }
      ax.w[a * np + s] = w;
      if (w != 0.0 && start < 0) start = s;
      if (w == 0.0 && start >= 0) {
        ax.segs.push_back({a, start, s});
        start = -1;
      }
    }
    if (start >= 0) ax.segs.push_back({a, start, np});
  }
  return ax;
}

template <typename T>
int run_case(int64_t H, int64_t W, int64_t gh, int64_t gw, int64_t kh, int64_t kw, bool circular,
             double tol) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  const int64_t C = 2;
  std::vector<T> x(C * H * W), h(gh * gw * kh * kw);
  for (auto& v : x) v = T(uni(rng));
  for (auto& v : h) v = T(uni(rng));
  const int64_t cy = kh / 2, cx = kw / 2;
  Axis rows = make_axis(H, gh, kh - 1 - cy, cy, circular);
  Axis cols = make_axis(W, gw, kw - 1 - cx, cx, circular);
  std::vector<T> wy(rows.w.begin(), rows.w.end()), wx(cols.w.begin(), cols.w.end());
  k::Geometry<T> g{H, W, kh, kw, gh, gw, rows.map.data(), cols.map.data(), wy.data(), wx.data(),
                   rows.segs.data(), int64_t(rows.segs.size()), cols.segs.data(),
                   int64_t(cols.segs.size())};
  // Flipped, extended kernels.
  const int64_t er = k::extended_rows(kh);
  std::vector<T> kf(gh * gw * er * kw, T(0));
  for (int64_t c = 0; c < gh * gw; ++c)
    for (int64_t u = 0; u < kh; ++u)
      for (int64_t v = 0; v < kw; ++v)
        kf[(c * er + u + k::kRows - 1) * kw + v] = h[(c * kh + kh - 1 - u) * kw + kw - 1 - v];
  std::vector<T> y(C * H * W, T(NAN));
  k::forward(g, x.data(), kf.data(), 1, C, y.data(), 0, k::num_tiles<T>(H, W));
  // Naive: y[p] = Σ_q Σ_cells h[q] w(m(p - q)) x(m(p - q)).
  double worst = 0.0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        double acc = 0.0;
        for (int64_t u = 0; u < kh; ++u)
          for (int64_t v = 0; v < kw; ++v) {
            const int64_t pr = i + kh - 1 - u, pc = j + kw - 1 - v;
            const int64_t sr = rows.map[pr], sc = cols.map[pc];
            if (sr < 0 || sc < 0) continue;
            for (int64_t a = 0; a < gh; ++a)
              for (int64_t b = 0; b < gw; ++b)
                acc += double(h[((a * gw + b) * kh + u) * kw + v]) *
                       rows.w[a * (H + kh - 1) + pr] * cols.w[b * (W + kw - 1) + pc] *
                       double(x[(c * H + sr) * W + sc]);
          }
        worst = std::max(worst, std::abs(acc - double(y[(c * H + i) * W + j])));
      }
  if (!(worst <= tol)) {
    std::printf("FAIL %lldx%lld grid %lldx%lld k %lldx%lld circular=%d: error %g\n",
                (long long)H, (long long)W, (long long)gh, (long long)gw, (long long)kh,
                (long long)kw, int(circular), worst);
    return 1;
  }
  return 0;
}

}  // namespace

int main() {
  int failures = 0;
  for (bool circular : {false, true}) {
    failures += run_case<double>(13, 37, 2, 3, 5, 7, circular, 1e-10);
    failures += run_case<double>(40, 150, 4, 5, 9, 3, circular, 1e-10);
    failures += run_case<float>(33, 70, 3, 2, 11, 11, circular, 1e-3);
    failures += run_case<double>(4, 3, 2, 2, 9, 9, circular, 1e-10);  // kernel > image
  }
  std::printf(failures ? "pc_conv kernel tests failed\n" : "pc_conv kernel tests passed\n");
  return failures ? 1 : 0;
}

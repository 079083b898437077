// Tests of kernels/cpu/grnn.h against naive double-precision loops (no torch).
#include "cpu/grnn.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

namespace K = fastdeblur::kernels::grnn;

static int failures = 0;

#define EXPECT(cond, ...)                              \
  do {                                                 \
    if (!(cond)) {                                     \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                        \
      std::printf("\n");                               \
      ++failures;                                      \
    }                                                  \
  } while (0)

struct Problem {
  int n, m, d, p;
  double sigma;
  bool exclude_self;
  std::vector<double> q, k, v;
};

static Problem make_problem(int n, int m, int d, int p, double sigma, bool exclude_self,
                            unsigned seed, double spread = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  Problem pr{n, m, d, p, sigma, exclude_self, {}, {}, {}};
  for (int i = 0; i < n * d; ++i) pr.q.push_back(spread * normal(gen));
  for (int i = 0; i < m * d; ++i) pr.k.push_back(spread * normal(gen));
  for (int i = 0; i < m * p; ++i) pr.v.push_back(normal(gen));
  return pr;
}

static bool excluded(const Problem& pr, int i, int j) { return pr.exclude_self && i == j; }

// Naive weights w[i][j] = exp(-|q_i - k_j|^2 / 2 sigma^2) / sum_j (...), in double.
static std::vector<double> naive_weights(const Problem& pr) {
  std::vector<double> w(static_cast<size_t>(pr.n) * pr.m);
  for (int i = 0; i < pr.n; ++i) {
    double best = -std::numeric_limits<double>::infinity();
    for (int j = 0; j < pr.m; ++j) {
      double d2 = 0;
      for (int c = 0; c < pr.d; ++c) {
        const double diff = pr.q[i * pr.d + c] - pr.k[j * pr.d + c];
        d2 += diff * diff;
      }
      const double logit = excluded(pr, i, j) ? -INFINITY : -d2 / (2 * pr.sigma * pr.sigma);
      w[i * pr.m + j] = logit;
      best = std::max(best, logit);
    }
    double sum = 0;
    for (int j = 0; j < pr.m; ++j) sum += (w[i * pr.m + j] = std::exp(w[i * pr.m + j] - best));
    for (int j = 0; j < pr.m; ++j) w[i * pr.m + j] /= sum;
  }
  return w;
}

template <typename Acc>
static void tile_gemm(const std::vector<Acc>& q, const std::vector<Acc>& k, int d, int q0, int rows,
                      int k0, int cols, Acc* s) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      Acc dot = 0;
      for (int j = 0; j < d; ++j) dot += q[(q0 + r) * d + j] * k[(k0 + c) * d + j];
      s[r * cols + c] = dot;
    }
}

// The tiled forward pass the glue performs, with naive GEMMs.
template <typename Acc>
static void tiled_forward(const Problem& pr, int qb, int kb, bool fused_values,
                          std::vector<Acc>& out, std::vector<Acc>& lse) {
  std::vector<Acc> q(pr.q.begin(), pr.q.end()), k(pr.k.begin(), pr.k.end());
  std::vector<Acc> v(pr.v.begin(), pr.v.end()), vt(static_cast<size_t>(pr.p) * pr.m);
  for (int j = 0; j < pr.m; ++j)
    for (int c = 0; c < pr.p; ++c) vt[c * pr.m + j] = v[j * pr.p + c];
  std::vector<Acc> hn(pr.m);
  K::half_squared_norms(k.data(), pr.m, pr.d, pr.d, hn.data());
  const Acc scale = static_cast<Acc>(1.0 / (pr.sigma * pr.sigma));
  out.assign(static_cast<size_t>(pr.n) * pr.p, std::numeric_limits<Acc>::quiet_NaN());
  lse.assign(pr.n, std::numeric_limits<Acc>::quiet_NaN());
  std::vector<Acc> s(static_cast<size_t>(qb) * kb), mx(qb), sm(qb), acc(static_cast<size_t>(qb) * pr.p);
  K::OnlineState<Acc> st{mx.data(), sm.data(), acc.data(), pr.p};
  for (int q0 = 0; q0 < pr.n; q0 += qb) {
    const int rows = std::min(qb, pr.n - q0);
    K::online_init(st, rows, pr.p);
    for (int k0 = 0; k0 < pr.m; k0 += kb) {
      const int cols = std::min(kb, pr.m - k0);
      tile_gemm(q, k, pr.d, q0, rows, k0, cols, s.data());
      K::online_tile<Acc>(s.data(), cols, rows, cols, hn.data() + k0, scale, pr.exclude_self,
                          q0 - k0, st, pr.p, fused_values ? vt.data() + k0 : nullptr, pr.m);
      if (!fused_values) {  // acc += P V_tile, as the glue's GEMM does
        for (int r = 0; r < rows; ++r)
          for (int c = 0; c < pr.p; ++c) {
            Acc dot = 0;
            for (int j = 0; j < cols; ++j) dot += s[r * cols + j] * v[(k0 + j) * pr.p + c];
            acc[r * pr.p + c] += dot;
          }
      }
    }
    K::online_finish(st, rows, pr.p, out.data() + q0 * pr.p, pr.p, lse.data() + q0);
  }
}

template <typename Acc>
static void check_forward(const Problem& pr, int qb, int kb, bool fused, double tol,
                          const char* name) {
  std::vector<Acc> out, lse;
  tiled_forward<Acc>(pr, qb, kb, fused, out, lse);
  const std::vector<double> w = naive_weights(pr);
  double worst = 0;
  for (int i = 0; i < pr.n; ++i)
    for (int c = 0; c < pr.p; ++c) {
      double want = 0;
      for (int j = 0; j < pr.m; ++j) want += w[i * pr.m + j] * pr.v[j * pr.p + c];
      const double got = static_cast<double>(out[i * pr.p + c]);
      worst = std::max(worst, std::isfinite(got) ? std::fabs(got - want) : INFINITY);
    }
  EXPECT(worst <= tol, "%s: forward max error %.3g > %.3g", name, worst, tol);
  // lse = log sum exp((q.k - |k|^2/2) / sigma^2).
  double lse_worst = 0;
  for (int i = 0; i < pr.n; ++i) {
    double best = -INFINITY;
    std::vector<double> logits(pr.m);
    for (int j = 0; j < pr.m; ++j) {
      double dot = 0, kk = 0;
      for (int c = 0; c < pr.d; ++c) {
        dot += pr.q[i * pr.d + c] * pr.k[j * pr.d + c];
        kk += pr.k[j * pr.d + c] * pr.k[j * pr.d + c];
      }
      logits[j] = excluded(pr, i, j) ? -INFINITY : (dot - 0.5 * kk) / (pr.sigma * pr.sigma);
      best = std::max(best, logits[j]);
    }
    double sum = 0;
    for (double l : logits) sum += std::exp(l - best);
    const double want = best + std::log(sum);
    lse_worst = std::max(lse_worst, std::fabs(static_cast<double>(lse[i]) - want) /
                                        std::max(1.0, std::fabs(want)));
  }
  EXPECT(lse_worst <= tol, "%s: lse max rel error %.3g > %.3g", name, lse_worst, tol);
}

// Gradients from backward_tile + the glue's GEMMs (naive here) vs analytic double loops.
static void check_backward(const Problem& pr, int qb, int kb, const char* name) {
  std::vector<double> out, lse;
  tiled_forward<double>(pr, qb, kb, true, out, lse);
  std::mt19937 gen(7);
  std::normal_distribution<double> normal;
  std::vector<double> go(static_cast<size_t>(pr.n) * pr.p), delta(pr.n, 0.0);
  for (auto& x : go) x = normal(gen);
  for (int i = 0; i < pr.n; ++i)
    for (int c = 0; c < pr.p; ++c) delta[i] += go[i * pr.p + c] * out[i * pr.p + c];
  std::vector<double> hn(pr.m);
  K::half_squared_norms(pr.k.data(), pr.m, pr.d, pr.d, hn.data());
  const double scale = 1.0 / (pr.sigma * pr.sigma);
  std::vector<double> gq(static_cast<size_t>(pr.n) * pr.d, 0.0), gk(static_cast<size_t>(pr.m) * pr.d, 0.0);
  std::vector<double> gv(static_cast<size_t>(pr.m) * pr.p, 0.0), colsum(pr.m, 0.0);
  std::vector<double> s(static_cast<size_t>(qb) * kb), dp(static_cast<size_t>(qb) * kb);
  for (int q0 = 0; q0 < pr.n; q0 += qb) {
    const int rows = std::min(qb, pr.n - q0);
    for (int k0 = 0; k0 < pr.m; k0 += kb) {
      const int cols = std::min(kb, pr.m - k0);
      tile_gemm(pr.q, pr.k, pr.d, q0, rows, k0, cols, s.data());
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
          double dot = 0;
          for (int j = 0; j < pr.p; ++j) dot += go[(q0 + r) * pr.p + j] * pr.v[(k0 + c) * pr.p + j];
          dp[r * cols + c] = dot;
        }
      K::backward_tile<double>(s.data(), cols, dp.data(), cols, rows, cols, hn.data() + k0, scale,
                               pr.exclude_self, q0 - k0, lse.data() + q0, delta.data() + q0);
      std::vector<double> tile_colsum(cols, 0.0);
      K::add_column_sums(dp.data(), cols, rows, cols, tile_colsum.data());
      for (int c = 0; c < cols; ++c) colsum[k0 + c] += tile_colsum[c];
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
          const double prob = s[r * cols + c], ds = dp[r * cols + c];
          for (int j = 0; j < pr.d; ++j) {
            gq[(q0 + r) * pr.d + j] += scale * ds * pr.k[(k0 + c) * pr.d + j];
            gk[(k0 + c) * pr.d + j] += scale * ds * pr.q[(q0 + r) * pr.d + j];
          }
          for (int j = 0; j < pr.p; ++j) gv[(k0 + c) * pr.p + j] += prob * go[(q0 + r) * pr.p + j];
        }
    }
  }
  for (int c = 0; c < pr.m; ++c)
    for (int j = 0; j < pr.d; ++j) gk[c * pr.d + j] -= scale * colsum[c] * pr.k[c * pr.d + j];

  // Analytic: y_i = sum_j w_ij v_j, dL/dq_i = sum_j w_ij (go_i . (v_j - y_i)) (k_j - q_i) / s^2,
  // dL/dk_j = sum_i w_ij (go_i . (v_j - y_i)) (q_i - k_j) / s^2, dL/dv_j = sum_i w_ij go_i.
  const std::vector<double> w = naive_weights(pr);
  double worst = 0;
  std::vector<double> wq(gq.size(), 0.0), wk(gk.size(), 0.0), wv(gv.size(), 0.0);
  for (int i = 0; i < pr.n; ++i)
    for (int j = 0; j < pr.m; ++j) {
      const double wij = w[i * pr.m + j];
      double a = 0;
      for (int c = 0; c < pr.p; ++c) a += go[i * pr.p + c] * (pr.v[j * pr.p + c] - out[i * pr.p + c]);
      for (int c = 0; c < pr.d; ++c) {
        const double diff = pr.k[j * pr.d + c] - pr.q[i * pr.d + c];
        wq[i * pr.d + c] += wij * a * diff * scale;
        wk[j * pr.d + c] -= wij * a * diff * scale;
      }
      for (int c = 0; c < pr.p; ++c) wv[j * pr.p + c] += wij * go[i * pr.p + c];
    }
  for (size_t i = 0; i < gq.size(); ++i) worst = std::max(worst, std::fabs(gq[i] - wq[i]));
  for (size_t i = 0; i < gk.size(); ++i) worst = std::max(worst, std::fabs(gk[i] - wk[i]));
  for (size_t i = 0; i < gv.size(); ++i) worst = std::max(worst, std::fabs(gv[i] - wv[i]));
  EXPECT(worst <= 1e-9, "%s: backward max error %.3g", name, worst);
}

static void test_exp() {
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -87.0f * static_cast<float>(i) / 200000.0f;
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(K::exp_nonpositive(x) - want) / want);
  }
  EXPECT(worst < 5e-7, "exp_nonpositive relative error %.3g", worst);
  EXPECT(K::exp_nonpositive(-INFINITY) == 0.0f, "exp(-inf) must be exactly 0");
  EXPECT(K::exp_nonpositive(-1e30f) == 0.0f, "exp(-1e30) must be 0");
  EXPECT(K::exp_nonpositive(0.0f) == 1.0f, "exp(0) must be 1");
}

int main() {
  test_exp();
  // Odd sizes, ragged tiles, both value paths, float and double.
  check_forward<double>(make_problem(13, 29, 5, 3, 1.1, false, 1), 4, 8, true, 1e-12, "f64 fused");
  check_forward<double>(make_problem(13, 29, 5, 3, 1.1, false, 2), 5, 7, false, 1e-12, "f64 gemm");
  check_forward<float>(make_problem(37, 101, 30, 1, 4.0, false, 3), 16, 32, true, 2e-5, "f32");
  check_forward<float>(make_problem(20, 20, 4, 2, 0.9, true, 4), 6, 5, true, 2e-5, "f32 loo");
  check_forward<double>(make_problem(20, 20, 4, 2, 0.9, true, 5), 3, 4, false, 1e-12, "f64 loo");
  check_forward<double>(make_problem(1, 1, 1, 1, 1.0, false, 6), 4, 4, true, 1e-12, "single");
  // LOO where a tile holds only the excluded key (kb = 1).
  check_forward<double>(make_problem(6, 6, 2, 2, 0.7, true, 7), 2, 1, true, 1e-12, "loo kb=1");
  // Tiny sigma with well separated keys: one-hot weights, no NaN.
  check_forward<float>(make_problem(9, 9, 3, 2, 1e-3, true, 8, 10.0), 4, 4, true, 1e-5, "tiny s");
  check_forward<float>(make_problem(9, 17, 3, 2, 1e-3, false, 9, 10.0), 4, 4, true, 1e-5,
                       "tiny s 2");
  check_backward(make_problem(11, 23, 4, 3, 1.3, false, 10), 4, 6, "backward");
  check_backward(make_problem(12, 12, 3, 2, 0.8, true, 11), 5, 4, "backward loo");
  if (failures == 0) std::printf("test_grnn: all passed\n");
  return failures == 0 ? 0 : 1;
}

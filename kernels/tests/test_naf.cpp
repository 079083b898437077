// Tests of kernels/cpu/naf.h against naive loops (ctest; returns non-zero on failure).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/naf.h"

namespace k = fastdeblur::cpu::naf;

namespace {

int failures = 0;

void expect_close(const char* what, double got, double want, double tol = 1e-9) {
  if (std::fabs(got - want) > tol * (1.0 + std::fabs(want))) {
    std::printf("FAIL %s: got %.12g want %.12g\n", what, got, want);
    ++failures;
  }
}

std::vector<double> random_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<double> dist;
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// u = dwconv3x3(z + zbias) + bias with zero padding, naive.
double naive_dwconv(const std::vector<double>& z, const std::vector<double>& zbias,
                    const std::vector<double>& wt, const std::vector<double>& bias, int64_t n,
                    int64_t h, int64_t w, int64_t c, int64_t H, int64_t W, int64_t K) {
  double acc = bias[c];
  for (int ky = 0; ky < 3; ++ky) {
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t hh = h + ky - 1, ww = w + kx - 1;
      if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
      acc += wt[(ky * 3 + kx) * K + c] * (z[((n * H + hh) * W + ww) * K + c] + zbias[c]);
    }
  }
  return acc;
}

void test_layer_norm(std::mt19937& rng) {
  const int64_t P = 7, C = 5;
  auto x = random_vector(P * C, rng), w = random_vector(C, rng), b = random_vector(C, rng);
  std::vector<double> xn(P * C), mean(P), rstd(P);
  k::layer_norm_rows<double>(x.data(), w.data(), b.data(), xn.data(), mean.data(), rstd.data(),
                             0, P, C, 1e-6);
  for (int64_t p = 0; p < P; ++p) {
    double mu = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mu += x[p * C + c] / C;
    for (int64_t c = 0; c < C; ++c) var += (x[p * C + c] - mu) * (x[p * C + c] - mu) / C;
    for (int64_t c = 0; c < C; ++c) {
      expect_close("layer_norm", xn[p * C + c],
                   (x[p * C + c] - mu) / std::sqrt(var + 1e-6) * w[c] + b[c]);
    }
  }
}

void test_dwconv_gate(std::mt19937& rng) {
  const int64_t N = 2, H = 4, W = 5, C = 3, K = 2 * C;
  auto z = random_vector(N * H * W * K, rng), wt = random_vector(9 * K, rng);
  auto bias = random_vector(K, rng), zbias = random_vector(K, rng);
  std::vector<double> g(N * H * W * C), rowsum(N * H * C);
  k::dwconv_gate_rows<double>(z.data(), zbias.data(), wt.data(), bias.data(), g.data(),
                              rowsum.data(), 0, N * H, H, W, C);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t c = 0; c < C; ++c) {
        double row = 0;
        for (int64_t w = 0; w < W; ++w) {
          const double want = naive_dwconv(z, zbias, wt, bias, n, h, w, c, H, W, K) *
                              naive_dwconv(z, zbias, wt, bias, n, h, w, C + c, H, W, K);
          expect_close("dwconv_gate", g[((n * H + h) * W + w) * C + c], want);
          row += want;
        }
        expect_close("dwconv_gate rowsum", rowsum[(n * H + h) * C + c], row);
      }
    }
  }
}

// <dwconv(a), b> == <a, dwconv_transpose(b)> (bias-free, zero padding).
void test_dwconv_transpose_is_adjoint(std::mt19937& rng) {
  const int64_t N = 1, H = 6, W = 3, K = 4;
  auto a = random_vector(N * H * W * K, rng), b = random_vector(N * H * W * K, rng);
  auto wt = random_vector(9 * K, rng);
  std::vector<double> zero(K, 0.0), at_b(N * H * W * K);
  k::dwconv_transpose_rows<double>(b.data(), wt.data(), at_b.data(), 0, N * H, H, W, K);
  double lhs = 0, rhs = 0;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t w = 0; w < W; ++w) {
      for (int64_t c = 0; c < K; ++c) {
        const int64_t i = (h * W + w) * K + c;
        lhs += naive_dwconv(a, zero, wt, zero, 0, h, w, c, H, W, K) * b[i];
        rhs += a[i] * at_b[i];
      }
    }
  }
  expect_close("dwconv_transpose adjoint", lhs, rhs, 1e-12);
}

}  // namespace

int main() {
  std::mt19937 rng(0);
  test_layer_norm(rng);
  test_dwconv_gate(rng);
  test_dwconv_transpose_is_adjoint(rng);
  if (failures == 0) std::printf("test_naf: all passed\n");
  return failures == 0 ? 0 : 1;
}

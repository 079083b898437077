// CPU glue of the product-convolution ops: checks, geometry (boundary maps, bilinear weights
// on the padded axes, their non-zero segments), and at::parallel_for over the kernels of
// kernels/cpu/pc_conv.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "common.h"
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
  TORCH_CHECK(x.dim() == 4, name, " must be (B, C, H, W); got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, name,
              " must be float32 or float64; got ", x.scalar_type());
  TORCH_CHECK(kernels.scalar_type() == x.scalar_type(), "grid_kernels must have the dtype of ",
              name, " (", x.scalar_type(), "); got ", kernels.scalar_type());
  TORCH_CHECK(x.device().is_cpu() && kernels.device().is_cpu(),
              "pc_conv CPU kernel needs CPU tensors");
  at::Tensor kk = kernels.dim() == 4 ? kernels.unsqueeze(0) : kernels;
  TORCH_CHECK(kk.dim() == 5 && (kk.size(0) == 1 || kk.size(0) == x.size(0)),
              "grid_kernels must be (gh, gw, kh, kw) or (B, gh, gw, kh, kw) with B = ", x.size(0),
              "; got ", kernels.sizes());
  for (int64_t d = 1; d < 5; ++d)
    TORCH_CHECK(kk.size(d) > 0, "grid_kernels must not be empty; got ", kernels.sizes());
  return kk.contiguous();
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

at::Tensor forward_impl(const at::Tensor& x_in, const at::Tensor& kk, Boundary boundary) {
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor y = alloc_output({B, C, H, W}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pc_conv", [&] {
    Plan<scalar_t> plan(H, W, kk, boundary);
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
    const std::vector<scalar_t> ke = extend_kernels<scalar_t>(kk, /*flip=*/false);
    const int64_t Hp = plan.geometry.Hp(), Wp = plan.geometry.Wp();
    at::Tensor padded = at::empty({B, C, Hp, Wp}, y.options());
    scalar_t* pp = padded.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const int64_t items = B * k::num_tiles<scalar_t>(Hp, Wp);
    at::parallel_for(0, items, kTileGrain, [&](int64_t begin, int64_t end) {
      run_adjoint(plan.geometry, yp, ke.data(), kk.size(0), C, pp, begin, end);
    });
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

at::Tensor pc_conv_cpu(const at::Tensor& x, const at::Tensor& grid_kernels,
                       c10::string_view boundary) {
  const at::Tensor kk = check_args(x, grid_kernels, "x");
  return forward_impl(x, kk, parse_boundary(std::string(boundary)));
}

at::Tensor pc_conv_adjoint_cpu(const at::Tensor& y, const at::Tensor& grid_kernels,
                               c10::string_view boundary) {
  const at::Tensor kk = check_args(y, grid_kernels, "y");
  return adjoint_impl(y, kk, parse_boundary(std::string(boundary)));
}

std::tuple<at::Tensor, at::Tensor> pc_conv_backward_cpu(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& grid_kernels,
    c10::string_view boundary_name, bool adjoint, std::array<bool, 2> output_mask) {
  const at::Tensor kk = check_args(input, grid_kernels, "input");
  TORCH_CHECK(grad.sizes() == input.sizes() && grad.scalar_type() == input.scalar_type(),
              "grad must match input in shape and dtype; got ", grad.sizes(), " and ",
              input.sizes());
  const Boundary boundary = parse_boundary(std::string(boundary_name));
  at::Tensor grad_input = output_mask[0]
                              ? (adjoint ? forward_impl(grad, kk, boundary)
                                         : adjoint_impl(grad, kk, boundary))
                              : at::empty({0}, input.options());
  at::Tensor grad_kernels =
      output_mask[1] ? (adjoint ? kernel_grad_impl(grad, input, kk, grid_kernels, boundary)
                                : kernel_grad_impl(input, grad, kk, grid_kernels, boundary))
                     : at::empty({0}, input.options());
  return {grad_input, grad_kernels};
}

}  // namespace
}  // namespace fastdeblur

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) {
  m.impl("pc_conv", &fastdeblur::pc_conv_cpu);
  m.impl("pc_conv_adjoint", &fastdeblur::pc_conv_adjoint_cpu);
  m.impl("_pc_conv_backward", &fastdeblur::pc_conv_backward_cpu);
}

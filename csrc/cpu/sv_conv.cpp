// CPU glue of sv_conv / sv_conv_adjoint / _sv_conv_kernel_grad: checks the tensors and
// runs kernels/cpu/sv_conv.h over bands of rows with at::parallel_for.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "checks.h"
#include "common.h"
#include "cpu/sv_conv.h"

namespace fastdeblur {
namespace {

void check_image(const at::Tensor& t, const char* name) {
  checks::image_4d(t, name);
  checks::float_or_double(t, name);
}

// Tasks per parallel_for grain: small problems run on the calling thread (waking the pool
// costs more than the work).
int64_t grain(int64_t tasks, int64_t work) { return work < (int64_t{1} << 18) ? std::max<int64_t>(tasks, 1) : 1; }

// Rows per task: enough tasks to balance the threads, bands long enough that padding
// the (kh - 1) halo rows stays cheap. at::parallel_for hands each thread one contiguous run
// of tasks, so the task count is rounded up to a multiple of the thread count: 17 bands of
// the 1054 padded rows of a 1024-row adjoint on 2 threads left one thread 9/8 of the other's
// work (the adjoint ran 1.3x the forward); 18 bands of 59 rows split evenly.
int64_t band_rows(int64_t batch, int64_t rows) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t want = (batch * rows + 4 * threads - 1) / (4 * threads);
  const int64_t band = std::max<int64_t>(1, std::min<int64_t>({64, rows, want}));
  const int64_t tasks = batch * ((rows + band - 1) / band);
  const int64_t balanced = (tasks + threads - 1) / threads * threads;
  if (balanced == tasks) return band;
  const int64_t per_image = (balanced + batch - 1) / batch;
  return std::max<int64_t>(1, (rows + per_image - 1) / per_image);
}

at::Tensor sv_conv_cpu(const at::Tensor& x_in, const at::Tensor& kernels_in, int64_t kh,
                       int64_t kw, c10::string_view boundary_name) {
  check_image(x_in, "x");
  const bool shared = checks::sv_kernels(kernels_in, x_in, kh, kw);
  const int boundary = static_cast<int>(parse_boundary(std::string(boundary_name)));
  const at::Tensor x = x_in.contiguous();
  const at::Tensor kernels = kernels_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor y = alloc_output(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  const int64_t band = band_rows(B, H);
  const int64_t bands = (H + band - 1) / band;
  const int64_t taps = kh * kw;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sv_conv_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* kp = kernels.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * bands, grain(B * bands, B * C * H * W * taps), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(cpu::sv_band_scratch(C, band, W, kh, kw));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / bands;
        const int64_t i0 = (task % bands) * band, i1 = std::min(H, i0 + band);
        cpu::sv_conv_forward_rows<scalar_t>(xp + b * C * H * W,
                                            kp + (shared ? 0 : b * taps * H * W),
                                            yp + b * C * H * W, C, H, W, kh, kw, boundary, i0,
                                            i1, scratch.data());
      }
    });
  });
  return y;
}

at::Tensor sv_conv_adjoint_cpu(const at::Tensor& y_in, const at::Tensor& kernels_in, int64_t kh,
                               int64_t kw, c10::string_view boundary_name) {
  check_image(y_in, "y");
  const bool shared = checks::sv_kernels(kernels_in, y_in, kh, kw);
  const int boundary = static_cast<int>(parse_boundary(std::string(boundary_name)));
  const at::Tensor y = y_in.contiguous();
  const at::Tensor kernels = kernels_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  at::Tensor x = alloc_output(y.sizes(), y.options());
  if (x.numel() == 0) return x;
  const int64_t Hp = H + kh - 1, Wp = W + kw - 1;
  const int64_t band = band_rows(B, Hp);
  const int64_t bands = (Hp + band - 1) / band;
  const int64_t taps = kh * kw;
  const bool fold = boundary != cpu::kSvZero;
  // Column-folded padded rows, folded over rows in a second pass (not needed for zero).
  at::Tensor zc = fold ? at::empty({B, C, Hp, W}, y.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "sv_conv_adjoint_cpu", [&] {
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t* kp = kernels.data_ptr<scalar_t>();
    scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* zp = fold ? zc.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B * bands, grain(B * bands, B * C * Hp * Wp * taps), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> z_row(C * Wp);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / bands;
        const int64_t s0 = (task % bands) * band, s1 = std::min(Hp, s0 + band);
        cpu::sv_adjoint_rows<scalar_t>(kp + (shared ? 0 : b * taps * H * W), yp + b * C * H * W,
                                       C, H, W, kh, kw, boundary, s0, s1, xp + b * C * H * W,
                                       fold ? zp + b * C * Hp * W : nullptr, z_row.data());
      }
    });
    if (fold) {
      const int64_t col_chunk = 256;
      const int64_t chunks = (W + col_chunk - 1) / col_chunk;
      at::parallel_for(0, B * C * chunks, grain(B * C * chunks, B * C * Hp * W), [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t plane = task / chunks;
          const int64_t j0 = (task % chunks) * col_chunk, j1 = std::min(W, j0 + col_chunk);
          cpu::sv_adjoint_fold_rows<scalar_t>(zp + plane * Hp * W, xp + plane * H * W, H, W, kh,
                                              boundary, j0, j1);
        }
      });
    }
  });
  return x;
}

at::Tensor sv_conv_kernel_grad_cpu(const at::Tensor& gy_in, const at::Tensor& x_in, int64_t kh,
                                   int64_t kw, c10::string_view boundary_name, bool shared) {
  check_image(gy_in, "grad_y");
  check_image(x_in, "x");
  checks::same_shape_and_dtype(gy_in, "grad_y", x_in, "x");
  checks::kernel_size(kh, kw);
  const int boundary = static_cast<int>(parse_boundary(std::string(boundary_name)));
  const at::Tensor gy = gy_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t taps = kh * kw;
  at::Tensor g = shared ? alloc_output({taps, H, W}, x.options())
                        : alloc_output({B, taps, H, W}, x.options());
  if (g.numel() == 0) return g;
  if (B == 0 || C == 0) return g.zero_();
  const int64_t nb = shared ? 1 : B;
  const int64_t band = band_rows(nb, H);
  const int64_t bands = (H + band - 1) / band;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sv_conv_kernel_grad_cpu", [&] {
    const scalar_t* gp = gy.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = g.data_ptr<scalar_t>();
    at::parallel_for(0, nb * bands, grain(nb * bands, B * C * H * W * taps), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(cpu::sv_band_scratch(C, band, W, kh, kw));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t i0 = (task % bands) * band, i1 = std::min(H, i0 + band);
        // Shared kernels: one task sums its rows over the whole batch (no races).
        const int64_t b_lo = shared ? 0 : task / bands, b_hi = shared ? B : b_lo + 1;
        for (int64_t b = b_lo; b < b_hi; ++b) {
          cpu::sv_kernel_grad_rows<scalar_t>(gp + b * C * H * W, xp + b * C * H * W,
                                             op + (shared ? 0 : b * taps * H * W), C, H, W, kh,
                                             kw, boundary, i0, i1, scratch.data(),
                                             shared && b > 0);
        }
      }
    });
  });
  return g;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) {
  m.impl("sv_conv", &sv_conv_cpu);
  m.impl("sv_conv_adjoint", &sv_conv_adjoint_cpu);
  m.impl("_sv_conv_kernel_grad", &sv_conv_kernel_grad_cpu);
}

}  // namespace fastdeblur

// Argument checks shared by the CPU and the CUDA glue of the ops: one place for each rule and
// its message (which names the argument and what was expected). Device and dtype rules that
// differ between the backends stay in the glue.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace fastdeblur {
namespace checks {

// An image batch (B, C, H, W).
inline void image_4d(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, name, " must be (B, C, H, W); got ", t.sizes());
}

// float32 or float64: the dtypes of the CPU kernels.
inline void float_or_double(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64; got ", t.scalar_type());
}

inline void floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name, " must be floating point; got ",
              t.scalar_type());
}

inline void kernel_size(int64_t kh, int64_t kw) {
  TORCH_CHECK(kh >= 1 && kw >= 1, "kernel size must be positive; got kh=", kh, ", kw=", kw);
}

inline void same_shape_and_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                                 const char* b_name) {
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type(), a_name, " and ",
              b_name, " must have the same shape and dtype; got ", a.sizes(), " ", a.scalar_type(),
              " and ", b.sizes(), " ", b.scalar_type());
}

// sv_conv: the per-pixel kernel field (B, kh*kw, H, W) or (kh*kw, H, W) against an image
// (B, C, H, W). Returns whether the field is shared by the batch.
inline bool sv_kernels(const at::Tensor& kernels, const at::Tensor& image, int64_t kh,
                       int64_t kw) {
  kernel_size(kh, kw);
  TORCH_CHECK(kernels.dim() == 3 || kernels.dim() == 4,
              "kernels must be (B, kh*kw, H, W) or (kh*kw, H, W); got ", kernels.sizes());
  TORCH_CHECK(kernels.scalar_type() == image.scalar_type(),
              "kernels must have the dtype of the image (", image.scalar_type(), "); got ",
              kernels.scalar_type());
  TORCH_CHECK(kernels.device() == image.device(), "kernels must be on the device of the image");
  const bool shared = kernels.dim() == 3;
  const int64_t d = shared ? 0 : 1;
  TORCH_CHECK(kernels.size(d) == kh * kw, "kernels must have kh*kw = ", kh * kw, " taps; got ",
              kernels.size(d));
  TORCH_CHECK(kernels.size(d + 1) == image.size(2) && kernels.size(d + 2) == image.size(3),
              "kernels must match the image size ", image.size(2), "x", image.size(3), "; got ",
              kernels.sizes());
  TORCH_CHECK(shared || kernels.size(0) == image.size(0), "kernels batch (", kernels.size(0),
              ") must match the image batch (", image.size(0), ")");
  return shared;
}

// pc_conv: an image batch `name` (float32/float64) and its grid kernels (gh, gw, kh, kw) or
// (B, gh, gw, kh, kw) of the same dtype. Returns the kernels as a contiguous
// (Bk, gh, gw, kh, kw) tensor, Bk = 1 or B. The devices are the caller's to check.
inline at::Tensor pc_grid_kernels(const at::Tensor& x, const at::Tensor& kernels,
                                  const char* name) {
  image_4d(x, name);
  float_or_double(x, name);
  TORCH_CHECK(kernels.scalar_type() == x.scalar_type(), "grid_kernels must have the dtype of ",
              name, " (", x.scalar_type(), "); got ", kernels.scalar_type());
  at::Tensor kk = kernels.dim() == 4 ? kernels.unsqueeze(0) : kernels;
  TORCH_CHECK(kk.dim() == 5 && (kk.size(0) == 1 || kk.size(0) == x.size(0)),
              "grid_kernels must be (gh, gw, kh, kw) or (B, gh, gw, kh, kw) with B = ", x.size(0),
              "; got ", kernels.sizes());
  for (int64_t d = 1; d < 5; ++d)
    TORCH_CHECK(kk.size(d) > 0, "grid_kernels must not be empty; got ", kernels.sizes());
  return kk.contiguous();
}

// grnn: queries (N, d), keys (M, d), values (M, p) of one floating dtype, sigma > 0.
inline void grnn_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        double sigma, bool exclude_self) {
  TORCH_CHECK(q.dim() == 2, "grnn: queries must be (N, d), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 2, "grnn: keys must be (M, d), got shape ", k.sizes());
  TORCH_CHECK(v.dim() == 2, "grnn: values must be (M, p), got shape ", v.sizes());
  TORCH_CHECK(q.size(1) == k.size(1), "grnn: queries (N, d) and keys (M, d) must share d, got ",
              q.size(1), " and ", k.size(1));
  TORCH_CHECK(v.size(0) == k.size(0), "grnn: values must have one row per key (", k.size(0),
              "), got ", v.size(0));
  TORCH_CHECK(k.size(0) >= 1, "grnn: keys must have at least one row");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "grnn: queries, keys and values must share a dtype, got ", q.scalar_type(), ", ",
              k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(at::isFloatingType(q.scalar_type()), "grnn: expected floating-point tensors, got ",
              q.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(),
              "grnn: queries, keys and values must be on one device");
  TORCH_CHECK(std::isfinite(sigma) && sigma > 0, "grnn: sigma must be positive and finite, got ",
              sigma);
  TORCH_CHECK(!exclude_self || (q.size(0) == k.size(0) && k.size(0) >= 2),
              "grnn: exclude_self needs as many queries as keys and at least 2 keys, got N=",
              q.size(0), ", M=", k.size(0));
}

// grnn backward: the saved forward outputs against the incoming gradient.
inline void grnn_backward(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& lse,
                          int64_t n) {
  TORCH_CHECK(grad_out.sizes() == out.sizes(), "grnn backward: grad_out must have shape ",
              out.sizes(), ", got ", grad_out.sizes());
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == n, "grnn backward: lse must be (N,), got ",
              lse.sizes());
}

}  // namespace checks
}  // namespace fastdeblur

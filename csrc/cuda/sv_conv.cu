// CUDA glue of sv_conv / sv_conv_adjoint / _sv_conv_kernel_grad: checks the tensors and
// launches kernels/cuda/sv_conv.cuh on the current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"
#include "common.h"
#include "cuda/sv_conv.cuh"

namespace fastdeblur {
namespace {

namespace kc = fastdeblur::cuda;

void check_image(const at::Tensor& t, const char* name) {
  checks::image_4d(t, name);
  checks::floating(t, name);
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.size(2) < (1 << 30) && t.size(3) < (1 << 30), name, " is too large");
}

// Channels per block: all of them up to 4 (K is then read once), and as many as the
// shared memory of the device allows.
int channel_block(int64_t C, int64_t kh, int64_t kw, size_t acc_bytes, size_t smem_limit) {
  int cb = static_cast<int>(std::min<int64_t>(C, kc::kSvMaxChannelBlock));
  if (cb == 2) cb = 3;  // instantiated blocks: 1, 3, 4 (a masked channel is cheap)
  while (cb > 1 && kc::sv_tile_bytes(cb, kh, kw, acc_bytes) > smem_limit) cb = cb == 4 ? 3 : 1;
  TORCH_CHECK(kc::sv_tile_bytes(cb, kh, kw, acc_bytes) <= smem_limit, "kernel size ", kh, "x",
              kw, " needs more shared memory than the device has");
  return cb;
}

size_t smem_limit() {
  int device = 0, value = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(value);
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  }
}

void check_grid(int64_t B, int64_t C, int cb) {
  TORCH_CHECK(B * ((C + cb - 1) / cb) <= 65535, "batch x channel blocks (", B, " x ",
              (C + cb - 1) / cb, ") exceeds the CUDA grid limit; split the batch");
}

template <int CB, typename F>
void with_channel_block(int cb, F f) {
  if (cb == 4) {
    f(std::integral_constant<int, 4>{});
  } else if (cb == 3) {
    f(std::integral_constant<int, 3>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

at::Tensor sv_conv_cuda(const at::Tensor& x_in, const at::Tensor& kernels_in, int64_t kh,
                        int64_t kw, c10::string_view boundary_name) {
  check_image(x_in, "x");
  const bool shared = checks::sv_kernels(kernels_in, x_in, kh, kw);
  const int boundary = static_cast<int>(parse_boundary(std::string(boundary_name)));
  c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor kernels = kernels_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor y = alloc_output(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  const int64_t k_batch_stride = shared ? 0 : kh * kw * H * W;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sv_conv_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int cb = channel_block(C, kh, kw, sizeof(acc_t), smem_limit());
    check_grid(B, C, cb);
    with_channel_block<0>(cb, [&](auto cb_const) {
      constexpr int CB = decltype(cb_const)::value;
      const size_t smem = kc::sv_tile_bytes(CB, kh, kw, sizeof(acc_t));
      auto kernel = kc::sv_conv_forward_kernel<scalar_t, acc_t, CB>;
      allow_smem(kernel, smem);
      const dim3 block(kc::kSvTileW, kc::kSvTileH);
      const dim3 grid((W + kc::kSvTileW - 1) / kc::kSvTileW, (H + kc::kSvTileH - 1) / kc::kSvTileH,
                      B * ((C + CB - 1) / CB));
      kernel<<<grid, block, smem, stream>>>(x.data_ptr<scalar_t>(), kernels.data_ptr<scalar_t>(),
                                            y.data_ptr<scalar_t>(), C, H, W, kh, kw, boundary,
                                            k_batch_stride);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

at::Tensor sv_conv_adjoint_cuda(const at::Tensor& y_in, const at::Tensor& kernels_in, int64_t kh,
                                int64_t kw, c10::string_view boundary_name) {
  check_image(y_in, "y");
  const bool shared = checks::sv_kernels(kernels_in, y_in, kh, kw);
  const int boundary = static_cast<int>(parse_boundary(std::string(boundary_name)));
  c10::cuda::CUDAGuard guard(y_in.device());
  const at::Tensor y = y_in.contiguous();
  const at::Tensor kernels = kernels_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  at::Tensor x = alloc_output(y.sizes(), y.options());
  if (x.numel() == 0) return x;
  const int64_t k_batch_stride = shared ? 0 : kh * kw * H * W;
  const bool fold = boundary != static_cast<int>(Boundary::kZero);
  const int64_t top = kh - 1 - kh / 2, left = kw - 1 - kw / 2;
  const int64_t HO = fold ? H + kh - 1 : H, WO = fold ? W + kw - 1 : W;
  const int64_t row0 = fold ? 0 : top, col0 = fold ? 0 : left;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "sv_conv_adjoint_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // The padded scatter, kept in the accumulator type until it is folded.
    at::Tensor z = fold ? at::empty({B, C, HO, WO}, y.options().dtype(c10::CppTypeToScalarType<acc_t>::value))
                        : at::Tensor();
    acc_t* zp = fold ? z.data_ptr<acc_t>() : nullptr;
    scalar_t* direct = fold ? nullptr : x.data_ptr<scalar_t>();
    const int cb = channel_block(C, kh, kw, sizeof(acc_t), smem_limit());
    check_grid(B, C, cb);
    with_channel_block<0>(cb, [&](auto cb_const) {
      constexpr int CB = decltype(cb_const)::value;
      const size_t smem = kc::sv_tile_bytes(CB, kh, kw, sizeof(acc_t));
      auto kernel = kc::sv_conv_adjoint_gather_kernel<scalar_t, acc_t, CB>;
      allow_smem(kernel, smem);
      const dim3 block(kc::kSvTileW, kc::kSvTileH);
      const dim3 grid((WO + kc::kSvTileW - 1) / kc::kSvTileW,
                      (HO + kc::kSvTileH - 1) / kc::kSvTileH, B * ((C + CB - 1) / CB));
      kernel<<<grid, block, smem, stream>>>(y.data_ptr<scalar_t>(), kernels.data_ptr<scalar_t>(),
                                            zp, direct, C, H, W, kh, kw, HO, WO, row0, col0,
                                            k_batch_stride);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (fold) {
      const int64_t total = B * C * H * W;
      const int threads = 256;
      kc::sv_conv_adjoint_fold_kernel<scalar_t, acc_t>
          <<<(total + threads - 1) / threads, threads, 0, stream>>>(
              zp, x.data_ptr<scalar_t>(), B * C, H, W, kh, kw, boundary);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return x;
}

at::Tensor sv_conv_kernel_grad_cuda(const at::Tensor& gy_in, const at::Tensor& x_in, int64_t kh,
                                    int64_t kw, c10::string_view boundary_name, bool shared) {
  check_image(gy_in, "grad_y");
  check_image(x_in, "x");
  checks::same_shape_and_dtype(gy_in, "grad_y", x_in, "x");
  checks::kernel_size(kh, kw);
  const int boundary = static_cast<int>(parse_boundary(std::string(boundary_name)));
  c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor gy = gy_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t taps = kh * kw;
  at::Tensor g = shared ? alloc_output({taps, H, W}, x.options())
                        : alloc_output({B, taps, H, W}, x.options());
  if (g.numel() == 0) return g;
  if (B == 0 || C == 0) return g.zero_();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sv_conv_kernel_grad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int cb = channel_block(C, kh, kw, sizeof(acc_t), smem_limit());
    with_channel_block<0>(cb, [&](auto cb_const) {
      constexpr int CB = decltype(cb_const)::value;
      const size_t smem = kc::sv_tile_bytes(CB, kh, kw, sizeof(acc_t));
      auto kernel = kc::sv_conv_kernel_grad_kernel<scalar_t, acc_t, CB>;
      allow_smem(kernel, smem);
      const dim3 block(kc::kSvTileW, kc::kSvTileH);
      const dim3 grid((W + kc::kSvTileW - 1) / kc::kSvTileW, (H + kc::kSvTileH - 1) / kc::kSvTileH);
      const int64_t plane = C * H * W;
      for (int64_t b = 0; b < B; ++b) {
        // Shared kernels: the images add into one gradient, one launch after the other.
        scalar_t* out = g.data_ptr<scalar_t>() + (shared ? 0 : b * taps * H * W);
        kernel<<<grid, block, smem, stream>>>(gy.data_ptr<scalar_t>() + b * plane,
                                              x.data_ptr<scalar_t>() + b * plane, out, C, H, W, kh,
                                              kw, boundary, shared && b > 0);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  });
  return g;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdeblur, CUDA, m) {
  m.impl("sv_conv", &sv_conv_cuda);
  m.impl("sv_conv_adjoint", &sv_conv_adjoint_cuda);
  m.impl("_sv_conv_kernel_grad", &sv_conv_kernel_grad_cuda);
}

}  // namespace fastdeblur

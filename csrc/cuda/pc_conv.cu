// CUDA glue of the product-convolution ops: checks, host geometry (csrc/pc_conv_axis.h)
// copied to the device, launches of kernels/cuda/pc_conv.cuh on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"
#include "common.h"
#include "pc_conv_entry.h"
#include "cuda/pc_conv.cuh"
#include "pc_conv_axis.h"

namespace fastdeblur {
namespace {

namespace kc = kernels::cuda::pc_conv;
using pc_conv_geometry::Axis;

at::Tensor check_args(const at::Tensor& x, const at::Tensor& kernels, const char* name) {
  TORCH_CHECK(x.is_cuda() && kernels.device() == x.device(),
              "pc_conv CUDA kernel needs ", name, " and grid_kernels on the same CUDA device");
  at::Tensor kk = checks::pc_grid_kernels(x, kernels, name);
  TORCH_CHECK(x.size(2) * x.size(3) < (int64_t{1} << 30) && kk.size(3) * kk.size(4) < (1 << 20),
              "pc_conv CUDA kernel: image or kernel too large");
  return kk;
}

// Device copies of the geometry; the tensors own the memory for the duration of the op.
template <typename T>
struct DevicePlan {
  at::Tensor row_map, col_map, cell_rows, cell_cols, wy, wx;
  kc::Geometry geometry;

  DevicePlan(int64_t H, int64_t W, const at::Tensor& kk, Boundary boundary,
             const at::TensorOptions& float_options) {
    const int64_t gh = kk.size(1), gw = kk.size(2), kh = kk.size(3), kw = kk.size(4);
    Axis<T> rows(H, gh, kh - 1 - kh / 2, kh / 2, boundary);
    Axis<T> cols(W, gw, kw - 1 - kw / 2, kw / 2, boundary);
    const auto int_options = float_options.dtype(at::kInt);
    auto to_int = [&](const std::vector<int64_t>& v) {
      std::vector<int> narrow(v.begin(), v.end());
      return at::tensor(narrow, at::TensorOptions().dtype(at::kInt)).to(int_options.device());
    };
    auto to_int32 = [&](const std::vector<int>& v) {
      return at::tensor(v, at::TensorOptions().dtype(at::kInt)).to(int_options.device());
    };
    auto to_float = [&](const std::vector<T>& v) {
      return at::tensor(v, at::TensorOptions().dtype(float_options.dtype()))
          .to(float_options.device());
    };
    row_map = to_int(rows.map);
    col_map = to_int(cols.map);
    cell_rows = to_int32(rows.bounds(gh));
    cell_cols = to_int32(cols.bounds(gw));
    wy = to_float(rows.weights);
    wx = to_float(cols.weights);
    geometry = {static_cast<int>(H), static_cast<int>(W), static_cast<int>(kh),
                static_cast<int>(kw), static_cast<int>(gh), static_cast<int>(gw),
                row_map.data_ptr<int>(), col_map.data_ptr<int>(), cell_rows.data_ptr<int>(),
                cell_cols.data_ptr<int>()};
  }
};

inline unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

at::Tensor forward_impl(const at::Tensor& x_in, const at::Tensor& kk, Boundary boundary) {
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor y = alloc_output({B, C, H, W}, x.options());
  if (y.numel() == 0) return y;
  const c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pc_conv_cuda", [&] {
    DevicePlan<scalar_t> plan(H, W, kk, boundary, x.options());
    const int64_t k_stride = kk.size(0) == 1 ? 0 : kk[0].numel();
    const int planes = static_cast<int>(B * C);
    const size_t smem = kc::forward_smem_bytes<scalar_t>(kk.size(3), kk.size(4));
    int device_smem = 0;
    cudaDeviceGetAttribute(&device_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                           x.device().index());
    if (smem <= static_cast<size_t>(device_smem)) {
      if (smem > 48 * 1024) {
        cudaFuncSetAttribute(kc::pc_conv_tiled_kernel<scalar_t>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem));
      }
      const dim3 grid(blocks_for(W, kc::kTile), blocks_for(H, kc::kTile), planes);
      const dim3 block(kc::kThreadsX, kc::kThreadsY);
      kc::pc_conv_tiled_kernel<scalar_t><<<grid, block, smem, stream>>>(
          x.data_ptr<scalar_t>(), kk.data_ptr<scalar_t>(), plan.wy.template data_ptr<scalar_t>(),
          plan.wx.template data_ptr<scalar_t>(), plan.geometry, static_cast<int>(C), k_stride,
          y.data_ptr<scalar_t>());
    } else {
      const dim3 grid(blocks_for(H * W, 256), planes);
      kc::pc_conv_gather_kernel<scalar_t><<<grid, 256, 0, stream>>>(
          x.data_ptr<scalar_t>(), kk.data_ptr<scalar_t>(), plan.wy.template data_ptr<scalar_t>(),
          plan.wx.template data_ptr<scalar_t>(), plan.geometry, static_cast<int>(C), k_stride,
          y.data_ptr<scalar_t>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor adjoint_impl(const at::Tensor& y_in, const at::Tensor& kk, Boundary boundary) {
  const at::Tensor y = y_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  if (y.numel() == 0) return alloc_output({B, C, H, W}, y.options());
  at::Tensor x = at::zeros({B, C, H, W}, y.options());  // the fold accumulates into it
  const c10::cuda::CUDAGuard guard(y.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "pc_conv_adjoint_cuda", [&] {
    DevicePlan<scalar_t> plan(H, W, kk, boundary, y.options());
    const int64_t k_stride = kk.size(0) == 1 ? 0 : kk[0].numel();
    const int64_t Hp = H + kk.size(3) - 1, Wp = W + kk.size(4) - 1;
    at::Tensor padded = at::empty({B, C, Hp, Wp}, y.options());
    const dim3 grid(blocks_for(Hp * Wp, 256), static_cast<unsigned>(B * C));
    kc::pc_conv_adjoint_padded_kernel<scalar_t><<<grid, 256, 0, stream>>>(
        y.data_ptr<scalar_t>(), kk.data_ptr<scalar_t>(), plan.wy.template data_ptr<scalar_t>(),
        plan.wx.template data_ptr<scalar_t>(), plan.geometry, static_cast<int>(C), k_stride,
        padded.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    kc::pc_conv_fold_kernel<scalar_t><<<grid, 256, 0, stream>>>(
        padded.data_ptr<scalar_t>(), plan.geometry, x.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return x;
}

at::Tensor kernel_grad_impl(const at::Tensor& x_in, const at::Tensor& gy_in, const at::Tensor& kk,
                            const at::Tensor& kernels, Boundary boundary) {
  const at::Tensor x = x_in.contiguous(), gy = gy_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor grad = alloc_output(kk.sizes(), x.options());
  if (x.numel() == 0) {
    grad.zero_();
  } else {
    const c10::cuda::CUDAGuard guard(x.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pc_conv_kernel_grad_cuda", [&] {
      DevicePlan<scalar_t> plan(H, W, kk, boundary, x.options());
      const dim3 grid(static_cast<unsigned>(kk.size(3) * kk.size(4)),
                      static_cast<unsigned>(kk.size(1) * kk.size(2)),
                      static_cast<unsigned>(kk.size(0)));
      kc::pc_conv_kernel_grad_kernel<scalar_t, 256><<<grid, 256, 0, stream>>>(
          x.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), plan.wy.template data_ptr<scalar_t>(),
          plan.wx.template data_ptr<scalar_t>(), plan.geometry, static_cast<int>(B),
          static_cast<int>(C), static_cast<int>(kk.size(0)), grad.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
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

TORCH_LIBRARY_IMPL(fastdeblur, CUDA, m) {
  namespace entry = fastdeblur::pc_conv_entry;
  m.impl("pc_conv", &entry::forward<fastdeblur::Impl>);
  m.impl("pc_conv_adjoint", &entry::adjoint<fastdeblur::Impl>);
  m.impl("_pc_conv_backward", &entry::backward<fastdeblur::Impl>);
}

// CUDA glue of fastdeblur::grnn and fastdeblur::_grnn_backward.
//
// Forward: the flash-style kernels of kernels/cuda/grnn.cuh (tensor cores for half/bfloat16
// on sm_80+, CUDA cores otherwise). Backward: query chunks of the recomputed logits go
// through cuBLAS GEMMs and the elementwise grnn_backward_tile kernel, so memory stays at
// O(chunk x M) while the work is GEMM-bound.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <tuple>

#include "checks.h"
#include "common.h"
#include "cuda/grnn.cuh"

namespace fastdeblur {
namespace {

namespace KC = kernels::grnn_cuda;

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double sigma,
                  bool exclude_self) {
  checks::grnn_inputs(q, k, v, sigma, exclude_self);
  TORCH_CHECK(q.is_cuda(), "grnn: queries, keys and values must be CUDA tensors");
}

at::ScalarType compute_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

bool has_tensor_cores(int device) {
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  return major >= 8;
}

int sm_count(int device) {
  int count = 1;
  cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
  return count;
}

// Split-K launch of the SIMT kernel: few query blocks (small N) would leave SMs idle.
template <typename T, typename Acc, int PCHUNK>
cudaError_t launch_simt_split(const at::Tensor& q, const T* qp, const T* kp, const T* vp,
                              const Acc* hp, T* op, Acc* lp, int64_t n, int64_t m, int64_t dim,
                              int64_t p, Acc scale, bool exclude_self, cudaStream_t stream) {
  const int splits = KC::simt_key_splits(n, m, p, PCHUNK, sm_count(q.get_device()));
  const int64_t elems = KC::simt_workspace_elems(splits, n, p);
  at::Tensor workspace = at::empty({std::max<int64_t>(elems, 1)},
                                   q.options().dtype(c10::CppTypeToScalarType<Acc>::value));
  return KC::launch_forward_simt<T, Acc, PCHUNK>(qp, kp, vp, hp, op, lp, n, m, dim, p, scale,
                                                 exclude_self, splits,
                                                 workspace.data_ptr<Acc>(), stream);
}

template <typename T, typename Acc>
void launch_simt(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const at::Tensor& half_norm, at::Tensor& out, at::Tensor& lse, double sigma,
                 bool exclude_self, cudaStream_t stream) {
  const int64_t n = q.size(0), m = k.size(0), dim = q.size(1), p = v.size(1);
  const Acc scale = static_cast<Acc>(1.0 / (sigma * sigma));
  const T* qp = reinterpret_cast<const T*>(q.data_ptr());
  const T* kp = reinterpret_cast<const T*>(k.data_ptr());
  const T* vp = reinterpret_cast<const T*>(v.data_ptr());
  T* op = reinterpret_cast<T*>(out.data_ptr());
  const Acc* hp = half_norm.data_ptr<Acc>();
  Acc* lp = lse.data_ptr<Acc>();
  cudaError_t err;
  if (p <= 1) {
    err = launch_simt_split<T, Acc, 1>(q, qp, kp, vp, hp, op, lp, n, m, dim, p, scale,
                                       exclude_self, stream);
  } else if (p <= 4) {
    err = launch_simt_split<T, Acc, 4>(q, qp, kp, vp, hp, op, lp, n, m, dim, p, scale,
                                       exclude_self, stream);
  } else {
    err = launch_simt_split<T, Acc, 16>(q, qp, kp, vp, hp, op, lp, n, m, dim, p, scale,
                                        exclude_self, stream);
  }
  TORCH_CHECK(err == cudaSuccess, "grnn: CUDA launch failed: ", cudaGetErrorString(err));
}

template <typename T>
void launch_wmma(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const at::Tensor& half_norm, at::Tensor& out, at::Tensor& lse, double sigma,
                 bool exclude_self, cudaStream_t stream) {
  const int64_t n = q.size(0), m = k.size(0), dim = q.size(1), p = v.size(1);
  const float scale = static_cast<float>(1.0 / (sigma * sigma));
  const T* qp = reinterpret_cast<const T*>(q.data_ptr());
  const T* kp = reinterpret_cast<const T*>(k.data_ptr());
  const T* vp = reinterpret_cast<const T*>(v.data_ptr());
  T* op = reinterpret_cast<T*>(out.data_ptr());
  const float* hp = half_norm.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  cudaError_t err;
  if (p <= 16) {
    err = KC::launch_forward_wmma<T, 1>(qp, kp, vp, hp, op, lp, n, m, dim, p, scale,
                                        exclude_self, stream);
  } else if (p <= 32) {
    err = KC::launch_forward_wmma<T, 2>(qp, kp, vp, hp, op, lp, n, m, dim, p, scale,
                                        exclude_self, stream);
  } else {
    err = KC::launch_forward_wmma<T, 4>(qp, kp, vp, hp, op, lp, n, m, dim, p, scale,
                                        exclude_self, stream);
  }
  TORCH_CHECK(err == cudaSuccess, "grnn: CUDA launch failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> grnn_cuda(const at::Tensor& queries, const at::Tensor& keys,
                                             const at::Tensor& values, double sigma,
                                             bool exclude_self) {
  check_inputs(queries, keys, values, sigma, exclude_self);
  const c10::cuda::CUDAGuard guard(queries.device());
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  const at::Tensor q = queries.detach().contiguous(), k = keys.detach().contiguous();
  const at::Tensor v = values.detach().contiguous();
  const at::ScalarType ct = compute_type(q.scalar_type());
  const int64_t n = q.size(0), p = v.size(1);
  at::Tensor out = alloc_output({n, p}, q.options());
  at::Tensor lse = alloc_output({n}, q.options().dtype(ct));
  if (n == 0) return {out, lse};
  const at::Tensor half_norm = k.to(ct).square().sum(1).mul_(0.5).contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool tensor_cores = has_tensor_cores(q.get_device());
  switch (q.scalar_type()) {
    case at::kFloat:
      launch_simt<float, float>(q, k, v, half_norm, out, lse, sigma, exclude_self, stream);
      break;
    case at::kDouble:
      launch_simt<double, double>(q, k, v, half_norm, out, lse, sigma, exclude_self, stream);
      break;
    case at::kHalf:
      if (tensor_cores) {
        launch_wmma<__half>(q, k, v, half_norm, out, lse, sigma, exclude_self, stream);
      } else {
        launch_simt<__half, float>(q, k, v, half_norm, out, lse, sigma, exclude_self, stream);
      }
      break;
    case at::kBFloat16:
      if (tensor_cores) {
        launch_wmma<__nv_bfloat16>(q, k, v, half_norm, out, lse, sigma, exclude_self, stream);
      } else {
        launch_simt<__nv_bfloat16, float>(q, k, v, half_norm, out, lse, sigma, exclude_self,
                                          stream);
      }
      break;
    default:
      TORCH_CHECK(false, "grnn: unsupported dtype ", q.scalar_type());
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> grnn_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& queries, const at::Tensor& keys,
    const at::Tensor& values, const at::Tensor& out, const at::Tensor& lse, double sigma,
    bool exclude_self, std::array<bool, 3> output_mask) {
  check_inputs(queries, keys, values, sigma, exclude_self);
  checks::grnn_backward(grad_out, out, lse, queries.size(0));
  const c10::cuda::CUDAGuard guard(queries.device());
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  const at::ScalarType in_type = queries.scalar_type();
  const at::ScalarType ct = compute_type(in_type);
  // The GEMMs run in the compute type (fp32 / fp64): gradients need the accuracy.
  const at::Tensor q = queries.detach().to(ct).contiguous();
  const at::Tensor k = keys.detach().to(ct).contiguous();
  const at::Tensor v = values.detach().to(ct).contiguous();
  const at::Tensor go = grad_out.detach().to(ct).contiguous();
  const at::Tensor l = lse.detach().to(ct).contiguous();
  const at::Tensor half_norm = k.square().sum(1).mul_(0.5).contiguous();
  const at::Tensor delta = (go * out.detach().to(ct)).sum(1).contiguous();
  const int64_t n = q.size(0), m = k.size(0);
  const double scale = 1.0 / (sigma * sigma);
  at::Tensor gq = output_mask[0] ? alloc_output(q.sizes(), q.options()) : at::Tensor();
  at::Tensor gk = output_mask[1] ? at::zeros(k.sizes(), k.options()) : at::Tensor();
  at::Tensor gv = output_mask[2] ? at::zeros(v.sizes(), v.options()) : at::Tensor();
  at::Tensor colsum = at::zeros({m}, k.options());
  // Two (chunk x M) buffers of at most ~256 MiB each.
  const int64_t elem = ct == at::kDouble ? 8 : 4;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t(1) << 28) / (elem * m)));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t q0 = 0; q0 < n; q0 += chunk) {
    const int64_t rows = std::min(chunk, n - q0);
    const at::Tensor qc = q.narrow(0, q0, rows), gc = go.narrow(0, q0, rows);
    at::Tensor s = at::mm(qc, k.t());
    at::Tensor ds = at::mm(gc, v.t());
    cudaError_t err;
    if (ct == at::kDouble) {
      err = KC::launch_backward_tile<double>(s.data_ptr<double>(), ds.data_ptr<double>(),
                                             half_norm.data_ptr<double>(), l.data_ptr<double>(),
                                             delta.data_ptr<double>(), rows, m, q0, scale,
                                             exclude_self, stream);
    } else {
      err = KC::launch_backward_tile<float>(s.data_ptr<float>(), ds.data_ptr<float>(),
                                            half_norm.data_ptr<float>(), l.data_ptr<float>(),
                                            delta.data_ptr<float>(), rows, m, q0,
                                            static_cast<float>(scale), exclude_self, stream);
    }
    TORCH_CHECK(err == cudaSuccess, "grnn backward: CUDA launch failed: ",
                cudaGetErrorString(err));
    if (gq.defined()) {
      at::Tensor gq_rows = gq.narrow(0, q0, rows);
      at::mm_out(gq_rows, ds, k).mul_(scale);
    }
    if (gk.defined()) {
      gk.addmm_(ds.t(), qc, 1, scale);
      colsum.add_(ds.sum(0));
    }
    if (gv.defined()) gv.addmm_(s.t(), gc);
  }
  if (gk.defined()) gk.sub_(colsum.unsqueeze(1) * k, scale);
  auto finish = [&](const at::Tensor& g) {
    return g.defined() ? g.to(in_type) : at::empty({0}, queries.options());
  };
  return {finish(gq), finish(gk), finish(gv)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdeblur, CUDA, m) {
  m.impl("grnn", &grnn_cuda);
  m.impl("_grnn_backward", &grnn_backward_cuda);
}

}  // namespace fastdeblur

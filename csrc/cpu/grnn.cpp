// CPU glue of fastdeblur::grnn and fastdeblur::_grnn_backward.
//
// Tiling: query blocks of kQueryBlock rows run in parallel (at::parallel_for); each walks the
// keys in tiles of kKeyBlock, computes the tile's dot products with a BLAS GEMM (at::mm_out on
// contiguous per-thread buffers) and hands the tile to the online-softmax update of
// kernels/cpu/grnn.h. Only a kQueryBlock x kKeyBlock tile per thread is ever stored.
// Half and bfloat16 inputs run in float (logits and sums are float in any case).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>

#include "common.h"
#include "cpu/grnn.h"

namespace fastdeblur {
namespace {

namespace K = kernels::grnn;

// Values at most this wide are accumulated by the kernel's fused dot products; wider ones
// by a GEMM per tile.
constexpr int64_t kFusedValueWidth = 16;
constexpr int64_t kBackwardQueryBlock = 128;
constexpr int64_t kBackwardKeyBlock = 512;

// Rows per parallel task: big enough for an efficient GEMM, small enough that every
// thread gets work.
int64_t query_block(int64_t n) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t per_thread = (n + threads - 1) / threads;
  return std::clamp<int64_t>(per_thread, 16, 256);
}

// Keys per tile: the tile of logits (query_block x key_block) should stay in L2.
int64_t key_block(int64_t dim) { return dim <= 256 ? 1024 : 512; }

// A (rows, cols) row-major view of the first rows*cols elements of a flat buffer.
at::Tensor tile_view(const at::Tensor& flat, int64_t rows, int64_t cols) {
  return flat.narrow(0, 0, rows * cols).view({rows, cols});
}

template <typename scalar_t>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double sigma,
                  bool exclude_self, const at::Tensor& out, const at::Tensor& lse) {
  const int64_t n = q.size(0), m = k.size(0), dim = q.size(1), p = v.size(1);
  const scalar_t scale = static_cast<scalar_t>(1.0 / (sigma * sigma));
  const auto opts = q.options();

  at::Tensor half_norm = at::empty({m}, opts);
  {
    const scalar_t* kp = k.data_ptr<scalar_t>();
    scalar_t* hp = half_norm.data_ptr<scalar_t>();
    at::parallel_for(0, m, 1024, [&](int64_t b, int64_t e) {
      K::half_squared_norms(kp + b * dim, e - b, dim, dim, hp + b);
    });
  }
  const bool fused_values = p <= kFusedValueWidth;
  // Narrow values as (p, M) rows: the kernel's dot products then read contiguous memory.
  const at::Tensor values_t = fused_values ? v.t().contiguous() : at::Tensor();

  const int64_t qb = query_block(n);
  const int64_t kb = std::min(key_block(dim), m);
  const int64_t n_blocks = (n + qb - 1) / qb;
  at::parallel_for(0, n_blocks, 1, [&](int64_t b_begin, int64_t b_end) {
    at::Tensor logits = at::empty({qb * kb}, opts);
    at::Tensor state = at::empty({qb * (2 + p)}, opts);
    scalar_t* sp = state.data_ptr<scalar_t>();
    K::OnlineState<scalar_t> st{sp, sp + qb, sp + 2 * qb, p};
    at::Tensor acc = state.narrow(0, 2 * qb, qb * p);
    for (int64_t blk = b_begin; blk < b_end; ++blk) {
      const int64_t q0 = blk * qb;
      const int64_t rows = std::min(qb, n - q0);
      const at::Tensor q_blk = q.narrow(0, q0, rows);
      at::Tensor acc_blk = tile_view(acc, rows, p);
      K::online_init(st, rows, p);
      for (int64_t k0 = 0; k0 < m; k0 += kb) {
        const int64_t cols = std::min(kb, m - k0);
        at::Tensor s = tile_view(logits, rows, cols);
        at::mm_out(s, q_blk, k.narrow(0, k0, cols).t());
        K::online_tile<scalar_t>(
            s.data_ptr<scalar_t>(), cols, rows, cols, half_norm.data_ptr<scalar_t>() + k0, scale,
            exclude_self, q0 - k0, st, p,
            fused_values ? values_t.data_ptr<scalar_t>() + k0 : nullptr, m);
        if (!fused_values) acc_blk.addmm_(s, v.narrow(0, k0, cols));
      }
      K::online_finish(st, rows, p, out.data_ptr<scalar_t>() + q0 * p, p,
                       lse.data_ptr<scalar_t>() + q0);
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse, double sigma,
                   bool exclude_self, const at::Tensor& grad_q, const at::Tensor& grad_k,
                   const at::Tensor& grad_v) {
  const int64_t n = q.size(0), m = k.size(0);
  const scalar_t scale = static_cast<scalar_t>(1.0 / (sigma * sigma));
  const auto opts = q.options();
  const at::Tensor half_norm = (k * k).sum(1).mul_(0.5).contiguous();
  const at::Tensor delta = (grad_out * out).sum(1).contiguous();  // (N,) dO . out
  const scalar_t* hp = half_norm.data_ptr<scalar_t>();
  const scalar_t* lp = lse.data_ptr<scalar_t>();
  const scalar_t* dp = delta.data_ptr<scalar_t>();
  const int64_t qb = kBackwardQueryBlock, kb = kBackwardKeyBlock;

  // Recomputes P and dS of the tile (queries [q0, q0+rows), keys [k0, k0+cols)).
  auto tile = [&](at::Tensor& s, at::Tensor& ds, int64_t q0, int64_t rows, int64_t k0,
                  int64_t cols) {
    at::mm_out(s, q.narrow(0, q0, rows), k.narrow(0, k0, cols).t());
    at::mm_out(ds, grad_out.narrow(0, q0, rows), v.narrow(0, k0, cols).t());
    K::backward_tile<scalar_t>(s.data_ptr<scalar_t>(), cols, ds.data_ptr<scalar_t>(), cols, rows,
                               cols, hp + k0, scale, exclude_self, q0 - k0, lp + q0, dp + q0);
  };

  if (grad_q.defined()) {  // row pass: grad_q = scale * dS @ K
    const int64_t n_blocks = (n + qb - 1) / qb;
    at::parallel_for(0, n_blocks, 1, [&](int64_t b_begin, int64_t b_end) {
      at::Tensor s_buf = at::empty({qb * kb}, opts), ds_buf = at::empty({qb * kb}, opts);
      for (int64_t blk = b_begin; blk < b_end; ++blk) {
        const int64_t q0 = blk * qb, rows = std::min(qb, n - q0);
        at::Tensor gq = grad_q.narrow(0, q0, rows);
        gq.zero_();
        for (int64_t k0 = 0; k0 < m; k0 += kb) {
          const int64_t cols = std::min(kb, m - k0);
          at::Tensor s = tile_view(s_buf, rows, cols), ds = tile_view(ds_buf, rows, cols);
          tile(s, ds, q0, rows, k0, cols);
          gq.addmm_(ds, k.narrow(0, k0, cols), 1, scale);
        }
      }
    });
  }
  if (grad_k.defined() || grad_v.defined()) {  // column pass over key blocks
    const int64_t n_blocks = (m + kb - 1) / kb;
    at::parallel_for(0, n_blocks, 1, [&](int64_t b_begin, int64_t b_end) {
      at::Tensor s_buf = at::empty({qb * kb}, opts), ds_buf = at::empty({qb * kb}, opts);
      at::Tensor colsum = at::empty({kb}, opts);
      for (int64_t blk = b_begin; blk < b_end; ++blk) {
        const int64_t k0 = blk * kb, cols = std::min(kb, m - k0);
        at::Tensor gk = grad_k.defined() ? grad_k.narrow(0, k0, cols) : at::Tensor();
        at::Tensor gv = grad_v.defined() ? grad_v.narrow(0, k0, cols) : at::Tensor();
        if (gk.defined()) gk.zero_();
        if (gv.defined()) gv.zero_();
        colsum.zero_();
        for (int64_t q0 = 0; q0 < n; q0 += qb) {
          const int64_t rows = std::min(qb, n - q0);
          at::Tensor s = tile_view(s_buf, rows, cols), ds = tile_view(ds_buf, rows, cols);
          tile(s, ds, q0, rows, k0, cols);
          if (gv.defined()) gv.addmm_(s.t(), grad_out.narrow(0, q0, rows));
          if (gk.defined()) {
            gk.addmm_(ds.t(), q.narrow(0, q0, rows), 1, scale);
            K::add_column_sums(ds.data_ptr<scalar_t>(), cols, rows, cols,
                               colsum.data_ptr<scalar_t>());
          }
        }
        // d/dk of -scale |k|^2 / 2 summed over queries: -scale * colsum(dS) * k.
        if (gk.defined()) {
          gk.sub_(colsum.narrow(0, 0, cols).unsqueeze(1) * k.narrow(0, k0, cols), scale);
        }
      }
    });
  }
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double sigma,
                  bool exclude_self) {
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
  TORCH_CHECK(std::isfinite(sigma) && sigma > 0, "grnn: sigma must be positive and finite, got ",
              sigma);
  TORCH_CHECK(!exclude_self || (q.size(0) == k.size(0) && k.size(0) >= 2),
              "grnn: exclude_self needs as many queries as keys and at least 2 keys, got N=",
              q.size(0), ", M=", k.size(0));
}

at::ScalarType compute_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor> grnn_cpu(const at::Tensor& queries, const at::Tensor& keys,
                                            const at::Tensor& values, double sigma,
                                            bool exclude_self) {
  check_inputs(queries, keys, values, sigma, exclude_self);
  // The BLAS tiles below are internal: keep autograd out of them.
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  const at::ScalarType ct = compute_type(queries.scalar_type());
  // Detached: worker threads of at::parallel_for do not inherit the guard above.
  const at::Tensor q = queries.detach().to(ct).contiguous();
  const at::Tensor k = keys.detach().to(ct).contiguous();
  const at::Tensor v = values.detach().to(ct).contiguous();
  const int64_t n = q.size(0), p = v.size(1);
  at::Tensor out = alloc_output({n, p}, q.options());
  at::Tensor lse = alloc_output({n}, q.options());
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "grnn_cpu", [&] {
      forward_impl<scalar_t>(q, k, v, sigma, exclude_self, out, lse);
    });
  }
  return {out.to(queries.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> grnn_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& queries, const at::Tensor& keys,
    const at::Tensor& values, const at::Tensor& out, const at::Tensor& lse, double sigma,
    bool exclude_self, std::array<bool, 3> output_mask) {
  check_inputs(queries, keys, values, sigma, exclude_self);
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  TORCH_CHECK(grad_out.sizes() == out.sizes(), "grnn backward: grad_out must have shape ",
              out.sizes(), ", got ", grad_out.sizes());
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == queries.size(0),
              "grnn backward: lse must be (N,), got ", lse.sizes());
  const at::ScalarType in_type = queries.scalar_type();
  const at::ScalarType ct = compute_type(in_type);
  const at::Tensor q = queries.detach().to(ct).contiguous();
  const at::Tensor k = keys.detach().to(ct).contiguous();
  const at::Tensor v = values.detach().to(ct).contiguous();
  const at::Tensor go = grad_out.detach().to(ct).contiguous();
  const at::Tensor o = out.detach().to(ct).contiguous();
  const at::Tensor l = lse.detach().to(ct).contiguous();
  const auto opts = q.options();
  at::Tensor gq = output_mask[0] ? alloc_output(q.sizes(), opts) : at::Tensor();
  at::Tensor gk = output_mask[1] ? alloc_output(k.sizes(), opts) : at::Tensor();
  at::Tensor gv = output_mask[2] ? alloc_output(v.sizes(), opts) : at::Tensor();
  // N = 0: no query contributes; the key gradients are zero.
  if (q.size(0) == 0) {
    if (gk.defined()) gk.zero_();
    if (gv.defined()) gv.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES(ct, "grnn_backward_cpu", [&] {
      backward_impl<scalar_t>(go, q, k, v, o, l, sigma, exclude_self, gq, gk, gv);
    });
  }
  // Gradients that were not asked for come back empty (0 elements).
  auto finish = [&](const at::Tensor& g) {
    return g.defined() ? g.to(in_type) : at::empty({0}, queries.options());
  };
  return {finish(gq), finish(gk), finish(gv)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) {
  m.impl("grnn", &grnn_cpu);
  m.impl("_grnn_backward", &grnn_backward_cpu);
}

}  // namespace fastdeblur

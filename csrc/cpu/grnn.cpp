// CPU glue of fastdeblur::grnn and fastdeblur::_grnn_backward.
//
// Tiling: query blocks of query_block() rows run in parallel (at::parallel_for); each walks
// the keys in tiles of key_block(), computes the tile's dot products with a BLAS GEMM
// (at::mm_out into a per-thread buffer) and hands the tile to the online-softmax update of
// kernels/cpu/grnn.h. Only one query_block x key_block tile per thread is ever stored.
// Half and bfloat16 inputs run in float (logits and sums are float in any case).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>

#include "checks.h"
#include "common.h"
#include "cpu/grnn.h"

namespace fastdeblur {
namespace {

namespace K = kernels::grnn;

// Values at most this wide are accumulated by the kernel's fused dot products; wider ones
// by a GEMM per tile.
constexpr int64_t kFusedValueWidth = 16;

// Rows per parallel task: big enough for an efficient GEMM, small enough that every
// thread gets work.
int64_t query_block(int64_t n) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t per_thread = (n + threads - 1) / threads;
  return std::clamp<int64_t>(per_thread, 16, 256);
}

// Keys per tile: a 256 x 1024 fp32 tile of logits (1 MiB) stays in L2 while the BLAS calls
// stay large enough to run near peak (on a shared 2-core machine, 256- and 512-key tiles
// were slower at d = 1024; the timings were noisy, so this is a sensible default rather
// than a tuned optimum).
int64_t key_block() { return 1024; }

// Keys per parallel task of the backward's column pass (same idea as query_block).
int64_t backward_key_block(int64_t m) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::clamp<int64_t>((m + threads - 1) / threads, 16, key_block());
}

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
  const int64_t kb = std::min(key_block(), m);
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
                   bool exclude_self, at::Tensor& grad_q, at::Tensor& grad_k,
                   at::Tensor& grad_v) {
  const int64_t n = q.size(0), m = k.size(0);
  const scalar_t scale = static_cast<scalar_t>(1.0 / (sigma * sigma));
  const auto opts = q.options();
  const at::Tensor half_norm = (k * k).sum(1).mul_(0.5).contiguous();
  const at::Tensor delta = (grad_out * out).sum(1).contiguous();  // (N,) dO . out
  const scalar_t* hp = half_norm.data_ptr<scalar_t>();
  const scalar_t* lp = lse.data_ptr<scalar_t>();
  const scalar_t* dp = delta.data_ptr<scalar_t>();
  // Row pass tiles: query_block(n) x key_block(); column pass tiles: qb x
  // backward_key_block(m), the keys being what is split over threads there.
  const int64_t qb = 256;
  const int64_t kb = key_block();
  const int64_t row_qb = query_block(n), col_kb = backward_key_block(m);

  // Recomputes P and dS of the tile (queries [q0, q0+rows), keys [k0, k0+cols)).
  auto tile = [&](at::Tensor& s, at::Tensor& ds, int64_t q0, int64_t rows, int64_t k0,
                  int64_t cols) {
    at::mm_out(s, q.narrow(0, q0, rows), k.narrow(0, k0, cols).t());
    at::mm_out(ds, grad_out.narrow(0, q0, rows), v.narrow(0, k0, cols).t());
    K::backward_tile<scalar_t>(s.data_ptr<scalar_t>(), cols, ds.data_ptr<scalar_t>(), cols, rows,
                               cols, hp + k0, scale, exclude_self, q0 - k0, lp + q0, dp + q0);
  };

  const int64_t dim = q.size(1), p = v.size(1);
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const bool want_cols = grad_k.defined() || grad_v.defined();
  // One pass for everything when per-thread key-side accumulators fit in 256 MiB: the tiles
  // are then recomputed once instead of twice.
  const bool one_pass = grad_q.defined() && want_cols &&
                        threads * m * (dim + p + 1) * static_cast<int64_t>(sizeof(scalar_t)) <=
                            (int64_t(1) << 28);
  if (grad_q.defined()) {  // row pass: grad_q = scale * dS @ K (and key-side partials)
    at::Tensor gk_part, gv_part, colsum_part;
    if (one_pass) {
      if (grad_k.defined()) {
        gk_part = at::zeros({threads, m, dim}, opts);
        colsum_part = at::zeros({threads, m}, opts);
      }
      if (grad_v.defined()) gv_part = at::zeros({threads, m, p}, opts);
    }
    const int64_t n_blocks = (n + row_qb - 1) / row_qb;
    at::parallel_for(0, n_blocks, 1, [&](int64_t b_begin, int64_t b_end) {
      const int64_t tid = at::get_thread_num();
      at::Tensor s_buf = at::empty({row_qb * kb}, opts), ds_buf = at::empty({row_qb * kb}, opts);
      for (int64_t blk = b_begin; blk < b_end; ++blk) {
        const int64_t q0 = blk * row_qb, rows = std::min(row_qb, n - q0);
        at::Tensor gq = grad_q.narrow(0, q0, rows);
        gq.zero_();
        for (int64_t k0 = 0; k0 < m; k0 += kb) {
          const int64_t cols = std::min(kb, m - k0);
          at::Tensor s = tile_view(s_buf, rows, cols), ds = tile_view(ds_buf, rows, cols);
          tile(s, ds, q0, rows, k0, cols);
          gq.addmm_(ds, k.narrow(0, k0, cols), 1, scale);
          if (gv_part.defined()) {
            gv_part[tid].narrow(0, k0, cols).addmm_(s.t(), grad_out.narrow(0, q0, rows));
          }
          if (gk_part.defined()) {
            gk_part[tid].narrow(0, k0, cols).addmm_(ds.t(), q.narrow(0, q0, rows), 1, scale);
            K::add_column_sums(ds.data_ptr<scalar_t>(), cols, rows, cols,
                               colsum_part[tid].data_ptr<scalar_t>() + k0);
          }
        }
      }
    });
    if (one_pass) {
      if (grad_k.defined()) {
        // d/dk of -scale |k|^2 / 2 summed over queries: -scale * colsum(dS) * k.
        at::sum_out(grad_k, gk_part, {0});
        grad_k.sub_(colsum_part.sum(0).unsqueeze(1) * k, scale);
      }
      if (grad_v.defined()) at::sum_out(grad_v, gv_part, {0});
      return;
    }
  }
  if (grad_k.defined() || grad_v.defined()) {  // column pass over key blocks
    const int64_t n_blocks = (m + col_kb - 1) / col_kb;
    at::parallel_for(0, n_blocks, 1, [&](int64_t b_begin, int64_t b_end) {
      at::Tensor s_buf = at::empty({qb * col_kb}, opts), ds_buf = at::empty({qb * col_kb}, opts);
      at::Tensor colsum = at::empty({col_kb}, opts);
      for (int64_t blk = b_begin; blk < b_end; ++blk) {
        const int64_t k0 = blk * col_kb, cols = std::min(col_kb, m - k0);
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

at::ScalarType compute_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor> grnn_cpu(const at::Tensor& queries, const at::Tensor& keys,
                                            const at::Tensor& values, double sigma,
                                            bool exclude_self) {
  checks::grnn_inputs(queries, keys, values, sigma, exclude_self);
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
  checks::grnn_inputs(queries, keys, values, sigma, exclude_self);
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  checks::grnn_backward(grad_out, out, lse, queries.size(0));
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

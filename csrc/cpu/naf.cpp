// CPU implementation of the fused NAF block: channels-last activations viewed as
// (pixels, channels) matrices, 1x1 convolutions as GEMMs (at::addmm / at::baddbmm), and
// everything between the GEMMs in the fused loops of kernels/cpu/naf.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common.h"
#include "cpu/naf.h"

namespace fastdeblur {
namespace {

namespace k = fastdeblur::cpu::naf;

constexpr int64_t kPixelGrain = 2048;  // pixel rows per parallel task
constexpr int64_t kMaxChunks = 64;     // reduction chunks (fixed: deterministic sums)
// Pixels of a band of the banded forward: the band's widest intermediate (2C values a
// pixel) stays around 1 MiB of fp32, within a core's L2.
inline int64_t band_pixels(int64_t C) { return std::max<int64_t>(256, (int64_t(1) << 17) / C); }

// Splits [0, total) into a number of chunks that depends only on `total`, runs
// f(chunk, begin, end) on them in parallel.
template <typename F>
int64_t for_chunks(int64_t total, int64_t min_chunk, const F& f) {
  const int64_t nchunks = std::clamp<int64_t>((total + min_chunk - 1) / min_chunk, 1, kMaxChunks);
  const int64_t size = (total + nchunks - 1) / nchunks;
  at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i, std::min(total, i * size), std::min(total, (i + 1) * size));
  });
  return nchunks;
}

int64_t reduction_chunks(int64_t total, int64_t min_chunk) {
  return std::clamp<int64_t>((total + min_chunk - 1) / min_chunk, 1, kMaxChunks);
}

struct Params {
  at::Tensor n1w, n1b, W1, b1, wt, b2, Wsca, bsca, W3, b3, beta, n2w, n2b, W4, b4, W5, b5, gamma;
};

// Activations of one forward pass, all (pixels, channels) matrices unless noted.
struct Acts {
  int64_t N, C, H, W, P;
  at::Tensor x, xn1, mean1, rstd1, z, g, pooled /*(N,C)*/, s /*(N,C)*/, t, y, yn, mean2, rstd2, v,
      h, f;
};

void check_param(const at::Tensor& p, const char* name, at::IntArrayRef sizes,
                 const at::Tensor& x) {
  TORCH_CHECK(p.device() == x.device(), "naf_block: ", name, " must be on ", x.device(),
              ", got ", p.device());
  TORCH_CHECK(p.scalar_type() == x.scalar_type(), "naf_block: ", name, " must have dtype ",
              x.scalar_type(), " like x, got ", p.scalar_type());
  TORCH_CHECK(p.numel() == c10::multiply_integers(sizes), "naf_block: ", name,
              " must have shape ", sizes, " (or that many elements), got ", p.sizes());
}

Params make_params(const at::Tensor& x, const at::Tensor& n1w, const at::Tensor& n1b,
                   const at::Tensor& c1w, const at::Tensor& c1b, const at::Tensor& c2w,
                   const at::Tensor& c2b, const at::Tensor& scaw, const at::Tensor& scab,
                   const at::Tensor& c3w, const at::Tensor& c3b, const at::Tensor& beta,
                   const at::Tensor& n2w, const at::Tensor& n2b, const at::Tensor& c4w,
                   const at::Tensor& c4b, const at::Tensor& c5w, const at::Tensor& c5b,
                   const at::Tensor& gamma) {
  TORCH_CHECK(x.dim() == 4, "naf_block: x must be (B, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "naf_block: x must be float32 or float64 on the CPU, got ", x.scalar_type());
  const int64_t C = x.size(1);
  check_param(n1w, "norm1_weight", {C}, x);
  check_param(n1b, "norm1_bias", {C}, x);
  check_param(c1w, "conv1_weight", {2 * C, C}, x);
  check_param(c1b, "conv1_bias", {2 * C}, x);
  check_param(c2w, "conv2_weight", {2 * C, 9}, x);
  check_param(c2b, "conv2_bias", {2 * C}, x);
  check_param(scaw, "sca_weight", {C, C}, x);
  check_param(scab, "sca_bias", {C}, x);
  check_param(c3w, "conv3_weight", {C, C}, x);
  check_param(c3b, "conv3_bias", {C}, x);
  check_param(beta, "beta", {C}, x);
  check_param(n2w, "norm2_weight", {C}, x);
  check_param(n2b, "norm2_bias", {C}, x);
  check_param(c4w, "conv4_weight", {2 * C, C}, x);
  check_param(c4b, "conv4_bias", {2 * C}, x);
  check_param(c5w, "conv5_weight", {C, C}, x);
  check_param(c5b, "conv5_bias", {C}, x);
  check_param(gamma, "gamma", {C}, x);
  Params p;
  auto vec = [](const at::Tensor& t) { return t.reshape({-1}).contiguous(); };
  auto mat = [](const at::Tensor& t, int64_t rows) { return t.reshape({rows, -1}).contiguous(); };
  p.n1w = vec(n1w);
  p.n1b = vec(n1b);
  p.W1 = mat(c1w, 2 * C);
  p.b1 = vec(c1b);
  p.wt = mat(c2w, 2 * C).t().contiguous();  // (9, 2C), tap-major
  p.b2 = vec(c2b);
  p.Wsca = mat(scaw, C);
  p.bsca = vec(scab);
  p.W3 = mat(c3w, C);
  p.b3 = vec(c3b);
  p.beta = vec(beta);
  p.n2w = vec(n2w);
  p.n2b = vec(n2b);
  p.W4 = mat(c4w, 2 * C);
  p.b4 = vec(c4b);
  p.W5 = mat(c5w, C);
  p.b5 = vec(c5b);
  p.gamma = vec(gamma);
  return p;
}

// (B, C, H, W) in any layout -> (B*H*W, C) rows of a channels-last copy (a view when the
// input already is channels-last).
at::Tensor pixel_rows(const at::Tensor& t) {
  const auto cl = t.contiguous(at::MemoryFormat::ChannelsLast);
  return cl.permute({0, 2, 3, 1}).reshape({-1, t.size(1)});
}

// The whole forward on whole-image matrices, keeping every intermediate; with
// head_only, stops after the channel attention (x, xn1, mean1, rstd1, z, g, pooled, s).
template <typename T>
Acts forward_impl(const at::Tensor& x4, const Params& p, double eps_d, bool head_only = false) {
  Acts a;
  a.N = x4.size(0);
  a.C = x4.size(1);
  a.H = x4.size(2);
  a.W = x4.size(3);
  a.P = a.N * a.H * a.W;
  const int64_t C = a.C, H = a.H, W = a.W, P = a.P, N = a.N;
  const T eps = static_cast<T>(eps_d);
  const auto opts = x4.options();
  a.x = pixel_rows(x4);

  // LN1
  a.xn1 = at::empty({P, C}, opts);
  a.mean1 = at::empty({P}, opts);
  a.rstd1 = at::empty({P}, opts);
  at::parallel_for(0, P, kPixelGrain, [&](int64_t b, int64_t e) {
    k::layer_norm_rows<T>(a.x.data_ptr<T>(), p.n1w.data_ptr<T>(), p.n1b.data_ptr<T>(),
                          a.xn1.data_ptr<T>(), a.mean1.data_ptr<T>(), a.rstd1.data_ptr<T>(), b, e,
                          C, eps);
  });
  // conv1 (C -> 2C)
  a.z = at::mm(a.xn1, p.W1.t());  // + b1, folded into the consumers
  // depthwise 3x3 + SimpleGate, row sums for the pool
  a.g = at::empty({P, C}, opts);
  at::Tensor rowsum = at::empty({N * H, C}, opts);
  at::parallel_for(0, N * H, std::max<int64_t>(1, kPixelGrain / std::max<int64_t>(W, 1)),
                   [&](int64_t b, int64_t e) {
                     k::dwconv_gate_rows<T>(a.z.data_ptr<T>(), p.b1.data_ptr<T>(),
                                            p.wt.data_ptr<T>(),
                                            p.b2.data_ptr<T>(), a.g.data_ptr<T>(),
                                            rowsum.data_ptr<T>(), b, e, H, W, C);
                   });
  // simplified channel attention, folded into conv3's weights per image:
  // conv3(g * s) = g @ (W3 * s)^T + b3
  a.pooled = rowsum.view({N, H, C}).sum(1) / static_cast<double>(H * W);
  a.s = at::addmm(p.bsca, a.pooled, p.Wsca.t());
  if (head_only) return a;
  const at::Tensor W3s = p.W3.unsqueeze(0) * a.s.unsqueeze(1);  // (N, C_out, C_in)
  a.t = at::bmm(a.g.view({N, H * W, C}), W3s.transpose(1, 2)).view({P, C});  // + b3
  // y = x + beta * t, LN2
  a.y = at::empty({P, C}, opts);
  a.yn = at::empty({P, C}, opts);
  a.mean2 = at::empty({P}, opts);
  a.rstd2 = at::empty({P}, opts);
  at::parallel_for(0, P, kPixelGrain, [&](int64_t b, int64_t e) {
    k::residual_layer_norm_rows<T>(a.x.data_ptr<T>(), a.t.data_ptr<T>(), p.b3.data_ptr<T>(),
                                   p.beta.data_ptr<T>(),
                                   p.n2w.data_ptr<T>(), p.n2b.data_ptr<T>(), a.y.data_ptr<T>(),
                                   a.yn.data_ptr<T>(), a.mean2.data_ptr<T>(),
                                   a.rstd2.data_ptr<T>(), b, e, C, eps);
  });
  // FFN: conv4 (C -> 2C), SimpleGate, conv5
  a.v = at::mm(a.yn, p.W4.t());  // + b4
  a.h = at::empty({P, C}, opts);
  at::parallel_for(0, P, kPixelGrain, [&](int64_t b, int64_t e) {
    k::gate_rows<T>(a.v.data_ptr<T>(), p.b4.data_ptr<T>(), a.h.data_ptr<T>(), b, e, C);
  });
  a.f = at::mm(a.h, p.W5.t());  // + b5
  return a;
}

// Inference/forward path: the block runs band by band so that every intermediate of a
// band stays in the core's cache; only g (the gated features, needed whole for the
// channel-attention pool) makes a round trip through memory.
//   pass 1, per band of image rows (+1 halo row each side, recomputed): LN1, conv1,
//           depthwise conv + SimpleGate -> g, row sums of g;
//   pass 2, per band of pixels: conv3 with the channel attention folded into its weights,
//           residual, LN2, conv4, SimpleGate, conv5, residual -> out.
template <typename T>
void forward_banded(const at::Tensor& x4, const Params& p, double eps_d, at::Tensor& out) {
  const int64_t N = x4.size(0), C = x4.size(1), H = x4.size(2), W = x4.size(3);
  const int64_t HW = H * W;
  const T eps = static_cast<T>(eps_d);
  const auto opts = x4.options();
  const at::Tensor x = pixel_rows(x4);
  const at::Tensor W1t = p.W1.t(), W4t = p.W4.t(), W5t = p.W5.t();
  const int64_t band_rows = std::max<int64_t>(1, band_pixels(C) / W);
  const int64_t bands_per_image = (H + band_rows - 1) / band_rows;
  at::Tensor g = at::empty({N * HW, C}, opts);
  at::Tensor rowsum = at::empty({N * H, C}, opts);
  at::parallel_for(0, N * bands_per_image, 1, [&](int64_t b, int64_t e) {
    // Worker threads do not inherit the caller's dispatch state: keep the ATen calls
    // below autograd (the parameters require grad; nothing here is differentiated).
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t task = b; task < e; ++task) {
      const int64_t n = task / bands_per_image;
      const int64_t h0 = (task % bands_per_image) * band_rows;
      const int64_t h1 = std::min(H, h0 + band_rows);
      const int64_t zlo = std::max<int64_t>(0, h0 - 1), zhi = std::min(H, h1 + 1);
      const int64_t npx = (zhi - zlo) * W;
      const at::Tensor xb = x.narrow(0, n * HW + zlo * W, npx);
      at::Tensor xn = at::empty({npx, C}, opts);
      at::Tensor stats = at::empty({2, npx}, opts);
      k::layer_norm_rows<T>(xb.data_ptr<T>(), p.n1w.data_ptr<T>(), p.n1b.data_ptr<T>(),
                            xn.data_ptr<T>(), stats.data_ptr<T>(), stats.data_ptr<T>() + npx, 0,
                            npx, C, eps);
      const at::Tensor z = at::mm(xn, W1t);  // + b1, folded into the convolution
      k::dwconv_gate_band<T>(z.data_ptr<T>(), p.b1.data_ptr<T>(), zlo, zhi, p.wt.data_ptr<T>(), p.b2.data_ptr<T>(),
                             g.data_ptr<T>() + (n * HW + h0 * W) * C,
                             rowsum.data_ptr<T>() + (n * H + h0) * C, h0, h1, W, C);
    }
  });
  const at::Tensor pooled = rowsum.view({N, H, C}).sum(1) / static_cast<double>(HW);
  const at::Tensor s = at::addmm(p.bsca, pooled, p.Wsca.t());
  // conv3(g * s) = g @ (W3 * s)^T: one (C_in, C_out) matrix per image
  const at::Tensor W3st = (p.W3.unsqueeze(0) * s.unsqueeze(1)).transpose(1, 2).contiguous();
  const int64_t chunk = band_pixels(C);
  const int64_t chunks_per_image = (HW + chunk - 1) / chunk;
  at::parallel_for(0, N * chunks_per_image, 1, [&](int64_t b, int64_t e) {
    // Worker threads do not inherit the caller's dispatch state: keep the ATen calls
    // below autograd (the parameters require grad; nothing here is differentiated).
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t task = b; task < e; ++task) {
      const int64_t n = task / chunks_per_image;
      const int64_t q0 = (task % chunks_per_image) * chunk;
      const int64_t npx = std::min(HW, q0 + chunk) - q0;
      const int64_t row0 = n * HW + q0;
      const at::Tensor t = at::mm(g.narrow(0, row0, npx), W3st[n]);  // + b3
      at::Tensor y = at::empty({npx, C}, opts);
      at::Tensor yn = at::empty({npx, C}, opts);
      at::Tensor stats = at::empty({2, npx}, opts);
      k::residual_layer_norm_rows<T>(x.data_ptr<T>() + row0 * C, t.data_ptr<T>(),
                                     p.b3.data_ptr<T>(), p.beta.data_ptr<T>(), p.n2w.data_ptr<T>(),
                                     p.n2b.data_ptr<T>(), y.data_ptr<T>(), yn.data_ptr<T>(),
                                     stats.data_ptr<T>(), stats.data_ptr<T>() + npx, 0, npx, C,
                                     eps);
      const at::Tensor v = at::mm(yn, W4t);  // + b4
      at::Tensor hg = at::empty({npx, C}, opts);
      k::gate_rows<T>(v.data_ptr<T>(), p.b4.data_ptr<T>(), hg.data_ptr<T>(), 0, npx, C);
      const at::Tensor f = at::mm(hg, W5t);  // + b5
      k::scaled_residual_rows<T>(y.data_ptr<T>(), f.data_ptr<T>(), p.b5.data_ptr<T>(),
                                 p.gamma.data_ptr<T>(),
                                 out.data_ptr<T>() + row0 * C, 0, npx, C);
    }
  });
}

at::Tensor naf_block_cpu(const at::Tensor& x, const at::Tensor& n1w, const at::Tensor& n1b,
                         const at::Tensor& c1w, const at::Tensor& c1b, const at::Tensor& c2w,
                         const at::Tensor& c2b, const at::Tensor& scaw, const at::Tensor& scab,
                         const at::Tensor& c3w, const at::Tensor& c3b, const at::Tensor& beta,
                         const at::Tensor& n2w, const at::Tensor& n2b, const at::Tensor& c4w,
                         const at::Tensor& c4b, const at::Tensor& c5w, const at::Tensor& c5b,
                         const at::Tensor& gamma, double eps) {
  const Params p = make_params(x, n1w, n1b, c1w, c1b, c2w, c2b, scaw, scab, c3w, c3b, beta, n2w,
                               n2b, c4w, c4b, c5w, c5b, gamma);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = alloc_output({N, H, W, C}, x.options());
  if (out.numel() == 0) return out.permute({0, 3, 1, 2});
  // Bands run one per thread with single-threaded GEMMs; with too few bands to keep
  // every thread busy (small images, wide deep levels) whole-image multithreaded GEMMs
  // win.
  const int64_t band_rows = std::max<int64_t>(1, band_pixels(C) / W);
  const int64_t bands = N * ((H + band_rows - 1) / band_rows);
  const bool banded = bands >= 2 * at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "naf_block_cpu", [&] {
    if (banded) {
      forward_banded<scalar_t>(x, p, eps, out);
      return;
    }
    const Acts a = forward_impl<scalar_t>(x, p, eps);
    at::parallel_for(0, a.P, kPixelGrain, [&](int64_t b, int64_t e) {
      k::scaled_residual_rows<scalar_t>(a.y.data_ptr<scalar_t>(), a.f.data_ptr<scalar_t>(),
                                        p.b5.data_ptr<scalar_t>(), p.gamma.data_ptr<scalar_t>(),
                                        out.data_ptr<scalar_t>(), b, e, C);
    });
  });
  return out.permute({0, 3, 1, 2});
}

std::vector<at::Tensor> naf_block_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& n1w, const at::Tensor& n1b,
    const at::Tensor& c1w, const at::Tensor& c1b, const at::Tensor& c2w, const at::Tensor& c2b,
    const at::Tensor& scaw, const at::Tensor& scab, const at::Tensor& c3w, const at::Tensor& c3b,
    const at::Tensor& beta, const at::Tensor& n2w, const at::Tensor& n2b, const at::Tensor& c4w,
    const at::Tensor& c4b, const at::Tensor& c5w, const at::Tensor& c5b, const at::Tensor& gamma,
    double eps) {
  const Params p = make_params(x, n1w, n1b, c1w, c1b, c2w, c2b, scaw, scab, c3w, c3b, beta, n2w,
                               n2b, c4w, c4b, c5w, c5b, gamma);
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "_naf_block_backward: grad_out must have shape ",
              x.sizes(), ", got ", grad_out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(),
              "_naf_block_backward: grad_out must have the dtype of x");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto opts = x.options();
  at::Tensor gx = alloc_output({N, H, W, C}, opts);
  const std::vector<at::Tensor> params = {n1w, n1b, c1w, c1b, c2w, c2b, scaw, scab, c3w,
                                          c3b, beta, n2w, n2b, c4w, c4b, c5w, c5b, gamma};
  std::vector<at::Tensor> grads;
  grads.reserve(19);
  grads.push_back(gx.permute({0, 3, 1, 2}));
  if (gx.numel() == 0) {
    for (const auto& q : params) grads.push_back(at::zeros_like(q));
    return grads;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "naf_block_backward_cpu", [&] {
    using T = scalar_t;
    const int64_t band_rows = std::max<int64_t>(1, band_pixels(C) / W);
    const bool banded = N * ((H + band_rows - 1) / band_rows) >= 2 * at::get_num_threads();
    const Acts a = forward_impl<T>(x, p, eps, /*head_only=*/banded);
    const int64_t P = a.P;
    const at::Tensor dout = pixel_rows(grad_out);
    at::Tensor dy = at::empty({P, C}, opts);
    at::Tensor dgs, M, dgamma, dW5, db5, dW4, db4, dn2w, dn2b, dbeta, db3;
    if (banded) {
      // Everything after the pool, chunk by chunk in cache: recompute the chunk's
      // forward, then its backward down to dy and dgs (the gradient of g * s).
      const int64_t HW = H * W;
      const int64_t chunk = band_pixels(C);
      const int64_t cpi = (HW + chunk - 1) / chunk;
      const int64_t tasks = N * cpi;
      const at::Tensor W3st = (p.W3.unsqueeze(0) * a.s.unsqueeze(1)).transpose(1, 2).contiguous();
      const at::Tensor W4t = p.W4.t(), W5t = p.W5.t();
      dgs = at::empty({P, C}, opts);
      at::Tensor vec_part = at::zeros({tasks, 8, C}, opts);  // per-chunk sums, see below
      at::Tensor dW5_part = at::empty({tasks, C, C}, opts);
      at::Tensor dW4_part = at::empty({tasks, 2 * C, C}, opts);
      at::Tensor M_part = at::empty({tasks, C, C}, opts);
      at::parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
        // (see forward_banded: no autograd on worker threads)
        const at::AutoDispatchBelowADInplaceOrView below_autograd;
        for (int64_t task = tb; task < te; ++task) {
          const int64_t n = task / cpi;
          const int64_t q0 = (task % cpi) * chunk;
          const int64_t npx = std::min(HW, q0 + chunk) - q0;
          const int64_t row0 = n * HW + q0;
          T* vp = vec_part.data_ptr<T>() + task * 8 * C;
          T *dgamma_p = vp, *db5_p = vp + C, *db4_p = vp + 2 * C /* 2C */, *dn2w_p = vp + 4 * C,
            *dn2b_p = vp + 5 * C, *dbeta_p = vp + 6 * C, *db3_p = vp + 7 * C;
          const at::Tensor g_t = a.g.narrow(0, row0, npx);
          const at::Tensor t = at::mm(g_t, W3st[n]);
          at::Tensor y = at::empty({npx, C}, opts);
          at::Tensor yn = at::empty({npx, C}, opts);
          at::Tensor stats = at::empty({2, npx}, opts);
          T* mean2 = stats.data_ptr<T>();
          T* rstd2 = mean2 + npx;
          k::residual_layer_norm_rows<T>(a.x.data_ptr<T>() + row0 * C, t.data_ptr<T>(),
                                         p.b3.data_ptr<T>(), p.beta.data_ptr<T>(),
                                         p.n2w.data_ptr<T>(), p.n2b.data_ptr<T>(),
                                         y.data_ptr<T>(), yn.data_ptr<T>(), mean2, rstd2, 0, npx,
                                         C, eps);
          const at::Tensor v = at::mm(yn, W4t);
          at::Tensor hg = at::empty({npx, C}, opts);
          k::gate_rows<T>(v.data_ptr<T>(), p.b4.data_ptr<T>(), hg.data_ptr<T>(), 0, npx, C);
          const at::Tensor f = at::mm(hg, W5t);
          // out = y + gamma * (f + b5)
          at::Tensor df = at::empty({npx, C}, opts);
          k::scaled_residual_backward_rows<T>(dout.data_ptr<T>() + row0 * C, f.data_ptr<T>(),
                                              p.b5.data_ptr<T>(), p.gamma.data_ptr<T>(),
                                              df.data_ptr<T>(), dgamma_p, 0, npx, C);
          const at::Tensor dh = at::mm(df, p.W5);
          at::Tensor dW5_t = dW5_part[task];
          at::mm_out(dW5_t, df.t(), hg);
          at::Tensor dv = at::empty({npx, 2 * C}, opts);
          k::gate_backward_rows<T>(dh.data_ptr<T>(), v.data_ptr<T>(), p.b4.data_ptr<T>(),
                                   dv.data_ptr<T>(), 0, npx, C);
          at::Tensor dW4_t = dW4_part[task];
          at::mm_out(dW4_t, dv.t(), yn);
          const at::Tensor dyn = at::mm(dv, p.W4);
          k::layer_norm_backward_rows<T>(dyn.data_ptr<T>(), y.data_ptr<T>(), mean2, rstd2,
                                         p.n2w.data_ptr<T>(), dout.data_ptr<T>() + row0 * C,
                                         dy.data_ptr<T>() + row0 * C, dn2w_p, dn2b_p, 0, npx,
                                         C);
          at::Tensor dt = at::empty({npx, C}, opts);
          k::residual_backward_rows<T>(dy.data_ptr<T>() + row0 * C, t.data_ptr<T>(),
                                       p.b3.data_ptr<T>(), p.beta.data_ptr<T>(),
                                       dt.data_ptr<T>(), dbeta_p, 0, npx, C);
          at::Tensor dgs_t = dgs.narrow(0, row0, npx);
          at::mm_out(dgs_t, dt, p.W3);
          at::Tensor M_t = M_part[task];
          at::mm_out(M_t, dt.t(), g_t);
          // bias gradients: column sums of the chunk's gradients
          const T* dfp = df.data_ptr<T>();
          const T* dvp = dv.data_ptr<T>();
          const T* dtp = dt.data_ptr<T>();
          for (int64_t q = 0; q < npx; ++q) {
            for (int64_t c = 0; c < C; ++c) {
              db5_p[c] += dfp[q * C + c];
              db3_p[c] += dtp[q * C + c];
            }
            for (int64_t c = 0; c < 2 * C; ++c) db4_p[c] += dvp[q * 2 * C + c];
          }
        }
      });
      const at::Tensor vec = vec_part.sum(0);  // (8, C)
      dgamma = vec[0];
      db5 = vec[1];
      db4 = vec.narrow(0, 2, 2).reshape({2 * C});
      dn2w = vec[4];
      dn2b = vec[5];
      dbeta = vec[6];
      db3 = vec[7];
      dW5 = dW5_part.sum(0);
      dW4 = dW4_part.sum(0);
      M = M_part.view({N, cpi, C, C}).sum(1);
    } else {
      const int64_t nc = reduction_chunks(P, kPixelGrain);
      // out = y + gamma * (f + b5)
      at::Tensor df = at::empty({P, C}, opts);
      at::Tensor dgamma_part = at::zeros({nc, C}, opts);
      for_chunks(P, kPixelGrain, [&](int64_t i, int64_t b, int64_t e) {
        k::scaled_residual_backward_rows<T>(dout.data_ptr<T>(), a.f.data_ptr<T>(),
                                            p.b5.data_ptr<T>(), p.gamma.data_ptr<T>(),
                                            df.data_ptr<T>(), dgamma_part.data_ptr<T>() + i * C,
                                            b, e, C);
      });
      // f = h W5^T + b5
      const at::Tensor dh = at::mm(df, p.W5);
      dW5 = at::mm(df.t(), a.h);
      db5 = df.sum(0);
      // h = gate(v + b4)
      at::Tensor dv = at::empty({P, 2 * C}, opts);
      at::parallel_for(0, P, kPixelGrain, [&](int64_t b, int64_t e) {
        k::gate_backward_rows<T>(dh.data_ptr<T>(), a.v.data_ptr<T>(), p.b4.data_ptr<T>(),
                                 dv.data_ptr<T>(), b, e, C);
      });
      // v = yn W4^T + b4
      dW4 = at::mm(dv.t(), a.yn);
      db4 = dv.sum(0);
      const at::Tensor dyn = at::mm(dv, p.W4);
      // yn = LN2(y), y = x + beta * (t + b3); dy = dout + LN2 backward
      at::Tensor dt = at::empty({P, C}, opts);
      at::Tensor dn2w_part = at::zeros({nc, C}, opts);
      at::Tensor dn2b_part = at::zeros({nc, C}, opts);
      at::Tensor dbeta_part = at::zeros({nc, C}, opts);
      for_chunks(P, kPixelGrain, [&](int64_t i, int64_t b, int64_t e) {
        k::layer_norm_backward_rows<T>(dyn.data_ptr<T>(), a.y.data_ptr<T>(),
                                       a.mean2.data_ptr<T>(), a.rstd2.data_ptr<T>(),
                                       p.n2w.data_ptr<T>(), dout.data_ptr<T>(), dy.data_ptr<T>(),
                                       dn2w_part.data_ptr<T>() + i * C,
                                       dn2b_part.data_ptr<T>() + i * C, b, e, C);
        k::residual_backward_rows<T>(dy.data_ptr<T>(), a.t.data_ptr<T>(), p.b3.data_ptr<T>(),
                                     p.beta.data_ptr<T>(), dt.data_ptr<T>(),
                                     dbeta_part.data_ptr<T>() + i * C, b, e, C);
      });
      // t = (g * s) W3^T + b3
      dgs = at::mm(dt, p.W3);                                       // (P, C)
      M = at::bmm(dt.view({N, H * W, C}).transpose(1, 2),
                  a.g.view({N, H * W, C}));                         // (N, C_out, C_in)
      db3 = dt.sum(0);
      dgamma = dgamma_part.sum(0);
      dn2w = dn2w_part.sum(0);
      dn2b = dn2b_part.sum(0);
      dbeta = dbeta_part.sum(0);
    }
    const at::Tensor dW3 = (M * a.s.unsqueeze(1)).sum(0);
    // s = Wsca pooled + bsca; ds[n, c] = sum_p dgs * g = sum_o W3[o, c] M[n, o, c]
    const at::Tensor ds = (M * p.W3.unsqueeze(0)).sum(1);               // (N, C)
    const at::Tensor dWsca = at::mm(ds.t(), a.pooled);
    const at::Tensor dbsca = ds.sum(0);
    const at::Tensor dpool = at::mm(ds, p.Wsca) / static_cast<double>(H * W);
    // g = gate(dwconv(z) + b2): du, tap and bias gradients
    at::Tensor du = at::empty({P, 2 * C}, opts);
    const int64_t rows = N * H;
    const int64_t row_grain = std::max<int64_t>(1, kPixelGrain / W);
    const int64_t ncr = reduction_chunks(rows, row_grain);
    at::Tensor dwt_part = at::zeros({ncr, 9 * 2 * C}, opts);
    at::Tensor db2_part = at::zeros({ncr, 2 * C}, opts);
    for_chunks(rows, row_grain, [&](int64_t i, int64_t b, int64_t e) {
      k::dwconv_gate_backward_rows<T>(
          a.z.data_ptr<T>(), p.b1.data_ptr<T>(), p.wt.data_ptr<T>(), p.b2.data_ptr<T>(),
          dgs.data_ptr<T>(),
          a.s.data_ptr<T>(), dpool.data_ptr<T>(), du.data_ptr<T>(),
          dwt_part.data_ptr<T>() + i * 18 * C, db2_part.data_ptr<T>() + i * 2 * C, b, e, H, W, C);
    });
    at::Tensor dz = at::empty({P, 2 * C}, opts);
    at::parallel_for(0, rows, row_grain, [&](int64_t b, int64_t e) {
      k::dwconv_transpose_rows<T>(du.data_ptr<T>(), p.wt.data_ptr<T>(), dz.data_ptr<T>(), b, e, H,
                                  W, 2 * C);
    });
    const at::Tensor dW2 = dwt_part.sum(0).view({9, 2 * C}).t();  // (2C, 9)
    const at::Tensor db2 = db2_part.sum(0);
    // z = xn1 W1^T + b1
    const at::Tensor dW1 = at::mm(dz.t(), a.xn1);
    const at::Tensor db1 = dz.sum(0);
    const at::Tensor dxn = at::mm(dz, p.W1);
    // xn1 = LN1(x); dx = dy + LN1 backward
    const int64_t nc = reduction_chunks(P, kPixelGrain);
    at::Tensor dn1w_part = at::zeros({nc, C}, opts);
    at::Tensor dn1b_part = at::zeros({nc, C}, opts);
    for_chunks(P, kPixelGrain, [&](int64_t i, int64_t b, int64_t e) {
      k::layer_norm_backward_rows<T>(dxn.data_ptr<T>(), a.x.data_ptr<T>(), a.mean1.data_ptr<T>(),
                                     a.rstd1.data_ptr<T>(), p.n1w.data_ptr<T>(), dy.data_ptr<T>(),
                                     gx.data_ptr<T>(), dn1w_part.data_ptr<T>() + i * C,
                                     dn1b_part.data_ptr<T>() + i * C, b, e, C);
    });
    const std::vector<at::Tensor> flat = {
        dn1w_part.sum(0), dn1b_part.sum(0), dW1, db1, dW2, db2, dWsca, dbsca, dW3, db3,
        dbeta, dn2w, dn2b, dW4, db4, dW5, db5, dgamma};
    for (size_t i = 0; i < flat.size(); ++i) {
      grads.push_back(flat[i].reshape(params[i].sizes()).contiguous());
    }
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) {
  m.impl("naf_block", &naf_block_cpu);
  m.impl("_naf_block_backward", &naf_block_backward_cpu);
}

}  // namespace fastdeblur

// The entry points of the product-convolution ops, shared by the CPU and the CUDA glue: the
// argument checks, then the backend's implementations. A backend provides
//   struct Impl {
//     static at::Tensor check(const at::Tensor& x, const at::Tensor& kernels, const char* name);
//     static at::Tensor forward(const at::Tensor& x, const at::Tensor& kk, Boundary boundary);
//     static at::Tensor adjoint(const at::Tensor& y, const at::Tensor& kk, Boundary boundary);
//     static at::Tensor kernel_grad(const at::Tensor& x, const at::Tensor& gy,
//                                   const at::Tensor& kk, const at::Tensor& kernels,
//                                   Boundary boundary);
//   };
// check returns the kernels as (Bk, gh, gw, kh, kw); kernel_grad returns the gradient of
// <forward(x, h), gy> w.r.t. h, shaped like `kernels`.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <string>
#include <tuple>

#include "checks.h"
#include "common.h"

namespace fastdeblur {
namespace pc_conv_entry {

template <typename Impl>
at::Tensor forward(const at::Tensor& x, const at::Tensor& grid_kernels,
                   c10::string_view boundary) {
  const at::Tensor kk = Impl::check(x, grid_kernels, "x");
  return Impl::forward(x, kk, parse_boundary(std::string(boundary)));
}

template <typename Impl>
at::Tensor adjoint(const at::Tensor& y, const at::Tensor& grid_kernels,
                   c10::string_view boundary) {
  const at::Tensor kk = Impl::check(y, grid_kernels, "y");
  return Impl::adjoint(y, kk, parse_boundary(std::string(boundary)));
}

// Gradients of pc_conv (adjoint = false) or pc_conv_adjoint (adjoint = true) at `input`,
// for the outputs output_mask asks for (the others come back empty).
template <typename Impl>
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& input,
                                            const at::Tensor& grid_kernels,
                                            c10::string_view boundary_name, bool adjoint,
                                            std::array<bool, 2> output_mask) {
  const at::Tensor kk = Impl::check(input, grid_kernels, "input");
  checks::same_shape_and_dtype(grad, "grad", input, "input");
  const Boundary boundary = parse_boundary(std::string(boundary_name));
  at::Tensor grad_input = output_mask[0]
                              ? (adjoint ? Impl::forward(grad, kk, boundary)
                                         : Impl::adjoint(grad, kk, boundary))
                              : at::empty({0}, input.options());
  at::Tensor grad_kernels =
      output_mask[1]
          ? (adjoint ? Impl::kernel_grad(grad, input, kk, grid_kernels, boundary)
                     : Impl::kernel_grad(input, grad, kk, grid_kernels, boundary))
          : at::empty({0}, input.options());
  return {grad_input, grad_kernels};
}

}  // namespace pc_conv_entry
}  // namespace fastdeblur

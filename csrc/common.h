// Shared helpers of the PyTorch glue (not of the torch-free kernels).
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <string>

namespace fastdeblur {

// When FASTDEBLUR_POISON_OUTPUTS=1, every output buffer starts as NaN so that tests
// prove each element is written by the kernel (DESIGN.md, testing conventions).
inline bool poison_outputs() {
  static const bool on = [] {
    const char* v = std::getenv("FASTDEBLUR_POISON_OUTPUTS");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}

inline at::Tensor alloc_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  if (poison_outputs() && at::isFloatingType(out.scalar_type())) {
    out.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  return out;
}

// Boundary modes shared by every op: the schema passes them as strings.
enum class Boundary { kReflect = 0, kZero = 1, kReplicate = 2, kCircular = 3 };

inline Boundary parse_boundary(const std::string& name) {
  if (name == "reflect") return Boundary::kReflect;
  if (name == "zero") return Boundary::kZero;
  if (name == "replicate") return Boundary::kReplicate;
  if (name == "circular") return Boundary::kCircular;
  TORCH_CHECK(false, "boundary must be one of reflect, zero, replicate, circular; got '", name, "'");
}

}  // namespace fastdeblur

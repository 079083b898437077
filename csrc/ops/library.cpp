// The fastdeblur operator namespace. Each op adds its schemas with
// TORCH_LIBRARY_FRAGMENT(fastdeblur, m) in csrc/ops/<op>.cpp.
#include <torch/library.h>

#include <string>

namespace {
std::string build_info() {
#ifdef WITH_CUDA
  return "cpu+cuda";
#else
  return "cpu";
#endif
}
}  // namespace

TORCH_LIBRARY(fastdeblur, m) {
  // What was compiled in; fastdeblur._ext reports it.
  m.def("build_info() -> str", &build_info);
}

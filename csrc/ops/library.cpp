// The fastdeblur operator namespace. Each op adds its schemas with
// TORCH_LIBRARY_FRAGMENT(fastdeblur, m) in csrc/ops/<op>.cpp.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <string>

#if defined(__SSE2__) || defined(_M_X64)
#include <pmmintrin.h>
#include <xmmintrin.h>
#define FASTDEBLUR_HAS_MXCSR 1
#endif

namespace {
std::string build_info() {
#ifdef WITH_CUDA
  return "cpu+cuda";
#else
  return "cpu";
#endif
}
// Flush-to-zero and denormals-are-zero on the calling thread (x86 MXCSR).
bool set_thread_flush(bool on) {
#ifdef FASTDEBLUR_HAS_MXCSR
  _MM_SET_FLUSH_ZERO_MODE(on ? _MM_FLUSH_ZERO_ON : _MM_FLUSH_ZERO_OFF);
  _MM_SET_DENORMALS_ZERO_MODE(on ? _MM_DENORMALS_ZERO_ON : _MM_DENORMALS_ZERO_OFF);
  return true;
#else
  (void)on;
  return false;
#endif
}

// torch.set_flush_denormal sets the flag on the calling thread only, and the intra-op pool's
// workers copy it only when they are created. One parallel_for chunk per intra-op thread sets it
// on every worker that already exists (OpenMP gives each thread of the team one chunk).
bool set_flush_denormal_all_threads(bool on) {
  bool ok = set_thread_flush(on);
  const int64_t n = at::get_num_threads();
  if (n > 1 && !at::in_parallel_region()) {
    at::parallel_for(0, n, 1, [on](int64_t, int64_t) { set_thread_flush(on); });
  }
  return ok;
}
}  // namespace

TORCH_LIBRARY(fastdeblur, m) {
  // What was compiled in; fastdeblur._ext reports it.
  m.def("build_info() -> str", &build_info);
  // Returns false where the CPU has no flush-to-zero control (then nothing changed).
  m.def("set_flush_denormal_all_threads(bool on) -> bool", &set_flush_denormal_all_threads);
}

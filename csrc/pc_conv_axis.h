// Host-side geometry of the product-convolution ops, shared by the CPU and CUDA glue: the
// boundary map of one padded axis, the bilinear weights of every grid line on it, and the
// runs where each line's weights are non-zero. Same arithmetic as
// fastdeblur/ops/reference.py (pc_axis_weights, computed in float64 then cast).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace fastdeblur {
namespace pc_conv_geometry {

// Same mapping as fastdeblur.convolution.boundary_index (-1: zero padding).
inline int64_t map_index(int64_t i, int64_t n, Boundary boundary) {
  switch (boundary) {
    case Boundary::kReflect: {
      if (n == 1) return 0;
      const int64_t period = 2 * (n - 1);
      int64_t f = i % period;
      if (f < 0) f += period;
      return f >= n ? period - f : f;
    }
    case Boundary::kReplicate:
      return std::min(std::max<int64_t>(i, 0), n - 1);
    case Boundary::kCircular: {
      int64_t f = i % n;
      return f < 0 ? f + n : f;
    }
    case Boundary::kZero:
    default:
      return (i >= 0 && i < n) ? i : -1;
  }
}

struct Run {
  int64_t cell, start, stop;  // padded positions [start, stop) of non-zero weight
};

// One padded axis of length n + before + after.
template <typename T>
struct Axis {
  std::vector<int64_t> map;  // padded position -> image position, -1 = zero padding
  std::vector<T> weights;    // (cells, padded length)
  std::vector<Run> runs;

  Axis(int64_t n, int64_t cells, int64_t before, int64_t after, Boundary boundary) {
    const int64_t np = n + before + after;
    map.resize(np);
    for (int64_t s = 0; s < np; ++s) map[s] = map_index(s - before, n, boundary);
    std::vector<double> t(n);
    const double scale = static_cast<double>(cells) / static_cast<double>(n);
    for (int64_t r = 0; r < n; ++r) {
      const double tr = (static_cast<double>(r) + 0.5) * scale - 0.5;
      t[r] = std::min(std::max(tr, 0.0), static_cast<double>(cells) - 1.0);
    }
    weights.assign(cells * np, T(0));
    for (int64_t a = 0; a < cells; ++a) {
      int64_t start = -1;
      for (int64_t s = 0; s < np; ++s) {
        double w = 0.0;
        if (map[s] >= 0) w = std::max(0.0, 1.0 - std::abs(t[map[s]] - static_cast<double>(a)));
        weights[a * np + s] = static_cast<T>(w);
        const bool nz = static_cast<T>(w) != T(0);
        if (nz && start < 0) start = s;
        if (!nz && start >= 0) {
          runs.push_back({a, start, s});
          start = -1;
        }
      }
      if (start >= 0) runs.push_back({a, start, np});
    }
  }

  // (cells, 2): first and last padded position of non-zero weight (-1, -2 when none).
  std::vector<int> bounds(int64_t cells) const {
    std::vector<int> out(2 * cells);
    for (int64_t a = 0; a < cells; ++a) {
      out[2 * a] = -1;
      out[2 * a + 1] = -2;
    }
    for (const Run& r : runs) {
      if (out[2 * r.cell] < 0 || r.start < out[2 * r.cell]) out[2 * r.cell] = static_cast<int>(r.start);
      out[2 * r.cell + 1] = std::max(out[2 * r.cell + 1], static_cast<int>(r.stop - 1));
    }
    return out;
  }
};

}  // namespace pc_conv_geometry
}  // namespace fastdeblur

"""Product-convolution (``pc_conv``): native kernels against PyTorch formulations.

Rows (fp32, one process, so the ratios compare like with like):

* ``pc_conv[native]`` against the reference (per-cell local direct convolution, overlap-added),
  against a local-FFT overlap-add formulation, and against the loop of ``gh·gw`` full-image
  direct convolutions (``Σ_i conv2d(w_i ⊙ x, h_i)``, as deepinv's ``SpaceVaryingBlur`` does);
  that loop is too slow to time whole at full size, so a few of its convolutions are timed
  and the total is scaled by the number of cells (the row says so).
* ``pc_conv_adjoint[native]`` against ``pc_conv[native]`` (ratio = forward / adjoint time).

The PyTorch baselines are timed with torch's default thread count and with one thread, and
the faster is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench._timing import measure
from fastdeblur import _backend, _ext
from fastdeblur.convolution import pad
from fastdeblur.ops import reference
from fastdeblur.ops.pc_conv import pc_conv, pc_conv_adjoint


def pc_conv_full_image_loop(x: torch.Tensor, grid_kernels: torch.Tensor,
                            cells: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """``Σ_i conv2d(pad(w_i ⊙ x), h_i)`` over whole images, one cell at a time (``cells``: a
    subset to time; default all)."""
    B, C, H, W = x.shape
    gh, gw, kh, kw = grid_kernels.shape
    wy = reference.pc_axis_weights(H, gh, x.dtype)
    wx = reference.pc_axis_weights(W, gw, x.dtype)
    widths = (kh - 1 - kh // 2, kh // 2, kw - 1 - kw // 2, kw // 2)
    y = x.new_zeros(B * C, 1, H, W)
    for a, b in cells or [(a, b) for a in range(gh) for b in range(gw)]:
        z = pad(x * (wy[a][:, None] * wx[b][None, :]), widths, "reflect")
        weight = grid_kernels[a, b].flip(-2, -1)[None, None]
        y += F.conv2d(z.reshape(B * C, 1, *z.shape[-2:]), weight)
    return y.reshape(B, C, H, W)


def _best_over_threads(fn, repeat: int) -> float:
    """Median time of ``fn`` with torch's default thread count and with one thread, whichever
    is faster: on a busy machine torch's threaded FFT can be far slower than a single thread,
    and the baseline should be the best PyTorch can do."""
    threads = torch.get_num_threads()
    best = measure(fn, warmup=1, repeat=repeat)
    if threads > 1:
        torch.set_num_threads(1)
        try:
            best = min(best, measure(fn, warmup=1, repeat=repeat))
        finally:
            torch.set_num_threads(threads)
    return best


def _row(op, shape, backend, t, baseline, t_base):
    return {"op": op, "shape": shape, "backend": backend, "dtype": "float32",
            "median_ms": t * 1e3, "baseline": baseline, "ratio": t_base / t}


def run(quick: bool = False) -> list[dict]:
    """Time forward and adjoint of the native op against the PyTorch formulations."""
    configs = [((1, 3, 256, 256), 15, 4)] if quick else [((1, 3, 1024, 1024), 31, 8),
                                                          ((1, 3, 1024, 1024), 15, 8)]
    repeat = 3 if quick else 5
    rows: list[dict] = []
    native = _ext.has_kernel("pc_conv", "CPU")
    for shape, ks, grid in configs:
        x = torch.rand(shape)
        k = torch.rand(grid, grid, ks, ks)
        k /= k.sum((-1, -2), keepdim=True)
        label = f"{'x'.join(map(str, shape))} k{ks}x{ks} grid{grid}x{grid}"
        with torch.no_grad():
            t_ref = _best_over_threads(lambda x=x, k=k: reference.pc_conv(x, k), repeat)
            t_fft = _best_over_threads(lambda x=x, k=k: reference.pc_conv_fft(x, k), repeat)
            subset = [(0, 0), (grid // 2, grid // 2)] if quick else [
                (a, a) for a in range(0, grid, 2)]
            t_part = measure(lambda x=x, k=k, s=subset: pc_conv_full_image_loop(x, k, s),
                             warmup=0, repeat=1)
            t_loop = t_part * grid * grid / len(subset)
            loop_name = (f"loop of {grid * grid} full-image conv2d (timed {len(subset)}, "
                         f"scaled x{grid * grid / len(subset):g})")
            rows.append(_row("pc_conv", label, "reference", t_ref, loop_name, t_loop))
            rows.append(_row("pc_conv", label, "torch local-FFT", t_fft, "pc_conv[reference]",
                             t_ref))
            if not native:
                continue
            with _backend.use_backend("native"):
                t_nat = measure(lambda x=x, k=k: pc_conv(x, k), warmup=1, repeat=repeat)
                t_adj = measure(lambda x=x, k=k: pc_conv_adjoint(x, k), warmup=1, repeat=repeat)
            rows.append(_row("pc_conv", label, "native", t_nat, "pc_conv[reference]", t_ref))
            rows.append(_row("pc_conv", label, "native", t_nat, "pc_conv[torch local-FFT]", t_fft))
            rows.append(_row("pc_conv", label, "native", t_nat, loop_name, t_loop))
            rows.append(_row("pc_conv_adjoint", label, "native", t_adj, "pc_conv[native]", t_nat))
    return rows


if __name__ == "__main__":
    for r in run(quick=False):
        print(r)

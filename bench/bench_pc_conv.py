"""Product-convolution (``pc_conv``): native kernels against PyTorch formulations.

Rows (fp32, one process, so the ratios compare like with like):

* The PyTorch formulations — the reference (per-cell local direct convolution, overlap-added),
  the per-cell local-FFT overlap-add (``reference.pc_conv_fft``) and the tiled FFT with the
  frequency-domain sum (:func:`pc_conv_fft_tiles`, the native FFT path's algorithm in torch
  ops) — against the loop of ``gh·gw`` full-image direct convolutions
  (``Σ_i conv2d(w_i ⊙ x, h_i)``, as deepinv's ``SpaceVaryingBlur`` does); that loop is too
  slow to time whole at full size, so a few of its convolutions are timed and the total is
  scaled by the number of cells (the row says so).
* ``pc_conv[native]`` (the path the op picks) against the fastest PyTorch formulation and the
  loop; each forced native path (``FASTDEBLUR_PC_CONV_METHOD=direct|fft``) against it, which
  documents the crossover.
* ``pc_conv_adjoint[native]`` against ``pc_conv[native]`` (ratio = forward / adjoint time).

Every row but the loop is timed with torch's default thread count and with one thread, and
the faster is kept (``threads`` says which).
"""

from __future__ import annotations

import contextlib
import os

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


def _fft_intervals(weights: torch.Tensor) -> list[tuple[int, int, list[int]]]:
    """Tiles ``(start, stop, lines)`` of one padded axis with at most two non-zero grid lines
    (``weights``: ``(lines, n)``), as the native local-FFT path cuts it."""
    nonzero = (weights != 0).T.tolist()
    runs: list[list] = []
    for s, row in enumerate(nonzero):
        lines = [a for a, nz in enumerate(row) if nz]
        if runs and runs[-1][2] == lines:
            runs[-1][1] = s + 1
        else:
            runs.append([s, s + 1, lines])
    longest = max(stop - start for start, stop, _ in runs)
    tiles: list[list] = []
    for start, stop, lines in runs:
        union = sorted(set(tiles[-1][2]) | set(lines)) if tiles else None
        if tiles and len(union) <= 2 and stop - tiles[-1][0] <= longest:
            tiles[-1] = [tiles[-1][0], stop, union]
        else:
            tiles.append([start, stop, lines])
    return [(a, b, lines) for a, b, lines in tiles]


def pc_conv_fft_tiles(x: torch.Tensor, grid_kernels: torch.Tensor, boundary: str = "reflect"
                      ) -> torch.Tensor:
    """``pc_conv`` in PyTorch by local FFTs accumulated in the frequency domain.

    The padded domain is cut into tiles between grid-cell centres, where at most 2 × 2 cells
    have non-zero weight; per tile, the weighted products are transformed (one batched
    ``rfft2`` per tile row and FFT width), multiplied by the kernels' transfer functions and
    summed over the tile's cells in the frequency domain, transformed back once, and
    overlap-added. The same algorithm as the native local-FFT path, in PyTorch ops.
    """
    from fastdeblur.convolution import _fast_fft_size

    k = reference._pc_check(x, grid_kernels, boundary).to(x.dtype)
    B, C, H, W = x.shape
    kh, kw = k.shape[-2:]
    widths, wyp, wxp, _, _ = reference._pc_geometry(H, W, k, boundary, x.dtype)
    xp = pad(x, widths, boundary)
    rows, cols = _fft_intervals(wyp), _fft_intervals(wxp)
    y = x.new_zeros(B, C, H + 2 * (kh - 1), W + 2 * (kw - 1))  # room for the overlap-add
    otfs: dict[tuple[int, int], torch.Tensor] = {}
    for r0, r1, row_lines in rows:
        fr = _fast_fft_size(r1 - r0 + kh - 1)
        groups: dict[int, list] = {}
        for c0, c1, col_lines in cols:
            if row_lines and col_lines:
                groups.setdefault(_fast_fft_size(c1 - c0 + kw - 1), []).append((c0, c1, col_lines))
        for fc, tiles in groups.items():
            if (fr, fc) not in otfs:
                otfs[fr, fc] = torch.fft.rfft2(k, s=(fr, fc))  # (Bk, gh, gw, fr, fc//2+1)
            H_ = otfs[fr, fc]
            parts, kernels, owner = [], [], []
            for q, (c0, c1, col_lines) in enumerate(tiles):
                window = xp[:, :, r0:r1, c0:c1]
                for a in row_lines:
                    for b in col_lines:
                        part = window * (wyp[a, r0:r1, None] * wxp[b, None, c0:c1])
                        parts.append(F.pad(part, (0, fc - (c1 - c0), 0, fr - (r1 - r0))))
                        kernels.append(H_[:, a, b])
                        owner.append(q)
            Z = torch.fft.rfft2(torch.stack(parts, 2))  # (B, C, P, fr, fc // 2 + 1)
            prod = Z * torch.stack(kernels, 1)[:, None]  # (Bk, 1, P, ...) broadcast
            S = prod.new_zeros(B, C, len(tiles), *prod.shape[-2:])
            S.index_add_(2, torch.tensor(owner), prod)
            out = torch.fft.irfft2(S, s=(fr, fc))
            for q, (c0, c1, _) in enumerate(tiles):
                y[:, :, r0 : r1 + kh - 1, c0 : c1 + kw - 1] += out[:, :, q, : r1 - r0 + kh - 1,
                                                                  : c1 - c0 + kw - 1]
    # Tile output row m is image row r0 - (kh - 1) + m: y's row kh - 1 is image row 0.
    return y[:, :, kh - 1 : kh - 1 + H, kw - 1 : kw - 1 + W].contiguous()


def _best_over_threads(fn, repeat: int) -> tuple[float, int]:
    """Median time of ``fn`` with torch's default thread count and with one thread, whichever
    is faster, and that thread count: on a busy shared machine a second thread that has to
    wait for a core can make threaded code (torch's FFTs and element-wise ops, the native
    kernels alike) far slower than one thread, and every row should show the best each
    formulation can do."""
    threads = torch.get_num_threads()
    best = (measure(fn, warmup=1, repeat=repeat), threads)
    if threads > 1:
        torch.set_num_threads(1)
        try:
            best = min(best, (measure(fn, warmup=1, repeat=repeat), 1))
        finally:
            torch.set_num_threads(threads)
    return best


@contextlib.contextmanager
def _native_method(method: str):
    """Forces the native op's path (``FASTDEBLUR_PC_CONV_METHOD``: auto | direct | fft)."""
    previous = os.environ.get("FASTDEBLUR_PC_CONV_METHOD")
    os.environ["FASTDEBLUR_PC_CONV_METHOD"] = method
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FASTDEBLUR_PC_CONV_METHOD", None)
        else:
            os.environ["FASTDEBLUR_PC_CONV_METHOD"] = previous


def _row(op, shape, backend, timed, baseline, timed_base):
    (t, threads), (t_base, _) = timed, timed_base
    return {"op": op, "shape": shape, "backend": backend, "dtype": "float32",
            "median_ms": t * 1e3, "threads": threads, "baseline": baseline,
            "ratio": t_base / t}


def run(quick: bool = False) -> list[dict]:
    """Time forward and adjoint of the native op against the PyTorch formulations."""
    configs = [((1, 3, 256, 256), 15, 4)] if quick else [((1, 3, 1024, 1024), 31, 8),
                                                          ((1, 3, 1024, 1024), 15, 8)]
    repeat = 3
    rows: list[dict] = []
    native = _ext.has_kernel("pc_conv", "CPU")
    for shape, ks, grid in configs:
        x = torch.rand(shape)
        k = torch.rand(grid, grid, ks, ks)
        k /= k.sum((-1, -2), keepdim=True)
        label = f"{'x'.join(map(str, shape))} k{ks}x{ks} grid{grid}x{grid}"
        with torch.no_grad():
            torch_rows = {
                "reference (local direct)": _best_over_threads(
                    lambda x=x, k=k: reference.pc_conv(x, k), 1),
                "torch local-FFT per cell": _best_over_threads(
                    lambda x=x, k=k: reference.pc_conv_fft(x, k), repeat),
                "torch tiled FFT, frequency-domain sum": _best_over_threads(
                    lambda x=x, k=k: pc_conv_fft_tiles(x, k), repeat),
            }
            subset = [(0, 0), (grid // 2, grid // 2)] if quick else [
                (a, a) for a in range(0, grid, 2)]
            t_part = measure(lambda x=x, k=k, s=subset: pc_conv_full_image_loop(x, k, s),
                             warmup=0, repeat=1)
            t_loop = (t_part * grid * grid / len(subset), torch.get_num_threads())
            loop_name = (f"loop of {grid * grid} full-image conv2d (timed {len(subset)}, "
                         f"scaled x{grid * grid / len(subset):g})")
            best_name = min(torch_rows, key=lambda n: torch_rows[n][0])
            for name, timed in torch_rows.items():
                rows.append(_row("pc_conv", label, name, timed, loop_name, t_loop))
            if not native:
                continue
            # Native rows: three interleaved rounds, the best of each kept, so that a burst of
            # load on the shared machine does not land on one row only.
            timed: dict[str, tuple[float, int]] = {}
            with _backend.use_backend("native"):
                for _ in range(3):
                    for method in ("auto", "direct", "fft"):
                        with _native_method(method):
                            for name, fn in ((method, pc_conv),
                                             (method + " adjoint", pc_conv_adjoint)):
                                t = _best_over_threads(lambda x=x, k=k, fn=fn: fn(x, k), repeat)
                                timed[name] = min(timed.get(name, t), t)
            best = f"pc_conv[{best_name}] (best PyTorch)"
            rows.append(_row("pc_conv", label, "native", timed["auto"], best,
                             torch_rows[best_name]))
            rows.append(_row("pc_conv", label, "native", timed["auto"], loop_name, t_loop))
            for method in ("direct", "fft"):
                rows.append(_row("pc_conv", label, f"native {method} path", timed[method],
                                 "pc_conv[native]", timed["auto"]))
            rows.append(_row("pc_conv_adjoint", label, "native", timed["auto adjoint"],
                             "pc_conv[native]", timed["auto"]))
            for method in ("direct", "fft"):
                rows.append(_row("pc_conv_adjoint", label, f"native {method} path",
                                 timed[method + " adjoint"], f"pc_conv[native {method} path]",
                                 timed[method]))
    return rows


if __name__ == "__main__":
    for r in run(quick=False):
        print(r)

"""Benchmark of the per-pixel spatially-varying convolution (sv_conv, sv_conv_adjoint).

Baselines, measured in the same process:
  * ``shift-and-add``: the PyTorch reference (one fused multiply-add over the image per tap),
    the fastest pure-PyTorch formulation;
  * ``unfold+einsum``: ``F.unfold`` of the padded image, then one einsum with the kernels.
    At full size it would need ``C·kh·kw·H·W`` floats (12 GB at 3x1024x1024, 31x31), so it
    runs over bands of 32 rows, on the first ``unfold_rows`` rows of the image only; its
    time is scaled to the full image (per-pixel throughput; the shape column says so);
  * ``memory floor``: the time to read the kernel field once (``kernels.sum()``): the
    op cannot be faster than reading its kernels.
Every CPU row is timed with torch's default thread count and with one thread, and the
faster is kept (the same rule for the native op and the baselines).
``ratio`` is ``baseline time / this row's time`` (> 1: faster than the baseline);
``gbps`` counts the bytes the op must move (kernels + image in + image out).

Usage: ``python -m bench.bench_sv_conv [--quick] [--out results/sv_conv.json]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench._timing import machine, measure
from fastdeblur import _backend, _ext
from fastdeblur.convolution import pad
from fastdeblur.ops import reference as R
from fastdeblur.ops import sv_conv, sv_conv_adjoint


def unfold_einsum(x: torch.Tensor, kernels: torch.Tensor, boundary: str = "reflect",
                  rows_per_band: int = 32) -> torch.Tensor:
    """``sv_conv`` as unfold + einsum over bands of rows (bounded memory)."""
    B, C, H, W = x.shape
    taps = kernels.shape[-3]
    kh = kw = int(round(taps**0.5))
    cy, cx = kh // 2, kw // 2
    xp = pad(x, (kh - 1 - cy, cy, kw - 1 - cx, cx), boundary)
    # unfold's patch offset (a, b) reads xp[i + a, j + b], i.e. tap (kh-1-a, kw-1-b).
    k = kernels.flip(-3)
    y = torch.empty_like(x)
    for i0 in range(0, H, rows_per_band):
        i1 = min(H, i0 + rows_per_band)
        patches = F.unfold(xp[:, :, i0 : i1 + kh - 1], (kh, kw))  # (B, C*T, n*W)
        patches = patches.view(B, C, taps, i1 - i0, W)
        # The einsum "bcthw,bthw->bchw", written as multiply + sum: torch.einsum lowers it to
        # one tiny matrix product per pixel, ~100x slower still.
        y[:, :, i0:i1] = (patches * k[:, None, :, i0:i1]).sum(2)
    return y


def _row(op, shape, backend, dtype, seconds, baseline, baseline_seconds, nbytes):
    return {
        "op": op,
        "shape": shape,
        "backend": backend,
        "dtype": str(dtype).replace("torch.", ""),
        "median_ms": round(seconds * 1e3, 3),
        "baseline": baseline,
        "ratio": round(baseline_seconds / seconds, 3) if baseline_seconds else None,
        "gbps": round(nbytes / seconds / 1e9, 2),
    }


def _emit(rows: list[dict], row: dict) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def _cpu_rows(C: int, H: int, W: int, k: int, repeat: int, unfold_rows: int) -> list[dict]:
    dtype = torch.float32
    x = torch.rand(1, C, H, W, dtype=dtype)
    kernels = torch.rand(1, k * k, H, W, dtype=dtype)
    kernels /= kernels.sum(1, keepdim=True)
    shape = f"{C}x{H}x{W}, {k}x{k}"
    kbytes = kernels.numel() * kernels.element_size()
    nbytes = kbytes + 2 * x.numel() * x.element_size()
    rows = []

    def timed(fn: Callable[[], object], reps: int = repeat) -> float:
        # The faster of torch's default thread count and one thread: on a busy shared machine
        # a thread waiting for the second core can make any threaded code (torch's and the
        # native kernels alike) slower than one thread.
        threads = torch.get_num_threads()
        best = measure(fn, warmup=1, repeat=reps)
        if threads > 1:
            torch.set_num_threads(1)
            try:
                best = min(best, measure(fn, warmup=1, repeat=reps))
            finally:
                torch.set_num_threads(threads)
        return best

    floor = timed(lambda: kernels.sum())
    _emit(rows, _row("memory floor (kernels.sum)", shape, "torch", dtype, floor, None, None,
                     kbytes))
    if _ext.has_kernel("sv_conv", "CPU"):
        with _backend.use_backend("native"):
            fwd = timed(lambda: sv_conv(x, kernels, "reflect"))
            adj = timed(lambda: sv_conv_adjoint(x, kernels, "reflect"))
            adj_zero = timed(lambda: sv_conv_adjoint(x, kernels, "zero"))
        floor = min(floor, timed(lambda: kernels.sum()))  # again, after the native runs
        _emit(rows, _row("sv_conv", shape, "native", dtype, fwd, "memory floor", floor, nbytes))
        _emit(rows, _row("sv_conv_adjoint", shape, "native", dtype, adj, "sv_conv native", fwd,
                         nbytes))
        _emit(rows, _row("sv_conv_adjoint", shape + ", zero boundary", "native", dtype, adj_zero,
                         "sv_conv native", fwd, nbytes))
    shift_add = timed(lambda: R.sv_conv(x, kernels, "reflect"), 1)
    _emit(rows, _row("sv_conv", shape, "shift-and-add (reference)", dtype, shift_add,
                     "memory floor", floor, nbytes))
    band = 32
    n = min(H, unfold_rows)
    crop_x, crop_k = x[:, :, :n].contiguous(), kernels[:, :, :n].contiguous()
    unfold = timed(lambda: unfold_einsum(crop_x, crop_k, "reflect", band), 1) * H / n
    _emit(rows, _row("sv_conv", shape + f" (first {n} rows in bands of {band}, time x {H}/{n})",
                     "unfold+einsum", dtype, unfold, "memory floor", floor, nbytes))
    if _ext.has_kernel("sv_conv", "CPU"):
        _emit(rows, _row("sv_conv", shape, "native", dtype, fwd, "shift-and-add", shift_add,
                         nbytes))
        _emit(rows, _row("sv_conv", shape, "native", dtype, fwd, "unfold+einsum (per pixel)",
                         unfold, nbytes))
    return rows


def _gpu_rows(C: int, H: int, W: int, k: int, repeat: int) -> list[dict]:
    rows = []
    shape = f"{C}x{H}x{W}, {k}x{k}"
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.rand(1, C, H, W, device="cuda", dtype=dtype)
        kernels = torch.rand(1, k * k, H, W, device="cuda", dtype=dtype)
        kbytes = kernels.numel() * kernels.element_size()
        nbytes = kbytes + 2 * x.numel() * x.element_size()
        floor = measure(lambda kernels=kernels: kernels.sum(dtype=torch.float32), warmup=3,
                        repeat=repeat)
        _emit(rows, _row("memory floor (kernels.sum)", shape, "torch", dtype, floor, None, None,
                         kbytes))
        shift_add = measure(lambda x=x, kernels=kernels: R.sv_conv(x, kernels), warmup=1,
                            repeat=3)
        _emit(rows, _row("sv_conv", shape, "shift-and-add (reference)", dtype, shift_add,
                         "memory floor", floor, nbytes))
        backends = ["triton"] + (["native"] if _ext.has_kernel("sv_conv", "CUDA") else [])
        for backend in backends:
            with _backend.use_backend(backend):
                fwd = measure(lambda x=x, kernels=kernels: sv_conv(x, kernels), warmup=3,
                              repeat=repeat)
                adj = measure(lambda x=x, kernels=kernels: sv_conv_adjoint(x, kernels),
                              warmup=3, repeat=repeat)
            _emit(rows, _row("sv_conv", shape, backend, dtype, fwd, "memory floor", floor,
                             nbytes))
            _emit(rows, _row("sv_conv", shape, backend, dtype, fwd, "shift-and-add",
                             shift_add, nbytes))
            _emit(rows, _row("sv_conv_adjoint", shape, backend, dtype, adj,
                             "sv_conv " + backend, fwd, nbytes))
    return rows


def run(quick: bool = False) -> list[dict]:
    """All benchmark rows (quick: small shapes only)."""
    if quick:
        rows = _cpu_rows(3, 256, 256, 15, repeat=3, unfold_rows=64)
    else:
        rows = _cpu_rows(3, 1024, 1024, 31, repeat=3, unfold_rows=128)
        rows += _cpu_rows(3, 1024, 1024, 9, repeat=3, unfold_rows=1024)
    if torch.cuda.is_available():
        rows += _gpu_rows(3, 256, 256, 15, 10) if quick else _gpu_rows(3, 1024, 1024, 31, 20)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    parser.add_argument("--out", help="write the rows (and the machine) as JSON here")
    args = parser.parse_args()
    rows = run(args.quick)  # prints each row as it is measured
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

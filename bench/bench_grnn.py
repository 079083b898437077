"""Benchmark of the fused GRNN op (``fastdeblur.ops.grnn``).

Rows (ratios are measured in the same process, so a busy machine affects both sides):

* ``d=30``: the op against the naive ``cdist + softmax + matmul`` (``reference.grnn_naive``)
  and the SDPA reference; ``ratio`` = baseline time / op time (target on a 2-core CPU:
  >= 4 for N=4096, M=36000).
* ``d=1024``: the op against the fp32 GEMM floor: the two matmuls the op must do
  (``Q K^T`` and ``P V``), the fastest of: one GEMM each, 256-query blocks over all keys,
  256 x 1024 tiles (reused buffers);
  ``ratio`` = floor time / op time (target >= 1 / 1.15 = 0.87), with ``center=False``
  (centred data, the GRNN module's case) and with the default centring pass.
* backward: forward + backward of the op against autograd through the SDPA reference.
* On a GPU, ``d=30`` and ``N=100000, d=1024`` bf16 rows for the native CUDA and Triton
  kernels against SDPA (targets 1.5 ms and 12 ms on an H100).

Run: ``python -m bench --only grnn [--quick]`` (writes ``bench/results/``), or
``python -m bench.bench_grnn [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench._timing import measure
from fastdeblur import _backend
from fastdeblur.ops import grnn, reference


def _row(shape: str, backend: str, dtype: torch.dtype, seconds: float, baseline: str,
         baseline_seconds: float, higher_is_op_faster: bool = True) -> dict:
    return {
        "op": "grnn",
        "shape": shape,
        "backend": backend,
        "dtype": str(dtype).replace("torch.", ""),
        "median_ms": round(seconds * 1e3, 3),
        "baseline": baseline,
        "baseline_ms": round(baseline_seconds * 1e3, 3),
        "ratio": round(baseline_seconds / seconds, 3),
    }


def _gemm_floor(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = 256,
                key_tile: int | None = None):
    """The two matmuls of the op, ``S = Q_blk @ K_tile^T`` and ``S @ V_tile``, over 256-row
    query blocks and key tiles (all keys at once when ``key_tile`` is None), into reused
    buffers."""
    tile = key_tile or k.shape[0]
    s_buf = torch.empty(block * tile, dtype=q.dtype, device=q.device)
    o_buf = torch.empty(block, v.shape[1], dtype=q.dtype, device=q.device)

    def run() -> None:
        for b in range(0, q.shape[0], block):
            rows = min(block, q.shape[0] - b)
            for t in range(0, k.shape[0], tile):
                cols = min(tile, k.shape[0] - t)
                s = s_buf[: rows * cols].view(rows, cols)
                torch.mm(q[b : b + rows], k[t : t + cols].T, out=s)
                torch.mm(s, v[t : t + cols], out=o_buf[:rows])

    return run


def _inputs(n: int, m: int, d: int, p: int, dtype: torch.dtype, device: str):
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(n, d, generator=g).to(device=device, dtype=dtype)
    k = torch.randn(m, d, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(m, p, generator=g).to(device=device, dtype=dtype)
    return q, k, v


def _cpu_rows(quick: bool) -> list[dict]:
    rows = []
    repeat = 3 if quick else 5
    # d = 30: against the naive formula.
    n, m, d, p = (512, 4096, 30, 1) if quick else (4096, 36000, 30, 1)
    q, k, v = _inputs(n, m, d, p, torch.float32, "cpu")
    sigma = 0.5 * d**0.5
    shape = f"N={n} M={m} d={d} p={p}"
    with _backend.use_backend("native"):
        t_op = measure(lambda: grnn(q, k, v, sigma), warmup=1, repeat=repeat)
    t_naive = measure(lambda: reference.grnn_naive(q, k, v, sigma), warmup=1, repeat=repeat)
    t_sdpa = measure(lambda: reference.grnn(q, k, v, sigma), warmup=1, repeat=repeat)
    rows.append(_row(shape, "native", torch.float32, t_op, "naive cdist+softmax+matmul", t_naive))
    rows.append(_row(shape, "native", torch.float32, t_op, "sdpa reference", t_sdpa))
    # d = 1024: against the GEMM floor.
    n, m, d, p = (512, 2048, 1024, 1) if quick else (2048, 8192, 1024, 1)
    q, k, v = _inputs(n, m, d, p, torch.float32, "cpu")
    sigma = 0.5 * d**0.5
    shape = f"N={n} M={m} d={d} p={p}"
    with _backend.use_backend("native"):
        t_op = measure(lambda: grnn(q, k, v, sigma, center=False), warmup=1, repeat=repeat)
        t_centred = measure(lambda: grnn(q, k, v, sigma), warmup=1, repeat=repeat)
    # The floor is the fastest of three ways to do the two matmuls: one big GEMM each
    # (materialising N x M), 256-query blocks over all keys, 256 x 1024 tiles.
    t_floor = min(measure(lambda: (q @ k.T) @ v, warmup=1, repeat=repeat),
                  measure(_gemm_floor(q, k, v), warmup=1, repeat=repeat),
                  measure(_gemm_floor(q, k, v, key_tile=1024), warmup=1, repeat=repeat))
    rows.append(_row(shape + " center=False", "native", torch.float32, t_op,
                     "fp32 GEMM floor (fastest of 3)", t_floor))
    rows.append(_row(shape + " center=True", "native", torch.float32, t_centred,
                     "fp32 GEMM floor (fastest of 3)", t_floor))
    # Backward (queries, keys, values and sigma).
    n, m, d, p = (256, 2048, 30, 1) if quick else (2048, 16384, 30, 1)
    q, k, v = _inputs(n, m, d, p, torch.float32, "cpu")
    shape = f"N={n} M={m} d={d} p={p} fwd+bwd"

    def fwd_bwd(fn):
        def run() -> None:
            args = [t.detach().requires_grad_(True) for t in (q, k, v)]
            s = torch.tensor(0.5 * d**0.5, requires_grad=True)
            fn(*args, s).sum().backward()
        return run

    with _backend.use_backend("native"):
        t_op = measure(fwd_bwd(grnn), warmup=1, repeat=repeat)
    t_ref = measure(fwd_bwd(reference.grnn), warmup=1, repeat=repeat)
    rows.append(_row(shape, "native", torch.float32, t_op, "sdpa reference autograd", t_ref))
    return rows


def _cuda_rows(quick: bool) -> list[dict]:
    rows = []
    cases = [(4096, 36000, 30, 1, torch.float32), (100000, 36000, 1024, 1, torch.bfloat16)]
    if quick:
        cases = [(1024, 8192, 30, 1, torch.float32), (8192, 8192, 1024, 1, torch.bfloat16)]
    for n, m, d, p, dtype in cases:
        q, k, v = _inputs(n, m, d, p, dtype, "cuda")
        sigma = 0.5 * d**0.5
        shape = f"N={n} M={m} d={d} p={p}"
        t_sdpa = measure(lambda q=q, k=k, v=v, s=sigma: reference.grnn(q, k, v, s), repeat=5)
        for backend in ("native", "triton"):
            try:
                with _backend.use_backend(backend):
                    t = measure(lambda q=q, k=k, v=v, s=sigma: grnn(q, k, v, s), repeat=10)
            except _backend.BackendUnavailableError:
                continue
            rows.append(_row(shape, backend, dtype, t, "sdpa reference", t_sdpa))
    return rows


def run(quick: bool = False) -> list[dict]:
    """Benchmark rows (see the module docstring)."""
    rows = _cpu_rows(quick)
    if torch.cuda.is_available():
        rows += _cuda_rows(quick)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    result = run(args.quick)
    for r in result:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))

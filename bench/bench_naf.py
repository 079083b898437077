"""Benchmark of the fused NAF block and of NAFNet (fused vs eager vs torch.compile).

Usage::

    PYTHONPATH=. python bench/bench_naf.py [--quick] [--compile] [--json PATH]

Rows (same-process ratios, speed-up of the fused version against the named baseline):

* one NAF block, width 32, 256x256, fp32 (CPU): forward, and forward + backward;
* the whole width-32 NAFNet (paper config, enc 1-1-1-28) on 256x256: forward, against
  eager PyTorch (NCHW and channels-last) and, with ``--compile``, against
  ``torch.compile`` of the reference network in channels-last (compiling takes minutes
  on a small CPU);
* the shipped deblurring model (``fastdeblur/weights/nafnet_deblur.safetensors``, width 16)
  on a 1024x768 RGB image through :func:`fastdeblur.models.pretrained.nafnet_deblur`
  (tiles of 512 with 32 px overlap), fused against the same weights on eager PyTorch;
* on a GPU: the width-32 NAFNet on 1280x720 in bf16 autocast against eager and
  ``torch.compile`` of the reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._timing import machine, measure  # noqa: E402
from fastdeblur.models import NAFBlock, NAFNet  # noqa: E402


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-zero beta/gamma so that both residual branches do real work."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, NAFBlock):
            m.beta.data.copy_(torch.randn(m.beta.shape, generator=g) * 0.1)
            m.gamma.data.copy_(torch.randn(m.gamma.shape, generator=g) * 0.1)
    return model


def _row(op: str, shape: str, backend: str, dtype: str, seconds: float, baseline: str,
         baseline_seconds: float) -> dict:
    return {"op": op, "shape": shape, "backend": backend, "dtype": dtype,
            "median_ms": round(seconds * 1e3, 3), "baseline": baseline,
            "ratio": round(baseline_seconds / seconds, 2)}


def _fwd(model: torch.nn.Module, x: torch.Tensor):
    def fn() -> None:
        with torch.no_grad():
            model(x)
    return fn


def _fwd_bwd(model: torch.nn.Module, x: torch.Tensor):
    def fn() -> None:
        model(x).sum().backward()
    return fn


def bench_block_cpu(quick: bool) -> list[dict]:
    width, size = 32, 256
    ref = _randomise(NAFBlock(width)).eval()
    fused = copy.deepcopy(ref)
    fused.fused = True
    x = torch.randn(1, width, size, size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    shape = f"1x{width}x{size}x{size}"
    rep = 5 if quick else 15
    rows = []
    t_eager = measure(_fwd(ref, x), warmup=2, repeat=rep)
    t_fused = measure(_fwd(fused, x_cl), warmup=2, repeat=rep)
    rows.append(_row("naf_block", shape, "native", "fp32", t_fused, "eager", t_eager))
    xg = x.clone().requires_grad_()
    xg_cl = x_cl.clone().requires_grad_()
    rep = 3 if quick else 7
    t_eager = measure(_fwd_bwd(ref, xg), warmup=1, repeat=rep)
    t_fused = measure(_fwd_bwd(fused, xg_cl), warmup=1, repeat=rep)
    rows.append(_row("naf_block_fwd_bwd", shape, "native", "fp32", t_fused, "eager", t_eager))
    return rows


def bench_net_cpu(quick: bool, compile_ref: bool) -> list[dict]:
    size = 128 if quick else 256
    ref = _randomise(NAFNet(3, 32)).eval()
    fused = copy.deepcopy(ref).set_fused(True)
    x = torch.rand(1, 3, size, size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ref_cl = copy.deepcopy(ref).to(memory_format=torch.channels_last)
    shape = f"1x3x{size}x{size}"
    rep = 3 if quick else 7
    rows = []
    t_fused = measure(_fwd(fused, x_cl), warmup=1, repeat=rep)
    t_eager = measure(_fwd(ref, x), warmup=1, repeat=rep)
    rows.append(_row("nafnet32", shape, "native", "fp32", t_fused, "eager", t_eager))
    t_eager_cl = measure(_fwd(ref_cl, x_cl), warmup=1, repeat=rep)
    rows.append(_row("nafnet32", shape, "native", "fp32", t_fused, "eager_channels_last",
                     t_eager_cl))
    if compile_ref:
        compiled = torch.compile(ref_cl)
        t_comp = measure(_fwd(compiled, x_cl), warmup=2, repeat=rep)
        t_fused = measure(_fwd(fused, x_cl), warmup=1, repeat=rep)
        rows.append(_row("nafnet32", shape, "native", "fp32", t_fused,
                         "torch.compile_channels_last", t_comp))
    return rows


def bench_shipped_cpu(quick: bool) -> list[dict]:
    """The shipped weights on a 1024x768 photo-sized image, as ``fastdeblur deblur`` runs them."""
    from fastdeblur.models.pretrained import WEIGHTS_DIR, load_nafnet, nafnet_deblur

    if not (WEIGHTS_DIR / "nafnet_deblur.safetensors").is_file():
        return []
    fused = load_nafnet(fused=True, cache=False)
    eager = load_nafnet(fused=False, cache=False)
    h, w = (384, 512) if quick else (768, 1024)
    x = torch.rand(1, 3, h, w)
    rep = 3
    t_fused = measure(lambda: nafnet_deblur(x, model=fused), warmup=1, repeat=rep)
    t_eager = measure(lambda: nafnet_deblur(x, model=eager), warmup=1, repeat=rep)
    return [_row("nafnet_deblur_w16", f"1x3x{h}x{w}", "native", "fp32", t_fused, "eager",
                 t_eager)]


def bench_net_cuda(quick: bool, compile_ref: bool) -> list[dict]:
    ref = _randomise(NAFNet(3, 32)).cuda().eval()
    fused = copy.deepcopy(ref).set_fused(True)
    h, w = (360, 640) if quick else (720, 1280)
    x = torch.rand(1, 3, h, w, device="cuda")
    shape = f"1x3x{h}x{w}"
    rows = []

    def run(model: torch.nn.Module):
        def fn() -> None:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(x)
        return fn

    rep = 10 if quick else 50
    t_fused = measure(run(fused), warmup=3, repeat=rep)
    t_eager = measure(run(ref), warmup=3, repeat=rep)
    rows.append(_row("nafnet32", shape, "triton", "bf16", t_fused, "eager", t_eager))
    if compile_ref:
        compiled = torch.compile(copy.deepcopy(ref).to(memory_format=torch.channels_last))
        t_comp = measure(run(compiled), warmup=3, repeat=rep)
        rows.append(_row("nafnet32", shape, "triton", "bf16", t_fused, "torch.compile", t_comp))
    return rows


PARTS = ("block", "net", "shipped", "cuda")


def run(quick: bool, compile_ref: bool = False, parts: tuple[str, ...] = PARTS) -> list[dict]:
    """The rows of this benchmark (see module docstring); ``parts`` picks the groups."""
    rows = []
    if "block" in parts:
        rows += bench_block_cpu(quick)
    if "net" in parts:
        rows += bench_net_cpu(quick, compile_ref)
    if "shipped" in parts:
        rows += bench_shipped_cpu(quick)
    if "cuda" in parts and torch.cuda.is_available():
        rows += bench_net_cuda(quick, compile_ref)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the reference (slow to compile)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=PARTS,
                        help="run only these groups of rows")
    parser.add_argument("--json", help="write the rows and the machine description here")
    args = parser.parse_args()
    rows = run(args.quick, args.compile, tuple(args.only))
    for r in rows:
        print(f"{r['op']:18s} {r['shape']:16s} {r['backend']:7s} {r['dtype']:5s} "
              f"{r['median_ms']:9.3f} ms  x{r['ratio']:<6} vs {r['baseline']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "command": " ".join(["python", *sys.argv]),
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

"""The fused NAF block op against its PyTorch reference (forward and backward)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastdeblur import _backend, _ext
from fastdeblur.ops import naf as naf_ops
from fastdeblur.ops import reference
from tests._tol import assert_close

REPO = Path(__file__).resolve().parents[2]
native = pytest.mark.skipif(not _ext.has_kernel("naf_block", "CPU"),
                            reason="fastdeblur._C without the naf_block CPU kernel")


def make_params(channels: int, dtype: torch.dtype = torch.float32, *,
                requires_grad: bool = False, generator: torch.Generator | None = None
                ) -> list[torch.Tensor]:
    """Random parameters; beta and gamma are non-zero (they start at zero in a fresh
    model, which would hide errors in both residual branches)."""
    shapes = naf_ops.param_shapes(channels)
    params = []
    for name in naf_ops.PARAM_NAMES:
        p = torch.randn(shapes[name], dtype=dtype, generator=generator) * 0.5
        if name.startswith("norm") and name.endswith("weight"):
            p = p + 1.0
        params.append(p.requires_grad_(requires_grad))
    return params


def grads_of(fn, x: torch.Tensor, params: list[torch.Tensor], grad_out: torch.Tensor):
    out = fn(x, params)
    return out, torch.autograd.grad(out, [x, *params], grad_out)


def fused(x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    return naf_ops.naf_block(x, params, 1e-6)


def ref(x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    return reference.naf_block(x, *params, eps=1e-6)


SHAPES = [(1, 4, 5, 7), (2, 8, 6, 3), (3, 2, 1, 1), (1, 6, 9, 1), (2, 16, 4, 33)]


@native
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_backward_match_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    N, C, H, W = shape
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    params = make_params(C, dtype, requires_grad=True)
    g = torch.randn(shape, dtype=dtype)
    with _backend.use_backend("native"):
        out, grads = grads_of(fused, x, params, g)
    out_ref, grads_ref = grads_of(ref, x, params, g)
    assert out.shape == shape
    assert_close(out, out_ref, scale=10)
    for name, a, b in zip(["x", *naf_ops.PARAM_NAMES], grads, grads_ref, strict=True):
        assert a.shape == b.shape, name
        # parameter gradients sum over every pixel: loosen with the pixel count
        assert_close(a, b, scale=10 * max(1, N * H * W) ** 0.5)


@native
def test_non_contiguous_and_channels_last_inputs() -> None:
    C = 6
    params = make_params(C)
    base = torch.randn(2, C, 7, 12)
    cases = [base[..., ::2], base.contiguous(memory_format=torch.channels_last),
             base.transpose(2, 3)]
    for x in cases:
        with _backend.use_backend("native"):
            out = fused(x, params)
        assert_close(out, ref(x, params), scale=10)


@native
def test_non_contiguous_params_and_grad() -> None:
    C = 4
    params = [p.detach().clone().requires_grad_() for p in make_params(C)]
    x = torch.randn(1, C, 5, 6, requires_grad=True)
    g = torch.randn(1, C, 6, 5).transpose(2, 3)
    with _backend.use_backend("native"):
        _, grads = grads_of(fused, x, params, g)
    _, grads_ref = grads_of(ref, x, params, g)
    for a, b in zip(grads, grads_ref, strict=True):
        assert_close(a, b, scale=30)


@native
def test_batch_zero() -> None:
    x = torch.randn(0, 4, 5, 5, requires_grad=True)
    params = make_params(4, requires_grad=True)
    with _backend.use_backend("native"):
        out = fused(x, params)
        assert out.shape == x.shape
        out.sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in params)


@native
@pytest.mark.slow
def test_gradcheck_fp64() -> None:
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    params = make_params(2, torch.float64, requires_grad=True)
    with _backend.use_backend("native"):
        assert torch.autograd.gradcheck(lambda x, *p: naf_ops.naf_block(x, p, 1e-6),
                                        (x, *params), eps=1e-6, atol=1e-6)


@native
@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 4, 5, 7), (2, 2, 3, 1)])
def test_opcheck(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, requires_grad=True)
    params = make_params(shape[1], requires_grad=True)
    torch.library.opcheck(torch.ops.fastdeblur.naf_block.default, (x, *params, 1e-6))
    g = torch.randn(shape)
    torch.library.opcheck(torch.ops.fastdeblur._naf_block_backward.default,
                          (g, x.detach(), *[p.detach() for p in params], 1e-6))


@native
def test_torch_compile_fullgraph() -> None:
    x = torch.randn(1, 4, 6, 5, requires_grad=True)
    params = make_params(4, requires_grad=True)

    def loss(x: torch.Tensor, *p: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastdeblur.naf_block(x, *p, 1e-6).square().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x, *params), [x, *params])
    want = torch.autograd.grad(ref(x, params).square().sum(), [x, *params])
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, scale=100)


def test_bad_arguments() -> None:
    params = make_params(4)
    with pytest.raises(ValueError, match="x must be"):
        naf_ops.naf_block(torch.randn(4, 5, 5), params)
    with pytest.raises(ValueError, match="params must hold"):
        naf_ops.naf_block(torch.randn(1, 4, 5, 5), params[:-1])
    with pytest.raises(ValueError, match="conv1_weight"):
        bad = list(params)
        bad[2] = torch.randn(8, 3, 1, 1)
        naf_ops.naf_block(torch.randn(1, 4, 5, 5), bad)


def test_reference_backend_matches_reference() -> None:
    x = torch.randn(1, 4, 5, 6)
    params = make_params(4)
    with _backend.use_backend("reference"):
        out = fused(x, params)
    torch.testing.assert_close(out, ref(x, params))


def _run_python(code: str, env_extra: dict[str, str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), **env_extra)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@native
@pytest.mark.slow
def test_poisoned_outputs_are_all_written() -> None:
    out = _run_python("""
        import torch
        from fastdeblur.ops import naf
        from tests.ops.test_naf import make_params
        for shape in [(2, 4, 5, 7), (1, 8, 3, 1)]:
            x = torch.randn(shape, requires_grad=True)
            params = make_params(shape[1], requires_grad=True)
            y = torch.ops.fastdeblur.naf_block(x, *params, 1e-6)
            grads = torch.autograd.grad(y, [x, *params], torch.randn(shape))
            assert not torch.isnan(y).any()
            assert not any(torch.isnan(g).any() for g in grads)
        print("ok")
    """, {"FASTDEBLUR_POISON_OUTPUTS": "1"})
    assert "ok" in out


@pytest.mark.slow
def test_triton_interpreter_matches_reference() -> None:
    pytest.importorskip("triton")
    out = _run_python("""
        import torch
        from fastdeblur.triton import naf as tn
        from fastdeblur.ops import reference
        from tests.ops.test_naf import make_params
        torch.manual_seed(0)
        cases = [(2, 16, 5, 7, 1024), (1, 32, 3, 3, 1024), (1, 4, 3, 6, 1024),
                 (1, 16, 9, 20, 1)]  # one program an image: backward loops over blocks
        for *shape, programs in cases:
            tn._TARGET_PROGRAMS = programs
            x = torch.randn(shape, requires_grad=True)
            params = make_params(shape[1], requires_grad=True)
            g = torch.randn(shape)
            y = tn.naf_block(x, params, 1e-6)
            yr = reference.naf_block(x, *params, eps=1e-6)
            torch.testing.assert_close(y, yr, rtol=1e-3, atol=1e-3)
            ga = torch.autograd.grad(y, [x, *params], g)
            gb = torch.autograd.grad(yr, [x, *params], g)
            for a, b in zip(ga, gb):
                torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
        print("ok")
    """, {"TRITON_INTERPRET": "1"})
    assert "ok" in out


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_reference(dtype: torch.dtype) -> None:
    x = torch.randn(2, 32, 37, 29, device="cuda", requires_grad=True)
    params = [p.cuda().requires_grad_() for p in make_params(32)]
    g = torch.randn_like(x)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out, grads = grads_of(fused, x, params, g)
    exact_out, exact_grads = grads_of(ref, x.double(), [p.double() for p in params], g.double())
    if dtype == torch.float32:
        assert_close(out, exact_out, dtype, scale=10)
        for a, b in zip(grads, exact_grads, strict=True):
            torch.testing.assert_close(a, b.float(), rtol=1e-3, atol=1e-3)
    else:
        xb = x.detach().bfloat16().requires_grad_()
        pb = [p.detach().bfloat16().requires_grad_() for p in params]
        same_out, same_grads = grads_of(ref, xb, pb, g.bfloat16())
        from tests._tol import half_precision_close

        half_precision_close(out, same_out, exact_out, atol=1e-2)
        for a, s, e in zip(grads, same_grads, exact_grads, strict=True):
            half_precision_close(a, s, e, atol=5e-2)


@native
@pytest.mark.parametrize(("shape", "threads"), [((2, 64, 40, 9), 1), ((1, 256, 130, 9), 1),
                                               ((4, 16, 3, 40), 2), ((2, 32, 300, 20), 2)])
def test_banded_forward_backward_match_reference(shape: tuple[int, ...], threads: int) -> None:
    """Large enough for the kernels to run band by band (halo rows between bands,
    per-chunk parameter-gradient partials), on one thread and on worker threads, with
    parameters that require grad and a backward run by the autograd engine."""
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        params = make_params(shape[1], torch.float64, requires_grad=True)
        g = torch.randn(shape, dtype=torch.float64)
        with _backend.use_backend("native"):
            out = fused(x, params)
            out.backward(g)
        grads = [x.grad, *[p.grad for p in params]]
        out_ref, grads_ref = grads_of(ref, x, params, g)
        assert_close(out, out_ref, scale=10)
        for name, a, b in zip(["x", *naf_ops.PARAM_NAMES], grads, grads_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)
    finally:
        torch.set_num_threads(saved_threads)

"""sv_conv / sv_conv_adjoint: every backend against the PyTorch reference, adjointness,
autograd, torch.compile, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastdeblur import _backend, _ext
from fastdeblur.convolution import BOUNDARIES, blur
from fastdeblur.ops import reference as R
from fastdeblur.ops import sv_conv, sv_conv_adjoint
from fastdeblur.spatially_varying import SpatiallyVaryingBlur
from tests._poison import poisoned_empty
from tests._tol import ADJOINT_TOL, assert_close, half_precision_close

REPO = Path(__file__).resolve().parents[2]
native = pytest.mark.skipif(
    not _ext.has_kernel("sv_conv", "CPU"), reason="fastdeblur._C not built"
)

# (B, C, H, W, kh, kw, shared): odd sizes, rectangular kernels, 1x1, kernels larger than
# the image (reflect then mirrors periodically), channel counts hitting every code path.
CASES = [
    (2, 3, 7, 9, 3, 3, False),
    (1, 5, 6, 5, 5, 3, True),
    (3, 1, 4, 3, 9, 11, False),
    (1, 2, 1, 5, 3, 3, True),
    (2, 6, 8, 7, 5, 5, False),
    (1, 4, 5, 6, 1, 1, False),
    (2, 7, 5, 4, 3, 5, True),
]


def _inputs(B, C, H, W, kh, kw, shared, dtype=torch.float64, device="cpu"):
    x = torch.randn(B, C, H, W, dtype=dtype, device=device)
    k_shape = (kh * kw, H, W) if shared else (B, kh * kw, H, W)
    k = torch.randn(k_shape, dtype=dtype, device=device)
    return x, k


def _ops(backend: str):
    """(forward, adjoint, kernel gradient) of a backend, with the registered-op signature."""
    ns = torch.ops.fastdeblur
    if backend == "native":
        return ns.sv_conv, ns.sv_conv_adjoint, ns._sv_conv_kernel_grad
    if backend == "triton":
        return ns.sv_conv_triton, ns.sv_conv_adjoint_triton, ns._sv_conv_kernel_grad_triton
    return (
        lambda x, k, kh, kw, b: R.sv_conv(x, k, b, (kh, kw)),
        lambda y, k, kh, kw, b: R.sv_conv_adjoint(y, k, b, (kh, kw)),
        lambda g, x, kh, kw, b, s: R.sv_conv_kernel_grad(g, x, b, (kh, kw), s),
    )


def _check_against_reference(backend, case, boundary, dtype, device="cpu", scale=1.0):
    B, C, H, W, kh, kw, shared = case
    x, k = _inputs(*case, dtype=dtype, device=device)
    fwd, adj, kgrad = _ops(backend)
    ref_x, ref_k = x.double().cpu(), k.double().cpu()
    assert_close(fwd(x, k, kh, kw, boundary), R.sv_conv(ref_x, ref_k, boundary, (kh, kw)),
                 dtype=dtype, scale=scale)
    assert_close(adj(x, k, kh, kw, boundary), R.sv_conv_adjoint(ref_x, ref_k, boundary, (kh, kw)),
                 dtype=dtype, scale=scale)
    g = torch.randn_like(x)
    assert_close(kgrad(g, x, kh, kw, boundary, shared),
                 R.sv_conv_kernel_grad(g.double().cpu(), ref_x, boundary, (kh, kw), shared),
                 dtype=dtype, scale=scale)


# ---- reference: the spec ----


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("case", CASES[:4])
def test_equal_kernels_is_uniform_blur(case, boundary):
    B, C, H, W, kh, kw, _ = case
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    psf = torch.rand(kh, kw, dtype=torch.float64)
    field = psf.reshape(kh * kw, 1, 1).expand(kh * kw, H, W)
    expected = blur(x, psf, boundary)
    for backend in ("reference",) + (("native",) if _ext.has_native() else ()):
        with _backend.use_backend(backend):
            assert_close(sv_conv(x, field, boundary, kernel_size=(kh, kw)), expected)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("backend", ["reference", pytest.param("native", marks=native)])
def test_adjoint_identity(backend, boundary):
    for case in CASES:
        B, C, H, W, kh, kw, shared = case
        x, k = _inputs(*case)
        y = torch.randn_like(x)
        with _backend.use_backend(backend):
            Ax = sv_conv(x, k, boundary, kernel_size=(kh, kw))
            ATy = sv_conv_adjoint(y, k, boundary, kernel_size=(kh, kw))
        gap = ((Ax * y).sum() - (x * ATy).sum()).abs() / (Ax.norm() * y.norm())
        assert gap.item() <= ADJOINT_TOL, (case, gap.item())


def test_reference_gradcheck():
    x, k = _inputs(1, 2, 4, 5, 3, 3, False)
    x.requires_grad_(True)
    k.requires_grad_(True)
    for boundary in ("reflect", "zero"):
        assert torch.autograd.gradcheck(lambda a, b, bd=boundary: R.sv_conv(a, b, bd), (x, k),
                                        fast_mode=True)
        assert torch.autograd.gradcheck(
            lambda a, b, bd=boundary: R.sv_conv_adjoint(a, b, bd), (x, k), fast_mode=True
        )


def test_reference_kernel_grad_is_autograd():
    x, k = _inputs(2, 3, 5, 6, 3, 5, True)
    k.requires_grad_(True)
    g = torch.randn_like(x)
    (R.sv_conv(x, k, "replicate", (3, 5)) * g).sum().backward()
    assert_close(R.sv_conv_kernel_grad(g, x, "replicate", (3, 5), True), k.grad)


# ---- native CPU ----


@native
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_matches_reference(boundary, dtype):
    for case in CASES:
        _check_against_reference("native", case, boundary, dtype, scale=4.0)


@native
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_native_gradcheck(boundary):
    for shared in (False, True):
        x, k = _inputs(2, 2, 4, 3, 3, 3, shared)
        x.requires_grad_(True)
        k.requires_grad_(True)
        with _backend.use_backend("native"):
            assert torch.autograd.gradcheck(lambda a, b: sv_conv(a, b, boundary), (x, k),
                                            fast_mode=True)
            assert torch.autograd.gradcheck(lambda a, b: sv_conv_adjoint(a, b, boundary), (x, k),
                                            fast_mode=True)


@native
def test_native_gradgradcheck():
    x, k = _inputs(1, 2, 3, 4, 3, 3, False)
    x.requires_grad_(True)
    k.requires_grad_(True)
    with _backend.use_backend("native"):
        assert torch.autograd.gradgradcheck(lambda a, b: sv_conv(a, b, "reflect"), (x, k),
                                            fast_mode=True)


@native
def test_native_backward_matches_reference():
    x, k = _inputs(2, 3, 6, 7, 5, 3, False)
    g = torch.randn_like(x)
    grads = {}
    for backend in ("reference", "native"):
        a = x.clone().requires_grad_(True)
        b = k.clone().requires_grad_(True)
        with _backend.use_backend(backend):
            out = sv_conv(a, b, "circular", kernel_size=(5, 3))
            out = sv_conv_adjoint(out, b, "circular", kernel_size=(5, 3))
        (out * g).sum().backward()
        grads[backend] = (a.grad, b.grad)
    assert_close(grads["native"][0], grads["reference"][0])
    assert_close(grads["native"][1], grads["reference"][1])


@native
def test_native_batch_sizes_and_empty():
    for B in (0, 1, 4):
        x, k = _inputs(B, 3, 5, 6, 3, 3, False)
        with _backend.use_backend("native"):
            y = sv_conv(x, k)
            xa = sv_conv_adjoint(x, k)
        assert y.shape == xa.shape == (B, 3, 5, 6)
        assert_close(y, R.sv_conv(x, k))
        assert_close(xa, R.sv_conv_adjoint(x, k))
    x, k = _inputs(2, 0, 5, 6, 3, 3, False)  # no channels: zero kernel gradient
    assert torch.ops.fastdeblur._sv_conv_kernel_grad(x, x, 3, 3, "reflect", False).eq(0).all()


@native
def test_native_non_contiguous_inputs():
    x = torch.randn(2, 7, 9, 3, dtype=torch.float64).permute(0, 3, 2, 1)  # (2, 3, 9, 7)
    k = torch.randn(2, 9, 9, 14, dtype=torch.float64)[..., ::2]  # (2, 9, 9, 7)
    assert not x.is_contiguous() and not k.is_contiguous()
    with _backend.use_backend("native"):
        assert_close(sv_conv(x, k, "reflect"), R.sv_conv(x, k, "reflect"))
        assert_close(sv_conv_adjoint(x, k, "zero"), R.sv_conv_adjoint(x, k, "zero"))


@pytest.mark.slow
@native
def test_native_fills_every_output_element():
    # FASTDEBLUR_POISON_OUTPUTS is read once per process: check in a fresh one.
    script = textwrap.dedent(
        """
        import torch
        from fastdeblur.ops import reference as R
        import fastdeblur._C  # noqa: F401
        ops = torch.ops.fastdeblur
        for boundary in ("reflect", "zero", "replicate", "circular"):
            for B, C, H, W, kh, kw, shared in [(2, 3, 7, 9, 3, 3, False),
                                               (1, 5, 3, 4, 7, 5, True)]:
                x = torch.randn(B, C, H, W)
                k = torch.randn(*(() if shared else (B,)), kh * kw, H, W)
                outs = [ops.sv_conv(x, k, kh, kw, boundary),
                        ops.sv_conv_adjoint(x, k, kh, kw, boundary),
                        ops._sv_conv_kernel_grad(x, x, kh, kw, boundary, shared)]
                assert all(bool(o.isfinite().all()) for o in outs), boundary
        print("ok")
        """
    )
    env = dict(os.environ, FASTDEBLUR_POISON_OUTPUTS="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


@pytest.mark.slow
@native
def test_opcheck():
    for shared in (False, True):
        x, k = _inputs(2, 3, 5, 4, 3, 3, shared)
        x.requires_grad_(True)
        k.requires_grad_(True)
        g = torch.randn(2, 3, 5, 4, dtype=torch.float64)
        ns = torch.ops.fastdeblur
        torch.library.opcheck(ns.sv_conv.default, (x, k, 3, 3, "reflect"))
        torch.library.opcheck(ns.sv_conv_adjoint.default, (x, k, 3, 3, "circular"))
        torch.library.opcheck(ns._sv_conv_kernel_grad.default, (g, x, 3, 3, "zero", shared))


@pytest.mark.slow
def test_torch_compile_fullgraph():
    # The native ops when built, else the reference fallback.
    backend = "native" if _ext.has_kernel("sv_conv", "CPU") else "reference"
    torch._dynamo.reset()
    x, k = _inputs(2, 3, 6, 5, 3, 3, False, dtype=torch.float32)
    k.requires_grad_(True)

    def step(a, b):
        return sv_conv_adjoint(sv_conv(a, b, "reflect"), b, "reflect").square().sum()

    with _backend.use_backend(backend):
        eager = step(x, k)
        (eager_grad,) = torch.autograd.grad(eager, k)
        compiled = torch.compile(step, fullgraph=True)(x, k)
        (compiled_grad,) = torch.autograd.grad(compiled, k)
    assert_close(compiled, eager)
    assert_close(compiled_grad, eager_grad)


# ---- public API behaviour ----


def test_public_reference_backend_matches_reference():
    x, k = _inputs(2, 3, 5, 6, 3, 3, False)
    with _backend.use_backend("reference"):
        assert_close(sv_conv(x, k, "replicate"), R.sv_conv(x, k, "replicate"))
        assert_close(sv_conv_adjoint(x, k, "replicate"), R.sv_conv_adjoint(x, k, "replicate"))


def test_three_dim_image_and_half_precision_on_cpu():
    x, k = _inputs(1, 3, 5, 6, 3, 3, True, dtype=torch.float32)
    assert_close(sv_conv(x[0], k), R.sv_conv(x, k)[0])
    assert_close(sv_conv_adjoint(x[0], k[None]), R.sv_conv_adjoint(x, k)[0])
    # bf16 on the CPU runs on the reference (the native CPU kernels are fp32/fp64).
    y = sv_conv(x.bfloat16(), k.bfloat16())
    assert y.dtype == torch.bfloat16
    half_precision_close(y, R.sv_conv(x.bfloat16(), k.bfloat16()), R.sv_conv(x.double(),
                         k.double()), atol=1e-2)


def test_bad_input_messages():
    x, k = _inputs(2, 3, 5, 6, 3, 3, False)
    with pytest.raises(ValueError, match="boundary"):
        sv_conv(x, k, "mirror")
    with pytest.raises(ValueError, match="kernel_size"):
        sv_conv(x, k, kernel_size=(3, 5))
    with pytest.raises(ValueError, match="not a positive square"):
        sv_conv(x, torch.randn(2, 6, 5, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype"):
        sv_conv(x, k.float())
    with pytest.raises(ValueError, match="batch"):
        sv_conv(x, k[:1])
    with pytest.raises(ValueError, match="cover"):
        sv_conv_adjoint(x, k[..., :5])
    with pytest.raises(ValueError, match="floating point"):
        sv_conv(x.long(), k)


def test_module_forward_adjoint_and_learnable():
    x, k = _inputs(2, 3, 6, 5, 3, 5, False)
    op = SpatiallyVaryingBlur(k, "circular", kernel_size=(3, 5))
    assert "kernels" in dict(op.named_buffers())
    assert_close(op(x), R.sv_conv(x, k, "circular", (3, 5)))
    assert_close(op.adjoint(x), R.sv_conv_adjoint(x, k, "circular", (3, 5)))
    learn = SpatiallyVaryingBlur(k.clone(), kernel_size=(3, 5), learnable=True)
    learn(x).sum().backward()
    assert learn.kernels.grad is not None and learn.kernels.grad.shape == k.shape
    assert "kernel_size=(3, 5)" in repr(learn)


# ---- Triton (CPU under the interpreter, in a fresh process) ----


def _triton_checks() -> None:
    """Run under TRITON_INTERPRET=1: fp32 Triton ops against the reference, autograd."""
    torch.manual_seed(0)
    cases = [(2, 3, 5, 6, 3, 3, False), (1, 5, 3, 4, 5, 3, True)]
    for boundary in BOUNDARIES:
        for case in cases:
            _check_against_reference("triton", case, boundary, torch.float32, scale=4.0)
    x, k = _inputs(1, 2, 4, 5, 3, 3, False, dtype=torch.float32)
    k.requires_grad_(True)
    with poisoned_empty(), _backend.use_backend("triton"):
        out = sv_conv_adjoint(sv_conv(x, k, "reflect"), k, "reflect")
    (grad,) = torch.autograd.grad(out.square().sum(), k)
    k_ref = k.detach().double().requires_grad_(True)
    ref = R.sv_conv_adjoint(R.sv_conv(x.double(), k_ref, "reflect"), k_ref, "reflect")
    (grad_ref,) = torch.autograd.grad(ref.square().sum(), k_ref)
    assert_close(out, ref, dtype=torch.float32, scale=4.0)
    assert_close(grad, grad_ref, dtype=torch.float32, scale=10.0)


@pytest.mark.slow
def test_triton_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    script = "from tests.ops.test_sv_conv import _triton_checks; _triton_checks(); print('ok')"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


# ---- CUDA (native kernels and Triton on a GPU) ----


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["native", "triton"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_cuda_matches_reference(backend, boundary):
    if backend == "native" and not _ext.has_kernel("sv_conv", "CUDA"):
        pytest.skip("fastdeblur._C built without CUDA")
    for case in CASES:
        _check_against_reference(backend, case, boundary, torch.float32, "cuda", scale=4.0)
        _check_against_reference(backend, case, boundary, torch.float64, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["native", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision(backend, dtype):
    if backend == "native" and not _ext.has_kernel("sv_conv", "CUDA"):
        pytest.skip("fastdeblur._C built without CUDA")
    x, k = _inputs(2, 3, 40, 70, 7, 7, False, dtype=torch.float32, device="cuda")
    k = k.abs() / k.abs().sum(1, keepdim=True)
    exact = R.sv_conv(x.double(), k.double(), "reflect")
    exact_adj = R.sv_conv_adjoint(x.double(), k.double(), "reflect")
    xl, kl = x.to(dtype), k.to(dtype)
    with _backend.use_backend(backend):
        half_precision_close(sv_conv(xl, kl), R.sv_conv(xl, kl), exact, atol=1e-3)
        half_precision_close(sv_conv_adjoint(xl, kl), R.sv_conv_adjoint(xl, kl), exact_adj,
                             atol=1e-3)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["native", "triton"])
def test_cuda_adjoint_identity_and_autograd(backend):
    if backend == "native" and not _ext.has_kernel("sv_conv", "CUDA"):
        pytest.skip("fastdeblur._C built without CUDA")
    for boundary in BOUNDARIES:
        for case in CASES:
            B, C, H, W, kh, kw, shared = case
            x, k = _inputs(*case, device="cuda")
            y = torch.randn_like(x)
            with _backend.use_backend(backend):
                Ax = sv_conv(x, k, boundary, kernel_size=(kh, kw))
                ATy = sv_conv_adjoint(y, k, boundary, kernel_size=(kh, kw))
            gap = ((Ax * y).sum() - (x * ATy).sum()).abs() / (Ax.norm() * y.norm())
            assert gap.item() <= ADJOINT_TOL
    x, k = _inputs(1, 2, 4, 5, 3, 3, True, device="cuda")
    x.requires_grad_(True)
    k.requires_grad_(True)
    with _backend.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, b: sv_conv(a, b, "reflect"), (x, k),
                                        fast_mode=True)
        assert torch.autograd.gradcheck(lambda a, b: sv_conv_adjoint(a, b, "zero"), (x, k),
                                        fast_mode=True)

"""fastdeblur.ops.grnn against its PyTorch reference, on every backend that can run here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastdeblur import _backend, _ext
from fastdeblur.ops import grnn, reference
from tests._poison import poisoned_empty
from tests._tol import assert_close

REPO = Path(__file__).resolve().parents[2]
HAS_NATIVE = _ext.has_kernel("grnn", "CPU")
CPU_BACKENDS = ["reference"] + (["native"] if HAS_NATIVE else [])
needs_native = pytest.mark.skipif(not HAS_NATIVE, reason="fastdeblur._C not built")


def _inputs(n: int, m: int, d: int, p: int, dtype: torch.dtype = torch.float32,
            device: str = "cpu", spread: float = 1.0):
    q = torch.randn(n, d, dtype=dtype, device=device) * spread
    k = torch.randn(m, d, dtype=dtype, device=device) * spread
    v = torch.randn(m, p, dtype=dtype, device=device)
    return q, k, v


def _expected(q, k, v, sigma, exclude_self=False):
    """fp64 reference (SDPA form)."""
    s = sigma.double() if isinstance(sigma, torch.Tensor) else sigma
    return reference.grnn(q.double(), k.double(), v.double(), s, exclude_self)


SHAPES = [  # (N, M, d, p)
    (1, 1, 1, 1),
    (7, 5, 3, 2),
    (33, 70, 30, 1),
    (130, 1100, 17, 3),  # several key tiles, ragged last tile
    (65, 40, 9, 20),  # wide values: GEMM path of the native kernel
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(backend, dtype, shape):
    n, m, d, p = shape
    q, k, v = _inputs(n, m, d, p, dtype)
    sigma = 0.6 * d**0.5
    with _backend.use_backend(backend):
        out = grnn(q, k, v, sigma)
    assert out.shape == (n, p) and out.dtype == dtype
    assert_close(out, _expected(q, k, v, sigma), dtype, scale=3)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_naive_reference_agrees(backend):
    q, k, v = _inputs(20, 31, 4, 2, torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0, 0.7], dtype=torch.float64)
    for exclude_self in (False, True):
        k2, v2 = (k[:20], v[:20]) if exclude_self else (k, v)
        naive = reference.grnn_naive(q, k2, v2, sigma, exclude_self)
        with _backend.use_backend(backend):
            assert_close(grnn(q, k2, v2, sigma, exclude_self=exclude_self), naive)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("sigma_kind", ["float", "scalar_tensor", "per_dim"])
def test_backward_matches_reference(backend, sigma_kind):
    q, k, v = _inputs(23, 600, 6, 3, torch.float64)
    sigma = {"float": 1.3, "scalar_tensor": torch.tensor(1.3, dtype=torch.float64),
             "per_dim": torch.linspace(0.8, 1.9, 6, dtype=torch.float64)}[sigma_kind]
    tensors = [q, k, v] + ([sigma] if isinstance(sigma, torch.Tensor) else [])
    for t in tensors:
        t.requires_grad_(True)
    grad_out = torch.randn(23, 3, dtype=torch.float64)
    with _backend.use_backend(backend):
        out = grnn(q, k, v, sigma)
    got = torch.autograd.grad(out, tensors, grad_out)
    ref = reference.grnn_naive(q, k, v, sigma)
    want = torch.autograd.grad(ref, tensors, grad_out)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, scale=100)


@needs_native
def test_backward_fp32_and_exclude_self():
    q, k, v = _inputs(300, 300, 12, 2)
    for t in (q, k, v):
        t.requires_grad_(True)
    sigma = torch.tensor(2.0, requires_grad=True)
    grad_out = torch.randn(300, 2)
    with _backend.use_backend("native"):
        out = grnn(q, k, v, sigma, exclude_self=True)
    got = torch.autograd.grad(out, (q, k, v, sigma), grad_out)
    qd, kd, vd, sd = (t.detach().double().requires_grad_(True) for t in (q, k, v, sigma))
    ref = reference.grnn(qd, kd, vd, sd, True)
    want = torch.autograd.grad(ref, (qd, kd, vd, sd), grad_out.double())
    assert_close(out, ref, torch.float32, scale=3)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, torch.float32, scale=10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exclude_self_is_leave_one_out(backend):
    x, _, y = _inputs(9, 9, 3, 2, torch.float64)
    with _backend.use_backend(backend):
        loo = grnn(x, x, y, 0.8, exclude_self=True)
        for i in range(9):
            keep = torch.arange(9) != i
            alone = grnn(x[i : i + 1], x[keep], y[keep], 0.8)
            assert_close(loo[i : i + 1], alone)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_inputs(backend):
    q, k, v = _inputs(40, 60, 10, 6)
    qt = q.t().contiguous().t()  # column-major
    k2 = torch.randn(60, 20)[:, ::2]  # strided columns
    vt = v[:, ::2]
    assert not (qt.is_contiguous() or k2.is_contiguous() or vt.is_contiguous())
    with _backend.use_backend(backend):
        out = grnn(qt, k2, vt, 2.5)
    assert_close(out, _expected(qt, k2, vt, 2.5), torch.float32, scale=3)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batch_sizes(backend):
    _, k, v = _inputs(0, 13, 4, 2)
    with _backend.use_backend(backend):
        q0 = torch.randn(0, 4, requires_grad=True)
        k0 = k.clone().requires_grad_(True)
        out = grnn(q0, k0, v, 1.0)
        assert out.shape == (0, 2)
        out.sum().backward()
        assert q0.grad.shape == (0, 4) and torch.all(k0.grad == 0)
        q1 = torch.randn(1, 4)
        assert_close(grnn(q1, k, v, 1.0), _expected(q1, k, v, 1.0), torch.float32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_single_key_returns_its_value(backend):
    q = torch.randn(5, 3) * 10
    k, v = torch.randn(1, 3), torch.randn(1, 4)
    with _backend.use_backend(backend):
        out = grnn(q, k, v, 0.01)
    assert_close(out, v.expand(5, 4), torch.float32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_tiny_sigma_is_stable(backend):
    # Well-separated keys, sigma = 1e-3: logits ~ 1e6, the weights are one-hot.
    keys = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    values = torch.randn(6, 3)
    queries = keys[[3, 0, 5]] + 0.01
    for t in (queries, keys, values):
        t.requires_grad_(True)
    with _backend.use_backend(backend):
        out = grnn(queries, keys, values, 1e-3)
        loo = grnn(keys, keys, values, 1e-3, exclude_self=True)
    assert torch.isfinite(out).all() and torch.isfinite(loo).all()
    assert_close(out, values[[3, 0, 5]].detach(), torch.float32)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (queries, keys, values))


@pytest.mark.parametrize("backend", ["native"] if HAS_NATIVE else [])
def test_large_coordinates_fp32(backend):
    # Points far from the origin: the op's centring keeps fp32 accurate.
    q, k, v = _inputs(50, 80, 5, 2)
    q, k = q + 1000.0, k + 1000.0
    with _backend.use_backend(backend):
        out = grnn(q, k, v, 1.5)
    assert_close(out, _expected(q, k, v, 1.5), torch.float32, scale=10)


@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_cpu(dtype):
    q, k, v = _inputs(30, 50, 8, 2)
    with _backend.use_backend("native"):
        out = grnn(q.to(dtype), k.to(dtype), v.to(dtype), 2.0)
    assert out.dtype == dtype
    exact = _expected(q.to(dtype), k.to(dtype), v.to(dtype), 2.0)
    torch.testing.assert_close(out.double(), exact, rtol=2e-2, atol=2e-2)


@needs_native
def test_native_lse_output():
    q, k, v = _inputs(17, 40, 5, 2, torch.float64)
    out, lse = torch.ops.fastdeblur.grnn(q, k, v, 0.9, False)
    assert_close(lse, reference.grnn_lse(q, k, 0.9))
    _, lse_loo = torch.ops.fastdeblur.grnn(k, k, v, 0.9, True)
    assert_close(lse_loo, reference.grnn_lse(k, k, 0.9, True))


def test_gradcheck_fp64():
    q, k, v = _inputs(5, 7, 3, 2, torch.float64)
    sigma = torch.tensor([0.7, 1.1, 0.9], dtype=torch.float64)
    args = [t.requires_grad_(True) for t in (q, k, v, sigma)]
    for backend in CPU_BACKENDS:
        with _backend.use_backend(backend):
            assert torch.autograd.gradcheck(lambda *a: grnn(*a), args)
            k7 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
            v7 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
            assert torch.autograd.gradcheck(
                lambda q_, k_, v_: grnn(q_, k_, v_, 0.8, exclude_self=True), (args[0], k7, v7))


@needs_native
def test_opcheck():
    samples = []
    for n, m, d, p, ex in [(4, 6, 3, 2, False), (6, 6, 2, 1, True), (0, 3, 2, 2, False)]:
        q, k, v = _inputs(n, m, d, p, torch.float64)
        samples.append((q, k, v, 0.9, ex))
        samples.append((q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True),
                        0.9, ex))
    for args in samples:
        torch.library.opcheck(torch.ops.fastdeblur.grnn.default, args)
    q, k, v = _inputs(4, 6, 3, 2, torch.float64)
    out, lse = torch.ops.fastdeblur.grnn(q, k, v, 0.9, False)
    torch.library.opcheck(torch.ops.fastdeblur._grnn_backward.default,
                          (torch.randn_like(out), q, k, v, out, lse, 0.9, False,
                           [True, False, True]))


@needs_native
def test_torch_compile_fullgraph():
    q, k, v = _inputs(9, 14, 4, 2)
    sigma = torch.tensor([0.9, 1.2, 1.0, 0.8], requires_grad=True)

    def f(q, k, v, sigma):
        return grnn(q, k, v, sigma).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    with _backend.use_backend("native"):
        loss = compiled(q, k, v, sigma)
        (grad,) = torch.autograd.grad(loss, sigma)
    ref = f(q.double(), k.double(), v.double(), sigma.detach().double().requires_grad_(True))
    assert_close(loss, ref, torch.float32, scale=3)
    assert torch.isfinite(grad).all()


@pytest.mark.slow
@needs_native
def test_poisoned_outputs():
    # FASTDEBLUR_POISON_OUTPUTS=1 is read once per process: check it in a fresh one.
    script = textwrap.dedent("""
        import torch
        from fastdeblur.ops import grnn, reference
        from fastdeblur import _backend
        torch.manual_seed(0)
        q, k, v = torch.randn(70, 5), torch.randn(1100, 5), torch.randn(1100, 3)
        for t in (q, k, v):
            t.requires_grad_(True)
        with _backend.use_backend("native"):
            out = grnn(q, k, v, 1.2)
            g = torch.autograd.grad(out.sum(), (q, k, v))
        assert torch.isfinite(out).all() and all(torch.isfinite(x).all() for x in g)
        ref = reference.grnn(q.double(), k.double(), v.double(), 1.2)
        assert (out.double() - ref).abs().max() < 1e-4
        print("OK")
    """)
    env = dict(os.environ, FASTDEBLUR_POISON_OUTPUTS="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_poisoned_empty(backend):
    q, k, v = _inputs(21, 37, 4, 3)
    with poisoned_empty(), _backend.use_backend(backend):
        out = grnn(q, k, v, 1.1)
    assert torch.isfinite(out).all()


def test_bad_inputs():
    q, k, v = _inputs(4, 6, 3, 2)
    with pytest.raises(ValueError, match="queries"):
        grnn(q[0], k, v, 1.0)
    with pytest.raises(ValueError, match="share d"):
        grnn(q, k[:, :2], v, 1.0)
    with pytest.raises(ValueError, match="values"):
        grnn(q, k, v[:5], 1.0)
    with pytest.raises(ValueError, match="at least one row"):
        grnn(q, k[:0], v[:0], 1.0)
    with pytest.raises(ValueError, match="sigma"):
        grnn(q, k, v, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        grnn(q, k, v, torch.ones(2))
    with pytest.raises(TypeError, match="dtype"):
        grnn(q, k.double(), v, 1.0)
    with pytest.raises(ValueError, match="exclude_self"):
        grnn(q, k, v, 1.0, exclude_self=True)


@needs_native
def test_native_op_checks_arguments():
    q, k, v = _inputs(4, 6, 3, 2)
    with pytest.raises(RuntimeError, match="sigma"):
        torch.ops.fastdeblur.grnn(q, k, v, -1.0, False)
    with pytest.raises(RuntimeError, match="share d"):
        torch.ops.fastdeblur.grnn(q, k[:, :2], v, 1.0, False)


TRITON_SCRIPT = textwrap.dedent("""
    import torch
    from fastdeblur import _backend
    from fastdeblur.ops import grnn, reference
    from tests._poison import poisoned_empty
    torch.manual_seed(0)
    cases = [(37, 45, 5, 3, False), (40, 40, 70, 2, True), (20, 33, 3, 70, False), (0, 5, 3, 2, False)]
    for n, m, d, p, ex in cases:
        q, k, v = torch.randn(n, d), torch.randn(m, d), torch.randn(m, p)
        sigma = torch.linspace(0.8, 1.6, d) * d ** 0.5
        for t in (q, k, v, sigma):
            t.requires_grad_(True)
        with _backend.use_backend("triton"), poisoned_empty():
            out = grnn(q, k, v, sigma, exclude_self=ex)
            g = torch.autograd.grad(out.sum(), (q, k, v, sigma))
        ref = reference.grnn(q.double(), k.double(), v.double(), sigma.double(), ex)
        gr = torch.autograd.grad(ref.sum(), (q, k, v, sigma))
        torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-4, atol=1e-5)
        for a, b in zip(g, gr):
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-3, atol=1e-4)
    # tiny sigma, well separated keys
    keys = torch.arange(12.0).reshape(6, 2)
    vals = torch.randn(6, 3)
    with _backend.use_backend("triton"):
        out = grnn(keys + 0.01, keys, vals, 1e-3)
        loo = grnn(keys, keys, vals, 1e-3, exclude_self=True)
    assert torch.isfinite(loo).all()
    torch.testing.assert_close(out, vals)
    print("OK")
""")


@pytest.mark.slow
def test_triton_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", TRITON_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300, cwd=str(REPO))
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-4000:]


# ---- CUDA (skipped without a GPU) --------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["native", "triton"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (70, 300, 30, 1), (129, 1000, 130, 20)])
def test_cuda_forward_backward_fp32(backend, shape):
    if backend == "native" and not _ext.has_kernel("grnn", "CUDA"):
        pytest.skip("no native CUDA kernel built")
    n, m, d, p = shape
    q, k, v = _inputs(n, m, d, p, device="cuda")
    sigma = torch.full((d,), 0.7 * d**0.5, device="cuda")
    for t in (q, k, v, sigma):
        t.requires_grad_(True)
    with _backend.use_backend(backend):
        out = grnn(q, k, v, sigma)
        grads = torch.autograd.grad(out.sum(), (q, k, v, sigma))
    ref = reference.grnn(*(t.double() for t in (q, k, v, sigma)))
    want = torch.autograd.grad(ref.sum(), (q, k, v, sigma))
    assert_close(out, ref.detach(), torch.float32, scale=3)
    for g, w in zip(grads, want, strict=True):
        assert_close(g, w, torch.float32, scale=30)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["native", "triton"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_half_precision(backend, dtype):
    if backend == "native" and not _ext.has_kernel("grnn", "CUDA"):
        pytest.skip("no native CUDA kernel built")
    q, k, v = (t.to(dtype) for t in _inputs(300, 2000, 64, 8, device="cuda"))
    with _backend.use_backend(backend):
        out = grnn(q, k, v, 6.0)
    exact = _expected(q, k, v, 6.0)
    rel = (out.double() - exact).norm() / exact.norm()
    assert rel < 1e-2
    with _backend.use_backend("reference"):
        same_precision = grnn(q, k, v, 6.0)
    ref_rel = (same_precision.double() - exact).norm() / exact.norm()
    assert rel <= 2 * ref_rel + 2e-3


@pytest.mark.cuda
def test_cuda_tiny_sigma_and_exclude_self():
    if not _ext.has_kernel("grnn", "CUDA"):
        pytest.skip("no native CUDA kernel built")
    keys = torch.arange(12.0, device="cuda").reshape(6, 2)
    vals = torch.randn(6, 3, device="cuda")
    with _backend.use_backend("native"):
        out = grnn(keys + 0.01, keys, vals, 1e-3)
        loo = grnn(keys, keys, vals, 1e-3, exclude_self=True)
    assert torch.isfinite(loo).all()
    assert_close(out, vals, torch.float32)

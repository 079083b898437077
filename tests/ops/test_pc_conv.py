"""Tests of the product-convolution ops (fastdeblur.ops.pc_conv) and ProductConvolutionBlur."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fastdeblur
from fastdeblur import _backend, _ext
from fastdeblur.convolution import BOUNDARIES, boundary_index
from fastdeblur.ops import reference
from fastdeblur.ops.pc_conv import (
    grid_to_pixel_kernels,
    pc_axis_weights,
    pc_conv,
    pc_conv_adjoint,
)
from fastdeblur.product_convolution import ProductConvolutionBlur
from tests._poison import poisoned_empty
from tests._tol import ADJOINT_TOL, assert_close

REPO = Path(__file__).resolve().parents[2]
HAS_NATIVE = _ext.has_kernel("pc_conv", "CPU")
needs_native = pytest.mark.skipif(not HAS_NATIVE, reason="native extension not built")
BACKENDS = ["reference", pytest.param("native", marks=needs_native)]

# (B, C, H, W, gh, gw, kh, kw, shared): odd sizes, kernel larger than the image, 1x1 grid,
# more grid cells than pixels, even-sized kernels.
SHAPES = [
    (2, 3, 13, 17, 3, 2, 5, 3, True),
    (1, 2, 5, 4, 2, 3, 9, 7, False),
    (3, 1, 8, 8, 1, 1, 3, 3, False),
    (2, 2, 11, 40, 4, 3, 4, 5, False),
    (1, 1, 3, 2, 4, 5, 7, 7, True),
    (1, 2, 37, 140, 3, 5, 11, 9, True),
]


def _inputs(shape, dtype=torch.float64, seed=0):
    B, C, H, W, gh, gw, kh, kw, shared = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, C, H, W, dtype=dtype, generator=g) + 0.1
    ks = (gh, gw, kh, kw) if shared else (B, gh, gw, kh, kw)
    k = torch.rand(ks, dtype=dtype, generator=g) + 0.05
    return x, k


def _naive_pc_conv(x, k, boundary):
    """Loops straight from the definition y[p] = Σ_q Σ_i h_i[q] w_i(m(p−q)) x(m(p−q))."""
    B, C, H, W = x.shape
    kk = k if k.ndim == 5 else k.expand(B, *k.shape)
    gh, gw, kh, kw = kk.shape[1:]
    wy, wx = pc_axis_weights(H, gh), pc_axis_weights(W, gw)
    y = torch.zeros(B, C, H, W, dtype=torch.float64)
    for u in range(kh):
        for v in range(kw):
            rows = boundary_index(torch.arange(H) - (u - kh // 2), H, boundary)
            cols = boundary_index(torch.arange(W) - (v - kw // 2), W, boundary)
            valid = (rows[:, None] >= 0) & (cols[None, :] >= 0)
            r, c = rows.clamp_min(0), cols.clamp_min(0)
            src = x.double()[:, :, r][:, :, :, c] * valid
            # Σ_i h_i[u, v] w_i(source pixel)
            field = torch.einsum("bac,ar,cs->brs", kk[..., u, v].double(), wy[:, r], wx[:, c])
            y += field[:, None] * src
    return y


@pytest.fixture(params=BACKENDS)
def backend(request):
    with _backend.use_backend(request.param):
        yield request.param


# ---- semantics ----


def test_weights_partition_of_unity():
    for n, cells in [(1, 1), (7, 3), (16, 4), (3, 5), (100, 8)]:
        w = pc_axis_weights(n, cells)
        assert w.shape == (cells, n)
        assert bool((w >= 0).all())
        assert_close(w.sum(0), torch.ones(n, dtype=torch.float64))
        assert int((w > 0).sum(0).max()) <= 2
    # Cell a is centred on pixel (a + 0.5) * n / cells - 0.5: full weight there, and the
    # border cells keep full weight out to the image border (the clamp).
    w = pc_axis_weights(9, 3)
    for a, centre in enumerate([1, 4, 7]):
        assert w[a, centre] == 1.0
    assert w[0, 0] == 1.0 and w[2, 8] == 1.0
    assert w[0, 2] == pytest.approx(2 / 3) and w[1, 2] == pytest.approx(1 / 3)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape", SHAPES[:4])
def test_reference_matches_definition(shape, boundary):
    x, k = _inputs(shape)
    assert_close(reference.pc_conv(x, k, boundary), _naive_pc_conv(x, k, boundary))


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_reference_fft_matches_direct(boundary):
    for shape in SHAPES:
        x, k = _inputs(shape)
        assert_close(reference.pc_conv_fft(x, k, boundary), reference.pc_conv(x, k, boundary))


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("grid", [(1, 1), (3, 4)])
def test_equal_kernels_is_blur(backend, boundary, grid):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 19, 23, dtype=torch.float64, generator=g)
    for kh, kw in [(5, 7), (25, 3)]:  # the second is taller than the image
        h = torch.rand(kh, kw, dtype=torch.float64, generator=g)
        grid_kernels = h.expand(*grid, kh, kw)
        assert_close(pc_conv(x, grid_kernels, boundary), fastdeblur.blur(x, h, boundary))


def test_pc_differs_from_pixel_model():
    # A grid of two different kernels: pc_conv weights the input, the per-pixel model the
    # output; they must not be confused.
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    k = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    k[0, 0, 1, 1] = 1.0  # identity on the left
    k[0, 1, 1, 0] = 1.0  # shift on the right
    K = grid_to_pixel_kernels(k, 16, 16)
    y_pixel = torch.zeros_like(x)
    for q in range(9):  # tap q of every pixel: a shifted copy of x weighted per output pixel
        y_pixel += K[q] * fastdeblur.blur(x, torch.eye(9, dtype=torch.float64)[q].reshape(3, 3))
    assert_close(y_pixel, _naive_pixel(x, K))
    assert not torch.allclose(reference.pc_conv(x, k), y_pixel)


def _naive_pixel(x, K, boundary="reflect"):
    kk, H, W = K.shape
    kh = kw = int(kk**0.5)
    y = torch.zeros_like(x)
    for u in range(kh):
        for v in range(kw):
            r = boundary_index(torch.arange(H) - (u - kh // 2), H, boundary)
            c = boundary_index(torch.arange(W) - (v - kw // 2), W, boundary)
            y += K[u * kw + v] * x[:, :, r][:, :, :, c]
    return y


# ---- grid_to_pixel_kernels ----


def test_grid_to_pixel_equal_kernels():
    h = torch.rand(5, 3, dtype=torch.float64)
    K = grid_to_pixel_kernels(h.expand(4, 3, 5, 3), 9, 7)
    assert K.shape == (15, 9, 7)
    assert_close(K, h.reshape(15, 1, 1).expand(15, 9, 7))
    Kb = grid_to_pixel_kernels(torch.rand(2, 3, 2, 5, 3), 6, 4)
    assert Kb.shape == (2, 15, 6, 4)


def test_grid_to_pixel_interpolates():
    k = torch.rand(2, 3, 4, 3, 3, dtype=torch.float64)
    H, W = 10, 13
    K = grid_to_pixel_kernels(k, H, W)
    wy, wx = pc_axis_weights(H, 3), pc_axis_weights(W, 4)
    for r, s in [(0, 0), (4, 7), (9, 12), (5, 2)]:
        expected = torch.einsum("bacq,a,c->bq", k.reshape(2, 3, 4, 9), wy[:, r], wx[:, s])
        assert_close(K[:, :, r, s], expected)
    # At a cell centre (exactly on a pixel) the kernel is the grid kernel itself.
    K2 = grid_to_pixel_kernels(k, 3 * 3, 4 * 3)  # centres at pixels 1, 4, 7 / 1, 4, 7, 10
    assert_close(K2[:, :, 4, 7], k[:, 1, 2].reshape(2, 9))


def test_grid_to_pixel_bad_input():
    with pytest.raises(ValueError, match="grid_kernels"):
        grid_to_pixel_kernels(torch.rand(3, 3, 3), 4, 4)
    with pytest.raises(ValueError, match="H and W"):
        grid_to_pixel_kernels(torch.rand(1, 1, 3, 3), -1, 4)


# ---- every backend against the reference ----


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape", SHAPES)
@needs_native
def test_native_forward_adjoint(shape, boundary, dtype):
    x, k = _inputs(shape, dtype)
    with _backend.use_backend("native"):
        y = pc_conv(x, k, boundary)
        xa = pc_conv_adjoint(x, k, boundary)
    assert_close(y, reference.pc_conv(x.double(), k.double(), boundary), dtype=dtype)
    assert_close(xa, reference.pc_conv_adjoint(x.double(), k.double(), boundary), dtype=dtype)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape", SHAPES[:4])
def test_backward_matches_reference_autograd(backend, shape, boundary):
    x, k = _inputs(shape)
    g = torch.randn(x.shape, dtype=x.dtype)
    for op in (pc_conv, pc_conv_adjoint):
        xr, kr = x.clone().requires_grad_(), k.clone().requires_grad_()
        ref = reference.pc_conv if op is pc_conv else reference.pc_conv_adjoint
        # The reference's own autograd (through conv2d) is the oracle.
        with _backend.use_backend("reference"):
            (ref(xr, kr, boundary) * g).sum().backward()
        xb, kb = x.clone().requires_grad_(), k.clone().requires_grad_()
        (op(xb, kb, boundary) * g).sum().backward()
        assert_close(xb.grad, xr.grad)
        assert_close(kb.grad, kr.grad)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_adjoint_identity(backend, boundary):
    for shape in SHAPES[:5]:
        x, k = _inputs(shape, seed=1)
        y = torch.randn(x.shape, dtype=torch.float64)
        ax = pc_conv(x, k, boundary)
        aty = pc_conv_adjoint(y, k, boundary)
        gap = abs(float((ax * y).sum() - (x * aty).sum()))
        assert gap / (float(ax.norm() * y.norm()) + 1e-300) <= ADJOINT_TOL


@needs_native
def test_non_contiguous_and_batch_sizes():
    with _backend.use_backend("native"):
        x = torch.rand(3, 2, 20, 30, dtype=torch.float64).transpose(-1, -2)  # (3, 2, 30, 20)
        k = torch.rand(2, 3, 7, 5, dtype=torch.float64).transpose(0, 1)  # (3, 2, 7, 5)
        assert not x.is_contiguous() and not k.is_contiguous()
        assert_close(pc_conv(x, k), reference.pc_conv(x, k))
        assert_close(pc_conv_adjoint(x, k), reference.pc_conv_adjoint(x, k))
        for B in (0, 1, 4):
            xb = torch.rand(B, 2, 9, 10, dtype=torch.float64)
            kb = torch.rand(B, 2, 2, 3, 3, dtype=torch.float64)
            assert pc_conv(xb, kb).shape == (B, 2, 9, 10)
            assert_close(pc_conv(xb, kb), reference.pc_conv(xb, kb))
            shared = torch.rand(2, 2, 3, 3, dtype=torch.float64)
            assert_close(pc_conv(xb, shared), reference.pc_conv(xb, shared))
        # Batch 0 backward.
        xb = torch.rand(0, 2, 9, 10, dtype=torch.float64, requires_grad=True)
        kb = torch.rand(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
        pc_conv(xb, kb).sum().backward()
        assert xb.grad.shape == xb.shape and float(kb.grad.abs().sum()) == 0.0


# ---- the native local-FFT path (large kernels) ----

# (B, C, H, W, gh, gw, kh, kw, shared): tiles of several sizes, per-sample kernels, even and
# rectangular kernels, a 1 x 1 grid, a kernel larger than the tiles.
FFT_SHAPES = [
    (1, 3, 40, 52, 3, 4, 9, 9, True),
    (2, 2, 33, 47, 2, 3, 8, 5, False),
    (1, 1, 30, 30, 1, 1, 7, 7, True),
    (2, 1, 24, 20, 4, 2, 15, 13, False),
]


@pytest.fixture(params=["fft", "auto"])
def pc_method(request, monkeypatch):
    """Forces the native path (read by the C++ op at every call)."""
    monkeypatch.setenv("FASTDEBLUR_PC_CONV_METHOD", request.param)
    return request.param


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape", FFT_SHAPES)
def test_native_fft_path_matches_reference(pc_method, shape, boundary, dtype):
    x, k = _inputs(shape, dtype)
    with _backend.use_backend("native"):
        y = pc_conv(x, k, boundary)
        xa = pc_conv_adjoint(x, k, boundary)
    assert_close(y, reference.pc_conv(x.double(), k.double(), boundary), dtype=dtype)
    assert_close(xa, reference.pc_conv_adjoint(x.double(), k.double(), boundary), dtype=dtype)


@needs_native
def test_native_fft_path_gradients_and_adjoint(monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_PC_CONV_METHOD", "fft")
    x = torch.rand(2, 1, 9, 11, dtype=torch.float64, requires_grad=True)
    k = torch.rand(2, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    with _backend.use_backend("native"):
        for op in (pc_conv, pc_conv_adjoint):
            assert torch.autograd.gradcheck(lambda a, b, op=op: op(a, b, "reflect"), (x, k),
                                            fast_mode=True)
        for boundary in BOUNDARIES:
            xs, _ = _inputs(FFT_SHAPES[1], seed=2)
            ks = torch.rand(2, 2, 3, 8, 5, dtype=torch.float64)
            ys = torch.randn(xs.shape, dtype=torch.float64)
            ax, aty = pc_conv(xs, ks, boundary), pc_conv_adjoint(ys, ks, boundary)
            gap = abs(float((ax * ys).sum() - (xs * aty).sum()))
            assert gap / float(ax.norm() * ys.norm()) <= ADJOINT_TOL


@needs_native
def test_native_fft_path_writes_every_output():
    script = textwrap.dedent(
        """
        import torch
        import fastdeblur._ext  # loads the native ops
        from fastdeblur.ops import reference as R
        ops = torch.ops.fastdeblur
        torch.manual_seed(0)
        for b in ("reflect", "zero", "replicate", "circular"):
            x = torch.rand(2, 2, 23, 31, dtype=torch.float64)
            k = torch.rand(2, 3, 2, 9, 7, dtype=torch.float64)
            for got, want in ((ops.pc_conv(x, k, b), R.pc_conv(x, k, b)),
                              (ops.pc_conv_adjoint(x, k, b), R.pc_conv_adjoint(x, k, b))):
                assert bool(torch.isfinite(got).all()), b
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        print("ok")
        """
    )
    env = dict(os.environ, FASTDEBLUR_POISON_OUTPUTS="1", FASTDEBLUR_PC_CONV_METHOD="fft",
               PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok" in done.stdout


@needs_native
def test_native_method_bad_value(monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_PC_CONV_METHOD", "winograd")
    with pytest.raises(RuntimeError, match="FASTDEBLUR_PC_CONV_METHOD"):
        torch.ops.fastdeblur.pc_conv(torch.rand(1, 1, 8, 8), torch.rand(2, 2, 3, 3), "reflect")


# ---- autograd / torch.library checks of the native ops ----


@needs_native
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_gradcheck(boundary):
    x = torch.rand(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    shared = torch.rand(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    batched = torch.rand(2, 2, 1, 5, 3, dtype=torch.float64, requires_grad=True)
    k = shared if boundary in ("reflect", "zero") else batched
    with _backend.use_backend("native"):
        for op in (pc_conv, pc_conv_adjoint):
            assert torch.autograd.gradcheck(lambda a, b, op=op: op(a, b, boundary), (x, k),
                                            fast_mode=True)


def test_gradcheck_reference():
    x = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    k = torch.rand(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    with _backend.use_backend("reference"):
        for op in (pc_conv, pc_conv_adjoint):
            assert torch.autograd.gradcheck(lambda a, b, op=op: op(a, b, "reflect"), (x, k),
                                            fast_mode=True)


@needs_native
def test_opcheck():
    samples = [
        (torch.rand(2, 3, 9, 8), torch.rand(2, 2, 3, 3), "reflect"),
        (torch.rand(1, 1, 5, 7, dtype=torch.float64), torch.rand(1, 3, 1, 4, 5,
                                                                 dtype=torch.float64), "zero"),
        (torch.rand(2, 1, 4, 4), torch.rand(1, 1, 9, 9), "circular"),
    ]
    for x, k, boundary in samples:
        x.requires_grad_()
        k.requires_grad_()
        torch.library.opcheck(torch.ops.fastdeblur.pc_conv.default, (x, k, boundary))
        torch.library.opcheck(torch.ops.fastdeblur.pc_conv_adjoint.default, (x, k, boundary))
        g = torch.rand_like(x).detach()
        torch.library.opcheck(
            torch.ops.fastdeblur._pc_conv_backward.default,
            (g, x.detach(), k.detach(), boundary, False, [True, True]),
        )


@needs_native
def test_torch_compile_fullgraph():
    x = torch.rand(2, 2, 12, 10, requires_grad=True)
    k = torch.rand(3, 2, 5, 5, requires_grad=True)

    def f(a, b):
        return pc_conv_adjoint(pc_conv(a, b, "replicate"), b, "replicate")

    with _backend.use_backend("native"):
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        out = compiled(x, k)
        out.sum().backward()
    expected = reference.pc_conv_adjoint(reference.pc_conv(x, k, "replicate"), k, "replicate")
    assert_close(out, expected)
    assert k.grad is not None and x.grad is not None


# ---- every output element is written ----


def test_reference_poisoned_empty():
    x, k = _inputs(SHAPES[0])
    expected = reference.pc_conv(x, k)
    with poisoned_empty():
        assert_close(reference.pc_conv(x, k), expected)
        assert bool(torch.isfinite(reference.pc_conv_adjoint(x, k)).all())


@needs_native
@pytest.mark.slow
def test_native_poisoned_outputs():
    script = textwrap.dedent(
        """
        import torch
        import fastdeblur._ext  # loads the native ops
        from fastdeblur.ops import reference as R
        ops = torch.ops.fastdeblur
        torch.manual_seed(0)
        shapes = [(23, 40, 3, 5, 11, 9), (3, 2, 4, 5, 7, 7), (12, 9, 2, 1, 3, 25)]
        for (H, W, gh, gw, kh, kw) in shapes:
            for b in ("reflect", "zero", "replicate", "circular"):
                x = torch.rand(2, 2, H, W, dtype=torch.float64)
                g = torch.rand(2, 2, H, W, dtype=torch.float64)
                k = torch.rand(2, gh, gw, kh, kw, dtype=torch.float64)
                gx, gk = ops._pc_conv_backward(g, x, k, b, False, [True, True])
                ax, ak = ops._pc_conv_backward(g, x, k[0], b, True, [True, True])
                pairs = [
                    (ops.pc_conv(x, k, b), R.pc_conv(x, k, b)),
                    (ops.pc_conv_adjoint(x, k, b), R.pc_conv_adjoint(x, k, b)),
                    (gx, R.pc_conv_adjoint(g, k, b)),
                    (gk, R.pc_conv_kernel_grad(x, g, k, b)),
                    (ax, R.pc_conv(g, k[0], b)),
                    (ak, R.pc_conv_kernel_grad(g, x, k[0], b)),
                ]
                for got, want in pairs:
                    assert bool(torch.isfinite(got).all()), b
                    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        print("ok")
        """
    )
    env = dict(os.environ, FASTDEBLUR_POISON_OUTPUTS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok" in done.stdout


# ---- errors, module ----


def test_bad_arguments():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="boundary"):
        pc_conv(x, torch.rand(2, 2, 3, 3), "mirror")
    with pytest.raises(ValueError, match="grid_kernels"):
        pc_conv(x, torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="grid_kernels"):
        pc_conv(x, torch.rand(3, 2, 2, 3, 3))
    with pytest.raises(ValueError, match="x must be"):
        pc_conv(torch.rand(8, 8), torch.rand(2, 2, 3, 3))
    with pytest.raises(ValueError, match="y must be"):
        pc_conv_adjoint(torch.rand(8, 8), torch.rand(2, 2, 3, 3))
    with pytest.raises(ValueError, match="floating"):
        pc_conv(torch.ones(1, 1, 4, 4, dtype=torch.int64), torch.rand(1, 1, 3, 3))


def test_module(backend):
    k = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    op = ProductConvolutionBlur(k, boundary="circular")
    x = torch.rand(3, 11, 12, dtype=torch.float64)
    assert_close(op(x), reference.pc_conv(x[None], k, "circular")[0])
    assert_close(op.adjoint(x), reference.pc_conv_adjoint(x[None], k, "circular")[0])
    assert op.pixel_kernels(11, 12).shape == (25, 11, 12)
    assert "grid_kernels" in dict(op.named_buffers())
    learn = ProductConvolutionBlur(k.float(), learnable=True)
    learn(x.float()[None]).sum().backward()
    assert learn.grid_kernels.grad is not None
    with pytest.raises(ValueError, match="grid_kernels"):
        ProductConvolutionBlur(torch.rand(3, 3))
    with pytest.raises(ValueError, match="boundary"):
        ProductConvolutionBlur(k, boundary="wrap")


# ---- Triton (CPU tensors under the interpreter, in a fresh process) ----


@pytest.mark.slow
def test_triton_interpreter():
    pytest.importorskip("triton")
    script = textwrap.dedent(
        """
        import torch
        from fastdeblur import _backend
        from fastdeblur.ops import reference as R
        from fastdeblur.ops.pc_conv import pc_conv, pc_conv_adjoint
        torch.manual_seed(0)
        cases = [(2, 7, 9, 2, 3, 5, 3, False), (1, 4, 3, 3, 2, 7, 5, True)]
        for b in ("reflect", "zero", "replicate", "circular"):
            for (B, H, W, gh, gw, kh, kw, shared) in cases[: 2 if b == "reflect" else 1]:
                x = torch.rand(B, 2, H, W, requires_grad=True)
                k = torch.rand(*(() if shared else (B,)), gh, gw, kh, kw, requires_grad=True)
                g = torch.rand(B, 2, H, W)
                with _backend.use_backend("triton"):
                    y = pc_conv(x, k, b)
                    a = pc_conv_adjoint(x, k, b)
                    gx, gk = torch.autograd.grad((y * g).sum() + (a * g).sum(), (x, k))
                yr = R.pc_conv(x, k, b)
                ar = R.pc_conv_adjoint(x, k, b)
                rx, rk = torch.autograd.grad((yr * g).sum() + (ar * g).sum(), (x, k))
                for got, want in ((y, yr), (a, ar), (gx, rx), (gk, rk)):
                    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        print("ok")
        """
    )
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok" in done.stdout


# ---- CUDA (run on a GPU machine) ----


@pytest.mark.cuda
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_reference(boundary, dtype):
    if not _ext.has_kernel("pc_conv", "CUDA"):
        pytest.skip("native CUDA kernels not built")
    shapes = SHAPES + [(1, 3, 200, 150, 4, 3, 31, 31, True), (1, 1, 40, 50, 2, 2, 101, 99, True)]
    for shape in shapes:
        x, k = _inputs(shape, dtype)
        x, k = x.cuda().requires_grad_(), k.cuda().requires_grad_()
        g = torch.randn_like(x)
        with _backend.use_backend("native"):
            y = pc_conv(x, k, boundary)
            a = pc_conv_adjoint(x, k, boundary)
            gx, gk = torch.autograd.grad((y * g).sum() + (a * g).sum(), (x, k))
        xr = x.detach().cpu().double().requires_grad_()
        kr = k.detach().cpu().double().requires_grad_()
        yr = reference.pc_conv(xr, kr, boundary)
        ar = reference.pc_conv_adjoint(xr, kr, boundary)
        rx, rk = torch.autograd.grad((yr * g.cpu().double()).sum() + (ar * g.cpu().double()).sum(),
                                     (xr, kr))
        scale = 10.0 if dtype == torch.float32 else 1.0  # long fp32 sums, atomics in the fold
        for got, want in ((y, yr), (a, ar), (gx, rx), (gk, rk)):
            assert_close(got.cpu(), want, dtype=dtype, scale=scale)


@pytest.mark.cuda
def test_cuda_triton_matches_reference():
    pytest.importorskip("triton")
    x = torch.rand(2, 3, 45, 70, device="cuda")
    k = torch.rand(2, 3, 4, 9, 7, device="cuda")
    with _backend.use_backend("triton"):
        for b in BOUNDARIES:
            assert_close(pc_conv(x, k, b).cpu(), reference.pc_conv(x.cpu(), k.cpu(), b), scale=10)
            assert_close(pc_conv_adjoint(x, k, b).cpu(),
                         reference.pc_conv_adjoint(x.cpu(), k.cpu(), b), scale=10)

"""NAFNet, NAFBlock (fused vs reference) and tiled inference."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastdeblur import _ext
from fastdeblur.models import LayerNorm2d, NAFBlock, NAFNet, SimpleGate, tiled_apply
from fastdeblur.models.nafnet import _blend_ramp
from tests._tol import assert_close

REPO = Path(__file__).resolve().parents[1]
native = pytest.mark.skipif(not _ext.has_kernel("naf_block", "CPU"),
                            reason="fastdeblur._C without the naf_block CPU kernel")


def randomise(model: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Random non-zero beta/gamma (zero at init, which would hide residual-branch bugs)
    and random LayerNorm affine parameters."""
    for m in model.modules():
        if isinstance(m, NAFBlock):
            m.beta.data.normal_(0, scale)
            m.gamma.data.normal_(0, scale)
        if isinstance(m, LayerNorm2d):
            m.weight.data.normal_(1, 0.2)
            m.bias.data.normal_(0, 0.2)
    return model


def small_net(**kw) -> NAFNet:
    return NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=(1, 2),
                  dec_blk_nums=(1, 1), **kw)


def test_layer_norm2d_and_simple_gate() -> None:
    x = torch.randn(2, 6, 3, 4)
    ln = LayerNorm2d(6)
    ln.weight.data.normal_()
    ln.bias.data.normal_()
    want = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias,
                                          1e-6).permute(0, 3, 1, 2)
    assert_close(ln(x), want)
    torch.testing.assert_close(SimpleGate()(x), x[:, :3] * x[:, 3:])


@native
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(2, 8, 9, 7), (1, 16, 4, 4)])
def test_fused_block_matches_reference(train: bool, shape: tuple[int, ...]) -> None:
    ref = randomise(NAFBlock(shape[1])).train(train)
    fused = copy.deepcopy(ref)
    fused.fused = True
    x = torch.randn(shape)
    x_ref = x.clone().requires_grad_()
    x_fused = x.clone().requires_grad_()
    g = torch.randn(shape)
    out_ref = ref(x_ref)
    out_fused = fused(x_fused)
    assert_close(out_fused, out_ref, scale=10)
    out_ref.backward(g)
    out_fused.backward(g)
    assert_close(x_fused.grad, x_ref.grad, scale=10)
    for (name, p_ref), p_fused in zip(ref.named_parameters(), fused.parameters(), strict=True):
        assert p_fused.grad is not None, name
        assert_close(p_fused.grad, p_ref.grad, scale=100)


def test_block_parameter_names_follow_the_paper() -> None:
    names = set(dict(NAFBlock(4).named_parameters()))
    assert {"conv1.weight", "conv2.weight", "conv3.weight", "sca.1.weight", "conv4.weight",
            "conv5.weight", "norm1.weight", "norm2.bias", "beta", "gamma"} <= names
    assert torch.all(NAFBlock(4).beta == 0) and torch.all(NAFBlock(4).gamma == 0)


@pytest.mark.parametrize("size", [(16, 16), (13, 21), (1, 5)])
def test_nafnet_pads_and_crops(size: tuple[int, int]) -> None:
    net = small_net().eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape
    assert net.padder_size == 4


def test_nafnet_global_residual() -> None:
    """With the ending convolution zeroed the network is the identity."""
    net = randomise(small_net()).eval()
    net.ending.weight.data.zero_()
    net.ending.bias.data.zero_()
    x = torch.rand(1, 3, 10, 11)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x)


def test_guided_nafnet_adds_the_residual_to_the_image_channels() -> None:
    net = randomise(small_net(guide_channels=3)).eval()
    assert net.intro.in_channels == 6 and net.ending.out_channels == 3
    x = torch.rand(1, 6, 10, 11)
    with torch.no_grad():
        out = net(x)
        net.ending.weight.data.zero_()
        net.ending.bias.data.zero_()
        torch.testing.assert_close(net(x), x[:, :3])  # the guide only feeds the residual
    assert out.shape == (1, 3, 10, 11)
    with pytest.raises(ValueError, match="guide_channels"):
        NAFNet(guide_channels=-1)


@native
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("guide_channels", [0, 3])
def test_fused_nafnet_matches_reference(train: bool, guide_channels: int) -> None:
    ref = randomise(small_net(guide_channels=guide_channels), 0.3).train(train)
    fused = copy.deepcopy(ref).set_fused(True)
    assert fused.fused and not ref.fused
    x = torch.rand(2, 3 + guide_channels, 13, 18)
    x_ref = x.clone().requires_grad_()
    x_fused = x.clone().requires_grad_()
    out_ref, out_fused = ref(x_ref), fused(x_fused)
    assert_close(out_fused, out_ref, scale=30)
    out_ref.square().sum().backward()
    out_fused.square().sum().backward()
    assert_close(x_fused.grad, x_ref.grad, scale=100)
    for (name, p_ref), p_fused in zip(ref.named_parameters(), fused.parameters(), strict=True):
        assert p_fused.grad is not None, name
        torch.testing.assert_close(p_fused.grad, p_ref.grad, rtol=1e-3, atol=1e-3, msg=name)


def test_nafnet_bad_arguments() -> None:
    with pytest.raises(ValueError, match="same length"):
        NAFNet(enc_blk_nums=(1, 1), dec_blk_nums=(1,))
    with pytest.raises(ValueError, match="inp must be"):
        small_net()(torch.rand(1, 1, 8, 8))


def test_blend_windows_sum_to_one_in_an_exact_overlap() -> None:
    n, overlap = 40, 16
    a = _blend_ramp(n, overlap, False, True, torch.device("cpu"), torch.float64)
    b = _blend_ramp(n, overlap, True, False, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(a[n - overlap:] + b[:overlap], torch.ones(overlap,
                                                                          dtype=torch.float64))
    assert torch.all(a[: n - overlap] == 1) and torch.all(b[overlap:] == 1)


def test_tiled_equals_untiled_for_a_local_model() -> None:
    """beta = gamma = 0 makes every block the identity: the network is local (receptive
    field radius < overlap / 4) and tiling must reproduce the whole-image result."""
    net = small_net().eval()
    x = torch.rand(1, 3, 56, 75)
    with torch.no_grad():
        full = net(x)
    tiled = tiled_apply(net, x, tile=40, overlap=24)
    torch.testing.assert_close(tiled, full, rtol=1e-5, atol=1e-5)


def test_tiled_close_to_untiled_and_seamless() -> None:
    """With channel attention (global pooling per tile) tiling changes the result a
    little; the blend must stay smooth: no jump at tile borders."""
    torch.manual_seed(1)
    net = randomise(small_net(), 0.1).eval()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 78), indexing="ij")
    x = torch.stack([torch.sin(6 * yy + 3 * xx), torch.cos(5 * xx), yy * xx])[None] * 0.5 + 0.5
    with torch.no_grad():
        full = net(x)
    tiled = tiled_apply(net, x, tile=40, overlap=16)
    diff = tiled - full
    assert diff.abs().max() < 0.05 * full.abs().max()
    # a seam would show as a step in the difference image across a tile border
    steps = torch.cat([diff.diff(dim=-1).abs().flatten(), diff.diff(dim=-2).abs().flatten()])
    assert steps.max() < 0.01 * full.abs().max()


def test_tiled_small_image_is_one_call() -> None:
    calls = []

    def model(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape)
        return t * 2

    x = torch.rand(1, 3, 20, 30)
    torch.testing.assert_close(tiled_apply(model, x, tile=32, overlap=8), x * 2)
    assert len(calls) == 1


def test_tiled_identity_model_any_size() -> None:
    x = torch.rand(2, 3, 75, 51)
    torch.testing.assert_close(tiled_apply(lambda t: t + 1, x, tile=16, overlap=6), x + 1)


def test_tiled_bad_arguments() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(lambda t: t, torch.rand(1, 3, 8, 8), tile=8, overlap=8)
    with pytest.raises(ValueError, match="image must be"):
        tiled_apply(lambda t: t, torch.rand(3, 8, 8))


@native
def test_fused_block_compiles_fullgraph() -> None:
    block = randomise(NAFBlock(4, fused=True))
    x = torch.randn(1, 4, 6, 5, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    block.fused = False
    assert_close(out, block(x), scale=10)


@pytest.mark.slow
def test_triton_fused_block_matches_reference_train_and_eval() -> None:
    """The Triton block (interpreter, CPU) against the unfused one with random beta/gamma."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import copy
        import torch
        from fastdeblur.models import NAFBlock
        from tests.test_nafnet import randomise
        torch.manual_seed(0)
        for train in (True, False):
            ref = randomise(NAFBlock(4)).train(train)
            assert ref.beta.abs().min() > 0 and ref.gamma.abs().min() > 0
            fused = copy.deepcopy(ref)
            fused.fused = True
            x = torch.randn(2, 4, 5, 7)
            x_ref, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
            out_ref, out_fused = ref(x_ref), fused(x_fused)
            torch.testing.assert_close(out_fused, out_ref, rtol=1e-4, atol=1e-4)
            g = torch.randn_like(x)
            out_ref.backward(g)
            out_fused.backward(g)
            torch.testing.assert_close(x_fused.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
            for (name, a), b in zip(ref.named_parameters(), fused.parameters(), strict=True):
                torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-3, msg=name)
        import sys
        assert "fastdeblur.triton.naf" in sys.modules  # the Triton kernels ran
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), TRITON_INTERPRET="1",
               FASTDEBLUR_BACKEND="triton")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.cuda
def test_fused_nafnet_bf16_autocast_on_gpu() -> None:
    ref = randomise(small_net(), 0.3).cuda()
    fused = copy.deepcopy(ref).set_fused(True)
    x = torch.rand(2, 3, 45, 61, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out_fused = fused(x)
        out_ref = ref(x)
    exact = ref.double()(x.double())
    err = (out_fused.double() - exact).abs().max().item()
    ref_err = (out_ref.double() - exact).abs().max().item()
    assert err <= 2 * ref_err + 2e-2
    out_fused.float().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fused.parameters())

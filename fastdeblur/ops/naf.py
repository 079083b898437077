"""The fused NAF block (NAFNet's building block) as one custom op.

``naf_block(x, params, eps)`` computes :func:`fastdeblur.ops.reference.naf_block` on
the native CPU kernels (channels-last, fused element-wise loops, 1x1 convolutions as
GEMMs) or on the Triton kernels for CUDA tensors; the reference is the fallback.

The native op ``torch.ops.fastdeblur.naf_block`` has a fake implementation and an
autograd formula whose backward is the op ``_naf_block_backward``; the backward
recomputes the block's intermediates from ``x``, so a fused block keeps only its input
alive between forward and backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdeblur import _backend, _ext
from fastdeblur.ops import reference

# Parameter order of the op, matching fastdeblur.ops.reference.naf_block.
PARAM_NAMES: tuple[str, ...] = (
    "norm1_weight", "norm1_bias", "conv1_weight", "conv1_bias", "conv2_weight", "conv2_bias",
    "sca_weight", "sca_bias", "conv3_weight", "conv3_bias", "beta", "norm2_weight",
    "norm2_bias", "conv4_weight", "conv4_bias", "conv5_weight", "conv5_bias", "gamma",
)


# Widest block that runs on the Triton kernels in "auto" mode (see naf_block).
TRITON_MAX_CHANNELS = 64


def param_shapes(channels: int) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter of a block of ``channels`` channels (expansion 2)."""
    c, c2 = channels, 2 * channels
    return {
        "norm1_weight": (c,), "norm1_bias": (c,),
        "conv1_weight": (c2, c, 1, 1), "conv1_bias": (c2,),
        "conv2_weight": (c2, 1, 3, 3), "conv2_bias": (c2,),
        "sca_weight": (c, c, 1, 1), "sca_bias": (c,),
        "conv3_weight": (c, c, 1, 1), "conv3_bias": (c,),
        "beta": (1, c, 1, 1),
        "norm2_weight": (c,), "norm2_bias": (c,),
        "conv4_weight": (c2, c, 1, 1), "conv4_bias": (c2,),
        "conv5_weight": (c, c, 1, 1), "conv5_bias": (c,),
        "gamma": (1, c, 1, 1),
    }


def _check(x: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if len(params) != len(PARAM_NAMES):
        raise ValueError(f"params must hold {len(PARAM_NAMES)} tensors {PARAM_NAMES}, "
                         f"got {len(params)}")
    shapes = param_shapes(x.shape[1])
    for name, p in zip(PARAM_NAMES, params, strict=True):
        if p.numel() != torch.Size(shapes[name]).numel():
            raise ValueError(f"{name} must have shape {shapes[name]} for x with {x.shape[1]} "
                             f"channels, got {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"{name} must be on {x.device} like x, got {p.device}")


def _requested_triton() -> bool:
    return _backend.requested() == "triton"


def _select_backend(device_type: str) -> str:
    # Resolved at trace time under torch.compile (_backend.select is traceable).
    return _backend.select("naf_block", torch.device(device_type))


def naf_block(x: torch.Tensor, params: Sequence[torch.Tensor], eps: float = 1e-6) -> torch.Tensor:
    """One NAF block, fused where a kernel exists (see module docstring).

    Args:
        x: ``(B, C, H, W)`` input, any memory layout.
        params: The 18 parameters in the order of :data:`PARAM_NAMES` (shapes in
            :func:`param_shapes`).
        eps: LayerNorm epsilon.

    Returns:
        ``(B, C, H, W)``; channels-last in memory on the native CPU path.
    """
    _check(x, params)
    params = list(params)
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        # The fused GPU kernels run the whole block in the autocast dtype (bf16 by
        # default) with fp32 statistics and accumulation.
        dtype = torch.get_autocast_dtype("cuda")
        with torch.autocast("cuda", enabled=False):
            return naf_block(x.to(dtype), [p.to(dtype) for p in params], eps)
    backend = _select_backend(x.device.type)
    if backend == "native" and x.device.type == "cpu" and x.dtype in (torch.float32,
                                                                      torch.float64):
        return torch.ops.fastdeblur.naf_block(x, *params, eps)
    explicit = _requested_triton()
    # The Triton kernels hold whole C x C weight tiles in registers: right for the wide,
    # high-resolution levels (C <= 64), not for the deep ones, where the block is
    # GEMM-bound and cuBLAS GEMMs (the reference in the autocast dtype) win.
    if (backend == "triton" or (backend == "native" and x.is_cuda)) and (
            explicit or x.shape[1] <= TRITON_MAX_CHANNELS):
        from fastdeblur.triton import naf as triton_naf

        return triton_naf.naf_block(x, params, eps)
    return reference.naf_block(x, *params, eps=eps)


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(*inputs[:-1])
    ctx.eps = inputs[-1]


def _backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN202
    x, *params = ctx.saved_tensors
    grads = torch.ops.fastdeblur._naf_block_backward(grad, x, *params, ctx.eps)
    return (*grads, None)


def _fake_forward(x: torch.Tensor, *args) -> torch.Tensor:  # noqa: ANN002
    return torch.empty_like(x, memory_format=torch.channels_last)


def _fake_backward(grad: torch.Tensor, x: torch.Tensor, *args) -> list[torch.Tensor]:  # noqa: ANN002
    params = args[:-1]
    return [torch.empty_like(x, memory_format=torch.channels_last)] + [
        torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in params
    ]


if _ext.has_native() and hasattr(torch.ops.fastdeblur, "naf_block"):
    torch.library.register_fake("fastdeblur::naf_block")(_fake_forward)
    torch.library.register_fake("fastdeblur::_naf_block_backward")(_fake_backward)
    torch.library.register_autograd("fastdeblur::naf_block", _backward,
                                    setup_context=_setup_context)

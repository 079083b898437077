"""Pure-PyTorch references of every fastdeblur op.

Each function here is the specification of its op (shapes, exact formula), the
fallback when the native extension is missing, and the baseline of ``bench/``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ---- naf_block ----
# The NAF block of NAFNet (Chen et al., "Simple Baselines for Image Restoration",
# ECCV 2022), written as one function of its input and parameters so that the fused
# kernels have a single specification to match.

def layer_norm2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the channels of every pixel.

    Args:
        x: ``(B, C, H, W)``.
        weight, bias: ``(C,)``.
        eps: Added to the (biased) variance.

    Returns:
        ``(B, C, H, W)``: ``(x - mean_c x) / sqrt(var_c x + eps) * weight + bias``.
    """
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    xhat = (x - mean) / torch.sqrt(var + eps)
    return xhat * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """SimpleGate: ``(B, 2C, H, W) -> (B, C, H, W)``, first channel half times the second."""
    a, b = x.chunk(2, dim=1)
    return a * b


def naf_block(x: torch.Tensor, norm1_weight: torch.Tensor, norm1_bias: torch.Tensor,
              conv1_weight: torch.Tensor, conv1_bias: torch.Tensor,
              conv2_weight: torch.Tensor, conv2_bias: torch.Tensor,
              sca_weight: torch.Tensor, sca_bias: torch.Tensor,
              conv3_weight: torch.Tensor, conv3_bias: torch.Tensor, beta: torch.Tensor,
              norm2_weight: torch.Tensor, norm2_bias: torch.Tensor,
              conv4_weight: torch.Tensor, conv4_bias: torch.Tensor,
              conv5_weight: torch.Tensor, conv5_bias: torch.Tensor, gamma: torch.Tensor,
              eps: float = 1e-6) -> torch.Tensor:
    """One NAF block (dropout-free), channel width ``C``, expansion 2 in both halves.

    Shapes: ``x (B, C, H, W)``; norm weights/biases ``(C,)``; ``conv1_weight (2C, C, 1, 1)``,
    ``conv1_bias (2C,)``; ``conv2_weight (2C, 1, 3, 3)`` (depthwise), ``conv2_bias (2C,)``;
    ``sca_weight (C, C, 1, 1)``, ``sca_bias (C,)``; ``conv3_weight (C, C, 1, 1)``,
    ``conv3_bias (C,)``; ``beta, gamma (1, C, 1, 1)``; ``conv4_weight (2C, C, 1, 1)``,
    ``conv4_bias (2C,)``; ``conv5_weight (C, C, 1, 1)``, ``conv5_bias (C,)``.

    Formula::

        g = SimpleGate(dwconv3x3(conv1(LN1(x))))          # zero padding
        s = sca_weight @ mean_{h,w}(g) + sca_bias          # simplified channel attention
        y = x + beta * conv3(g * s)
        out = y + gamma * conv5(SimpleGate(conv4(LN2(y))))

    Returns:
        ``(B, C, H, W)``.
    """
    h = layer_norm2d(x, norm1_weight, norm1_bias, eps)
    h = F.conv2d(h, conv1_weight, conv1_bias)
    h = F.conv2d(h, conv2_weight, conv2_bias, padding=1, groups=conv2_weight.shape[0])
    h = simple_gate(h)
    s = F.conv2d(F.adaptive_avg_pool2d(h, 1), sca_weight, sca_bias)
    h = F.conv2d(h * s, conv3_weight, conv3_bias)
    y = x + h * beta
    h = layer_norm2d(y, norm2_weight, norm2_bias, eps)
    h = simple_gate(F.conv2d(h, conv4_weight, conv4_bias))
    h = F.conv2d(h, conv5_weight, conv5_bias)
    return y + h * gamma

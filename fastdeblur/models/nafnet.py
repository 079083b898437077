"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022).

A U-Net of NAF blocks: LayerNorm2d, 1x1 / depthwise 3x3 convolutions, SimpleGate
(channel-half product) instead of activations, simplified channel attention, and
learnable residual scales ``beta`` / ``gamma`` (zero at initialisation). The network
predicts a residual: ``output = input + net(input)``, computed on the input padded to a
multiple of ``2 ** len(enc_blk_nums)`` and cropped back.

``NAFBlock(fused=True)`` runs on :func:`fastdeblur.ops.naf.naf_block` (native CPU kernels
in channels-last, Triton on CUDA, forward and backward); ``fused=False`` is the plain
PyTorch block, the reference. Module and parameter names follow the paper's code, so
its checkpoints load with ``load_state_dict``.

:func:`tiled_apply` runs any image-to-image model on large images tile by tile with
smoothly blended overlaps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastdeblur.ops import naf as naf_ops
from fastdeblur.ops import reference

__all__ = ["LayerNorm2d", "NAFBlock", "NAFNet", "SimpleGate", "tiled_apply"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of a ``(B, C, H, W)`` tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return reference.layer_norm2d(x, self.weight, self.bias, self.eps)


class SimpleGate(nn.Module):
    """``(B, 2C, H, W) -> (B, C, H, W)``: the first channel half times the second."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.simple_gate(x)


class NAFBlock(nn.Module):
    """The NAF block (expansion 2 in both halves, no dropout).

    Args:
        channels: Channel width ``C`` of the block's input and output.
        fused: Run on the fused kernels (:func:`fastdeblur.ops.naf.naf_block`) instead
            of the PyTorch modules. Both compute the same function with the same
            parameters.
    """

    def __init__(self, channels: int, fused: bool = False) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        dw = 2 * channels
        self.conv1 = nn.Conv2d(channels, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(channels, channels, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(channels, dw, 1)
        self.conv5 = nn.Conv2d(channels, channels, 1)
        self.norm1 = LayerNorm2d(channels)
        self.norm2 = LayerNorm2d(channels)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.fused = fused

    def fused_params(self) -> list[torch.Tensor]:
        """The parameters in the order of :data:`fastdeblur.ops.naf.PARAM_NAMES`."""
        return [
            self.norm1.weight, self.norm1.bias, self.conv1.weight, self.conv1.bias,
            self.conv2.weight, self.conv2.bias, self.sca[1].weight, self.sca[1].bias,
            self.conv3.weight, self.conv3.bias, self.beta, self.norm2.weight,
            self.norm2.bias, self.conv4.weight, self.conv4.bias, self.conv5.weight,
            self.conv5.bias, self.gamma,
        ]

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        if self.fused:
            return naf_ops.naf_block(inp, self.fused_params(), self.norm1.eps)
        x = self.norm1(inp)
        x = self.sg(self.conv2(self.conv1(x)))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class NAFNet(nn.Module):
    """NAFNet image restoration U-Net.

    Args:
        img_channel: Channels of the input/output image.
        width: Channels of the first level (doubled at every encoder level).
        middle_blk_num: NAF blocks at the lowest resolution.
        enc_blk_nums: NAF blocks per encoder level (one level each, each followed by a
            stride-2 2x2 convolution).
        dec_blk_nums: NAF blocks per decoder level (each preceded by a 1x1 convolution
            + PixelShuffle(2) upsampling and the skip connection). Same length as
            ``enc_blk_nums``.
        fused: Build the blocks with ``fused=True`` (see :class:`NAFBlock`).
        guide_channels: Extra input channels after the image's (e.g. the blurred image beside
            a classical deconvolution of it, for the kernel-guided network): the input is
            ``(B, img_channel + guide_channels, H, W)``; the output is the first
            ``img_channel`` input channels plus the network's residual.

    The defaults are the paper's width-32 deblurring model (GoPro).
    """

    def __init__(self, img_channel: int = 3, width: int = 32, middle_blk_num: int = 1,
                 enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
                 dec_blk_nums: Sequence[int] = (1, 1, 1, 1), fused: bool = False,
                 guide_channels: int = 0) -> None:
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError("enc_blk_nums and dec_blk_nums must have the same length, got "
                             f"{list(enc_blk_nums)} and {list(dec_blk_nums)}")
        if width < 1 or img_channel < 1 or middle_blk_num < 0 or guide_channels < 0:
            raise ValueError("width and img_channel must be >= 1, middle_blk_num and "
                             "guide_channels >= 0")
        self.img_channel = img_channel
        self.intro = nn.Conv2d(img_channel + guide_channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan, fused) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan, fused) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False),
                                          nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan, fused) for _ in range(num)]))
        self.padder_size = 2 ** len(self.encoders)

    @property
    def fused(self) -> bool:
        """Whether the blocks run fused (all of them)."""
        blocks = [m for m in self.modules() if isinstance(m, NAFBlock)]
        return bool(blocks) and all(b.fused for b in blocks)

    def set_fused(self, fused: bool) -> NAFNet:
        """Switch every block to the fused (or the reference) implementation."""
        for m in self.modules():
            if isinstance(m, NAFBlock):
                m.fused = fused
        return self

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """``(B, img_channel + guide_channels, H, W) -> (B, img_channel, H, W)``, any H, W."""
        if inp.dim() != 4 or inp.shape[1] != self.intro.in_channels:
            raise ValueError(f"inp must be (B, {self.intro.in_channels}, H, W), got "
                             f"{tuple(inp.shape)}")
        H, W = inp.shape[-2:]
        pad_h = (-H) % self.padder_size
        pad_w = (-W) % self.padder_size
        x0 = F.pad(inp, (0, pad_w, 0, pad_h)) if pad_h or pad_w else inp
        if self.fused and x0.device.type == "cpu":
            # The fused CPU blocks work in channels-last; keep the convolutions there too.
            x0 = x0.contiguous(memory_format=torch.channels_last)
        x = self.intro(x0)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips), strict=True):
            x = decoder(up(x) + skip)
        x = self.ending(x) + x0[:, : self.img_channel]
        return x[:, :, :H, :W]


def _blend_ramp(n: int, overlap: int, ramp_start: bool, ramp_end: bool,
                device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """1-D weights of one tile along one axis.

    At an end shared with a neighbouring tile the weight is 0 over the first quarter of
    the overlap (the pixels nearest the tile border, which saw the border), rises as a
    raised cosine over the middle half and is 1 from there on; the neighbour's weights
    mirror it, so in an overlap of exactly ``overlap`` pixels the two sum to 1.
    """
    w = torch.ones(n, dtype=torch.float64)
    margin = overlap // 4
    rise = max(overlap - 2 * margin, 1)
    i = torch.arange(n, dtype=torch.float64)
    ramp = (0.5 - 0.5 * torch.cos(math.pi * ((i - margin + 0.5) / rise).clamp(0, 1)))
    if ramp_start:
        w = torch.minimum(w, ramp)
    if ramp_end:
        w = torch.minimum(w, ramp.flip(0))
    return w.to(device=device, dtype=dtype)


def _tile_starts(size: int, tile: int, overlap: int, align: int) -> list[int]:
    """Starts of the tiles along one axis: every ``tile - overlap`` pixels (rounded down
    to a multiple of ``align``); the last tile reaches the end (its aligned start may
    make it a little shorter than ``tile``)."""
    if size <= tile:
        return [0]
    stride = max(((tile - overlap) // align) * align, align)
    last = -(-(size - tile) // align) * align
    starts = list(range(0, last, stride))
    starts.append(last)
    return starts


@torch.no_grad()
def tiled_apply(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                tile: int = 512, overlap: int = 32, align: int | None = None) -> torch.Tensor:
    """Apply an image-to-image ``model`` to a large image tile by tile, without seams.

    Tiles of up to ``tile x tile`` pixels overlap by at least ``overlap`` pixels. In an
    overlap each tile ignores the quarter nearest its own border (those outputs saw the
    border) and the tiles' outputs are blended with raised-cosine weights normalised to
    sum to 1, so the result is continuous across tile borders. Tile positions are
    multiples of ``align`` (default: the model's ``padder_size`` if it has one, e.g. the
    ``2 ** levels`` of :class:`NAFNet`), so every tile sees the same downsampling grid as
    the whole image. Images no larger than one tile run in one call. Runs under
    ``torch.no_grad``.

    A model whose output depends on global image statistics (NAFNet's channel attention
    pools over the whole input) gives slightly different results per tile than on the
    whole image; purely local models match the untiled result exactly when the receptive
    field radius is at most ``overlap // 4``.

    Args:
        model: Maps ``(B, C, h, w)`` to ``(B, C_out, h, w)`` for any ``h, w``.
        image: ``(B, C, H, W)``.
        tile: Tile side in pixels.
        overlap: Overlap of neighbouring tiles in pixels, in ``[0, tile)``.
        align: Tile positions are multiples of this (>= 1).

    Returns:
        ``(B, C_out, H, W)``, the dtype and device of the model's output.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"image must be a (B, C, H, W) tensor, got "
                         f"{getattr(image, 'shape', type(image))}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} with tile {tile}")
    if align is None:
        align = int(getattr(model, "padder_size", 1))
    if align < 1 or align > tile:
        raise ValueError(f"align must be in [1, tile], got {align}")
    B, _, H, W = image.shape
    if tile >= H and tile >= W:
        return model(image)
    ys, xs = _tile_starts(H, tile, overlap, align), _tile_starts(W, tile, overlap, align)
    out: torch.Tensor | None = None
    weight_sum: torch.Tensor | None = None
    for y0 in ys:
        th = min(tile, H - y0)
        for x0 in xs:
            tw = min(tile, W - x0)
            result = model(image[:, :, y0:y0 + th, x0:x0 + tw])
            if out is None:
                out = result.new_zeros(B, result.shape[1], H, W)
                weight_sum = result.new_zeros(1, 1, H, W)
            wy = _blend_ramp(th, overlap, y0 > 0, y0 + th < H, result.device, result.dtype)
            wx = _blend_ramp(tw, overlap, x0 > 0, x0 + tw < W, result.device, result.dtype)
            w2d = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, y0:y0 + th, x0:x0 + tw] += result * w2d
            weight_sum[:, :, y0:y0 + th, x0:x0 + tw] += w2d
    assert out is not None and weight_sum is not None
    return out / weight_sum

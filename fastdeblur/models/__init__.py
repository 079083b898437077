"""Neural network models of fastdeblur."""

from fastdeblur.models.nafnet import LayerNorm2d, NAFBlock, NAFNet, SimpleGate, tiled_apply

__all__ = ["LayerNorm2d", "NAFBlock", "NAFNet", "SimpleGate", "tiled_apply"]

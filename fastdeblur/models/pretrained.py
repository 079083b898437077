"""Shipped NAFNet weights and learned blind deblurring.

The package ships ``fastdeblur/weights/nafnet_deblur.safetensors`` (with its model card
``nafnet_deblur.md``): a small NAFNet trained on synthetic blurred/sharp pairs by
``fastdeblur train nafnet``. The file's metadata holds the architecture (``nafnet_config``),
so :func:`load_nafnet` needs nothing else.

:func:`nafnet_deblur` runs the network on images of any size tile by tile
(:func:`fastdeblur.models.nafnet.tiled_apply`). The network is trained on RGB; a gray image is
replicated to three channels and the three outputs are averaged back to one channel (a gray
image is a valid RGB image with equal channels, which the training data contains).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fastdeblur.models.nafnet import NAFNet, tiled_apply

__all__ = ["WEIGHTS_DIR", "load_nafnet", "nafnet_deblur", "weights_path"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_NAME = "nafnet_deblur"

_CACHE: dict[tuple[str, int, str, bool], NAFNet] = {}


def weights_path(name: str = DEFAULT_NAME) -> Path:
    """The file of shipped weights ``name`` (a name in ``fastdeblur/weights/`` or a path).

    Raises:
        FileNotFoundError: when there is no such file.
    """
    candidate = Path(name)
    if candidate.suffix == ".safetensors" or candidate.parent != Path("."):
        path = candidate
    else:
        path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise FileNotFoundError(
            f"NAFNet weights {name!r} not found ({path}); shipped weights: "
            f"{', '.join(shipped) or 'none'}. Train some with `fastdeblur train nafnet "
            f"--export PATH.safetensors` and pass that path."
        )
    return path


def _model_config(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    config = meta.get("nafnet_config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: no 'nafnet_config' in the safetensors metadata; not a "
                         "fastdeblur NAFNet export (see fastdeblur.train.nafnet)")
    return config


def load_nafnet(
    name: str | Path = DEFAULT_NAME,
    device: str | torch.device | None = None,
    *,
    fused: bool = True,
    cache: bool = True,
) -> NAFNet:
    """Load a trained NAFNet in eval mode.

    Args:
        name: Shipped weights name (``"nafnet_deblur"``) or a path to a ``.safetensors`` file
            written by ``fastdeblur train nafnet --export``.
        device: Where to put the model (default CPU).
        fused: Build the blocks on the fused NAF kernels (same function; falls back to the
            PyTorch reference where no kernel exists).
        cache: Reuse an already loaded model of the same file and device (do not modify a
            cached model's weights in place).

    Returns:
        The :class:`NAFNet` (``requires_grad`` off).

    Raises:
        FileNotFoundError: no such weights.
        ValueError: the file is not a NAFNet export or does not match its stored config.
    """
    from fastdeblur.train.export import load_safetensors

    path = weights_path(str(name))
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(device), fused)
    if cache and key in _CACHE:
        return _CACHE[key]
    tensors, meta = load_safetensors(path)
    model = NAFNet(**_model_config(meta, path), fused=fused)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored nafnet_config ({exc})") from None
    model.eval().requires_grad_(False).to(device)
    if cache:
        _CACHE[key] = model
    return model


@torch.no_grad()
def nafnet_deblur(
    image: torch.Tensor,
    *,
    model: NAFNet | None = None,
    tile: int = 512,
    overlap: int = 32,
    device: str | torch.device | None = None,
    guide: torch.Tensor | None = None,
) -> torch.Tensor:
    """Remove unknown blur (and noise) from images with the trained NAFNet.

    Args:
        image: ``(B, C, H, W)`` float tensor in [0, 1], ``C`` = 1 (gray) or 3 (RGB).
        model: A NAFNet with ``img_channel=3`` (default: :func:`load_nafnet` of the shipped
            weights).
        guide: For a model with ``guide_channels=3`` (the kernel-guided network: ``image`` is
            a classical deblurring of ``guide``, the blurred image): ``guide``, the shape of
            ``image``; the model sees both, stacked along the channels.
        tile: Tile side for large images (see :func:`tiled_apply`).
        overlap: Overlap of neighbouring tiles.
        device: Where to run (default: the model's device when ``model`` is given, else the
            image's). The result comes back on the image's device.

    Returns:
        ``(B, C, H, W)`` restored images clipped to [0, 1], the image's dtype and device.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"image must be a (B, C, H, W) tensor; got "
                         f"{getattr(image, 'shape', type(image))}")
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor in [0, 1]; got {image.dtype}")
    channels = image.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"image must have 1 (gray) or 3 (RGB) channels; got {channels}")
    if model is None:
        model = load_nafnet(device=device if device is not None else image.device)
    guided = model.intro.in_channels == 6
    if model.intro.in_channels not in (3, 6) or model.img_channel != 3:
        raise ValueError(f"model must take 3 channels (or 3 + 3 guide channels) and give 3; "
                         f"got {model.intro.in_channels} -> {model.img_channel}")
    if guided != (guide is not None):
        raise ValueError("a kernel-guided model (6 input channels) needs guide=, the blurred "
                         "image; a blind one takes none")
    if guide is not None and guide.shape != image.shape:
        raise ValueError(f"guide must have the image's shape {tuple(image.shape)}; got "
                         f"{tuple(guide.shape)}")
    run_device = torch.device(device) if device is not None else next(model.parameters()).device
    if image.numel() == 0:
        return image.clone()
    x = image.to(device=run_device, dtype=torch.float32)
    if channels == 1:
        x = x.expand(-1, 3, -1, -1)
    if guide is not None:
        x = torch.cat([x, guide.to(device=run_device, dtype=torch.float32).expand_as(x)], 1)
    was_training = model.training
    model.eval()
    try:
        y = tiled_apply(model, x.contiguous(), tile=tile, overlap=overlap)
    finally:
        model.train(was_training)
    if channels == 1:
        y = y.mean(dim=1, keepdim=True)
    return y.clamp(0, 1).to(device=image.device, dtype=image.dtype).contiguous()

"""A colour picture of a blur map: each textured patch tinted by its blur type (strength =
confidence), motion patches with a line along the estimated motion direction (length
proportional to the estimated length), flat patches left gray.

Colours: Gaussian blue, motion red, defocus green.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastdeblur.estimate.estimator import BlurMap
from fastdeblur.synth import BLUR_TYPES, to_gray

TYPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "gaussian": (40, 110, 255),
    "motion": (255, 50, 40),
    "defocus": (40, 210, 70),
}


def render_map(image: torch.Tensor, blur_map: BlurMap, *, alpha: float = 0.55):
    """Draw ``blur_map`` over a gray version of ``image``.

    Args:
        image: ``(C, H, W)`` in [0, 1] (the image the map was computed on).
        blur_map: Its :class:`~fastdeblur.estimate.estimator.BlurMap`.
        alpha: Largest opacity of the tint (reached at confidence 1).

    Returns:
        A ``PIL.Image.Image`` (RGB, same size as the image) with a legend in the top-left corner.
    """
    from PIL import Image, ImageDraw

    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W); got shape {tuple(image.shape)}")
    H, W = blur_map.image_size
    gray = to_gray(image.float().clamp(0, 1)[:3])[0].numpy()
    base = np.repeat((gray * 200 + 28)[..., None], 3, axis=2)  # darkened for contrast
    canvas = base.astype(np.float32)
    P = blur_map.patch_size
    colours = np.array([TYPE_COLOURS[t] for t in BLUR_TYPES], dtype=np.float32)
    for i, (r, c) in enumerate(blur_map.corners.tolist()):
        k = int(blur_map.blur_type[i])
        if k < 0:
            continue
        a = alpha * float(blur_map.confidence[i])
        region = canvas[r : r + P, c : c + P]
        region *= 1 - a
        region += a * colours[k]
    picture = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    motion = BLUR_TYPES.index("motion")
    for i, (r, c) in enumerate(blur_map.corners.tolist()):
        if int(blur_map.blur_type[i]) != motion:
            continue
        angle = float(blur_map.params["angle"][i])
        length = float(blur_map.params["length"][i])
        if math.isnan(angle) or math.isnan(length):
            continue
        half = 0.5 * min(length, P - 2)
        cy, cx = r + P / 2, c + P / 2
        # angle counter-clockwise as displayed: rows grow downwards
        dx, dy = half * math.cos(math.radians(angle)), -half * math.sin(math.radians(angle))
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=(255, 255, 255), width=2)
    y = 4
    for t in BLUR_TYPES:
        draw.rectangle([4, y, 14, y + 10], fill=TYPE_COLOURS[t], outline=(255, 255, 255))
        draw.text((18, y - 1), t, fill=(255, 255, 255))
        y += 14
    return picture

"""Before/after figures of the learned deblurring (NAFNet) on real blurry GoPro frames.

Writes ``docs/images/nafnet_real_<k>.jpg``: for each of the first ``count`` frames
``real_blur/seq_id-*_Input.png`` (GoPro dataset examples, CC BY 4.0; no ground truth), a
``crop x crop`` region with the most detail, blurred input on the left and the restored result on
the right, as a small JPEG (< 150 KB).

The network runs on the crop plus a margin of context that is cut away afterwards, so the crop
does not see an artificial border.

Run from the repository root::

    python scripts/make_nafnet_figures.py [--weights NAME_OR_PATH] [--count 4]

Shared data is read from ``$FASTDEBLUR_SHARED_DATA`` (default ``../shared/data`` beside the
checkout).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastdeblur.models.pretrained import load_nafnet, nafnet_deblur  # noqa: E402

SHARED = Path(os.environ.get("FASTDEBLUR_SHARED_DATA", REPO.parent / "shared" / "data"))
GAP = 4  # white pixels between the two halves
CONTEXT = 32  # pixels of context around the crop fed to the network


def _detail_crop(image: np.ndarray, crop: int) -> tuple[int, int]:
    """Top-left corner of the ``crop``-sized window (on a half-crop grid) with the largest mean
    gradient magnitude, at least ``CONTEXT`` pixels inside the frame."""
    gray = image.mean(axis=2)
    grad = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    H, W = gray.shape
    best, corner = -1.0, (CONTEXT, CONTEXT)
    for top in range(CONTEXT, H - crop - CONTEXT + 1, crop // 2):
        for left in range(CONTEXT, W - crop - CONTEXT + 1, crop // 2):
            score = float(grad[top : top + crop, left : left + crop].mean())
            if score > best:
                best, corner = score, (top, left)
    return corner


def make_nafnet_figures(
    out_dir: str | Path = REPO / "docs" / "images",
    *,
    weights: str = "nafnet_deblur",
    count: int = 4,
    crop: int = 256,
    quality: int = 85,
    source: str | Path | None = None,
) -> list[Path]:
    """Write up to ``count`` side-by-side before/after JPEGs; returns their paths.

    Args:
        out_dir: Output folder.
        weights: Shipped weights name or ``.safetensors`` path.
        count: Number of frames (at most 4 are kept small enough for the README).
        crop: Side of each half in pixels.
        quality: JPEG quality.
        source: Folder of the ``seq_id-*_Input.png`` frames (default ``real_blur`` in the shared
            data).
    """
    source = Path(source) if source is not None else SHARED / "real_blur"
    frames = sorted(source.glob("seq_id-*_Input.png"))[:count]
    if not frames:
        raise FileNotFoundError(f"no seq_id-*_Input.png frames in {source}")
    model = load_nafnet(weights)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, frame in enumerate(frames, start=1):
        with Image.open(frame) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        top, left = _detail_crop(rgb, crop)
        window = rgb[top - CONTEXT : top + crop + CONTEXT, left - CONTEXT : left + crop + CONTEXT]
        x = torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1)[None]
        y = nafnet_deblur(x, model=model)[0].permute(1, 2, 0).numpy()
        before = window[CONTEXT:-CONTEXT, CONTEXT:-CONTEXT]
        after = y[CONTEXT:-CONTEXT, CONTEXT:-CONTEXT]
        canvas = np.ones((crop, 2 * crop + GAP, 3), dtype=np.float32)
        canvas[:, :crop] = before
        canvas[:, crop + GAP :] = after
        path = out_dir / f"nafnet_real_{k}.jpg"
        Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
            path, quality=quality, optimize=True)
        written.append(path)
        print(f"{frame.name}: crop at ({top}, {left}) -> {path} ({path.stat().st_size // 1024} KB)")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="nafnet_deblur")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    args = parser.parse_args()
    make_nafnet_figures(args.out, weights=args.weights, count=min(args.count, 4), crop=args.crop)


if __name__ == "__main__":
    main()

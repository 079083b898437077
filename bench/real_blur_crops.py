"""Before/after crops of real blurry photos for the README: input | ``deblur`` auto | NAFNet.

``PYTHONPATH=. python -m bench.real_blur_crops [--shared ../shared/data] [--out docs/images]``

For every photo in ``real_blur/`` of the shared data (three OpenCV sample photos and seven
GoPro frames; no ground truth), the whole image goes through ``fastdeblur.deblur_with_details``
twice — ``method="auto"`` (blind: estimate, then deconvolve or fall back to NAFNet) and
``method="nafnet"`` — and the ``CROP``-pixel window with the most detail (largest mean gradient
of the input) is cut from the input and both results and written side by side (gaps of white)
as ``docs/images/real_<name>.jpg`` (JPEG quality 82; each well under 150 KB).
What ``auto`` did and why (its ``details["reason"]``), the estimate and the timings go to
``bench/results/real_blur_crops.json``, which the README's sentences are written from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data"))
CROP = 256
GAP = 4
QUALITY = 82
MAX_BYTES = 150 * 1024


def detail_window(image: np.ndarray, crop: int) -> tuple[int, int]:
    """Top-left corner of the ``crop``-sized window (half-crop grid) with the most gradient."""
    gray = image.mean(axis=2)
    grad = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    H, W = gray.shape
    best, corner = -1.0, (0, 0)
    step = max(crop // 2, 1)
    for top in range(0, max(H - crop, 0) + 1, step):
        for left in range(0, max(W - crop, 0) + 1, step):
            score = float(grad[top:top + crop, left:left + crop].mean())
            if score > best:
                best, corner = score, (top, left)
    return corner


def side_by_side(panels: list[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Panels ``(h, w, 3)`` in [0, 1] left to right with white gaps, as uint8."""
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = np.ones((h, w, 3), dtype=np.float32)
    left = 0
    for p in panels:
        canvas[:p.shape[0], left:left + p.shape[1]] = p
        left += p.shape[1] + gap
    return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_jpeg(path: Path, pixels: np.ndarray) -> int:
    """Write a JPEG, lowering the quality until it is under :data:`MAX_BYTES`."""
    from PIL import Image

    quality = QUALITY
    while True:
        Image.fromarray(pixels).save(path, quality=quality, optimize=True)
        size = path.stat().st_size
        if size < MAX_BYTES or quality <= 40:
            return size
        quality -= 10


def run(shared: Path, out_dir: Path, crop: int = CROP) -> list[dict]:
    from fastdeblur import io
    from fastdeblur.restore.pipeline import JPEG_NOISE_FLOOR, deblur_with_details

    photos = sorted((shared / "real_blur").iterdir())
    photos = [p for p in photos if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    if not photos:
        raise FileNotFoundError(f"no photos in {shared / 'real_blur'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for photo in photos:
        data = io.read(photo)
        pixels = data.pixels  # (C, H, W) float32 in [0, 1]
        # as the command does: JPEG inputs are regularised with at least JPEG_NOISE_FLOOR and
        # judged by the estimator's verdict for compressed images
        floor = JPEG_NOISE_FLOOR if data.format == "JPEG" else None
        t0 = time.perf_counter()
        auto = deblur_with_details(pixels, method="auto", noise_floor=floor,
                                   compressed=floor is not None)
        t1 = time.perf_counter()
        learned = deblur_with_details(pixels, method="nafnet")
        t2 = time.perf_counter()

        def hwc(t: object) -> np.ndarray:
            return np.asarray(t).transpose(1, 2, 0).repeat(3 // len(np.asarray(t)), axis=2)

        rgb = hwc(pixels)
        top, left = detail_window(rgb, crop)
        window = (slice(top, top + crop), slice(left, left + crop))
        panels = [rgb[window], hwc(auto.image)[window], hwc(learned.image)[window]]
        name = photo.stem.replace("_Input", "").replace("_frame-", "_f")
        path = out_dir / f"real_{name}.jpg"
        size = save_jpeg(path, side_by_side(panels))
        est = auto.estimate
        row = {
            "photo": photo.name, "size": list(rgb.shape[:2]), "figure": str(path.relative_to(
                ROOT)) if path.is_relative_to(ROOT) else str(path),
            "crop_top_left": [top, left], "figure_kb": round(size / 1024, 1),
            "auto_method": auto.method, "auto_reason": auto.details.get("reason"),
            "auto_kernel_model": auto.details.get("kernel_model"),
            "estimate": None if est is None else {
                "type": est.blur_type, "params": {k: round(v, 2) for k, v in est.params.items()},
                "confidence": round(est.confidence, 3)},
            "residual": auto.details.get("residual"),
            "seconds": {"auto": round(t1 - t0, 2), "nafnet": round(t2 - t1, 2)},
            "auto_timings": {k: round(v, 3) for k, v in auto.details["timings"].items()},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_blur_crops")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "bench" / "results" / "real_blur_crops.json")
    parser.add_argument("--crop", type=int, default=CROP)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the machine is shared; more threads than free "
                             "cores make the OpenMP loops several times slower)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not (args.shared / "real_blur").is_dir():
        print(f"error: real_blur not found under {args.shared}", file=sys.stderr)
        return 2
    from bench._timing import machine

    rows = run(args.shared, args.out, args.crop)
    report = {
        "benchmark": "real_blur_crops",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "PYTHONPATH=. python -m bench.real_blur_crops " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "machine": machine() | {"note": "2-core x86-64 CPU, shared with other jobs"},
        "layout": "each figure: input | fastdeblur.deblur (auto) | fastdeblur.deblur "
                  "(method='nafnet'), the same window of the whole-image results",
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

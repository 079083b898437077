"""Speed of deblurring a 1024×768 RGB image (CPU/GPU): non-blind, and blind end to end.

Rows: fastdeblur ``wiener`` and ``hyperlaplacian`` (the default border handling, ``taper``),
and the whole ``fastdeblur.deblur`` call with a kernel; baseline: scikit-image's ``wiener``
on the same image, channel by channel (it has no colour path), in the same process.

Blind, end to end (the ``fastdeblur deblur photo.png`` job, target <= 5 s on 2 CPU cores): a
photo (``skimage.data.coffee`` resized to 1024×768, noise 0.01) saved as PNG, then read
(``fastdeblur.io.read``), ``deblur_with_details(method="auto")`` and written
(``fastdeblur.io.write``). Three cases: a Gaussian blur (σ = 2) and a random camera shake
(21 px, seed 3), each deconvolved with the kernel ``auto`` accepts; the camera-shake image
with the free-form kernel estimated and tried first (``blind_kernel="shake"``: what ``auto``
does when the estimate is not trusted; 31 px, on a 256-px window); and the fallback path,
timed on the camera-shake image with the ringing threshold forced to reject every kernel:
the estimate, every candidate screened and rejected, then NAFNet. (The slowest path, the last
candidate accepted, costs the screenings of the third case plus one deconvolution of the
first two.) The total is the median of ``repeat`` runs; the stage rows (load, estimate,
kernel build, noise estimate, screening, deconvolution, residual test, NAFNet when ``auto``
falls back, save) are the stage times of the median run, from ``details["timings"]``; their
``ratio`` is the stage's share of that run (baseline: the whole run).
"""

from __future__ import annotations

import numpy as np
import torch

from bench._timing import measure


def run(quick: bool) -> list[dict]:
    from skimage import restoration

    from fastdeblur import restore
    from fastdeblur.convolution import convolve
    from fastdeblur.restore.pipeline import deblur

    H, W = (384, 512) if quick else (768, 1024)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, H, W, generator=gen)
    k = torch.rand(19, 19, generator=gen)
    k = k / k.sum()
    y = convolve(x, k).clamp(0, 1).to(device)
    ynp = y[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)
    knp = k.numpy().astype(np.float64)
    repeat = 2 if quick else 3
    base = measure(lambda: [restoration.wiener(ynp[..., c], knp, 0.01) for c in range(3)],
                   warmup=1, repeat=repeat)
    rows = []
    cases = {
        "wiener": lambda: restore.wiener(y, k.to(device)),
        "hyperlaplacian": lambda: restore.hyper_laplacian(y, k.to(device)),
        "deblur(auto, kernel)": lambda: deblur(y[0], kernel=k, device=device),
    }
    for name, fn in cases.items():
        t = measure(fn, warmup=1, repeat=repeat)
        rows.append({"op": name, "shape": f"3x{H}x{W} k19", "backend": device,
                     "dtype": "float32", "median_ms": t * 1e3, "baseline": "skimage.wiener",
                     "ratio": base / t})
    rows += blind_end_to_end(quick, device)
    return rows


def blind_end_to_end(quick: bool, device: str) -> list[dict]:
    """``read -> deblur(auto, blind) -> write`` of a blurred photo, with the stage breakdown."""

    import skimage.data

    from fastdeblur import psf
    from fastdeblur.convolution import convolve
    from fastdeblur.restore import pipeline

    H, W = (384, 512) if quick else (768, 1024)
    photo = torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1)[None].float() / 255
    photo = torch.nn.functional.interpolate(photo, size=(H, W), mode="bicubic",
                                            align_corners=False).clamp(0, 1)
    blurs = {"gaussian sigma 2": psf.gaussian(2.0, dtype=torch.float32),
             "camera shake 21px": psf.camera_shake(21, seed=3, dtype=torch.float32)}
    rows = []
    for blur_name, kernel in blurs.items():
        gen = torch.Generator().manual_seed(1)
        y = convolve(photo, kernel)
        y = (y + 0.01 * torch.randn(y.shape, generator=gen)).clamp(0, 1)[0]
        rows += _time_blind(y, f"3x{H}x{W} png, {blur_name}", quick, device)
    # the free-form kernel path (what auto does when the estimate's confidence is below
    # pipeline.SHAKE_CONFIDENCE), forced here: this image's estimate is confident
    rows += _time_blind(y, f"3x{H}x{W} png, {blur_name}, free-form kernel first", quick,
                        device, blind_kernel="shake")
    # the slowest path: every candidate kernel rejected, then NAFNet
    saved = pipeline.FALLBACK_OVERSHOOT
    pipeline.FALLBACK_OVERSHOOT = -1.0
    try:
        rows += _time_blind(y, f"3x{H}x{W} png, {blur_name}, every kernel rejected", quick,
                            device)
    finally:
        pipeline.FALLBACK_OVERSHOOT = saved
    return rows


def _time_blind(y: torch.Tensor, shape: str, quick: bool, device: str,
                **options: object) -> list[dict]:
    """Rows of one blurred image ``y`` ``(3, H, W)``: the end-to-end median and its stages."""
    import statistics
    import tempfile
    import time
    from pathlib import Path

    from fastdeblur import io
    from fastdeblur.restore.pipeline import deblur_with_details

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "photo.png", Path(tmp) / "photo.deblurred.png"
        io.write(src, y, force=True)
        for i in range(1 + (2 if quick else 3)):  # the first run warms up (weights, caches)
            t0 = time.perf_counter()
            data = io.read(src)
            t1 = time.perf_counter()
            result = deblur_with_details(data.pixels, device=device, **options)
            t2 = time.perf_counter()
            io.write(dst, result.image, force=True)
            t3 = time.perf_counter()
            if i > 0:
                stages = {"load": t1 - t0, **result.details["timings"], "save": t3 - t2}
                stages.pop("total", None)
                runs.append((t3 - t0, stages, result.details["reason"]))
    total = statistics.median(r[0] for r in runs)
    median_run = min(runs, key=lambda r: abs(r[0] - total))
    rows = [{"op": "deblur(auto, blind) end to end", "shape": shape, "backend": device,
             "dtype": "float32", "median_ms": total * 1e3, "baseline": "target 5 s",
             "ratio": 5.0 / total, "reason": median_run[2],
             "threads": torch.get_num_threads()}]
    for stage, seconds in median_run[1].items():
        rows.append({"op": f"  stage: {stage}", "shape": shape, "backend": device,
                     "dtype": "float32", "median_ms": seconds * 1e3,
                     "baseline": "share of the end-to-end run", "ratio": seconds / median_run[0]})
    return rows

"""Deblurring quality: fastdeblur against scikit-image on the Levin et al. (2009) benchmark.

``python -m bench.eval_deblur [--quick] [--extra] [--out bench/results/deblur.json]``

On a busy machine the non-blind part can be split and joined: ``--condition C --images 1,2
--out part.json`` per piece (the skimage ``wiener`` balance is still chosen on all 32 images),
``--skimage-from REPORT`` to reuse the scikit-image rows of an earlier report (they do not
depend on fastdeblur), then ``--merge part1.json part2.json ... --out deblur.json``.

Non-blind part: the 32 images ``levin/blurred/im_i_ker_j.png`` (4 sharp images × the 8 kernels
of ``kernels/levin09.npz``), deconvolved with the true kernel, in two conditions:

- ``noise_free``: the PNGs as shipped (8-bit quantisation, σ ≈ 0.0011);
- ``noise_0.01``: the same plus white Gaussian noise σ = 0.01 (seed = 100·i + j), not clipped.

The blurred images are *circular* convolutions of the sharp ones (their border matches
``convolve(sharp, k, boundary="circular")`` to the quantisation RMSE, 0.0011, and differs from
every other boundary by 0.06–0.1), so every method here gets the periodic model: fastdeblur's
FFT methods run with ``boundary="circular"`` (``taper`` numbers, for an unknown border, are
reported too), and scikit-image's FFT methods assume periodicity anyway. PSNR is measured on
the whole image, values clipped to [0, 1].

scikit-image 0.26 settings (its defaults wherever it has one):

- ``wiener(image, psf, balance)``: ``balance`` has no default, so it gets the best value of a
  grid ``10^-4 … 10^0`` (half decades) for each condition, picked by the mean PSNR over the 32
  images (an oracle choice, in its favour); ``reg`` = its default Laplacian.
- ``richardson_lucy(image, psf)``: default ``num_iter=50``.
- ``unsupervised_wiener(image, psf, rng=0)``: all defaults (the regularisation is sampled).

fastdeblur settings: the library defaults, nothing tuned per image: the noise level is
estimated from each blurred image, and the regularisation follows it. The defaults were chosen
on other images (``bench/tune_deconvolution.py``), not on these. ``fastdeblur.deblur`` is the
public call ``fastdeblur.deblur(image, kernel=k)`` (hyper-Laplacian, unknown-border handling).

Blind part (blur estimation, then deconvolution with the estimated kernel): added by
:func:`blind_rows` when ``fastdeblur.estimate`` exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTDEBLUR_SHARED_DATA", ROOT.parent / "shared" / "data"))
CONDITIONS = {"noise_free": 0.0, "noise_0.01": 0.01}
RUN_CONDITIONS = dict(CONDITIONS)  # --condition narrows it (two processes, then --merge)
SKIMAGE_BALANCES = [10.0**e for e in np.arange(-4.0, 0.01, 0.5)]


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((np.clip(x, 0, 1) - ref) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-20)))


def load_levin(shared: Path, quick: bool) -> list[dict]:
    """The Levin images: dicts with ``image``, ``kernel``, ``sharp``, ``blurred``, ``psf``."""
    from PIL import Image

    kernels = np.load(shared / "kernels" / "levin09.npz")
    cases = []
    images = (1, 2) if quick else (1, 2, 3, 4)
    kernel_ids = (1, 4, 8) if quick else range(1, 9)
    for i in images:
        sharp = np.asarray(Image.open(shared / "levin" / "sharp" / f"im_{i}.png"), np.float64)
        for j in kernel_ids:
            path = shared / "levin" / "blurred" / f"im_{i}_ker_{j}.png"
            blurred = np.asarray(Image.open(path), np.float64) / 255.0
            cases.append({"image": i, "kernel": j, "sharp": sharp / 255.0, "blurred": blurred,
                          "psf": np.asarray(kernels[f"k{j}"], np.float64)})
    return cases


def with_noise(blurred: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    if sigma == 0:
        return blurred
    rng = np.random.default_rng(seed)
    return blurred + sigma * rng.standard_normal(blurred.shape)


def fastdeblur_methods(extra: bool = False
                       ) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Name -> f(blurred HxW, psf) -> restored HxW, library defaults."""
    from fastdeblur.restore import uniform

    def run(fn: Callable, **kw: object) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def apply(y: np.ndarray, k: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(y).float()[None, None]
            return fn(t, torch.from_numpy(k).float(), **kw)[0, 0].double().numpy()

        return apply

    def deblur_call(y: np.ndarray, k: np.ndarray) -> np.ndarray:
        from fastdeblur.restore.pipeline import deblur

        return deblur(y.astype(np.float32), kernel=k).astype(np.float64)

    methods = {
        "fastdeblur.wiener": run(uniform.wiener, boundary="circular"),
        "fastdeblur.rl": run(uniform.richardson_lucy, boundary="circular"),
        "fastdeblur.hyperlaplacian": run(uniform.hyper_laplacian, boundary="circular"),
    }
    if extra:  # variants: the other exponent, the first-order prior of Krishnan & Fergus, and
        # the public call as a user makes it: it has no boundary option, so the unknown-border
        # ("taper") handling runs although these images wrapped around.
        methods["fastdeblur.deblur"] = deblur_call
        methods["fastdeblur.hyperlaplacian_a0.5"] = run(uniform.hyper_laplacian, alpha=0.5,
                                                        boundary="circular")
        methods["fastdeblur.hyperlaplacian_first_order"] = run(
            uniform.hyper_laplacian, second_order=0.0, boundary="circular")
    return methods


def skimage_methods(balance: float) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    from skimage import restoration

    return {
        "skimage.wiener": lambda y, k: restoration.wiener(y, k, balance),
        "skimage.richardson_lucy": lambda y, k: restoration.richardson_lucy(y, k),
        "skimage.unsupervised_wiener": lambda y, k: restoration.unsupervised_wiener(
            y, k, rng=0)[0],
    }


def best_skimage_balance(cases: list[dict], sigma: float) -> float:
    from skimage import restoration

    scores = []
    for balance in SKIMAGE_BALANCES:
        values = [psnr(restoration.wiener(with_noise(c["blurred"], sigma, c["seed"]), c["psf"],
                                          balance), c["sharp"]) for c in cases]
        scores.append(float(np.mean(values)))
    return float(SKIMAGE_BALANCES[int(np.argmax(scores))])


def nonblind_rows(cases: list[dict], extra: bool = False,
                  only_images: set[int] | None = None,
                  skimage_from: dict | None = None) -> tuple[list[dict], dict]:
    """Rows of every case (of ``only_images`` when given; the skimage balance is still chosen
    on all the cases). ``skimage_from``: an earlier report whose scikit-image rows are reused
    (they do not depend on fastdeblur: same images, same noise seeds, same settings)."""
    rows: list[dict] = []
    settings: dict = {}
    ours = fastdeblur_methods(extra)
    for condition, sigma in RUN_CONDITIONS.items():
        if skimage_from is not None:
            settings[condition] = dict(skimage_from["settings"][condition])
            settings[condition]["skimage_rows_from"] = skimage_from["date"]
            methods = dict(ours)
            earlier = {(r["condition"], r["image"]): r for r in skimage_from["nonblind"]}
        else:
            balance = best_skimage_balance(cases, sigma)
            settings[condition] = {"skimage.wiener.balance": balance}
            methods = {**ours, **skimage_methods(balance)}
        for c in cases:
            if only_images is not None and c["image"] not in only_images:
                continue
            y = with_noise(c["blurred"], sigma, c["seed"])
            row = {"condition": condition, "image": f"im_{c['image']}_ker_{c['kernel']}",
                   "psnr": {"blurred": round(psnr(y, c["sharp"]), 3)}, "seconds": {}}
            for name, fn in methods.items():
                t0 = time.perf_counter()
                x = fn(y, c["psf"])
                row["seconds"][name] = round(time.perf_counter() - t0, 4)
                row["psnr"][name] = round(psnr(x, c["sharp"]), 3)
            if skimage_from is not None:
                old = earlier[(condition, row["image"])]
                for name in old["psnr"]:
                    if name.startswith("skimage."):
                        row["psnr"][name] = old["psnr"][name]
                        row["seconds"][name] = old["seconds"].get(name)
            rows.append(row)
            print(condition, row["image"], {k: v for k, v in row["psnr"].items()}, flush=True)
    return rows, settings


def blind_rows(cases: list[dict]) -> list[dict] | None:
    """Blind deblurring (estimate the blur, then deconvolve) once estimation exists."""
    from fastdeblur.restore.pipeline import estimation_available

    if not estimation_available():
        return None
    from fastdeblur.restore.pipeline import deblur

    rows = []
    for c in cases:
        y = torch.from_numpy(c["blurred"]).float()[None]
        t0 = time.perf_counter()
        x = deblur(y, method="auto")[0].double().numpy()
        rows.append({"condition": "noise_free", "image": f"im_{c['image']}_ker_{c['kernel']}",
                     "psnr": {"blurred": round(psnr(c["blurred"], c["sharp"]), 3),
                              "fastdeblur.auto": round(psnr(x, c["sharp"]), 3)},
                     "seconds": {"fastdeblur.auto": round(time.perf_counter() - t0, 4)}})
    return rows


def summarise(rows: list[dict]) -> dict:
    """Mean PSNR per method and condition, and whether our best method beats every skimage
    method on every image."""
    out: dict = {}
    for condition in CONDITIONS:
        sel = [r for r in rows if r["condition"] == condition]
        if not sel:
            continue
        names = list(sel[0]["psnr"])
        means = {n: round(float(np.mean([r["psnr"][n] for r in sel])), 3) for n in names}
        ours = "fastdeblur.hyperlaplacian"
        sk = [n for n in names if n.startswith("skimage.")]
        margins = [r["psnr"][ours] - max(r["psnr"][n] for n in sk) for r in sel]
        out[condition] = {
            "mean_psnr": means,
            "hyperlaplacian_minus_best_skimage": {
                "min": round(min(margins), 3), "mean": round(float(np.mean(margins)), 3)},
            "hyperlaplacian_beats_all_skimage": f"{sum(m >= 0 for m in margins)}/{len(sel)}",
            "hyperlaplacian_beats_all_skimage_on_every_image": bool(min(margins) >= 0),
            "wiener_beats_skimage_wiener": "{}/{}".format(
                sum(r["psnr"]["fastdeblur.wiener"] >= r["psnr"]["skimage.wiener"] for r in sel),
                len(sel)),
            "wiener_beats_skimage_wiener_on_every_image": all(
                r["psnr"]["fastdeblur.wiener"] >= r["psnr"]["skimage.wiener"] for r in sel),
            "rl_beats_skimage_rl_on_every_image": all(
                r["psnr"]["fastdeblur.rl"] >= r["psnr"]["skimage.richardson_lucy"] for r in sel),
        }
        if "fastdeblur.deblur" in names:  # --extra: the public call, unknown-border handling
            gaps = [r["psnr"]["fastdeblur.deblur"] - max(r["psnr"][n] for n in sk) for r in sel]
            out[condition]["deblur_call_minus_best_skimage"] = {
                "min": round(min(gaps), 3), "mean": round(float(np.mean(gaps)), 3),
                "wins": f"{sum(g >= 0 for g in gaps)}/{len(sel)}"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_deblur")
    parser.add_argument("--quick", action="store_true", help="6 images instead of 32")
    parser.add_argument("--extra", action="store_true",
                        help="also alpha = 1/2 and the unknown-border (taper) variant")
    parser.add_argument("--condition", choices=list(CONDITIONS), default=None,
                        help="run one condition only (no blind part)")
    parser.add_argument("--images", default=None,
                        help="comma-separated Levin image numbers to run (1-4; no blind part)")
    parser.add_argument("--skimage-from", type=Path, default=None,
                        help="reuse the scikit-image rows of this earlier report")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="join the non-blind rows of per-condition reports into --out")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "deblur.json")
    args = parser.parse_args(argv)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        report = dict(parts[0])
        report["command"] = "; ".join(p["command"] for p in parts) + (
            "; python -m bench.eval_deblur " + " ".join(argv or sys.argv[1:]))
        report["settings"] = {k: v for p in parts for k, v in p["settings"].items()}
        report["nonblind"] = sorted((r for p in parts for r in p["nonblind"]),
                                    key=lambda r: (list(CONDITIONS).index(r["condition"]),
                                                   [int(t) for t in r["image"].split("_")[1::2]]))
        report["summary"] = summarise(report["nonblind"])
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report["summary"], indent=1))
        return 0
    if args.condition:
        RUN_CONDITIONS.clear()
        RUN_CONDITIONS[args.condition] = CONDITIONS[args.condition]
    if not (args.shared / "levin").is_dir():
        print(f"error: Levin data not found under {args.shared}", file=sys.stderr)
        return 2
    import skimage

    from bench._timing import machine

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cases = load_levin(args.shared, args.quick)
    for c in cases:
        c["seed"] = 100 * c["image"] + c["kernel"]
    only = {int(i) for i in args.images.split(",")} if args.images else None
    earlier = json.loads(args.skimage_from.read_text()) if args.skimage_from else None
    rows, settings = nonblind_rows(cases, args.extra, only, earlier)
    report = {
        "benchmark": "deblur",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.eval_deblur " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "skimage": skimage.__version__,
        "psnr": "whole image, clipped to [0, 1], peak 1",
        "settings": settings,
        "summary": summarise(rows),
        "nonblind": rows,
        "blind": None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    report["blind"] = None if args.condition or only else blind_rows(cases)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

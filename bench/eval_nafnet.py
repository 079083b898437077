"""Quality of the learned blind deblurring (NAFNet) on held-out data.

Three evaluations, written to ``bench/results/nafnet.json``:

1. **Levin et al. 2009** (blind): the 32 images ``levin/blurred/im_i_ker_j.png`` (4 gray
   255 x 255 images x 8 camera-shake kernels, noise-free) against ``levin/sharp/im_i.png``.
   PSNR (whole image, peak 1) of the blurred input and of the restored image, and the gain, per
   kernel and overall. These images and kernels are never used in training.
   ``classical_blind``: the classical blind pipeline on the same images — the estimated
   parametric kernel with the hyper-Laplacian solver (``deblur(y, method="hyperlaplacian")``)
   and ``deblur(y)`` (``auto``: kernels checked, NAFNet when none fits) — per kernel, and
   whether NAFNet beats each on every kernel.
2. **The Levin kernels on held-out photos** (``levin_kernels_heldout_photos``): the same 8
   recorded camera shakes on a 256-px gray crop of every validation image, 8-bit, noise-free;
   whether a weak Levin score comes from the kernels or from Levin's 4 images.
3. **Held-out synthetic pairs**: :class:`fastdeblur.synth_pairs.DeblurPairDataset` on the
   validation images of the training split (never trained on), one set per blur family, with a
   seed the training never uses. PSNR and SSIM (``skimage.metrics``) of input and output.

Run from the repository root::

    python bench/eval_nafnet.py [--weights PATH.safetensors] [--quick] [--out JSON]

Shared data is read from ``$FASTDEBLUR_SHARED_DATA`` (default ``../shared/data`` beside the
checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._timing import machine  # noqa: E402
from fastdeblur.models.pretrained import load_nafnet, nafnet_deblur, weights_path  # noqa: E402
from fastdeblur.synth import split_images  # noqa: E402
from fastdeblur.synth_pairs import BLUR_FAMILIES, DeblurPairDataset, load_rgb_images  # noqa: E402

SHARED = Path(os.environ.get("FASTDEBLUR_SHARED_DATA", REPO.parent / "shared" / "data"))
EVAL_SEED = 424_242  # never used by training (training uses seed and seed + 7777)


def _read_gray(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None, None]


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB, peak 1, of arrays in [0, 1]."""
    mse = float(np.mean((np.clip(x, 0, 1) - ref) ** 2))
    return float(-10 * np.log10(max(mse, 1e-12)))


def eval_levin(model: torch.nn.Module, data: Path) -> dict:
    """Per-kernel and mean PSNR of input and output on the 32 Levin images."""
    rows = []
    for i in range(1, 5):
        sharp = _read_gray(data / "levin" / "sharp" / f"im_{i}.png")[0, 0].numpy()
        for j in range(1, 9):
            blurred = _read_gray(data / "levin" / "blurred" / f"im_{i}_ker_{j}.png")
            restored = nafnet_deblur(blurred, model=model)[0, 0].numpy()
            rows.append({"image": i, "kernel": j, "psnr_in": psnr(blurred[0, 0].numpy(), sharp),
                         "psnr_out": psnr(restored, sharp)})
    per_kernel = {}
    for j in range(1, 9):
        sel = [r for r in rows if r["kernel"] == j]
        p_in = float(np.mean([r["psnr_in"] for r in sel]))
        p_out = float(np.mean([r["psnr_out"] for r in sel]))
        per_kernel[f"k{j}"] = {"psnr_in": p_in, "psnr_out": p_out, "gain_db": p_out - p_in}
    p_in = float(np.mean([r["psnr_in"] for r in rows]))
    p_out = float(np.mean([r["psnr_out"] for r in rows]))
    return {
        "images": len(rows),
        "psnr_in": p_in,
        "psnr_out": p_out,
        "mean_gain_db": p_out - p_in,
        "images_improved": sum(r["psnr_out"] > r["psnr_in"] for r in rows),
        "per_kernel": per_kernel,
        "per_image": rows,
    }


def eval_classical_levin(data: Path, nafnet: dict) -> dict:
    """The classical blind pipeline on the 32 Levin images, per kernel, against NAFNet's
    results ``nafnet`` (from :func:`eval_levin`)."""
    from fastdeblur.restore.pipeline import deblur_with_details

    rows = []
    for i in range(1, 5):
        sharp = _read_gray(data / "levin" / "sharp" / f"im_{i}.png")[0, 0].numpy()
        for j in range(1, 9):
            blurred = _read_gray(data / "levin" / "blurred" / f"im_{i}_ker_{j}.png")[0]
            param = deblur_with_details(blurred, method="hyperlaplacian")
            auto = deblur_with_details(blurred)
            rows.append({"image": i, "kernel": j,
                         "psnr_parametric": psnr(param.image[0].numpy(), sharp),
                         "psnr_auto": psnr(auto.image[0].numpy(), sharp),
                         "auto_method": auto.method})
    per_kernel = {}
    for j in range(1, 9):
        sel = [r for r in rows if r["kernel"] == j]
        entry = {m: float(np.mean([r[f"psnr_{m}"] for r in sel])) for m in ("parametric", "auto")}
        naf = nafnet["per_kernel"][f"k{j}"]["psnr_out"]
        entry |= {"nafnet": naf, "nafnet_minus_parametric_db": naf - entry["parametric"],
                  "nafnet_minus_auto_db": naf - entry["auto"]}
        per_kernel[f"k{j}"] = entry
    means = {m: float(np.mean([r[f"psnr_{m}"] for r in rows])) for m in ("parametric", "auto")}
    return {
        "psnr_parametric": means["parametric"],
        "psnr_auto": means["auto"],
        "psnr_nafnet": nafnet["psnr_out"],
        "nafnet_beats_parametric_on_every_kernel": all(
            e["nafnet_minus_parametric_db"] > 0 for e in per_kernel.values()),
        "nafnet_beats_auto_on_every_kernel": all(
            e["nafnet_minus_auto_db"] > 0 for e in per_kernel.values()),
        "per_kernel": per_kernel,
        "per_image": rows,
    }


def _heldout_sources(train_config: dict) -> list[str | None]:
    """The training image folders, looked up by name in the shared data when the recorded
    path (relative to the repository or the training machine) is not there."""
    sources = []
    for source in train_config.get("images", [None]):
        if source is not None and not Path(source).is_dir():
            source = str(SHARED / Path(source).name)
        sources.append(source)
    return sources


def validation_images(train_config: dict) -> list[torch.Tensor]:
    """The held-out validation images of a training run (its split of its image folders)."""
    images = load_rgb_images(_heldout_sources(train_config))
    _, val_images = split_images(images, train_config.get("val_fraction", 0.15),
                                 seed=train_config.get("seed", 0))
    return val_images


def eval_levin_kernels(model: torch.nn.Module, val_images: list[torch.Tensor], data: Path,
                       side: int = 256, margin: int = 20) -> dict:
    """The 8 Levin kernels on held-out photos (not Levin's 4 images): PSNR gain per kernel.

    One gray ``side``-px crop (random position, fixed seed) of every validation image at least
    that large, blurred by each kernel of ``kernels/levin09.npz`` (reflect boundary), quantised
    to 8 bits, noise-free like the Levin set; PSNR over the crop less ``margin`` px per side.
    Separates "these kernels are hard for the network" from "these 4 images are".
    """
    from fastdeblur.convolution import convolve

    kernels = np.load(data / "kernels" / "levin09.npz")
    g = torch.Generator().manual_seed(EVAL_SEED)
    crops = []
    for image in val_images:
        _, h, w = image.shape
        if h < side or w < side:
            continue
        y0 = int(torch.randint(0, h - side + 1, (1,), generator=g))
        x0 = int(torch.randint(0, w - side + 1, (1,), generator=g))
        crops.append(image[:, y0:y0 + side, x0:x0 + side].mean(0, keepdim=True))
    inner = (slice(margin, side - margin),) * 2
    per_kernel, gains = {}, []
    for name in sorted(kernels.keys()):
        k = torch.tensor(kernels[name], dtype=torch.float32)
        rows = []
        for sharp in crops:
            blurred = convolve(sharp[None], k, boundary="reflect")[0].clamp(0, 1)
            blurred = (blurred * 255).round() / 255
            restored = nafnet_deblur(blurred[None], model=model)[0, 0].numpy()
            ref, before = sharp[0].numpy(), blurred[0].numpy()
            rows.append(psnr(restored[inner], ref[inner]) - psnr(before[inner], ref[inner]))
        per_kernel[name] = float(np.mean(rows))
        gains += rows
    return {"images": len(crops), "crop": side, "margin": margin,
            "mean_gain_db": float(np.mean(gains)), "gain_db_per_kernel": per_kernel}


def heldout_pairs(val_images: list[torch.Tensor], family: str, pairs: int,
                  patch: int) -> DeblurPairDataset:
    """The evaluation pairs of one blur family: ``pairs`` crops of ``patch`` px of the held-out
    images, with a seed the training never uses."""
    return DeblurPairDataset(val_images, patch_size=patch, length=pairs, families=(family,),
                             seed=EVAL_SEED, augment=False)


def eval_synthetic(model: torch.nn.Module, val_images: list[torch.Tensor], pairs: int,
                   patch: int) -> dict:
    """PSNR/SSIM per blur family on pairs cut from the held-out validation images."""
    from skimage.metrics import structural_similarity

    out = {}
    for family in BLUR_FAMILIES:
        data = heldout_pairs(val_images, family, pairs, patch)
        scores = {"psnr_in": [], "psnr_out": [], "ssim_in": [], "ssim_out": []}
        for k in range(pairs):
            item = data[k]
            restored = nafnet_deblur(item["blurred"][None], model=model)[0]
            sharp = item["sharp"].permute(1, 2, 0).numpy()
            for tag, img in (("in", item["blurred"]), ("out", restored)):
                arr = img.permute(1, 2, 0).numpy()
                scores[f"psnr_{tag}"].append(psnr(arr, sharp))
                scores[f"ssim_{tag}"].append(float(structural_similarity(
                    np.clip(arr, 0, 1), sharp, channel_axis=2, data_range=1.0)))
        row = {k: float(np.mean(v)) for k, v in scores.items()}
        row["gain_db"] = row["psnr_out"] - row["psnr_in"]
        out[family] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="nafnet_deblur",
                        help="shipped name or .safetensors path")
    parser.add_argument("--quick", action="store_true", help="fewer synthetic pairs")
    parser.add_argument("--pairs", type=int, default=20, help="synthetic pairs per family")
    parser.add_argument("--patch", type=int, default=128, help="synthetic pair side")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "nafnet.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    if not SHARED.is_dir():
        raise SystemExit(f"shared data not found at {SHARED} (set FASTDEBLUR_SHARED_DATA)")
    from fastdeblur.train.export import load_safetensors

    path = weights_path(args.weights)
    _, meta = load_safetensors(path)
    model = load_nafnet(path)
    t0 = time.perf_counter()
    levin = eval_levin(model, SHARED)
    classical = eval_classical_levin(SHARED, levin)
    val_images = validation_images(meta.get("train_config", {}))
    synthetic = eval_synthetic(model, val_images, 4 if args.quick else args.pairs, args.patch)
    levin_kernels = eval_levin_kernels(model, val_images, SHARED)
    result = {
        "weights": path.name,
        "weights_step": meta.get("step"),
        "nafnet_config": meta.get("nafnet_config"),
        "levin": levin,
        "classical_blind": classical,
        "levin_kernels_heldout_photos": levin_kernels,
        "synthetic_heldout": synthetic,
        "synthetic_pairs_per_family": 4 if args.quick else args.pairs,
        "synthetic_patch": args.patch,
        "seconds": time.perf_counter() - t0,
        "machine": machine(),
        "torch": torch.__version__,
        "command": "python bench/eval_nafnet.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Levin (blind, 32 images): input {levin['psnr_in']:.2f} dB -> {levin['psnr_out']:.2f} dB"
          f" (gain {levin['mean_gain_db']:+.2f} dB, {levin['images_improved']}/32 improved)")
    for k, row in levin["per_kernel"].items():
        print(f"  {k}: {row['psnr_in']:.2f} -> {row['psnr_out']:.2f} ({row['gain_db']:+.2f})")
    print(f"classical blind pipeline on Levin: parametric {classical['psnr_parametric']:.2f} dB,"
          f" auto {classical['psnr_auto']:.2f} dB; NAFNet beats the parametric path on every "
          f"kernel: {classical['nafnet_beats_parametric_on_every_kernel']}")
    print(f"Levin kernels on {levin_kernels['images']} held-out photos: mean gain "
          f"{levin_kernels['mean_gain_db']:+.2f} dB; per kernel "
          + ", ".join(f"{k} {v:+.2f}" for k, v in levin_kernels["gain_db_per_kernel"].items()))
    print("held-out synthetic pairs: family  PSNR in -> out  SSIM in -> out")
    for fam, row in synthetic.items():
        print(f"  {fam:18s} {row['psnr_in']:.2f} -> {row['psnr_out']:.2f}  "
              f"{row['ssim_in']:.3f} -> {row['ssim_out']:.3f}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

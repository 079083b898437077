"""Quality of a kernel-guided NAFNet (``fastdeblur train nafnet --input deconvolved``) against
the classical blind pipeline whose results it refines.

For every image, ``auto`` is ``fastdeblur.deblur_with_details(y)`` (the classical blind pipeline)
and ``guided`` is the network on that result beside the blurred image
(``nafnet_deblur(auto, model=..., guide=y)``); where ``auto`` falls back to the blind NAFNet, the
guided network is not run and the two are equal. Written to ``--out``:

1. **Levin et al. 2009** (blind): the 32 images, PSNR and PSNR after the best shift of up to
   5 px (``bench.eval_blind.aligned_ssd``; Levin's kernels are not centred), per kernel.
2. **Held-out synthetic pairs**: the five families of
   :class:`fastdeblur.synth_pairs.DeblurPairDataset` on the validation images of the network's
   training split, with the seed of ``bench/eval_nafnet.py``.

Run from the repository root::

    python bench/eval_guided_nafnet.py --weights runs/guided/best.safetensors --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._timing import machine  # noqa: E402
from bench.eval_blind import aligned_ssd  # noqa: E402
from bench.eval_nafnet import (  # noqa: E402
    SHARED,
    _read_gray,
    heldout_pairs,
    psnr,
    validation_images,
)
from fastdeblur.models.pretrained import load_nafnet, nafnet_deblur  # noqa: E402
from fastdeblur.restore.pipeline import deblur_with_details  # noqa: E402
from fastdeblur.synth_pairs import BLUR_FAMILIES  # noqa: E402


def auto_and_guided(y: torch.Tensor, model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """The classical blind result of ``y`` ``(C, H, W)`` and the guided network's refinement."""
    auto = deblur_with_details(y)
    if auto.method == "nafnet":
        return auto.image.numpy(), auto.image.numpy()
    guided = nafnet_deblur(auto.image[None], model=model, guide=y[None])[0]
    return auto.image.numpy(), guided.numpy()


def eval_levin(model: torch.nn.Module) -> dict:
    rows = []
    for i in range(1, 5):
        sharp = _read_gray(SHARED / "levin" / "sharp" / f"im_{i}.png")[0].numpy()
        for j in range(1, 9):
            y = _read_gray(SHARED / "levin" / "blurred" / f"im_{i}_ker_{j}.png")[0]
            row = {"image": i, "kernel": j}
            for name, x in zip(("blurred", "auto", "guided"),
                               (y.numpy(), *auto_and_guided(y, model)), strict=True):
                ssd, n = aligned_ssd(x, sharp)
                row[name] = {"psnr": psnr(x, sharp),
                             "psnr_aligned": float(10 * np.log10(n / ssd))}
            rows.append(row)

    def mean(sel: list[dict], key: str) -> dict:
        return {m: float(np.mean([r[m][key] for r in sel])) for m in ("blurred", "auto", "guided")}

    per_kernel = {f"k{j}": mean([r for r in rows if r["kernel"] == j], "psnr_aligned")
                  for j in range(1, 9)}
    return {"psnr": mean(rows, "psnr"), "psnr_aligned": mean(rows, "psnr_aligned"),
            "psnr_aligned_per_kernel": per_kernel,
            "guided_better_on_images_aligned": sum(
                r["guided"]["psnr_aligned"] > r["auto"]["psnr_aligned"] for r in rows),
            "per_image": rows}


def eval_synthetic(model: torch.nn.Module, val_images: list[torch.Tensor], pairs: int,
                   patch: int) -> dict:
    out = {}
    for family in BLUR_FAMILIES:
        data = heldout_pairs(val_images, family, pairs, patch)
        scores: dict[str, list[float]] = {"blurred": [], "auto": [], "guided": []}
        for k in range(pairs):
            item = data[k]
            sharp = item["sharp"].numpy()
            for name, x in zip(scores, (item["blurred"].numpy(),
                                        *auto_and_guided(item["blurred"], model)), strict=True):
                scores[name].append(psnr(x, sharp))
        out[family] = {f"psnr_{m}": float(np.mean(v)) for m, v in scores.items()}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="a guided export (.safetensors)")
    parser.add_argument("--pairs", type=int, default=20, help="synthetic pairs per family")
    parser.add_argument("--patch", type=int, default=128, help="synthetic pair side")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    from fastdeblur.train.export import load_safetensors

    _, meta = load_safetensors(args.weights)
    model = load_nafnet(args.weights, cache=False)
    if model.intro.in_channels != 6:
        raise SystemExit(f"{args.weights} is not a kernel-guided network (6 input channels)")
    t0 = time.perf_counter()
    levin = eval_levin(model)
    synthetic = eval_synthetic(model, validation_images(meta.get("train_config", {})),
                               args.pairs, args.patch)
    result = {"weights": str(args.weights), "weights_step": meta.get("step"),
              "nafnet_config": meta.get("nafnet_config"), "levin": levin,
              "synthetic_heldout": synthetic, "synthetic_pairs_per_family": args.pairs,
              "seconds": time.perf_counter() - t0, "machine": machine(),
              "command": "python bench/eval_guided_nafnet.py " + " ".join(
                  argv if argv is not None else sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("Levin aligned PSNR: " + ", ".join(f"{m} {v:.2f}"
                                              for m, v in levin["psnr_aligned"].items()))
    for k, row in levin["psnr_aligned_per_kernel"].items():
        print(f"  {k}: auto {row['auto']:.2f} guided {row['guided']:.2f}")
    for fam, row in synthetic.items():
        print(f"  {fam:18s} blurred {row['psnr_blurred']:.2f} auto {row['psnr_auto']:.2f} "
              f"guided {row['psnr_guided']:.2f}")
    return result


if __name__ == "__main__":
    main()

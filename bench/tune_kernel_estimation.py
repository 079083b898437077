"""Tuning sweep of the free-form kernel estimator's constants.

``PYTHONPATH=. python -m bench.tune_kernel_estimation [--set NAME=VALUE ...] [--label L]``

Cases: the camera shakes of :func:`bench.tune_shake_kernel.cases` on *training* photos (never
the held-out ones nor Levin), four draws of 16 / 24 / 24 / 16 images (80 cases; 256² grey,
kernels 9–31 px, σn 0.01 on every other image, 8-bit). Each case is deblurred by the
hyper-Laplacian deconvolution with the kernel of
:func:`fastdeblur.restore.kernel_estimation.estimate_kernel` (31 px support) and with the true
kernel; scores are aligned (best integer shift ≤ 5 px, 15 px border: the estimate's centre is
its centroid), as on Levin's benchmark:

- mean PSNR (all, noise-free, noisy);
- the error ratio SSD(estimated) / SSD(true kernel): its geometric mean and the share ≤ 2 and
  ≤ 3 (the field's measure; noise-free cases deconvolve to 45–52 dB with the true kernel, so
  their ratios run high);
- seconds per estimate.

``--family parametric`` runs the same on parametric blurs instead (the free-form estimator is
also tried on them when the parametric estimate is not trusted): 48 cases of
:func:`bench.tune_shake_kernel.parametric_cases` (training photos; a Gaussian, motion or defocus
kernel in turn, parameters uniform over the supported range, σn 0.01 on every other image).

``--set`` overrides a module constant of ``kernel_estimation`` (e.g. ``--set
REFINE_ITERATIONS=3``), so one command measures one configuration. Each run appends a record
to ``--out`` (``bench/results/tune_kernel_estimation.json``). About 2.5 minutes per
configuration on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np

from bench.eval_blind import aligned_ssd
from bench.tune_shake_kernel import cases, parametric_cases, ready, tuning_parser

SETS = {0: 16, 1: 24, 2: 24, 3: 16}
PARAMETRIC_SETS = {10: 24, 11: 24}


def override(assignments: list[str]) -> dict[str, float | int]:
    """Set ``NAME=VALUE`` constants of ``kernel_estimation``; the values set, by name."""
    from fastdeblur.restore import kernel_estimation as ke

    done: dict[str, float | int] = {}
    for item in assignments:
        name, _, value = item.partition("=")
        current = getattr(ke, name, None)
        if not name.isupper() or not isinstance(current, int | float) or not value:
            raise SystemExit(f"error: --set {item!r}: not NAME=VALUE of a numeric constant")
        done[name] = int(value) if isinstance(current, int) else float(value)
        setattr(ke, name, done[name])
    return done


def main(argv: list[str] | None = None) -> int:
    parser = tuning_parser("tune_kernel_estimation")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--label", default="")
    parser.add_argument("--family", choices=["camera_shake", "parametric"],
                        default="camera_shake")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from bench._timing import machine
    from fastdeblur.restore.kernel_estimation import estimate_kernel
    from fastdeblur.restore.uniform import hyper_laplacian

    constants = override(args.set)
    rows = []
    seconds = 0.0
    make, sets = ((cases, SETS) if args.family == "camera_shake"
                  else (parametric_cases, PARAMETRIC_SETS))
    for seed, n in sets.items():
        for name, sharp, y, kernel, sigma in make(args.shared, n, seed):
            ref = sharp.numpy()
            t0 = time.perf_counter()
            k = estimate_kernel(y)
            seconds += time.perf_counter() - t0
            ssd_est, count = aligned_ssd(hyper_laplacian(y[None, None], k)[0, 0].numpy(), ref)
            ssd_true, _ = aligned_ssd(hyper_laplacian(y[None, None], kernel)[0, 0].numpy(), ref)
            rows.append({"set": seed, "image": name, "kernel_size": kernel.shape[0],
                         "noise": sigma, "error_ratio": ssd_est / ssd_true,
                         "psnr": 10 * np.log10(count / ssd_est),
                         "psnr_true_kernel": 10 * np.log10(count / ssd_true)})
    ratio = np.array([r["error_ratio"] for r in rows])
    psnr = np.array([r["psnr"] for r in rows])
    noisy = np.array([r["noise"] > 0 for r in rows])
    record = {
        "label": args.label,
        "family": args.family,
        "set": constants,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cases": len(rows),
        "mean_psnr": round(float(psnr.mean()), 3),
        "mean_psnr_noise_free": round(float(psnr[~noisy].mean()), 3),
        "mean_psnr_noisy": round(float(psnr[noisy].mean()), 3),
        "mean_psnr_true_kernel": round(float(np.mean([r["psnr_true_kernel"] for r in rows])), 3),
        "error_ratio_geometric_mean": round(float(np.exp(np.log(ratio).mean())), 3),
        "error_ratio_share_le_2": round(float((ratio <= 2).mean()), 3),
        "error_ratio_share_le_3": round(float((ratio <= 3).mean()), 3),
        "seconds_per_estimate": round(seconds / len(rows), 3),
        "threads": args.threads,
        "rows": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                 for r in rows],
    }
    report = json.loads(args.out.read_text()) if args.out.exists() else {
        "benchmark": "tune_kernel_estimation", "command": "PYTHONPATH=. python -m "
        "bench.tune_kernel_estimation [--set NAME=VALUE ...]", "machine": machine(),
        "protocol": __doc__, "records": []}
    report["records"].append(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    print(json.dumps({k: v for k, v in record.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark runner: ``python -m bench [--quick] [--only NAME ...] [--out DIR]``.

Runs every ``bench/bench_<name>.py`` that defines ``run(quick: bool) -> list[dict]``, prints
op, shape, backend, median time and the speed-up against the baseline measured in the same
run, and writes ``bench/results/<name>-<machine>.json`` naming the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import platform
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench._timing import machine

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the benchmark modules (``bench_<name>.py``)."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def machine_tag(info: dict) -> str:
    """A short file-name-safe name of the machine: the GPU, or the core count and the CPU's
    maker and family (``2core-amd-epyc``, ``2core-intel-xeon``), so that results of two CPUs
    with the same core count do not overwrite each other."""
    if info.get("gpu"):
        name = str(info["gpu"])
    else:
        model = re.sub(r"\((R|TM)\)|\bCPU\b|\bProcessor\b|@.*", " ", str(info.get("cpu", "")))
        family = "-".join(model.split()[:2]) or platform.machine()
        name = f"{info.get('cores')}core-{family}"
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--only", nargs="*", default=None, help=f"some of {available()}")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    names = args.only or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    console = Console()
    info = machine()
    console.print(f"machine: {info}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        rows = module.run(quick=args.quick)
        table = Table(title=f"bench_{name}")
        for col in ("op", "shape", "backend", "dtype", "median_ms", "baseline", "ratio"):
            table.add_column(col, justify="right" if col in ("median_ms", "ratio") else "left")
        for row in rows:
            table.add_row(
                *(
                    f"{row.get(c):.3f}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                    for c in ("op", "shape", "backend", "dtype", "median_ms", "baseline", "ratio")
                )
            )
        console.print(table)
        report = {
            "benchmark": name,
            "machine": info,
            "quick": args.quick,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
            "rows": rows,
        }
        suffix = "-quick" if args.quick else ""
        path = args.out / f"{name}-{machine_tag(info)}{suffix}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

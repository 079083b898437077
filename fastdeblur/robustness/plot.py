"""Accuracy–strength curves as a figure (needs matplotlib: ``pip install fastdeblur[plot]``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastdeblur.robustness.evaluate import RobustnessReport

__all__ = ["have_matplotlib", "plot_curves"]

STRENGTH_LABELS = {
    "gaussian": "sigma (px)",
    "motion": "length (px)",
    "defocus": "radius (px)",
    "camera_shake": "trajectory length (px)",
    "spatially_varying": "largest blur extent (px)",
}

MISSING = "plotting needs matplotlib: pip install 'fastdeblur[plot]'"


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(reports: Mapping[str, RobustnessReport | Mapping[str, Any]], path: str | Path,
                title: str | None = None) -> Path:
    """Plot accuracy versus strength, one panel per blur type, one line per report.

    Args:
        reports: ``{label: report}`` (reports or their dict form), e.g. one per model.
        path: Output image file (the suffix picks the format: ``.png``, ``.pdf``, ``.svg``).
        title: Figure title.

    Returns:
        ``path``.

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(MISSING) from None
    if not reports:
        raise ValueError("reports must not be empty")
    as_dicts = {k: (r.to_dict() if isinstance(r, RobustnessReport) else dict(r))
                for k, r in reports.items()}
    types: list[str] = []
    for r in as_dicts.values():
        types += [t for t in r["strengths"] if t not in types]
    fig, axes = plt.subplots(1, len(types), figsize=(3.8 * len(types), 3.4), sharey=True,
                             squeeze=False)
    for ax, blur_type in zip(axes[0], types, strict=True):
        for label, r in as_dicts.items():
            if blur_type not in r["strengths"]:
                continue
            ax.plot(r["strengths"][blur_type], r["accuracy"][blur_type], marker="o",
                    label=f"{label} (AUC {r['auc'][blur_type]:.2f})")
        ax.set_title(blur_type)
        ax.set_xlabel(STRENGTH_LABELS.get(blur_type, "strength"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].set_ylim(0, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

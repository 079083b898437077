"""Shipping trained weights: a ``.safetensors`` file plus a model card (``.md``) beside it.

The card says what the weights are, the data they were trained on, the command that made them
and the measured metrics, so anyone can check and retrain them.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def export_safetensors(
    weights: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save a model's ``state_dict`` (or a dict of tensors) as safetensors, atomically.

    Args:
        weights: A module or a ``{name: tensor}`` mapping.
        path: Output ``.safetensors`` file.
        metadata: Extra ``{key: value}`` stored in the header (values JSON-encoded unless str).

    Returns:
        The path written.
    """
    path = Path(path)
    tensors = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)  # readable like any other package file
    os.replace(tmp, path)
    return path


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a file written by :func:`export_safetensors`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return load_file(str(path)), meta


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


def write_model_card(
    weights_path: str | Path,
    *,
    title: str,
    description: str,
    data: str,
    command: str,
    metrics: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<weights>.md`` beside the weights: data, command, metrics.

    Args:
        weights_path: The ``.safetensors`` file the card describes.
        title: Heading.
        description: What the model does, in a sentence or two.
        data: The training and validation data (sources, split, ranges).
        command: The command that produced the weights.
        metrics: ``{name: value}`` measured on held-out data.
        details: Architecture and training settings.

    Returns:
        The card's path.
    """
    weights_path = Path(weights_path)
    card = weights_path.with_suffix(".md")
    size_kb = weights_path.stat().st_size / 1024 if weights_path.exists() else float("nan")
    lines = [
        f"# {title}",
        "",
        description,
        "",
        f"Weights: `{weights_path.name}` ({size_kb:.0f} KiB, safetensors).",
        "",
        "## Data",
        "",
        data,
        "",
        "## Command",
        "",
        "```",
        command,
        "```",
        "",
        "## Metrics (held-out data)",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_format_value(v)} |" for k, v in metrics.items()),
        "",
    ]
    if details:
        lines += ["## Details", "", *(f"- {k}: {_format_value(v)}" for k, v in details.items()), ""]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    lines += [f"Trained {stamp} with torch {torch.__version__} on {platform.machine()}.", ""]
    card.write_text("\n".join(lines))
    return card

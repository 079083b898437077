"""The one training engine of the library: loop, checkpoints, exact resume, DDP, export."""

from fastdeblur.train.engine import (
    Trainer,
    epoch_indices,
    rng_state,
    seed_everything,
    set_rng_state,
)
from fastdeblur.train.export import export_safetensors, load_safetensors, write_model_card

__all__ = [
    "Trainer",
    "epoch_indices",
    "export_safetensors",
    "load_safetensors",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "write_model_card",
]

"""Run by tests/test_train_engine.py under ``torchrun --nproc_per_node=2``: train a tiny model
for 2 steps with the engine and write each rank's final parameters to OUT_DIR/rank<r>.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from fastdeblur.train import Trainer
from fastdeblur.train.distributed import cleanup


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=g)
    y = x.sum(1, keepdim=True)
    data = torch.utils.data.TensorDataset(x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        opt,
        lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
        data,
        batch_size=4,
        epochs=1,
        progress=False,
        checkpoint_dir=Path(out_dir) / "ckpt",
    )
    trainer.fit(max_steps=2)
    torch.save(
        {"rank": trainer.rank, "world": trainer.world_size, "state": model.state_dict()},
        Path(out_dir) / f"rank{trainer.rank}.pt",
    )
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])

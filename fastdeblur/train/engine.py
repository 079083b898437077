"""The training loop every model of the library uses.

:class:`Trainer` runs mini-batch training with:

- **determinism** — the batch order of epoch ``e`` is a permutation seeded by ``(seed, e)``;
  the global RNGs (torch, CUDA, numpy, ``random``) are seeded by ``seed + rank`` and saved in
  every checkpoint;
- **checkpoints and resume** — ``last.pt`` in ``checkpoint_dir`` holds the model, optimizer,
  scheduler, each rank's RNG states, the epoch, the step inside the epoch and the history; it is
  written atomically (temporary file + rename) every ``checkpoint_every`` steps, at the end of each
  epoch and when ``fit(max_steps=...)`` stops early. ``fit(resume=True)`` continues from it exactly
  where it stopped: a run stopped after N steps and resumed ends with the same weights, bit for
  bit, as an uninterrupted run (tests/test_train_engine.py);
- **data-parallel training** — started with ``torchrun --nproc_per_node=K``, each rank takes
  every K-th sample of the epoch's permutation (padded like ``DistributedSampler``), the model is
  wrapped in ``DistributedDataParallel`` (gloo on the CPU, NCCL on CUDA) and only rank 0 writes
  checkpoints and logs;
- **progress and logs** — a rich progress bar (rank 0) and one JSON line per logged step and per
  epoch in ``checkpoint_dir/log.jsonl``.

A model's loss is a function ``loss_fn(model, batch) -> loss`` or ``-> (loss, {name: float})``;
``batch`` is what the dataset gives (a ``TensorDataset`` is indexed directly, anything else goes
through ``default_collate``), moved to the device. Under DDP the loss must call ``model(...)``
(the wrapper's forward), so gradients are averaged across ranks.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastdeblur._ext import flush_subnormals
from fastdeblur.train import distributed

LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The states of every global random generator (restorable by :func:`set_rng_state`)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside ``batch`` (nested tuples, lists, dicts) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def epoch_indices(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's sample order for ``epoch``: a seeded permutation, padded to a multiple of
    ``world_size`` by wrapping around, then every ``world_size``-th item from ``rank``."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919) % 2**63)
    order = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / world_size) * world_size
    order += order[: total - n]
    return order[rank:total:world_size]


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Mini-batch training with checkpoints, exact resume, DDP, progress and logs.

    Args:
        model: The module to train (unwrapped; the trainer wraps it in DDP when needed).
        optimizer: Its optimizer.
        loss_fn: ``loss_fn(model, batch)`` -> loss, or (loss, metrics dict).
        train_data: A map-style dataset (``TensorDataset`` is fastest).
        batch_size: Samples per step and per rank.
        epochs: Number of passes over ``train_data``.
        scheduler: Optional LR scheduler, stepped every step (``scheduler_interval="step"``)
            or every epoch (``"epoch"``).
        val_fn: Optional ``val_fn(model) -> {name: float}`` run at the end of each epoch (rank 0
            computes, every rank receives the result).
        checkpoint_dir: Where ``last.pt`` and ``log.jsonl`` go; ``None`` keeps nothing.
        checkpoint_every: Also checkpoint every this many steps (``None``: epoch ends only).
        seed: Seed of the batch order and of the global RNGs (``seed + rank``).
        device: Device to train on (default: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU).
        grad_clip: Clip the gradient norm to this value.
        log_every: Log a line every this many steps.
        progress: Show a rich progress bar (rank 0 only).
        name: Name shown in the progress bar and logs.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        train_data: torch.utils.data.Dataset,
        *,
        batch_size: int,
        epochs: int,
        scheduler: Any | None = None,
        scheduler_interval: str = "step",
        val_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        grad_clip: float | None = None,
        log_every: int = 50,
        progress: bool = True,
        name: str = "train",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1; got {epochs}")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(
                f"scheduler_interval must be 'step' or 'epoch'; got {scheduler_interval!r}"
            )
        if len(train_data) == 0:
            raise ValueError("train_data is empty")
        self.rank, self.world_size, local_rank = distributed.setup()
        if device is None:
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.train_data = train_data
        self.batch_size = batch_size
        self.epochs = epochs
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.val_fn = val_fn
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.seed = seed
        self.grad_clip = grad_clip
        self.log_every = max(1, log_every)
        self.show_progress = progress and self.rank == 0
        self.name = name
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        seed_everything(seed + self.rank)
        self.wrapped = distributed.wrap(self.model, self.device)
        if self.checkpoint_dir is not None and self.rank == 0:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    # ---- data -----------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.train_data) / self.world_size)
        return math.ceil(per_rank / self.batch_size)

    def _batches(self, epoch: int, skip: int) -> Iterator[Any]:
        order = epoch_indices(len(self.train_data), epoch, self.seed, self.rank, self.world_size)
        tensors = getattr(self.train_data, "tensors", None)
        for b in range(skip, self.steps_per_epoch):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if tensors is not None:
                index = torch.as_tensor(idx)
                batch: Any = tuple(t[index] for t in tensors)
            else:
                batch = torch.utils.data.default_collate([self.train_data[i] for i in idx])
            yield to_device(batch, self.device)

    # ---- checkpoints ----------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / "last.pt" if self.checkpoint_dir is not None else None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (this rank's RNG only)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "history": self.history,
            "seed": self.seed,
            "world_size": self.world_size,
        }

    def save_checkpoint(self) -> None:
        """Write ``last.pt`` (rank 0) with every rank's RNG states; a collective under DDP."""
        if self.checkpoint_path is None:
            return
        rngs = distributed.gather_object(rng_state())
        if self.rank == 0:
            state = self.state_dict()
            state["rng"] = rngs
            _atomic_save(state, self.checkpoint_path)
        distributed.barrier()

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        """Restore from ``path`` (default ``checkpoint_dir/last.pt``); False if there is none."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None or not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"checkpoint {path} was written by {state['world_size']} processes; resume it "
                f"with the same number (got {self.world_size})"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.history = state["history"]
        set_rng_state(state["rng"][self.rank])
        return True

    # ---- loop -----------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.rank == 0 and self.checkpoint_dir is not None:
            with open(self.checkpoint_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _train_step(self, batch: Any) -> tuple[float, dict[str, float]]:
        self.wrapped.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.loss_fn(self.wrapped, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not torch.isfinite(loss):
            raise RuntimeError(f"{self.name}: loss is {loss.item()} at step {self.global_step}")
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        return loss.item(), metrics

    def fit(self, *, resume: bool = False, max_steps: int | None = None) -> list[dict[str, Any]]:
        """Train until ``epochs`` are done (or ``max_steps`` global steps, then checkpoint and
        return, as if killed right after a checkpoint).

        Args:
            resume: Continue from ``checkpoint_dir/last.pt`` when it exists.
            max_steps: Stop once this many global steps are done.

        Returns:
            The history: one dict per logged step and per epoch.
        """
        if resume:
            self.load_checkpoint()
        # Weight decay drives the weights of dead ReLU units into the subnormal range, where x86
        # arithmetic is many times slower: a CNN's epochs grew from 97 s to 452 s. Training
        # never needs subnormals. The flag is per thread; flush_subnormals reaches the intra-op
        # workers that already exist too.
        flush_subnormals(True)
        total = self.epochs * self.steps_per_epoch
        bar = None
        if self.show_progress:
            from fastdeblur._progress import progress_bar

            bar = progress_bar(info_field=True)
            task = bar.add_task(self.name, total=total, completed=self.global_step, info="")
            bar.start()
        try:
            while self.epoch < self.epochs:
                t0 = time.perf_counter()
                losses: list[float] = []
                for batch in self._batches(self.epoch, self.step_in_epoch):
                    loss, metrics = self._train_step(batch)
                    losses.append(loss)
                    self.step_in_epoch += 1
                    self.global_step += 1
                    if self.global_step % self.log_every == 0:
                        rec = {"epoch": self.epoch, "step": self.global_step, "loss": loss}
                        rec |= {"lr": self.optimizer.param_groups[0]["lr"], **metrics}
                        self._log(rec)
                    if bar is not None:
                        bar.update(task, completed=self.global_step, info=f"loss {loss:.4f}")
                    stop = max_steps is not None and self.global_step >= max_steps
                    if stop or (
                        self.checkpoint_every and self.global_step % self.checkpoint_every == 0
                    ):
                        self.save_checkpoint()
                    if stop:
                        return self.history
                # end of epoch
                if self.scheduler is not None and self.scheduler_interval == "epoch":
                    self.scheduler.step()
                record: dict[str, Any] = {
                    "epoch": self.epoch,
                    "step": self.global_step,
                    "train_loss": float(np.mean(losses)) if losses else float("nan"),
                    "seconds": time.perf_counter() - t0,
                }
                if self.val_fn is not None:
                    record |= self.validate()
                self.epoch += 1
                self.step_in_epoch = 0
                self._log(record)
                if bar is not None:
                    info = " ".join(
                        f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch", "step")
                    )
                    bar.console.print(f"{self.name} epoch {record['epoch']}: {info}")
                self.save_checkpoint()
        finally:
            if bar is not None:
                bar.stop()
        return self.history

    def validate(self) -> dict[str, float]:
        """Run ``val_fn`` on rank 0 in eval mode and share its metrics with every rank."""
        metrics: dict[str, float] = {}
        if self.val_fn is not None and self.rank == 0:
            self.model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in self.val_fn(self.model).items()}
        return distributed.broadcast_object(metrics)

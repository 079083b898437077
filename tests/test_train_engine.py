"""The training engine: exact resume, DDP agreement across two CPU processes, export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fastdeblur.train import (
    Trainer,
    epoch_indices,
    export_safetensors,
    load_safetensors,
    write_model_card,
)

REPO = Path(__file__).resolve().parents[1]


def _problem() -> tuple[nn.Module, torch.utils.data.Dataset]:
    torch.manual_seed(0)
    # Dropout makes the result depend on the RNG state, so resume must restore it.
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 6, generator=g)
    y = torch.randint(0, 3, (50,), generator=g)
    return model, torch.utils.data.TensorDataset(x, y)


def _trainer(model: nn.Module, data, ckpt: Path | None) -> Trainer:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    return Trainer(
        model,
        opt,
        lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        data,
        batch_size=8,
        epochs=3,
        scheduler=sched,
        checkpoint_dir=ckpt,
        seed=5,
        progress=False,
        log_every=1,
    )


def test_resume_is_identical_to_uninterrupted(tmp_path: Path) -> None:
    model_a, data = _problem()
    _trainer(model_a, data, tmp_path / "a").fit()

    model_b, data = _problem()
    stopped = _trainer(model_b, data, tmp_path / "b")
    stopped.fit(max_steps=10)  # 7 steps per epoch: stops in the middle of epoch 1
    assert stopped.global_step == 10 and stopped.epoch == 1
    del stopped, model_b
    torch.manual_seed(123)  # a different process state: resume must not depend on it
    model_c, data = _problem()
    resumed = _trainer(model_c, data, tmp_path / "b")
    resumed.fit(resume=True)
    assert resumed.global_step == 3 * 7
    for (name, a), c in zip(
        model_a.state_dict().items(), model_c.state_dict().values(), strict=True
    ):
        assert torch.equal(a, c), name
    assert resumed.scheduler.get_last_lr() == pytest.approx([1e-2 * 0.5 ** (21 // 4)])
    assert (tmp_path / "b" / "log.jsonl").is_file()


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    model, data = _problem()
    t = _trainer(model, data, tmp_path)
    assert not t.load_checkpoint()
    t.fit(resume=True, max_steps=2)
    assert t.global_step == 2 and (tmp_path / "last.pt").is_file()


def test_epoch_indices_shard_the_permutation() -> None:
    full = epoch_indices(10, epoch=2, seed=1)
    assert sorted(full) == list(range(10))
    shards = [epoch_indices(10, 2, 1, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to 12
    assert set().union(*map(set, shards)) == set(range(10))
    assert epoch_indices(10, 3, 1) != full


def test_bad_arguments() -> None:
    model, data = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(model, opt, lambda m, b: m(b[0]).sum(), data, batch_size=0, epochs=1)
    with pytest.raises(ValueError, match="train_data"):
        Trainer(
            model,
            opt,
            lambda m, b: 0,
            torch.utils.data.TensorDataset(torch.zeros(0, 6)),
            batch_size=1,
            epochs=1,
        )


def test_export_safetensors_and_card(tmp_path: Path) -> None:
    model, _ = _problem()
    path = export_safetensors(model, tmp_path / "w.safetensors", metadata={"arch": [6, 16, 3]})
    tensors, meta = load_safetensors(path)
    assert meta == {"arch": [6, 16, 3]}
    for name, value in model.state_dict().items():
        assert torch.equal(tensors[name], value)
    card = write_model_card(
        path,
        title="Tiny",
        description="d",
        data="random",
        command="python x.py",
        metrics={"acc": 0.5},
        details={"epochs": 3},
    )
    text = card.read_text()
    assert card.name == "w.md" and "python x.py" in text and "| acc | 0.5 |" in text
    with pytest.raises(FileNotFoundError):
        load_safetensors(tmp_path / "missing.safetensors")


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(REPO / "tests" / "_ddp_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    for name, a in r0["state"].items():
        assert torch.equal(a, r1["state"][name]), name
    # and it trained: the parameters moved from their initial values
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).state_dict()
    assert not torch.equal(init["0.weight"], r0["state"]["0.weight"])
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["global_step"] == 2 and len(ckpt["rng"]) == 2


def test_training_flushes_subnormals() -> None:
    """Subnormal weights (dead units under weight decay) slow x86 arithmetic several-fold; the
    engine trains with them flushed to zero."""
    model, data = _problem()
    _trainer(model, data, None).fit()
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # below float32's normal range
    assert float(tiny * 1.0) == 0.0


def test_flush_subnormals_reaches_existing_worker_threads() -> None:
    """torch.set_flush_denormal covers the calling thread only; the native helper also sets
    the flag on intra-op workers created before it (every chunk of a parallel op flushes)."""
    from fastdeblur._ext import flush_subnormals, has_native

    if not has_native():
        pytest.skip("needs the native extension")
    torch.ones(1 << 20) * 1.0  # a parallel op: the worker pool exists from here on
    try:
        flush_subnormals(False)
        # made after the flag is off: with it on, even writing the constant flushes it
        x = torch.full((1 << 20,), 1e-39, dtype=torch.float32)  # many chunks of a parallel op
        assert bool((x * 1.5 != 0).all()), "subnormals were flushed on some thread"
        flush_subnormals(True)
        assert bool((x * 1.5 == 0).all()), "a worker thread kept computing with subnormals"
    finally:
        flush_subnormals(True)  # the state training leaves behind

"""Training NAFNet for blind deblurring on synthetic pairs, through :class:`Trainer`.

:func:`train_nafnet` builds the data (:class:`fastdeblur.synth_pairs.DeblurPairDataset` on a
by-image train split of the sharp photos, a fixed set of validation pairs on the held-out
images), the model (optionally initialised from exported weights, ``init``), AdamW with a linear
warm-up and a cosine decay, and an exponential moving average (EMA) of the weights; it trains
with :class:`EMATrainer` (checkpoints every ``checkpoint_every`` steps and at each epoch end,
exact resume including the EMA) and measures the
validation PSNR of the EMA weights after every epoch. The best EMA weights so far are kept in
``out_dir/best.safetensors``; ``export`` writes the final choice with its model card.

Every epoch draws new training pairs (``fresh_pairs``): item ``i`` of epoch ``e`` is item
``e · epoch_size + i`` of one long deterministic dataset. Re-using one fixed set of
``epoch_size`` pairs every epoch over-fits a small network within a few epochs (the validation
PSNR peaks and then declines), and generating the pairs of a step costs about 5 % of the step
(batch 4, 96 px, one thread).

The exported safetensors carries the architecture in its metadata (``nafnet_config``), so
:func:`fastdeblur.models.pretrained.load_nafnet` rebuilds the network from the file alone.
"""

from __future__ import annotations

import copy
import json
import math
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastdeblur.models.nafnet import NAFNet
from fastdeblur.synth import split_images
from fastdeblur.synth_pairs import (
    BLUR_FAMILIES,
    DeblurPairDataset,
    DeconvolvedPairDataset,
    load_rgb_images,
    noise_range,
)
from fastdeblur.train.engine import Trainer
from fastdeblur.train.export import export_safetensors, write_model_card

__all__ = [
    "EMATrainer",
    "ModelEMA",
    "NAFNetTrainConfig",
    "charbonnier_loss",
    "nafnet_config",
    "psnr",
    "psnr_loss",
    "train_nafnet",
]

LOSSES = ("charbonnier", "psnr")
INPUTS = ("blurred", "deconvolved")


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt((pred - target)² + eps²)`` over all elements (a smooth L1)."""
    return torch.sqrt((pred - target).pow(2) + eps * eps).mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus the mean per-image PSNR (dB, peak 1) of ``(B, C, H, W)`` batches (NAFNet's loss)."""
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(mse + 1e-8).mean()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (peak 1) of ``(B, C, H, W)`` batches -> ``(B,)``; pred clipped."""
    mse = (pred.clamp(0, 1) - target).pow(2).mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


class ModelEMA:
    """Exponential moving average of a model's parameters (buffers copied).

    ``ema = decay · ema + (1 − decay) · param`` after every optimizer step, with the decay
    ramped as ``min(decay, (1 + n) / (10 + n))`` over the first updates so early weights do not
    dominate.

    Args:
        model: The model being trained (copied).
        decay: Long-run decay per step.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1); got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.module.parameters(), model.parameters(), strict=True):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.decay = state["decay"]
        self.updates = state["updates"]


class EMATrainer(Trainer):
    """:class:`Trainer` that also keeps a :class:`ModelEMA`, checkpointed with the rest.

    Args:
        *args: As for :class:`Trainer`.
        ema: The average to update after every step.
        **kwargs: As for :class:`Trainer`.
    """

    def __init__(self, *args: Any, ema: ModelEMA, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ema = ema
        self.ema.module.to(self.device)

    def _batches(self, epoch: int, skip: int) -> Any:
        set_epoch = getattr(self.train_data, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        return super()._batches(epoch, skip)

    def _train_step(self, batch: Any) -> tuple[float, dict[str, float]]:
        out = super()._train_step(batch)
        self.ema.update(self.model)
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["ema"] = self.ema.state_dict()
        return state

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        path = Path(path) if path is not None else self.checkpoint_path
        if not super().load_checkpoint(path):
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.ema.load_state_dict(state["ema"])
        return True


@dataclass
class NAFNetTrainConfig:
    """Everything that defines a NAFNet training run (stored in the checkpoint folder).

    Attributes:
        images: Folders of sharp photos; ``None`` entries mean the ``skimage.data`` photos.
        val_fraction: Fraction of the images held out for validation (split by image).
        width: Channels of the first level.
        enc_blocks: NAF blocks per encoder level.
        middle_blocks: NAF blocks at the lowest resolution.
        dec_blocks: NAF blocks per decoder level (default: one per level).
        patch_size: Training crop side.
        batch_size: Pairs per step.
        steps: Total optimizer steps (rounded up to whole epochs).
        epoch_size: Distinct training pairs per epoch (the dataset repeats each epoch; the
            pairs are cached in memory, see ``cache``).
        lr: Peak learning rate (AdamW, betas 0.9/0.9).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up before the cosine decay to ``lr · 0.01``.
        loss: ``charbonnier`` or ``psnr``.
        ema_decay: Decay of the weight average.
        grad_clip: Gradient-norm clip.
        val_pairs: Validation pairs (fixed, from the held-out images).
        noise_sigma: ``(low, high)``: the white noise of each synthetic pair has a standard
            deviation drawn uniformly in this range (0–1 intensity units); ``(0, 0)`` trains
            on noise-free pairs; one number is a fixed level.
        seed: Seed of the split, the validation pairs, the batch order and the initial weights.
        cache: Keep generated training pairs in memory (the dataset is deterministic, so this
            changes nothing but speed); only used without ``fresh_pairs``.
        fresh_pairs: Draw new training pairs every epoch (default) instead of repeating the
            same ``epoch_size`` pairs.
        data_seed: Seed of the training pairs (default: ``seed``). Give a new one when
            continuing from weights trained with ``seed`` so the pairs are new too, while the
            split (and so the validation images) stays that of ``seed``.
        init: Start from these exported weights (``.safetensors`` of ``fastdeblur train
            nafnet``; same architecture) instead of a random initialisation.
        fused: Train with the fused NAF block kernels (same weights, faster on CPU).
        shake_speed_variation: Upper end of the camera-shake kernels' speed variation
            (:class:`fastdeblur.synth_pairs.DeblurPairDataset`); 0 keeps constant speed.
        families: Blur families of the training and validation pairs (a subset of
            :data:`fastdeblur.synth_pairs.BLUR_FAMILIES`, cycled in turn), e.g. only
            ``camera_shake`` and ``spatially_varying`` for a network that serves where the
            parametric models do not fit.
        input: ``"blurred"`` (blind NAFNet: the input is the blurred patch) or
            ``"deconvolved"`` (kernel-guided NAFNet: the input is the classical blind pipeline's
            result on the blurred patch, :class:`fastdeblur.synth_pairs.DeconvolvedPairDataset`;
            the same ``epoch_size`` pairs every epoch, in new random ``patch_size`` windows).
        source_patch: With ``input="deconvolved"``: side of the synthetic patches the classical
            pipeline deblurs (the blur estimate needs more pixels than a training window).
        pairs_cache: With ``input="deconvolved"``: folder caching the classical results
            (default: ``pairs`` in the checkpoint folder).
    """

    images: list[str | None] = field(default_factory=lambda: [None])
    val_fraction: float = 0.15
    width: int = 16
    enc_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    middle_blocks: int = 1
    dec_blocks: list[int] | None = None
    patch_size: int = 96
    batch_size: int = 8
    steps: int = 1000
    epoch_size: int = 1600
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    loss: str = "charbonnier"
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    val_pairs: int = 40
    noise_sigma: tuple[float, float] | float = (0.0, 0.02)
    seed: int = 0
    cache: bool = True
    fresh_pairs: bool = True
    data_seed: int | None = None
    init: str | None = None
    fused: bool = True
    shake_speed_variation: float = 0.0
    families: list[str] = field(default_factory=lambda: list(BLUR_FAMILIES))
    input: str = "blurred"
    source_patch: int = 192
    pairs_cache: str | None = None

    def __post_init__(self) -> None:
        self.families = list(self.families)
        self.noise_sigma = noise_range(self.noise_sigma)
        if self.dec_blocks is None:
            self.dec_blocks = [1] * len(self.enc_blocks)
        checks = {
            "width": self.width >= 1,
            "patch_size": self.patch_size >= 16,
            "batch_size": self.batch_size >= 1,
            "steps": self.steps >= 1,
            "epoch_size": self.epoch_size >= 1,
            "lr": self.lr > 0,
            "val_pairs": self.val_pairs >= 1,
            "enc_blocks": len(self.enc_blocks) >= 1 and min(self.enc_blocks) >= 0,
            "dec_blocks": len(self.dec_blocks) == len(self.enc_blocks),
            "middle_blocks": self.middle_blocks >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "ema_decay": 0 <= self.ema_decay < 1,
            "shake_speed_variation": math.isfinite(self.shake_speed_variation)
            and self.shake_speed_variation >= 0,
            "noise_sigma": len(self.noise_sigma) == 2
            and all(math.isfinite(v) for v in self.noise_sigma)
            and 0 <= self.noise_sigma[0] <= self.noise_sigma[1] <= 1,
            "families": bool(self.families)
            and len(set(self.families)) == len(self.families)
            and set(self.families) <= set(BLUR_FAMILIES),
            "input": self.input in INPUTS,
            "source_patch": self.source_patch >= self.patch_size,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid training setting(s): "
                             + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
                             + (f" (inputs: {', '.join(INPUTS)})" if "input" in bad else ""))
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.init is not None and not Path(self.init).is_file():
            raise ValueError(f"init: weights file not found: {self.init}")
        if self.patch_size % (2 ** len(self.enc_blocks)):
            raise ValueError(f"patch_size must be a multiple of {2 ** len(self.enc_blocks)} "
                             f"(2 ** encoder levels); got {self.patch_size}")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.epoch_size / self.batch_size)

    @property
    def epochs(self) -> int:
        return math.ceil(self.steps / self.steps_per_epoch)

    @property
    def pair_seed(self) -> int:
        """Seed of the training pairs."""
        return self.seed if self.data_seed is None else self.data_seed


def nafnet_config(cfg: NAFNetTrainConfig) -> dict[str, Any]:
    """The ``NAFNet(**config)`` arguments of a training configuration."""
    config: dict[str, Any] = {
        "img_channel": 3,
        "width": cfg.width,
        "middle_blk_num": cfg.middle_blocks,
        "enc_blk_nums": list(cfg.enc_blocks),
        "dec_blk_nums": list(cfg.dec_blocks or []),
    }
    if cfg.input == "deconvolved":  # the blurred patch beside the classical result
        config["guide_channels"] = 3
    return config


class _CachedPairs(torch.utils.data.Dataset):
    """Memoises a deterministic dataset's items (same items, generated once)."""

    def __init__(self, data: torch.utils.data.Dataset) -> None:
        self.data = data
        self.items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if index not in self.items:
            self.items[index] = self.data[index]
        return self.items[index]


class _EpochPairs(torch.utils.data.Dataset):
    """Epoch ``e``'s view of a long deterministic dataset: item ``i`` is ``data[e · n + i]``.

    Args:
        data: A dataset of at least ``epochs · n`` items.
        n: Items per epoch.
    """

    def __init__(self, data: torch.utils.data.Dataset, n: int) -> None:
        self.data = data
        self.n = n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Serve the items of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.data[self.epoch * self.n + index]


def _pairs_tensor(data: DeblurPairDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = [data[i] for i in range(len(data))]
    return (
        torch.stack([it["blurred"] for it in items]),
        torch.stack([it["sharp"] for it in items]),
        torch.tensor([it["family"] for it in items]),
    )


def build_data(cfg: NAFNetTrainConfig) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """Train dataset and validation dataset (disjoint images) of a configuration.

    The train dataset holds every pair of the run (``epochs · epoch_size`` with
    ``fresh_pairs``, else ``epoch_size``); the validation pairs depend on ``seed`` only.
    """
    images = load_rgb_images(cfg.images)
    if len(images) < 2:
        raise ValueError(f"images: need at least 2 images for a train/validation split; got "
                         f"{len(images)}")
    train_images, val_images = split_images(images, cfg.val_fraction, seed=cfg.seed)
    if not val_images:
        raise ValueError("val_fraction leaves no validation image")
    common = {"patch_size": cfg.patch_size, "noise_sigma": tuple(cfg.noise_sigma),
              "shake_speed_variation": cfg.shake_speed_variation, "families": cfg.families}
    if cfg.input == "deconvolved":
        if cfg.pairs_cache is None:
            raise ValueError("input 'deconvolved' needs a pairs_cache folder")
        cache = Path(cfg.pairs_cache)
        common["patch_size"] = cfg.source_patch
        # a few times as many synthetic pairs: those no kernel fits are skipped
        train = DeconvolvedPairDataset(
            DeblurPairDataset(train_images, length=4 * cfg.epoch_size, seed=cfg.pair_seed,
                              **common),
            cfg.epoch_size, cache / "train", crop=cfg.patch_size, seed=cfg.pair_seed)
        val = DeconvolvedPairDataset(
            DeblurPairDataset(val_images, length=4 * cfg.val_pairs, seed=cfg.seed + 7_777,
                              augment=False, **common),
            cfg.val_pairs, cache / "val")
        return train, val
    length = cfg.epoch_size * (cfg.epochs if cfg.fresh_pairs else 1)
    train = DeblurPairDataset(train_images, length=length, seed=cfg.pair_seed, **common)
    val = DeblurPairDataset(val_images, length=cfg.val_pairs, seed=cfg.seed + 7_777,
                            augment=False, **common)
    return train, val


_ALL_FAMILIES_TEXT = (
    "blur families gaussian / motion / defocus (fastdeblur.synth.DEFAULT_RANGES), camera shake "
    "(9-31 px kernels) and spatially varying fields (rotation, zoom, defocus gradient, motion "
    "field; 5-25 px)"
)


def _metadata(cfg: NAFNetTrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "fastdeblur.nafnet",
        "nafnet_config": nafnet_config(cfg),
        "train_config": asdict(cfg),
        **extra,
    }


def train_nafnet(
    cfg: NAFNetTrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    export: str | Path | None = None,
    command: str | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    log_every: int = 25,
    checkpoint_every: int | None = 50,
) -> dict[str, Any]:
    """Train (or continue training) a NAFNet deblurring model.

    Args:
        cfg: The run's settings.
        out_dir: Checkpoint folder: ``last.pt``, ``log.jsonl``, ``config.json``,
            ``best.safetensors`` (best validation PSNR of the EMA weights).
        resume: Continue from ``out_dir/last.pt``. The stored ``config.json`` must match,
            except ``steps``: a new total re-spreads the rest of the cosine decay over it.
        export: Also write the best EMA weights here (``.safetensors``) with a model card.
        command: The command line to write in the model card.
        max_steps: Stop after this many global steps (checkpointed; resume continues).
        progress: Show a progress bar.
        log_every: Log the training loss every this many steps.
        checkpoint_every: Checkpoint every this many steps (plus every epoch end).

    Returns:
        ``{"history", "best_val_psnr", "best_step", "steps", "seconds", "export"}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    stored = json.loads(json.dumps(asdict(cfg)))
    if resume and config_path.is_file():
        # settings added after a run started take their default (the run's behaviour)
        defaults = json.loads(json.dumps(asdict(NAFNetTrainConfig())))
        previous = {**defaults, **json.loads(config_path.read_text())}
        diff = sorted(k for k in stored if previous.get(k) != stored[k])
        # The total may change (lengthen or shorten a run to the time there is): the remaining
        # steps follow the cosine decay to the new total; pairs and batch order are unchanged.
        if [k for k in diff if k != "steps"]:
            raise ValueError(f"resume: settings differ from the run in {out} ({', '.join(diff)}); "
                             "use the same options or a new --out folder")
    config_path.write_text(json.dumps(stored, indent=2))

    torch.manual_seed(cfg.seed)
    model = NAFNet(**nafnet_config(cfg), fused=cfg.fused)
    if cfg.init is not None:
        load_init_weights(model, cfg.init, nafnet_config(cfg))
    ema = ModelEMA(model, cfg.ema_decay)
    train_data, val_data = build_data(cfg)
    val_blurred, val_sharp, val_family = _pairs_tensor(val_data)
    # the input's PSNR: the blurred patch's, or for the kernel-guided network the classical
    # result's (its first three channels)
    val_input_psnr = float(psnr(val_blurred[:, :3], val_sharp).mean())
    loss_of = charbonnier_loss if cfg.loss == "charbonnier" else psnr_loss

    def loss_fn(net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_of(net(batch["blurred"]), batch["sharp"])

    best = {"val_psnr": -math.inf, "step": -1}
    best_path = out / "best.safetensors"
    best_state_path = out / "best.json"
    if resume and best_state_path.is_file():
        best = json.loads(best_state_path.read_text())
    trainer_box: dict[str, EMATrainer] = {}

    def val_fn(_: nn.Module) -> dict[str, float]:
        net = ema.module
        net.eval()
        scores = []
        for i in range(0, len(val_blurred), 8):
            x = val_blurred[i : i + 8].to(trainer_box["t"].device)
            scores.append(psnr(net(x).cpu(), val_sharp[i : i + 8]))
        per_pair = torch.cat(scores)
        val_psnr = float(per_pair.mean())
        metrics = {"val_psnr": val_psnr, "val_gain_db": val_psnr - val_input_psnr}
        for f, name in enumerate(val_data.families):
            sel = val_family == f
            if sel.any():
                metrics[f"val_psnr_{name}"] = float(per_pair[sel].mean())
        step = trainer_box["t"].global_step
        if val_psnr > best["val_psnr"]:
            best.update(val_psnr=val_psnr, step=step)
            export_safetensors(net, best_path, metadata=_metadata(
                cfg, {"val_psnr": val_psnr, "val_input_psnr": val_input_psnr, "step": step}))
            best_state_path.write_text(json.dumps(best))
        return metrics

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.9),
                                  weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    if cfg.input == "deconvolved":
        # the classical results are cached on disk; each epoch cuts new windows of them
        train_view: torch.utils.data.Dataset = train_data
    elif cfg.fresh_pairs:
        train_view = _EpochPairs(train_data, cfg.epoch_size)
    else:
        train_view = _CachedPairs(train_data) if cfg.cache else train_data
    trainer = EMATrainer(
        model,
        optimizer,
        loss_fn,
        train_view,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        scheduler=scheduler,
        val_fn=val_fn,
        checkpoint_dir=out,
        checkpoint_every=checkpoint_every,
        seed=cfg.seed,
        device="cpu" if not torch.cuda.is_available() else None,
        grad_clip=cfg.grad_clip,
        log_every=log_every,
        progress=progress,
        name="nafnet",
        ema=ema,
    )
    trainer_box["t"] = trainer
    t0 = time.perf_counter()
    history = trainer.fit(resume=resume, max_steps=max_steps)
    seconds = time.perf_counter() - t0
    if not best_path.is_file():
        # Stopped before the first epoch ended: validate the current average once.
        val_fn(model)
    result: dict[str, Any] = {
        "history": history,
        "best_val_psnr": best["val_psnr"],
        "best_step": best["step"],
        "val_input_psnr": val_input_psnr,
        "steps": trainer.global_step,
        "seconds": seconds,
        "export": None,
    }
    if export is not None:
        result["export"] = str(export_nafnet(out, export, command=command))
    return result


def load_init_weights(model: nn.Module, path: str | Path, config: dict[str, Any]) -> None:
    """Load exported NAFNet weights into ``model`` (the architectures must be the same).

    A kernel-guided ``model`` (``guide_channels`` 3) may start from blind weights of the same
    architecture otherwise: the first convolution sees the classical result through the blind
    weights and the guide (the blurred image) through zeros, and the last convolution starts
    at zero, so the network starts as the identity on the classical result.

    Args:
        model: The freshly built network.
        path: A ``.safetensors`` export of ``fastdeblur train nafnet``.
        config: ``model``'s ``NAFNet(**config)`` arguments, compared with the file's.

    Raises:
        ValueError: not a NAFNet export, or another architecture.
    """
    from fastdeblur.train.export import load_safetensors

    tensors, meta = load_safetensors(path)
    stored = meta.get("nafnet_config")
    if not isinstance(stored, dict):
        raise ValueError(f"init: {path} has no 'nafnet_config' metadata; not a NAFNet export")
    stored, config = json.loads(json.dumps(stored)), json.loads(json.dumps(config))
    guides = config.get("guide_channels", 0)
    from_blind = guides > 0 and stored.get("guide_channels", 0) == 0 and stored == {
        k: v for k, v in config.items() if k != "guide_channels"}
    if stored != config and not from_blind:
        raise ValueError(f"init: {path} is a NAFNet {stored}; the run builds {config} (use the "
                         "same --width and block counts)")
    if from_blind:
        w = tensors["intro.weight"]
        tensors["intro.weight"] = torch.cat([w, w.new_zeros(w.shape[0], guides, *w.shape[2:])],
                                            dim=1)
        tensors["ending.weight"] = torch.zeros_like(tensors["ending.weight"])
        tensors["ending.bias"] = torch.zeros_like(tensors["ending.bias"])
    model.load_state_dict(tensors)


def export_nafnet(
    out_dir: str | Path,
    path: str | Path,
    *,
    command: str | None = None,
    metrics: dict[str, Any] | None = None,
    description: str | None = None,
    images: Sequence[str | None] | None = None,
    init: str | None = None,
) -> Path:
    """Copy a run's best EMA weights to ``path`` (safetensors) and write its model card.

    Args:
        out_dir: The run's checkpoint folder (holds ``best.safetensors`` and ``config.json``).
        path: Output ``.safetensors``.
        command: The training command, for the card.
        metrics: Extra held-out metrics for the card (e.g. benchmark results).
        description: First paragraph of the card.
        images: The training image sources to record instead of the run's (e.g. a path
            relative to the repository instead of a machine's absolute path).
        init: What to record as the starting weights instead of the run's ``init`` path (e.g.
            which release it was, when the export replaces that file).

    Returns:
        The weights path.
    """
    from fastdeblur.train.export import load_safetensors

    out = Path(out_dir)
    tensors, meta = load_safetensors(out / "best.safetensors")
    meta.pop("format", None)
    if images is not None:
        meta.setdefault("train_config", {})["images"] = list(images)
    if init is not None:
        meta.setdefault("train_config", {})["init"] = init
    path = export_safetensors(tensors, path, metadata={"format": "fastdeblur.nafnet", **meta})
    cfg = meta.get("train_config", {})
    images = ", ".join("skimage.data photos" if s is None else str(s)
                       for s in cfg.get("images", [None]))
    guided = cfg.get("input") == "deconvolved"
    pairs_text = (
        f"Synthetic pairs (`fastdeblur.synth_pairs.DeblurPairDataset`) of {cfg.get('source_patch')}"
        " px RGB crops, each deblurred by the classical blind pipeline (`deblur` auto: blur "
        "estimate, kernel checks, hyper-Laplacian deconvolution; "
        "`fastdeblur.synth_pairs.DeconvolvedPairDataset`, crops no kernel fits skipped): the "
        f"network maps that result to the sharp crop, trained on random {cfg.get('patch_size')} "
        "px windows; " if guided else
        "Synthetic pairs (`fastdeblur.synth_pairs.DeblurPairDataset`): "
        f"{cfg.get('patch_size')} px RGB crops, ")
    data = (
        f"Sharp images: {images}; split by image, {cfg.get('val_fraction')} held out for "
        f"validation. {pairs_text}"
        + (_ALL_FAMILIES_TEXT if list(cfg.get("families", BLUR_FAMILIES)) == list(BLUR_FAMILIES)
           else "blur families " + " / ".join(cfg["families"]) + " only (see "
           "`fastdeblur.synth_pairs.BLUR_FAMILIES`)")
        + f", noise sigma {cfg.get('noise_sigma')}. "
        + (f"Camera-shake speed variation uniform in [0, {cfg['shake_speed_variation']}] "
           "(dwell points). " if cfg.get("shake_speed_variation") else "")
        + (f"The same {cfg.get('epoch_size')} classical results every epoch, new windows. "
           if guided else "New training pairs every epoch. " if cfg.get("fresh_pairs") else
           f"The same {cfg.get('epoch_size')} training pairs every epoch. ")
        + f"Validation: {cfg.get('val_pairs')} fixed pairs of the held-out images. The Levin "
        "et al. images and kernels are not used in training (they are the evaluation set)."
    )
    card_metrics: dict[str, Any] = {
        "validation PSNR (synthetic, dB)": meta.get("val_psnr"),
        "validation input PSNR (dB)": meta.get("val_input_psnr"),
        "step of these weights": meta.get("step"),
    }
    card_metrics |= metrics or {}
    write_model_card(
        path,
        title="NAFNet kernel-guided deblurring (small)" if guided
        else "NAFNet blind deblurring (small)",
        description=description or (
            "A small NAFNet (Chen et al. 2022) that refines the classical blind pipeline's "
            "result (estimated kernel + hyper-Laplacian deconvolution), seen beside the blurred "
            "image, into the sharp image: `nafnet_deblur(restored, model=load_nafnet(PATH), "
            "guide=blurred)`. Images: RGB float in [0, 1]."
            if guided else
            "A small NAFNet (Chen et al. 2022) trained to remove blur and noise from photos, "
            "without knowing the blur. Input and output: RGB float images in [0, 1]. Load with "
            "`fastdeblur.models.pretrained.load_nafnet()`."
        ),
        data=data,
        command=command or "fastdeblur train nafnet ...",
        metrics=card_metrics,
        details={"architecture": meta.get("nafnet_config"), "training": cfg},
    )
    return path


def format_command(argv: Sequence[str]) -> str:
    """A shell-quoted command line."""
    return " ".join(shlex.quote(a) for a in argv)

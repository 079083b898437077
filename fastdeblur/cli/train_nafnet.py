"""``fastdeblur train nafnet``: train the learned deblurring model on synthetic pairs.

:func:`add_commands` adds the ``nafnet`` command to the ``train`` group. Run as a module
(``python -m fastdeblur.cli.train_nafnet --help``) it is a standalone command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fastdeblur.cli._common import CLIError, cli_errors, console
from fastdeblur.synth_pairs import BLUR_FAMILIES

if TYPE_CHECKING:
    from fastdeblur.train.nafnet import NAFNetTrainConfig


def _parse_blocks(text: str, name: str) -> list[int]:
    try:
        blocks = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        blocks = []
    if not blocks or min(blocks) < 0:
        raise CLIError(f"{name} must be comma-separated integers >= 0 like 1,1,1,1; "
                       f"got {text!r}")
    return blocks


def _parse_families(text: str) -> list[str]:
    names = [v for v in text.replace(" ", "").split(",") if v]
    unknown = [v for v in names if v not in BLUR_FAMILIES]
    if not names or unknown or len(set(names)) != len(names):
        raise CLIError(f"--families must be distinct names from {', '.join(BLUR_FAMILIES)}, "
                       f"comma-separated; got {text!r}")
    return names


def _parse_noise(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(0 <= v <= 1 for v in values) or values[0] > values[1]:
        raise CLIError(f"--noise-sigma must be LOW,HIGH with 0 <= LOW <= HIGH <= 1 (or one "
                       f"value) like 0,0.02; got {text!r}")
    return values[0], values[1]


def nafnet(
    images: list[Path] = typer.Option(
        None, "--images", help="Folder of sharp photos (repeatable). Default: the skimage.data "
        "photos. Add --skimage to use both."),
    skimage_photos: bool = typer.Option(
        False, "--skimage", help="Also use the skimage.data photos when --images is given."),
    out: Path = typer.Option(Path("runs/nafnet"), "--out", help="Checkpoint folder."),
    width: int = typer.Option(16, "--width", min=1, help="Channels of the first level."),
    enc_blocks: str = typer.Option("1,1,1,1", "--enc-blocks",
                                   help="NAF blocks per encoder level, comma-separated."),
    middle_blocks: int = typer.Option(1, "--middle-blocks", min=0,
                                      help="NAF blocks at the lowest level."),
    dec_blocks: str = typer.Option(None, "--dec-blocks",
                                   help="NAF blocks per decoder level (default: 1 per level)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Total optimizer steps."),
    epochs: int = typer.Option(None, "--epochs", min=1,
                               help="Epochs of --epoch-size pairs (instead of --steps)."),
    epoch_size: int = typer.Option(1600, "--epoch-size", min=1,
                                   help="Distinct training pairs per epoch."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Pairs per step."),
    patch_size: int = typer.Option(96, "--patch-size", min=16, help="Training crop side (px)."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate."),
    loss: str = typer.Option("charbonnier", "--loss", help="charbonnier | psnr."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="Decay of the EMA weights."),
    warmup_steps: int = typer.Option(100, "--warmup-steps", min=0, help="Linear LR warm-up."),
    val_pairs: int = typer.Option(40, "--val-pairs", min=1, help="Validation pairs."),
    val_fraction: float = typer.Option(0.15, "--val-fraction",
                                       help="Images held out for validation."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, data, order and weights."),
    data_seed: int = typer.Option(None, "--data-seed",
                                  help="Seed of the training pairs (default: --seed); the split "
                                  "stays that of --seed."),
    init: Path = typer.Option(None, "--init",
                              help="Start from these weights (.safetensors of an earlier export, "
                              "same architecture), e.g. fastdeblur/weights/nafnet_deblur."
                              "safetensors."),
    fresh_pairs: bool = typer.Option(True, "--fresh-pairs/--same-pairs",
                                     help="New training pairs every epoch, or the same "
                                     "--epoch-size pairs every epoch."),
    fused: bool = typer.Option(True, "--fused/--no-fused",
                               help="Train on the fused NAF block kernels."),
    shake_speed_variation: float = typer.Option(
        0.0, "--shake-speed-variation", min=0.0,
        help="Camera-shake kernels with a speed varying along the path (dwell points of "
        "recorded shake), drawn in [0, this]; 0: constant speed."),
    families: str = typer.Option(
        None, "--families",
        help="Blur families of the pairs, comma-separated (default all: gaussian, motion, "
        "defocus, camera_shake, spatially_varying)."),
    noise_sigma: str = typer.Option(
        "0,0.02", "--noise-sigma",
        help="Noise of the pairs: standard deviation uniform in LOW,HIGH (0-1 units); one "
        "value for a fixed level, 0 for noise-free pairs."),
    input_kind: str = typer.Option(
        "blurred", "--input",
        help="blurred: blind NAFNet (input = the blurred patch). deconvolved: kernel-guided "
        "NAFNet (input = the classical blind pipeline's result beside the blurred patch)."),
    source_patch: int = typer.Option(
        192, "--source-patch", min=16,
        help="With --input deconvolved: side of the patches the classical pipeline deblurs "
        "(training windows of --patch-size are cut from them)."),
    pairs_cache: Path = typer.Option(
        None, "--pairs-cache",
        help="With --input deconvolved: folder caching the classical results (default: "
        "--out/pairs); several processes may fill it (--fill-pairs)."),
    fill_pairs: str = typer.Option(
        None, "--fill-pairs", metavar="START:STOP",
        help="With --input deconvolved: only compute and cache training items START..STOP-1 "
        "(from 0: also the validation items), then stop; run several at once to use more "
        "cores."),
    resume: bool = typer.Option(False, "--resume", help="Continue from --out/last.pt."),
    max_steps: int = typer.Option(None, "--max-steps", min=1,
                                  help="Stop (checkpointed) after this many steps."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1,
                                         help="Checkpoint every this many steps."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    export: Path = typer.Option(None, "--export",
                                help="Write the best EMA weights here (.safetensors + .md card)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train NAFNet on synthetic blurred/sharp pairs (blind, or kernel-guided deblurring)."""
    import torch

    from fastdeblur.train.nafnet import NAFNetTrainConfig, format_command, train_nafnet

    if steps is not None and epochs is not None:
        raise CLIError("give --steps or --epochs, not both")
    if export is not None and export.suffix != ".safetensors":
        raise CLIError(f"--export must end in .safetensors; got {export}")
    if init is not None and not init.is_file():
        raise CLIError(f"--init: weights file not found: {init}")
    if pairs_cache is not None and input_kind != "deconvolved":
        raise CLIError("--pairs-cache needs --input deconvolved")
    if threads is not None:
        torch.set_num_threads(threads)
    sources: list[str | None] = [str(p) for p in images] if images else [None]
    if images and skimage_photos:
        sources.append(None)
    for p in images or []:
        if not p.is_dir():
            raise CLIError(f"--images: {p} is not a folder")
    enc = _parse_blocks(enc_blocks, "--enc-blocks")
    noise_range = _parse_noise(noise_sigma)
    family_list = _parse_families(families) if families is not None else list(BLUR_FAMILIES)
    dec = _parse_blocks(dec_blocks, "--dec-blocks") if dec_blocks else None
    per_epoch = -(-epoch_size // batch_size)
    total = steps if steps is not None else (epochs or 10) * per_epoch
    cfg = NAFNetTrainConfig(
        images=sources, val_fraction=val_fraction, width=width, enc_blocks=enc,
        middle_blocks=middle_blocks, dec_blocks=dec, patch_size=patch_size,
        batch_size=batch_size, steps=total, epoch_size=epoch_size, lr=lr, loss=loss,
        ema_decay=ema_decay, warmup_steps=warmup_steps, val_pairs=val_pairs, seed=seed,
        data_seed=data_seed, init=str(init) if init is not None else None,
        fresh_pairs=fresh_pairs, fused=fused, shake_speed_variation=shake_speed_variation,
        families=family_list, noise_sigma=noise_range, input=input_kind,
        source_patch=source_patch,
        pairs_cache=str(pairs_cache or out / "pairs") if input_kind == "deconvolved" else None,
    )
    if fill_pairs is not None:
        _fill(cfg, fill_pairs, progress)
        return
    # The options as typed, after "train nafnet" (or after the module name when run standalone).
    argv = sys.argv[1:]
    if "nafnet" in argv:
        argv = argv[argv.index("nafnet") + 1 :]
    command = format_command(["fastdeblur", "train", "nafnet", *argv])
    result = train_nafnet(cfg, out, resume=resume, export=export, command=command,
                          max_steps=max_steps, progress=progress,
                          checkpoint_every=checkpoint_every)
    console.print(
        f"nafnet: {result['steps']} steps in {result['seconds']:.0f} s; best validation PSNR "
        f"{result['best_val_psnr']:.2f} dB (input {result['val_input_psnr']:.2f} dB) at step "
        f"{result['best_step']}; checkpoints in {out}"
    )
    if result["export"]:
        console.print(f"weights: {result['export']}")


def _fill(cfg: NAFNetTrainConfig, text: str, progress: bool) -> None:
    from fastdeblur.synth_pairs import DeconvolvedPairDataset
    from fastdeblur.train.nafnet import build_data

    if cfg.input != "deconvolved":
        raise CLIError("--fill-pairs needs --input deconvolved")
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError:
        start = stop = -1
    if not 0 <= start < stop:
        raise CLIError(f"--fill-pairs must be START:STOP with 0 <= START < STOP; got {text!r}")
    train, val = build_data(cfg)
    assert isinstance(train, DeconvolvedPairDataset) and isinstance(val, DeconvolvedPairDataset)
    if start == 0:  # one of the processes filling the cache computes the validation items
        val.fill(progress=progress)
    train.fill(start, stop, progress=progress)
    console.print(f"cached items {start}..{min(stop, len(train)) - 1} in {cfg.pairs_cache}")


def add_commands(train_app: typer.Typer) -> None:
    """Add the ``nafnet`` command to the ``train`` command group."""
    train_app.command("nafnet")(cli_errors(nafnet))


def main() -> None:
    """Standalone entry point: ``python -m fastdeblur.cli.train_nafnet``."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(cli_errors(nafnet))
    app()


if __name__ == "__main__":
    main()

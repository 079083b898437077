"""``fastdeblur train``: train the models of the library on synthetic data.

Every subcommand uses the shared engine (:mod:`fastdeblur.train`): progress bars, checkpoints
(``--checkpoints DIR``; run the same command again to resume after a kill), seeds, and
safetensors weights with a model card. Data-parallel training: start the same command with
``torchrun --nproc_per_node=K -m fastdeblur ...``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from fastdeblur.cli._common import CLIError, cli_errors, console


class ClassifierArch(StrEnum):
    cnn = "cnn"
    paper = "paper"


class InputKind(StrEnum):
    spectrum = "spectrum"
    raw = "raw"


class FeatureKind(StrEnum):
    profile = "profile"
    hidden = "hidden"


def _images_option() -> Path:
    return typer.Option(
        None,
        "--images",
        help="Folder of sharp images (the photos inside skimage.data are always added).",
    )


def register(app: typer.Typer) -> None:
    """Add the ``train`` command group to the CLI."""
    train_app = typer.Typer(
        help="Train models on synthetic data (checkpoints, resume, safetensors + model card).",
        no_args_is_help=True,
    )
    app.add_typer(train_app, name="train")

    @train_app.callback()
    def _train_group() -> None:
        """Train models on synthetic data (checkpoints, resume, safetensors + model card)."""
    from fastdeblur.cli.train_nafnet import add_commands

    add_commands(train_app)

    @train_app.command("classifier")
    @cli_errors
    def train_classifier_command(
        images: Path = _images_option(),
        output: Path = typer.Option(
            Path("fastdeblur/weights"), "--output", "-o", help="Folder for the weights and card."
        ),
        arch: ClassifierArch = typer.Option(
            ClassifierArch.cnn,
            "--arch",
            help="cnn (shipped: pixels + spectrum) or paper (1024-500-30-10-3, RBM pre-trained).",
        ),
        input_kind: InputKind = typer.Option(
            InputKind.spectrum,
            "--input",
            help="Input of the paper network: spectrum (default) or raw (the paper's).",
        ),
        pretraining: bool | None = typer.Option(
            None,
            "--pretrain/--no-pretrain",
            help="Greedy RBM pre-training of the paper network (default on with --arch paper).",
        ),
        pretrain_epochs: int | None = typer.Option(
            None, "--pretrain-epochs", help="Epochs per RBM of the paper network (default 1)."
        ),
        epochs: int = typer.Option(
            None, "--epochs", help="Fine-tuning epochs (default 20 for cnn, 8 for paper)."
        ),
        width: int = typer.Option(
            None, "--width", help="Channels of the CNN's first convolution (default 16, shipped)."
        ),
        batch_size: int = typer.Option(256, "--batch-size", help="Mini-batch size."),
        lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate of the fine-tuning."),
        n_train: int = typer.Option(
            None,
            "--patches",
            help="Training patches, 1/3 per type (default 300,000 for cnn, the paper's 36,000).",
        ),
        n_val: int = typer.Option(6_000, "--val-patches", help="Validation patches."),
        dead_leaves: int = typer.Option(
            None,
            "--dead-leaves",
            help="Extra training patches from synthetic dead-leaves images "
            "(default a third of --patches for cnn, 0 for paper).",
        ),
        seed: int = typer.Option(0, "--seed"),
        cache: Path = typer.Option(None, "--cache", help="Folder caching the patch sets."),
        checkpoints: Path = typer.Option(
            None, "--checkpoints", help="Checkpoint folder (resumes from it when it exists)."
        ),
    ) -> None:
        """Train the blur-type patch classifier."""
        from fastdeblur.estimate.training import train_classifier

        if batch_size < 1 or lr <= 0:
            raise CLIError("--batch-size must be >= 1 and --lr > 0")
        if epochs is not None and epochs < 1:
            raise CLIError("--epochs must be >= 1")
        if (n_train is not None and n_train < 3) or n_val < 3:
            raise CLIError("--patches and --val-patches must be >= 3")
        if dead_leaves is not None and dead_leaves < 0:
            raise CLIError("--dead-leaves must be >= 0")
        if arch is ClassifierArch.cnn and input_kind is not InputKind.spectrum:
            raise CLIError("--input chooses the input of the paper network: add --arch paper")
        if arch is ClassifierArch.cnn and (pretraining is not None or pretrain_epochs is not None):
            raise CLIError("--pretrain options apply to the paper network: add --arch paper")
        if arch is ClassifierArch.paper and width is not None:
            raise CLIError("--width sets the CNN; the paper network's layers are fixed")
        if width is not None and width < 1:
            raise CLIError("--width must be >= 1")
        if pretrain_epochs is not None and pretrain_epochs < 1:
            raise CLIError("--pretrain-epochs must be >= 1")
        if images is not None and not images.is_dir():
            raise CLIError(f"--images: {images} is not a folder")
        metrics = train_classifier(
            images,
            output,
            n_train=n_train,
            n_val=n_val,
            dead_leaves=dead_leaves,
            arch=arch.value,
            input_kind=input_kind.value,
            pretraining=pretraining is not False,
            pretrain_epochs=1 if pretrain_epochs is None else pretrain_epochs,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            cache_dir=cache,
            checkpoint_dir=checkpoints,
            width=width,
        )
        console.print(
            f"validation patch accuracy {metrics['val_patch_accuracy']:.4f}; "
            f"wrote {metrics['weights_file']}"
        )

    @train_app.command("spectrum")
    @cli_errors
    def train_spectrum_command(
        images: Path = _images_option(),
        output: Path = typer.Option(
            Path("fastdeblur/weights"), "--output", "-o", help="Folder for the weights and card."
        ),
        n_train: int = typer.Option(
            30_000, "--crops", help="Training crops, 1/3 per type (shipped: 30,000)."
        ),
        n_val: int = typer.Option(3_000, "--val-crops", help="Validation crops."),
        epochs: int = typer.Option(20, "--epochs", help="Training epochs (shipped: 20)."),
        width: int = typer.Option(24, "--width", help="Channels of the first convolution."),
        batch_size: int = typer.Option(128, "--batch-size", help="Mini-batch size."),
        lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate (one-cycle)."),
        seed: int = typer.Option(0, "--seed"),
        cache: Path = typer.Option(None, "--cache", help="Folder caching the spectra."),
        checkpoints: Path = typer.Option(
            None, "--checkpoints", help="Checkpoint folder (resumes from it when it exists)."
        ),
        jpeg_quality: str = typer.Option(
            None, "--jpeg-quality", metavar="LO-HI",
            help="JPEG-compress every crop at a quality in LO..HI (shipped: 60-95); writes the "
            "classifier for compressed images, blur_spectrum_classifier_jpeg.safetensors.",
        ),
        n_shake: int = typer.Option(
            0, "--shake-crops",
            help="Training crops of random camera shake, a fourth class (shipped: 8,000); "
            "validation crops in the same proportion.",
        ),
    ) -> None:
        """Train the image-level blur-type classifier on Welch power spectra."""
        from fastdeblur.estimate.training import train_spectrum_classifier
        from fastdeblur.io import jpeg_quality_range

        try:
            jpeg = None if jpeg_quality is None else jpeg_quality_range(jpeg_quality)
        except ValueError as exc:
            raise CLIError(f"--jpeg-quality: {exc}") from None

        if n_train < 3 or n_val < 3:
            raise CLIError("--crops and --val-crops must be >= 3")
        if n_shake < 0:
            raise CLIError("--shake-crops must be >= 0")
        if epochs < 1 or width < 1 or batch_size < 1 or lr <= 0:
            raise CLIError("--epochs, --width and --batch-size must be >= 1 and --lr > 0")
        if images is not None and not images.is_dir():
            raise CLIError(f"--images: {images} is not a folder")
        metrics = train_spectrum_classifier(
            images,
            output,
            n_train=n_train,
            n_val=n_val,
            epochs=epochs,
            width=width,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            cache_dir=cache,
            checkpoint_dir=checkpoints,
            jpeg_quality=jpeg,
            n_shake=n_shake,
        )
        console.print(
            f"validation accuracy {metrics['val_accuracy']:.4f}; wrote {metrics['weights_file']}"
        )

    @train_app.command("grnn")
    @cli_errors
    def train_grnn_command(
        images: Path = _images_option(),
        weights: Path = typer.Option(
            Path("fastdeblur/weights"),
            "--weights",
            "-o",
            help="Folder holding the classifier (blur_classifier.safetensors, or "
            "blur_classifier_paper.safetensors for --feature hidden); the GRNNs are written there.",
        ),
        feature: FeatureKind = typer.Option(
            FeatureKind.profile, "--feature", help="GRNN input: spectral profile or hidden layer."
        ),
        n_train: int = typer.Option(
            None,
            "--patches",
            help="Training patches, 1/3 per type (default 300,000 for cnn, the paper's 36,000).",
        ),
        n_val: int = typer.Option(6_000, "--val-patches", help="Validation patches."),
        n_windows: int = typer.Option(
            36_000, "--windows", help="128×128 windows for the image-level GRNNs (0: none)."
        ),
        n_val_windows: int = typer.Option(3_000, "--val-windows", help="Validation windows."),
        n_centers: int = typer.Option(
            2048, "--centers", help="k-means centres per GRNN (0: keep every training point)."
        ),
        seed: int = typer.Option(0, "--seed"),
        cache: Path = typer.Option(None, "--cache", help="Folder caching the patch sets."),
    ) -> None:
        """Fit one GRNN per blur type (Gaussian σ; motion length and angle; defocus radius)."""
        from fastdeblur.estimate.training import train_grnn

        if images is not None and not images.is_dir():
            raise CLIError(f"--images: {images} is not a folder")
        metrics = train_grnn(
            images,
            weights,
            feature=feature.value,
            n_train=n_train,
            n_val=n_val,
            seed=seed,
            cache_dir=cache,
        )
        for k, v in metrics.items():
            console.print(f"{k}: {v:.3f}", highlight=False)

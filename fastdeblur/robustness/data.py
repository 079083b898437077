"""A small ImageFolder reader (no torchvision): ``root/<class>/<image>``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastdeblur.synth import IMAGE_SUFFIXES

__all__ = ["ImageFolder"]


class ImageFolder(torch.utils.data.Dataset):
    """Images in one sub-folder per class; item ``i`` is ``(image (C, H, W), label)``.

    Classes are the sub-folder names in sorted order (label = index); files are taken in
    sorted order inside each, with the suffixes of :data:`fastdeblur.synth.IMAGE_SUFFIXES`.
    Images are decoded on access as float32 in [0, 1].

    Args:
        root: The folder holding the class folders.
        gray: Convert to one channel (else RGB).
        size: Resize every image to ``(H, W)`` (bilinear) so they batch together; ``None``
            keeps the sizes (then all images must have the same size to be batched).

    Raises:
        ValueError: ``root`` is not a folder, has no class folder, or no image.
    """

    def __init__(self, root: str | Path, *, gray: bool = False,
                 size: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"data: {self.root} is not a folder")
        self.classes = sorted(p.name for p in self.root.iterdir()
                              if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise ValueError(f"data: {self.root} has no class folders (expected "
                             f"{self.root}/<class>/<image>)")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for name in self.classes:
            for path in sorted((self.root / name).iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    self.samples.append((path, self.class_to_idx[name]))
        if not self.samples:
            raise ValueError(f"data: no images ({', '.join(IMAGE_SUFFIXES)}) in the class "
                             f"folders of {self.root}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (H, W) with positive sides; got {size!r}")
        self.gray = gray
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.gray else "RGB")
                if self.size is not None and im.size != (self.size[1], self.size[0]):
                    im = im.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(im, dtype=np.float32) / 255.0
        except OSError as exc:
            raise ValueError(f"{path}: cannot read image ({exc})") from None
        tensor = torch.from_numpy(array.copy())
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return tensor.contiguous(), label

"""Image folders: listing, decoding, resizing and normalizing, the same way for every format.

Images are decoded with Pillow, converted to RGB and resized with bilinear filtering to the
model's input size, so that calibration and verification see the same pixels in every format.
A folder may hold ``<label>/`` subfolders; an image's label is its folder's name when that is one
of the model's labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.core.errors import Code, ExportError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
UNLABELED = -1


@dataclass(frozen=True)
class ImageSet:
    """Decoded images at the model's input size: uint8 pixels [N, H, W, 3] and label indices."""

    paths: tuple[Path, ...]
    pixels: np.ndarray
    labels: np.ndarray  # index into the model's labels, UNLABELED where the folder says nothing

    def __len__(self) -> int:
        return len(self.paths)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_pixels(path: Path, height: int, width: int) -> np.ndarray:
    """One image as uint8 RGB [height, width, 3]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise ExportError(Code.INVALID_ARGUMENT, f"cannot decode image {str(path)!r}: {error}") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_image_set(
    folder: Path,
    labels: tuple[str, ...],
    height: int,
    width: int,
    *,
    limit: int | None = None,
    purpose: str,
) -> ImageSet:
    """Every image under `folder` (the first `limit` in name order), decoded and resized."""
    if not folder.is_dir():
        raise ExportError(
            Code.FAILED_PRECONDITION,
            f"no {purpose} images: folder {str(folder)!r} does not exist (give --images DIR or "
            f"set it in manifest.json)",
        )
    paths = list_images(folder)
    if limit is not None:
        paths = _spread(paths, limit)
    if not paths:
        raise ExportError(Code.FAILED_PRECONDITION, f"no {purpose} images in {str(folder)!r}")
    index = {label: i for i, label in enumerate(labels)}
    pixels = np.stack([load_pixels(p, height, width) for p in paths])
    label_ids = np.array([index.get(p.parent.name, UNLABELED) for p in paths], dtype=np.int64)
    return ImageSet(tuple(paths), pixels, label_ids)


def _spread(paths: list[Path], limit: int) -> list[Path]:
    """`limit` paths taken evenly across the sorted list, so every label folder is represented."""
    if len(paths) <= limit:
        return paths
    step = len(paths) / limit
    return [paths[int(i * step)] for i in range(limit)]


def normalize(pixels: np.ndarray, mean, std) -> np.ndarray:
    """uint8 RGB pixels -> the float32 values the model expects: (pixel - mean) / std."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return (pixels.astype(np.float32) - mean) / std

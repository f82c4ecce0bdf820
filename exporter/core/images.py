"""Image folders: listing, decoding, resizing and normalizing, the same way for every format.

Images are decoded with Pillow, converted to RGB and resized with bilinear filtering to the
model's input size, so that calibration and verification see the same pixels in every format.
A folder may hold ``<label>/`` subfolders; an image's label is its folder's name when that is one
of the model's labels.

Decoding is bounded: an image whose header claims more than ``EXPORTER_MAX_IMAGE_PIXELS`` pixels
is refused before its pixels are decoded (a PNG of a few hundred KB can claim 40000x40000), and a
large JPEG is decoded at a reduced scale (Pillow's draft mode) since it is resized down anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.core.errors import Code, ExportError
from exporter.core.limit_settings import whole_number_setting

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
UNLABELED = -1

MAX_PIXELS_SETTING = "EXPORTER_MAX_IMAGE_PIXELS"
# 64 megapixels: above a 48 MP phone camera's full-resolution photo (8064x6048 = 48.8 M), whose RGB
# decode is about 150 MB; a larger claim is a bomb or a scan, not a classifier's input.
DEFAULT_MAX_PIXELS = 64_000_000
# A JPEG larger than this on a side is decoded by Pillow's draft mode at a scale of 1/2, 1/4 or
# 1/8 that keeps at least DRAFT_SIDE pixels a side: every model input here is far smaller, and
# the bilinear resize that follows sees the same picture.
DRAFT_ABOVE = 2048
DRAFT_SIDE = 1024


def max_image_pixels() -> int:
    """The pixel limit from EXPORTER_MAX_IMAGE_PIXELS (a whole number of at least 1)."""
    return whole_number_setting(MAX_PIXELS_SETTING, DEFAULT_MAX_PIXELS, "pixels")


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


def load_pixels(path: Path, height: int, width: int, *, shown: str | None = None) -> np.ndarray:
    """One image as uint8 RGB [height, width, 3]. Errors name the image as `shown` (a path
    relative to the folder the user gave), never a path above it; the file's name by default."""
    from PIL import Image, UnidentifiedImageError

    name = shown or path.name
    limit = max_image_pixels()
    # Pillow's own bomb check (at open, from the same header) would speak first, without the image's
    # size or our setting: ours replaces it.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            claimed = image.width * image.height
            if claimed > limit:
                raise ExportError(
                    Code.INVALID_ARGUMENT,
                    f"image {name!r} is {image.width}x{image.height} ({claimed:,} pixels), over the limit of "
                    f"{limit:,} ({MAX_PIXELS_SETTING} raises it)",
                )
            if image.format == "JPEG" and max(image.size) > DRAFT_ABOVE:
                image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
            rgb = image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise ExportError(
            Code.INVALID_ARGUMENT, f"image {name!r}: {error} ({MAX_PIXELS_SETTING} raises the limit)"
        ) from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        message = str(error).replace(str(path), name)
        raise ExportError(Code.INVALID_ARGUMENT, f"cannot decode image {name!r}: {message}") from None
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
    # Named from the folder's own name down (calibration/red/x.png): no server path in a message.
    pixels = np.stack([load_pixels(p, height, width, shown=str(p.relative_to(folder.parent))) for p in paths])
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

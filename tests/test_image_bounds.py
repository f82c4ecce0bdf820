"""Image decoding is bounded: a header that claims too many pixels is refused before the pixels are
decoded, with INVALID_ARGUMENT naming the image from the folder the user gave, never a path above
it; a large JPEG is decoded at a reduced scale; a truncated file's message carries no server path.

The bombs are real files: a PNG that claims 40000x40000 in 281 KB is what an attacker sends.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exporter.core.errors import Code, ExportError
from exporter.core.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_SETTING, load_image_set, load_pixels


def _png_bomb(path: Path, side: int) -> None:
    """A valid greyscale PNG of side x side zero pixels, written row by row without holding them:
    the compressed stream of zero rows is tiny, the decoded image is side*side bytes (x3 as RGB)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (side + 1)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images" / "heldout"
    (folder / "red").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "red" / "fine.png")
    return folder


def test_png_bomb_refused_by_its_header_naming_the_image_from_the_folder(tmp_path):
    folder = _folder(tmp_path)
    _png_bomb(folder / "red" / "bomb.png", 40000)
    assert (folder / "red" / "bomb.png").stat().st_size < 2_000_000
    with pytest.raises(ExportError) as caught:
        load_image_set(folder, ("red",), 32, 32, purpose="held-out")
    error = caught.value
    assert error.code == Code.INVALID_ARGUMENT
    assert "'heldout/red/bomb.png'" in error.message
    assert "40000x40000" in error.message and MAX_PIXELS_SETTING in error.message
    assert str(tmp_path) not in error.message


def test_image_under_pillows_own_limit_but_over_ours_is_refused_and_the_setting_raises_it(tmp_path, monkeypatch):
    """13000x13000 (169 M pixels) passes Pillow's default bomb check (it warns only) and costs
    about 500 MB decoded as RGB; ours refuses it, and a user who means it can raise the limit."""
    folder = _folder(tmp_path)
    _png_bomb(folder / "red" / "scan.png", 13000)
    with pytest.raises(ExportError) as caught:
        load_image_set(folder, ("red",), 32, 32, purpose="held-out")
    assert caught.value.code == Code.INVALID_ARGUMENT and "13000x13000" in caught.value.message

    monkeypatch.setenv(MAX_PIXELS_SETTING, "1000")
    with pytest.raises(ExportError) as small:
        load_pixels(folder / "red" / "fine.png", 32, 32)
    assert "1,200 pixels" in small.value.message and "1,000" in small.value.message

    monkeypatch.setenv(MAX_PIXELS_SETTING, "lots")
    with pytest.raises(ExportError) as bad:
        load_pixels(folder / "red" / "fine.png", 32, 32)
    assert bad.value.code == Code.INVALID_ARGUMENT and "EXPORTER_MAX_IMAGE_PIXELS='lots'" in bad.value.message


def test_truncated_jpeg_names_the_image_without_its_path(tmp_path):
    folder = _folder(tmp_path)
    whole = folder / "red" / "whole.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(whole, quality=90)
    (folder / "red" / "cut.jpg").write_bytes(whole.read_bytes()[:300])
    with pytest.raises(ExportError) as caught:
        load_image_set(folder, ("red",), 32, 32, purpose="held-out")
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert "'heldout/red/cut.jpg'" in caught.value.message
    assert str(tmp_path) not in caught.value.message


def test_large_jpeg_decodes_in_draft_mode_with_a_fraction_of_the_memory(tmp_path):
    """An 8000x6000 JPEG (a phone photo) decodes in full to 144 MB of RGB; in draft mode to an
    eighth a side. Measured in a fresh process by its peak resident memory (VmHWM, the peak of this
    process image alone: getrusage's ru_maxrss also counts the forking parent's size), against a full
    decode."""
    photo = tmp_path / "photo.jpg"
    gradient = np.linspace(0, 255, 8000, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(gradient, (6000, 8000))).convert("RGB").save(photo, quality=80)
    assert 6000 * 8000 < DEFAULT_MAX_PIXELS

    def peak_mb(code: str) -> float:
        script = textwrap.dedent(f"""
            import re, sys
            from pathlib import Path
            from PIL import Image
            import numpy as np
            from exporter.core.images import load_pixels
            def peak_kib():
                return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])
            base = peak_kib()
            {code}
            print((peak_kib() - base) / 1024)
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    drafted = peak_mb(f"pixels = load_pixels(Path({str(photo)!r}), 224, 224); assert pixels.shape == (224, 224, 3)")
    full = peak_mb(f"pixels = np.asarray(Image.open({str(photo)!r}).convert('RGB'))")
    assert full > 100, full
    assert drafted < full / 3, (drafted, full)


def test_pixels_of_a_drafted_jpeg_match_a_full_decode_resized(tmp_path):
    """Draft mode changes the cost, not the picture: the 224x224 input differs from a full decode
    resized the same way by a few levels at most on a smooth image."""
    photo = tmp_path / "photo.jpg"
    y, x = np.mgrid[0:3000, 0:4000]
    smooth = np.stack([(x * 255 // 4000), (y * 255 // 3000), ((x + y) * 255 // 7000)], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(photo, quality=95)
    drafted = load_pixels(photo, 224, 224).astype(int)
    with Image.open(photo) as image:
        full = np.asarray(image.convert("RGB").resize((224, 224), Image.BILINEAR)).astype(int)
    assert np.abs(drafted - full).mean() < 3, np.abs(drafted - full).mean()

"""Finding and reading photos safely: every failure becomes a one-line reason (an ImageError when
reading)."""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from faceswap_ela.files import irregular

# Pillow raises DecompressionBombError above twice this many pixels and warns above it;
# both are refused here, so a 20,000 x 20,000 image never reaches the decoder.
MAX_PIXELS = 89_478_485
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# The luminance quantization table of ITU-T T.81 Annex K (K.1), row by row: IJG quality 50
IJG_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
).ravel()


class ImageError(ValueError):
    """A photo that can't be used, with the reason as its message."""


def _open(source: str | os.PathLike | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise ImageError("empty file (0 bytes)")
        fp: object = io.BytesIO(source)
    else:
        path = Path(source)
        try:
            if path.stat().st_size == 0:
                raise ImageError("empty file (0 bytes)")
        except FileNotFoundError:
            raise ImageError("file not found") from None
        fp = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(fp)
            if image.width * image.height > max_pixels:
                raise ImageError(
                    f"too large: {image.width}x{image.height} pixels exceeds the {max_pixels:,}-pixel limit"
                )
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"too large (decompression-bomb guard): {exc}") from None
    except Image.UnidentifiedImageError:
        # Pillow's message names the file (or a BytesIO address): keep reasons free of paths so
        # that tables holding them are the same from run to run
        raise ImageError("unreadable: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.filename and exc.strerror else exc
        raise ImageError(f"unreadable or truncated image: {reason}") from None
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (L, P, CMYK, RGBA, I;16, ...) as RGB; transparency is laid over white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / peak)).astype(np.uint8), "L")
    return image.convert("RGB")


def load_rgb(source: str | os.PathLike | bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A photo (a file or its encoded bytes) as a contiguous H x W x 3 uint8 RGB array, or
    ImageError with the reason; one of more than ``max_pixels`` pixels (at most MAX_PIXELS, above
    which Pillow's own guard refuses it) is refused from its header, before it is decoded."""
    image = _open(source, max_pixels)
    try:
        rgb = to_rgb(image)
    except (OSError, ValueError) as exc:
        raise ImageError(f"can't convert {image.mode} image to RGB: {exc}") from None
    array = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"bad image shape {array.shape}")
    return array


def probe(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) after a full decode, or ImageError: a truncated file fails here too."""
    array = load_rgb(path)
    return array.shape[1], array.shape[0]


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the file's header alone (no decode), or None when it can't be read."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def jpeg_quality(path: str | os.PathLike) -> int | None:
    """The IJG quality (1-100) whose luminance table, scaled as libjpeg's jpeg_set_quality scales
    it, is nearest (least absolute difference) to the file's; None for a file that isn't a JPEG
    or has no luminance table. Files from other encoders get the nearest IJG quality."""
    try:
        with Image.open(path) as image:
            tables = getattr(image, "quantization", None) if image.format in ("JPEG", "MPO") else None
    except Image.UnidentifiedImageError:
        return None
    if not tables or 0 not in tables:
        return None
    table = np.asarray(tables[0], dtype=np.int64)  # Pillow gives the 64 values row by row
    qualities = np.arange(1, 101)
    scale = np.where(qualities < 50, 5000 // qualities, 200 - 2 * qualities)
    ceiling = 255 if table.max() <= 255 else 32767  # baseline tables hold 8-bit values
    scaled = np.clip((IJG_LUMINANCE * scale[:, None] + 50) // 100, 1, ceiling)
    return int(qualities[np.abs(scaled - table).sum(axis=1).argmin()])


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Lossless, deterministic PNG (no timestamps)."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    image.save(path, format="PNG", compress_level=1)


def os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _stat(path: Path) -> tuple[os.stat_result | None, str | None]:
    """The stat of ``path`` through its links, or None and why it can't be had."""
    try:
        return path.stat(), None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "symbolic link loop"
        if exc.errno == errno.ENOENT and path.is_symlink():
            return None, f"broken symbolic link (to {os.readlink(path)!r})"
        if exc.errno == errno.ENOENT:
            return None, "file not found"
        return None, os_reason(exc)


def _walk(
    folder: Path,
    found: list[tuple[Path, str | None]],
    ancestors: frozenset[tuple[int, int]],
    skip_hidden: bool,
) -> None:
    """Depth first in name order: photo files, and one error row per entry that should have been
    one or a folder and can't be read (a broken or looping link named like a photo or without a
    suffix, a FIFO or device named like a photo, a folder that can't be listed, a link back to a
    folder above). Other files are left out, and so are names starting with "." if ``skip_hidden``."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda entry: entry.name)
    except OSError as exc:
        found.append((folder, f"can't read this folder: {os_reason(exc)}"))
        return
    for entry in entries:
        if skip_hidden and entry.name.startswith("."):
            continue
        path = Path(entry.path)
        is_photo = path.suffix.lower() in IMAGE_SUFFIXES
        info, problem = _stat(path)
        if info is None:
            if is_photo or not path.suffix:  # a link without a suffix may have been a folder
                found.append((path, problem))
            continue
        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if key in ancestors:
                found.append((path, "symbolic link loop (links back to a folder above it)"))
            else:
                _walk(path, found, ancestors | {key}, skip_hidden)
        elif is_photo:
            found.append((path, irregular(info.st_mode)))


def walk_photos(folder: Path, *, skip_hidden: bool = False) -> list[tuple[Path, str | None]]:
    """The photos under ``folder`` as (path, error), as find_photos walks it; [] when it holds none."""
    info, problem = _stat(folder)
    if info is None:
        return [(folder, problem)]
    found: list[tuple[Path, str | None]] = []
    _walk(folder, found, frozenset({(info.st_dev, info.st_ino)}), skip_hidden)
    return found


def find_photos(
    paths: Iterable[str | os.PathLike], *, skip_hidden: bool = False
) -> list[tuple[Path, str | None]]:
    """The photos named by ``paths`` as (path, error): a file is taken as it is (its content decides
    whether it is an image), a folder is walked recursively for .jpg/.jpeg/.png files (any case,
    in name order, links followed; see _walk). A missing path, a broken or looping link, a FIFO or
    device, a folder that can't be read or holds no photos: each comes back with its error, never
    skipped."""
    found: list[tuple[Path, str | None]] = []
    for item in paths:
        path = Path(item)
        info, problem = _stat(path)
        if info is None:
            found.append((path, problem))
        elif stat.S_ISDIR(info.st_mode):
            inside = walk_photos(path, skip_hidden=skip_hidden)
            if not inside:
                inside.append((path, f"no {'/'.join(IMAGE_SUFFIXES)} files in this folder"))
            found.extend(inside)
        else:
            found.append((path, irregular(info.st_mode)))
    return found

"""Reading photos safely: every failure becomes an ImageError with a one-line reason."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Pillow raises DecompressionBombError above twice this many pixels and warns above it;
# both are refused here, so a 20,000 x 20,000 image never reaches the decoder.
MAX_PIXELS = 89_478_485
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageError(ValueError):
    """A photo that can't be used, with the reason as its message."""


def _open(source: str | os.PathLike | bytes) -> Image.Image:
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
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(
                    f"too large: {image.width}x{image.height} pixels exceeds the {MAX_PIXELS:,}-pixel limit"
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


def load_rgb(source: str | os.PathLike | bytes) -> np.ndarray:
    """A photo as a contiguous H x W x 3 uint8 RGB array, or ImageError with the reason."""
    image = _open(source)
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


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Lossless, deterministic PNG (no timestamps)."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    image.save(path, format="PNG", compress_level=1)

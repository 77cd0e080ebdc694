"""The region of interest around a face (eqs. 4-6) and the final resize.

The ROI starts from the smallest rectangle holding landmarks 17-67 (everything but the cheek
contour), (x1, y1)-(x2, y2) with w = x2 - x1 and h = y2 - y1, and grows it by
dx ~ U[0, w * dx_max] and dy ~ U[0, h * dy_max] on every side (the paper's w/8 and h/5), clipped
to the image: x1' = max(0, x1 - dx), y1' = max(0, y1 - dy), x2' = min(W - 1, x2 + dx),
y2' = min(H - 1, y2 + dy). Coordinates are rounded outwards to whole pixels and are inclusive.

Without a generator (test time, e.g. for a single photo to classify) the growth is its expected
value, dx = w * dx_max / 2 and dy = h * dy_max / 2, so the box is the centre of the training
distribution and the same on every call.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from faceswap_ela.alignment import INNER

GRID = 16  # the JPEG grid of 4:2:0 (two 8 x 8 luma blocks a side); a piece starts on it
PIECE_MARGIN = GRID  # and reaches one grid cell beyond the ROI, so the decoder's chroma upsampling
# sees the same neighbours as in the whole photo

MIN_CROP_SIDE = 8  # pixels; a smaller ROI has nothing to show the network


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) of the smallest rectangle holding landmarks 17-67."""
    inner = np.asarray(landmarks, dtype=np.float64)[INNER]
    x1, y1 = inner.min(axis=0)
    x2, y2 = inner.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def roi_box(
    landmarks: np.ndarray,
    shape: tuple[int, ...],
    rng: np.random.Generator | None = None,
    *,
    dx_max: float = 0.125,
    dy_max: float = 0.2,
) -> tuple[int, int, int, int]:
    """The ROI (x1', y1', x2', y2'), inclusive pixel coordinates inside an image of ``shape``
    (H, W, ...). A random growth is drawn from ``rng`` (two uniforms, x first); with rng=None
    the expected growth is used. The box may be empty (x1' > x2') when the landmarks lie
    outside the image; see ``crop``."""
    height, width = shape[:2]
    x1, y1, x2, y2 = landmark_box(landmarks)
    if rng is None:
        ux, uy = 0.5, 0.5
    else:
        ux, uy = rng.random(2)
    dx = ux * (x2 - x1) * dx_max
    dy = uy * (y2 - y1) * dy_max
    return (
        max(0, math.floor(x1 - dx)),
        max(0, math.floor(y1 - dy)),
        min(width - 1, math.ceil(x2 + dx)),
        min(height - 1, math.ceil(y2 + dy)),
    )


def crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The pixels of an inclusive box, or None when it is empty or under MIN_CROP_SIDE."""
    x1, y1, x2, y2 = box
    if x2 - x1 + 1 < MIN_CROP_SIDE or y2 - y1 + 1 < MIN_CROP_SIDE:
        return None
    return np.ascontiguousarray(rgb[y1 : y2 + 1, x1 : x2 + 1])


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size: area averaging when shrinking, bilinear when enlarging."""
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(rgb)
    interpolation = cv2.INTER_AREA if height >= size and width >= size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """A copy no larger than max_side on its long side (area averaging), for previews."""
    height, width = rgb.shape[:2]
    factor = max_side / max(height, width)
    if factor >= 1:
        return np.ascontiguousarray(rgb)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def piece_box(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The ROI grown by PIECE_MARGIN and out to the JPEG grid, inside the photo (inclusive)."""
    height, width = shape[:2]
    x1, y1, x2, y2 = box
    return (
        max(0, (x1 - PIECE_MARGIN) // GRID * GRID),
        max(0, (y1 - PIECE_MARGIN) // GRID * GRID),
        min(width - 1, (x2 + PIECE_MARGIN) // GRID * GRID + GRID - 1),
        min(height - 1, (y2 + PIECE_MARGIN) // GRID * GRID + GRID - 1),
    )

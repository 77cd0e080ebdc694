"""Simulated DeepFake fakes (§3.1, Fig. 3): the forgers, and the matched blur of a real photo.

A forger takes a photo, its 68 landmarks, the unit-square template and the drawn aligned size and
mask, and returns the fake and the boolean mask of the pixels it replaced (before feathering):

    forger(rgb, landmarks, template, *, size, mask, blur_kernel, feather) -> (fake, region)

``warp`` follows Li & Lyu's face-warping code: the face is aligned to the template by a similarity
transform fitted to landmarks 17-67, warped into a square of ``size`` pixels, blurred with a
Gaussian, warped back with the inverse transform over the original
(WARP_INVERSE_MAP | BORDER_TRANSPARENT) and kept either as the whole square or only inside the
convex hull of the brows and lower lip, with an optional feathered edge. The renderings of a photo
(which become fakes, ROI, augmentation, extra test sets) are in faceswap_ela.materialize.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from faceswap_ela.alignment import BROWS_AND_LOWER_LIP, INNER, umeyama

MASKS = ("square", "hull")
RESAMPLE_SIGMA = 0.5  # about the blur of one bilinear resampling, in pixels of the finer grid


def aligned_matrix(landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity from image pixels to a size x size aligned face (template scaled by size)."""
    return umeyama(np.asarray(landmarks, dtype=np.float64)[INNER], template) * float(size)


def gaussian_sigma(ksize: int) -> float:
    """The sigma OpenCV's GaussianBlur uses for a ksize x ksize kernel given sigma 0."""
    return 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8


def matched_sigma(landmarks: np.ndarray, template: np.ndarray, size: int, blur_kernel: int) -> float:
    """The softness a fake of this rendering carries, as a Gaussian sigma in photo pixels: the
    fake's blur (OpenCV's sigma for ``blur_kernel``) and one bilinear resampling, both in the
    aligned face of ``size`` pixels, carried into the photo by the alignment's scale."""
    matrix = aligned_matrix(landmarks, template, size)
    photo_per_aligned = 1.0 / math.hypot(matrix[0, 0], matrix[0, 1])
    return math.hypot(gaussian_sigma(blur_kernel), RESAMPLE_SIGMA) * photo_per_aligned


def _feathered(mask: np.ndarray, feather: int) -> np.ndarray:
    """Blend weights: the mask blurred over ``feather`` pixels, zero outside its dilation."""
    ksize = 2 * feather + 1
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (ksize, ksize), 0)
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ksize, ksize)))
    alpha[grown == 0] = 0.0
    return alpha


def _composite(rgb: np.ndarray, replacement: np.ndarray, region: np.ndarray, feather: int) -> np.ndarray:
    """``replacement`` inside ``region`` (its edge feathered over ``feather`` pixels), ``rgb`` elsewhere."""
    if feather > 0:
        alpha = _feathered(region, feather)[..., None]
        base = rgb.astype(np.float32)
        out = np.rint(base + alpha * (replacement.astype(np.float32) - base)).astype(np.uint8)
    else:
        out = np.where(region[..., None], replacement, rgb)
    return np.ascontiguousarray(out)


def _masked(region: np.ndarray, landmarks: np.ndarray, mask: str) -> np.ndarray:
    """``region`` limited to the brows and lower-lip hull for mask 'hull', as it is for 'square'."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {mask!r}")
    if mask == "hull":
        points = np.asarray(landmarks, dtype=np.float64)[list(BROWS_AND_LOWER_LIP)]
        hull = cv2.convexHull(np.round(points).astype(np.int32))
        inside = np.zeros(region.shape, np.uint8)
        cv2.fillConvexPoly(inside, hull, 1)
        region = region & (inside > 0)
    return region


def _covered(matrix: np.ndarray, size: int, shape: tuple[int, ...]) -> np.ndarray:
    """The photo pixels the inverse warp of a size x size aligned face writes (edge pixels are a
    blend, so they count too)."""
    height, width = shape[:2]
    covered = cv2.warpAffine(
        np.full((size, size), 255, np.uint8),
        matrix,
        (width, height),
        dst=np.zeros((height, width), np.uint8),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_TRANSPARENT,
    )
    return covered > 0


def fake_region(
    shape: tuple[int, ...], landmarks: np.ndarray, template: np.ndarray, *, size: int, mask: str = "square"
) -> np.ndarray:
    """The boolean mask of the pixels a fake of this rendering replaces (before feathering)."""
    return _masked(_covered(aligned_matrix(landmarks, template, size), size, shape), landmarks, mask)


def warp(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    template: np.ndarray,
    *,
    size: int,
    mask: str = "square",
    blur_kernel: int = 5,
    feather: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A fake of ``rgb`` and the boolean mask of the replaced pixels (before feathering).

    Pixels outside the mask dilated by ``feather`` are the original's, bit for bit."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {mask!r}")
    height, width = rgb.shape[:2]
    matrix = aligned_matrix(landmarks, template, size)
    face = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    face = cv2.GaussianBlur(face, (blur_kernel, blur_kernel), 0)
    back_flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(
        face, matrix, (width, height), dst=rgb.copy(), flags=back_flags, borderMode=cv2.BORDER_TRANSPARENT
    )
    region = _masked(_covered(matrix, size, rgb.shape), landmarks, mask)
    return _composite(rgb, warped, region, feather), region


def blur_region(rgb: np.ndarray, region: np.ndarray, sigma: float, feather: int = 0) -> np.ndarray:
    """``rgb`` with a Gaussian blur of ``sigma`` pixels inside ``region`` (its edge feathered as a
    fake's): a real photo made as soft as a fake, where a fake is soft, but without the warp. Only
    the region's box grown by the kernel's reach is filtered: the same pixels as filtering it all."""
    if sigma <= 0 or not region.any():
        return rgb.copy()
    ys, xs = np.nonzero(region)
    reach = math.ceil(4 * sigma) + feather + 1  # OpenCV's uint8 kernel reaches 3 sigma
    height, width = rgb.shape[:2]
    y1, y2 = max(0, int(ys.min()) - reach), min(height, int(ys.max()) + 1 + reach)
    x1, x2 = max(0, int(xs.min()) - reach), min(width, int(xs.max()) + 1 + reach)
    soft = rgb.copy()
    soft[y1:y2, x1:x2] = cv2.GaussianBlur(rgb[y1:y2, x1:x2], (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return _composite(rgb, soft, region, feather)

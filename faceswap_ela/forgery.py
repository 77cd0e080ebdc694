"""Simulated DeepFake fakes (§3.1, Fig. 3): the forgers, and the matched blur of a real photo.

Each forger takes a photo and its 68 landmarks and returns the fake and the boolean mask of the
pixels it changed; outside that mask the fake is the original, bit for bit.

``warp`` follows Li & Lyu's face-warping code: the face is aligned to the template by a similarity
transform fitted to landmarks 17-67, warped into a square of ``size`` pixels, blurred with a
Gaussian, warped back with the inverse transform over the original
(WARP_INVERSE_MAP | BORDER_TRANSPARENT) and kept either as the whole square or only inside the
convex hull of the brows and lower lip, with an optional feathered edge. Its mask is the region
before feathering:

    warp(rgb, landmarks, template, *, size, mask, blur_kernel, feather) -> (fake, region)

``blend`` makes a self-blended image (Shiohara & Yamasaki, CVPR 2022): a copy of the photo with
its colours changed, downscaled-and-upscaled or sharpened, and slightly shifted and scaled, is
blended over the photo through the landmark hull, elastically deformed, eroded or dilated and
blurred, at a random ratio (1 in half the cases by default). Its draws all come from ``rng``, in a
fixed order; its region is every pixel of non-zero blend weight:

    blend(rgb, landmarks, *, rng, params) -> (fake, region)

The identity swap, another photo's face pasted, is in faceswap_ela.swaps (the masks and blending
helpers here serve it too); the renderings of a photo (which become fakes, ROI, augmentation,
extra test sets) in faceswap_ela.materialize.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from faceswap_ela.alignment import BROWS_AND_LOWER_LIP, INNER, face_size, umeyama
from faceswap_ela.fake_params import BlendParams

MASKS = ("square", "hull")
RESAMPLE_SIGMA = 0.5  # about the blur of one bilinear resampling, in pixels of the finer grid
ELASTIC_GRID = 4  # control points per side of the blend mask's random displacement field


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


def feathered(mask: np.ndarray, feather: int) -> np.ndarray:
    """Blend weights: the mask blurred over ``feather`` pixels, zero outside its dilation."""
    ksize = 2 * feather + 1
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (ksize, ksize), 0)
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ksize, ksize)))
    alpha[grown == 0] = 0.0
    return alpha


def mix(rgb: np.ndarray, replacement: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """rgb + alpha * (replacement - rgb), rounded: exactly ``rgb`` where alpha is 0."""
    base = rgb.astype(np.float32)
    out = np.rint(base + alpha[..., None] * (replacement.astype(np.float32) - base))
    return np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))


def _composite(rgb: np.ndarray, replacement: np.ndarray, region: np.ndarray, feather: int) -> np.ndarray:
    """``replacement`` inside ``region`` (its edge feathered over ``feather`` pixels), ``rgb`` elsewhere."""
    if feather > 0:
        return mix(rgb, replacement, feathered(region, feather))
    return np.ascontiguousarray(np.where(region[..., None], replacement, rgb))


def hull_mask(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The boolean mask of the convex hull of (N, 2) points in an image of ``shape``."""
    inside = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(inside, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return inside > 0


def _masked(region: np.ndarray, landmarks: np.ndarray, mask: str) -> np.ndarray:
    """``region`` limited to the brows and lower-lip hull for mask 'hull', as it is for 'square'."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {mask!r}")
    if mask == "hull":
        points = np.asarray(landmarks, dtype=np.float64)[list(BROWS_AND_LOWER_LIP)]
        region = region & hull_mask(points, region.shape)
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


def hull_points(landmarks: np.ndarray, hull: str) -> np.ndarray:
    """Landmarks 0-67 for hull 'all', 17-67 for 'inner'."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    return landmarks if hull == "all" else landmarks[INNER]


def bounding_box(points: np.ndarray, reach: float, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The rows and columns of the points' bounding box grown by ``reach`` pixels, inside the image."""
    height, width = shape[:2]
    low = np.floor(points.min(axis=0) - reach).astype(int)
    high = np.ceil(points.max(axis=0) + reach).astype(int) + 1
    return (
        slice(max(0, low[1]), min(height, max(0, high[1]))),
        slice(max(0, low[0]), min(width, max(0, high[0]))),
    )


def _odd(pixels: float) -> int:
    return 2 * round(pixels / 2) + 1


def _recolour(
    copy: np.ndarray, rgb_shift: np.ndarray, hue: float, saturation: float, brightness: float, contrast: float
) -> np.ndarray:
    """Per-channel shift (levels), hue (degrees) and saturation (x 1 + s) shift, then contrast about
    the mean (x 1 + c) and brightness (+ b * 255), on float RGB in [0, 255]."""
    copy = np.clip(copy + rgb_shift.astype(np.float32), 0, 255)
    hsv = cv2.cvtColor(copy / 255, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue, 360)
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + saturation), 0, 1)
    copy = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255
    return (copy - copy.mean()) * (1 + contrast) + copy.mean() + brightness * 255


def blend(
    rgb: np.ndarray, landmarks: np.ndarray, *, rng: np.random.Generator, params: BlendParams
) -> tuple[np.ndarray, np.ndarray]:
    """A self-blended fake of ``rgb`` and the mask of its pixels of non-zero blend weight:
    fake = copy * alpha * ratio + rgb * (1 - alpha * ratio), see the module doc."""
    points = hull_points(landmarks, params.hull)
    face = face_size(landmarks)
    # every draw, in a fixed order
    scale = rng.uniform(*params.scale)
    shift = rng.uniform(-params.shift, params.shift, 2) * face
    rgb_shift = rng.uniform(-params.rgb_shift, params.rgb_shift, 3)
    hue, saturation, brightness, contrast = (
        rng.uniform(-limit, limit)
        for limit in (params.hue_shift, params.saturation, params.brightness, params.contrast)
    )
    sharpen = rng.random() < params.sharpen_p
    amount = rng.uniform(*params.sharpen)
    factor = rng.uniform(*params.downscale)
    field = (rng.uniform(-1, 1, (2, ELASTIC_GRID, ELASTIC_GRID)) * params.elastic * face).astype(np.float32)
    grow = round(rng.uniform(*params.grow) * face)
    kernel = _odd(rng.uniform(*params.blur) * face)
    full = rng.random() < params.full_blend
    partial = rng.uniform(*params.ratio)
    ratio = 1.0 if full else partial

    rows, cols = bounding_box(points, float(np.abs(field).max()) + max(grow, 0) + kernel // 2 + 2, rgb.shape)
    top_left = np.array([cols.start, rows.start], dtype=np.float64)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    region = np.zeros(rgb.shape[:2], bool)
    if height < 2 or width < 2:
        return rgb.copy(), region

    # the mask: the hull moved by a smooth random field, eroded or dilated, blurred
    mask = hull_mask(points - top_left, (height, width)).astype(np.float32)
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    dx, dy = (cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in field)
    mask = cv2.remap(mask, grid_x + dx, grid_y + dy, cv2.INTER_LINEAR, borderValue=0) > 0.5
    if grow:
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1, 2 * abs(grow) + 1))
        change = cv2.dilate if grow > 0 else cv2.erode
        mask = change(mask.astype(np.uint8), element) > 0
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (kernel, kernel), 0) * np.float32(ratio)

    # the copy: scaled about the face centre and shifted, recoloured, then sharpened or softened
    centre = points.mean(axis=0)
    matrix = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
    matrix[:, 2] = (1 - scale) * centre + shift - top_left
    copy = cv2.warpAffine(
        rgb, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    ).astype(np.float32)
    copy = _recolour(copy, rgb_shift, hue, saturation, brightness, contrast)
    if sharpen:
        sharpening = np.full((3, 3), -amount, np.float32)
        sharpening[1, 1] = 1 + 8 * amount
        copy = cv2.filter2D(copy, -1, sharpening, borderType=cv2.BORDER_REFLECT_101)
    else:
        small = (max(1, round(width / factor)), max(1, round(height / factor)))
        copy = cv2.resize(cv2.resize(copy, small, interpolation=cv2.INTER_AREA), (width, height))
    copy = np.clip(copy, 0, 255)

    fake = rgb.copy()
    fake[rows, cols] = mix(rgb[rows, cols], copy, alpha)
    region[rows, cols] = alpha > 0
    return fake, region

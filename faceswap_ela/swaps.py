"""The identity-swap forger family: another photo's face (the donor's) pasted onto the head photo,
each step drawn per rendering from the axes of a SwapParams (``fakes.swap``, the training family,
or ``testsets.unseen_swap`` over it, the held-out test):

- scale: the donor photo first resized so that its face is ``scale`` x the head's (INTER_AREA to
  shrink, INTER_CUBIC to enlarge; ``[]``: as it is). Below 1 the warp then enlarges the donor's
  face (soft), above 1 it shrinks it (sharp).
- align: the donor's landmarks mapped onto the head's by a similarity fitted to 17-67 (``inner``)
  or to all 68 (``all``), or by a least-squares affine map of 17-67 (``affine``).
- interpolation: the donor warped by nearest, linear or cubic interpolation, or ``area``: shrunk
  by the map's scale with pixel-area averaging first (OpenCV's warpAffine has no area mode), then
  warped linearly (an enlarging map is warped linearly).
- mask: the convex hull of the head's landmarks 17-67 (``inner``), 0-67 (``all``) or 27-67
  (``subset``: eyes, nose and mouth, neither brows nor jaw), inside the head's ``hull``, where the
  donor photo reaches and, with ``intersect``, inside the aligned donor's hull of the same points;
  eroded by ``erosion`` x the face size, then feathered inwards over ``feather`` x the face size.
- color: ``none``; ``reinhard`` (the head's mean and spread in Lab, inside the mask);
  ``histogram`` (each RGB channel's histogram matched to the head's inside the mask); ``lowfreq``
  (the donor times the ratio of the head's and the donor's colours blurred inside the mask by a
  Gaussian of ``lowfreq_blur`` x the face size: a local low-frequency correction).

The draws come from ``rng`` in a fixed order, the feather's first. The final JPEG save (``save``)
is the renderer's (faceswap_ela.materialize), which saves the reals of a swap set the same way.
Outside the returned region (every pixel of non-zero weight) the fake is the head, bit for bit:

    draw(rng, params) -> SwapDraw
    paste(rgb, landmarks, donor_rgb, donor_landmarks, drawn, params) -> (fake, region)
    swap(rgb, landmarks, donor_rgb, donor_landmarks, *, rng, params) -> (fake, region)
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from faceswap_ela.alignment import INNER, affine_fit, face_size, transform, umeyama
from faceswap_ela.fake_params import SwapParams
from faceswap_ela.forgery import bounding_box, feathered, hull_mask, hull_points, mix

ALL = slice(0, 68)
SUBSET = slice(27, 68)  # nose, eyes and mouth: neither the brows nor the jaw
MASK_POINTS = {"inner": INNER, "all": ALL, "subset": SUBSET}
FLAGS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class SwapDraw:
    """One swap's settings: its feather and erosion as shares of the face size, its colour
    correction, alignment, interpolation and mask, and the donor's face size relative to the
    head's (None: as it is)."""

    feather: float
    color: str = "reinhard"
    align: str = "inner"
    interpolation: str = "linear"
    mask: str = "inner"
    erosion: float = 0.0
    scale: float | None = None

    def to_json(self) -> str:
        """Compact, sorted JSON (the crop index's swap column), shares rounded to 4 places."""
        doc = {k: round(v, 4) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _pick(rng: np.random.Generator, choices: Sequence[str]) -> str:
    return choices[int(rng.integers(len(choices)))]


def draw(rng: np.random.Generator, params: SwapParams) -> SwapDraw:
    """Every choice of one swap, drawn in a fixed order (one draw per axis, a single choice too)."""
    feather = float(rng.uniform(*params.feather))
    color, align, interpolation, mask = (
        _pick(rng, getattr(params, axis)) for axis in ("color", "align", "interpolation", "mask")
    )
    erosion = float(rng.uniform(*params.erosion))
    scale = float(rng.uniform(*params.scale)) if params.scale else None
    return SwapDraw(feather, color, align, interpolation, mask, erosion, scale)


def rescaled(rgb: np.ndarray, landmarks: np.ndarray, face: float) -> tuple[np.ndarray, np.ndarray]:
    """A photo and its landmarks resized so that its face size is ``face`` pixels."""
    factor = face / face_size(landmarks)
    height, width = rgb.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    ratio = np.array([size[0] / width, size[1] / height])
    return resized, (np.asarray(landmarks, dtype=np.float64) + 0.5) * ratio - 0.5


def fit(donor_landmarks: np.ndarray, landmarks: np.ndarray, align: str) -> np.ndarray:
    """The 2x3 map of the donor's photo onto the head's (see the module doc's align)."""
    donor, head = (np.asarray(x, dtype=np.float64) for x in (donor_landmarks, landmarks))
    if align == "affine":
        return affine_fit(donor[INNER], head[INNER])
    points = INNER if align == "inner" else ALL
    return umeyama(donor[points], head[points])


def warped(donor: np.ndarray, matrix: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """The donor photo warped by ``matrix`` into a ``size`` (width, height) image."""
    flag = FLAGS.get(interpolation, cv2.INTER_LINEAR)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if interpolation == "area" and scale < 1:
        height, width = donor.shape[:2]
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        donor = cv2.resize(donor, small, interpolation=cv2.INTER_AREA)
        ratio = np.array([small[0] / width, small[1] / height])
        # a pixel x of the shrunk photo is (x + 0.5) / ratio - 0.5 of the original
        offset = matrix[:, 2] + matrix[:, :2] @ (0.5 / ratio - 0.5)
        matrix = np.column_stack([matrix[:, :2] / ratio, offset])
    return cv2.warpAffine(donor, matrix, size, flags=flag, borderMode=cv2.BORDER_REFLECT_101)


def _reinhard(source: np.ndarray, target: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """``source`` given the mean and spread of ``target`` in Lab, both measured inside ``where``."""
    source_lab, target_lab = (
        cv2.cvtColor(x.astype(np.float32) / 255, cv2.COLOR_RGB2Lab) for x in (source, target)
    )
    source_mean, source_std = source_lab[where].mean(axis=0), source_lab[where].std(axis=0)
    target_mean, target_std = target_lab[where].mean(axis=0), target_lab[where].std(axis=0)
    lab = (source_lab - source_mean) * (target_std / np.maximum(source_std, 1e-3)) + target_mean
    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB) * 255, 0, 255)


def _histogram(source: np.ndarray, target: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """Each channel of ``source`` mapped so that its histogram inside ``where`` is ``target``'s:
    a level goes to the lowest target level whose cumulative count reaches its own."""
    out = np.empty(source.shape, np.float32)
    for c in range(3):
        source_counts = np.cumsum(np.bincount(source[..., c][where], minlength=256))
        target_counts = np.cumsum(np.bincount(target[..., c][where], minlength=256))
        table = np.minimum(np.searchsorted(target_counts, source_counts), 255)
        out[..., c] = table[source[..., c]]
    return out


def _low_frequency(source: np.ndarray, target: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """``source`` times the ratio of ``target``'s and its own colours blurred inside ``where``
    (a Gaussian of ``sigma`` pixels, normalised by the blurred mask: nothing from outside)."""
    inside = where.astype(np.float32)
    weight = np.maximum(cv2.GaussianBlur(inside, (0, 0), sigma), 1e-6)[..., None]

    def smooth(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image.astype(np.float32) * inside[..., None], (0, 0), sigma) / weight

    ratio = (smooth(target) + 1) / (smooth(source) + 1)
    return np.clip(source.astype(np.float32) * ratio, 0, 255)


COLOR = {
    "none": lambda source, target, where, sigma: source,
    "reinhard": _reinhard,
    "histogram": _histogram,
    "lowfreq": _low_frequency,
}


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def paste(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    donor_rgb: np.ndarray,
    donor_landmarks: np.ndarray,
    drawn: SwapDraw,
    params: SwapParams,
) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` with the donor's face pasted as ``drawn`` says, and its region: see the module doc."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    face = face_size(landmarks)
    if drawn.scale is not None:
        donor_rgb, donor_landmarks = rescaled(donor_rgb, donor_landmarks, drawn.scale * face)
    points = landmarks[MASK_POINTS[drawn.mask]]
    rows, cols = bounding_box(points, 2, rgb.shape)
    top_left = np.array([cols.start, rows.start], dtype=np.float64)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    region = np.zeros(rgb.shape[:2], bool)
    if height < 2 or width < 2:
        return rgb.copy(), region

    matrix = fit(donor_landmarks, landmarks, drawn.align)
    matrix[:, 2] -= top_left
    size = (width, height)
    donor = warped(donor_rgb, matrix, size, drawn.interpolation)
    # only where the donor photo reaches, inside the mask's hull and the head's hull (and the donor's)
    reached = np.ones(donor_rgb.shape[:2], np.uint8)
    mask = cv2.warpAffine(reached, matrix, size, flags=cv2.INTER_NEAREST, borderValue=0) > 0
    mask &= hull_mask(points - top_left, (height, width))
    mask &= hull_mask(hull_points(landmarks, params.hull) - top_left, (height, width))
    if params.intersect:
        donor_points = np.asarray(donor_landmarks, dtype=np.float64)[MASK_POINTS[drawn.mask]]
        mask &= hull_mask(transform(donor_points, matrix), (height, width))
    erosion = round(drawn.erosion * face)
    if erosion > 0:
        mask = cv2.erode(mask.astype(np.uint8), _disc(erosion)) > 0
    if not mask.any():
        return rgb.copy(), region

    head = rgb[rows, cols]
    face_rgb = COLOR[drawn.color](donor, head, mask, params.lowfreq_blur * face)
    feather = round(drawn.feather * face)
    if feather > 0:  # feathered inwards: the weight reaches 0 at the mask's edge
        alpha = feathered(cv2.erode(mask.astype(np.uint8), _disc(feather)) > 0, feather)
    else:
        alpha = mask.astype(np.float32)
    fake = rgb.copy()
    fake[rows, cols] = mix(head, face_rgb, alpha)
    region[rows, cols] = alpha > 0
    return fake, region


def swap(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    donor_rgb: np.ndarray,
    donor_landmarks: np.ndarray,
    *,
    rng: np.random.Generator,
    params: SwapParams,
) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` with the donor's face pasted over its own by settings drawn from ``params``, and the
    mask of its pixels of non-zero weight."""
    return paste(rgb, landmarks, donor_rgb, donor_landmarks, draw(rng, params), params)

"""Face alignment: least-squares similarity transforms (Umeyama) and a mean-face template.

The paper aligns a face by the similarity transform q = sRp + T that minimises
sum ||sRp_i + T - q_i||^2 (eqs. 2-3). As in Li & Lyu's face-warping code, p are the 51 landmarks
17-67 of dlib's 68-point scheme (the jaw 0-16 is left out) and q a mean face normalised to the
unit square; here that mean face is computed from the training landmarks by generalized
Procrustes analysis instead of copying constants.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import cv2
import numpy as np
import pandas as pd
from skimage.transform import EuclideanTransform, SimilarityTransform

INNER = slice(17, 68)  # brows, nose, eyes, mouth: the points fitted to the template
N_INNER = 51
BROWS_AND_LOWER_LIP = (*range(17, 27), 48, 59, 58, 57, 56, 55, 54)
RIGHT_EYE = slice(36, 42)  # the subject's right eye, on the image's left
LEFT_EYE = slice(42, 48)
# Relative to the 51-point inner set
_EYE_A = slice(36 - 17, 42 - 17)
_EYE_B = slice(42 - 17, 48 - 17)
OUTSIDE_TOLERANCE = 0.05  # share of the face box a landmark may lie outside the image


def umeyama(src: np.ndarray, dst: np.ndarray, *, estimate_scale: bool = True) -> np.ndarray:
    """The 2x3 similarity [sR | T] mapping ``src`` onto ``dst`` in the least-squares sense
    (scikit-image's Umeyama fit; a rotation and shift only without ``estimate_scale``).

    R is a proper rotation (det +1) even when the best orthogonal fit would be a reflection, so a
    mirrored face is never flipped back. Raises ValueError for fewer than two distinct points or
    non-finite input."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two matching (N, 2) point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points are not finite")
    spread = ((src - src.mean(axis=0)) ** 2).sum() / len(src)
    if spread <= 1e-12 * max(1.0, float(np.abs(src).max()) ** 2):
        raise ValueError("source points coincide")
    kind = SimilarityTransform if estimate_scale else EuclideanTransform
    fitted = kind.from_estimate(src, dst)
    if not fitted:
        raise ValueError(f"no similarity fits the points: {fitted}")
    return fitted.params[:2].copy()


def affine_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 affine map of ``src`` onto ``dst`` in the least-squares sense (six free parameters:
    shears and unequal scales too). Raises ValueError for fewer than three points or collinear ones."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 3:
        raise ValueError(f"need two matching (N >= 3, 2) point sets, got {src.shape} and {dst.shape}")
    design = np.column_stack([src, np.ones(len(src))])
    if not np.isfinite(design).all() or np.linalg.matrix_rank(design) < 3:
        raise ValueError("no affine map fits the points: they are collinear or not finite")
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return np.ascontiguousarray(solution.T)


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def similarity_parts(matrix: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(scale, angle in radians, translation) of a 2x3 similarity matrix."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    angle = float(np.arctan2(matrix[1, 0], matrix[0, 0]))
    return scale, angle, matrix[:, 2].copy()


def _normalise(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean(axis=0)
    return centred / np.linalg.norm(centred)


def _rotate_onto(shape: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate a centred, unit-norm shape onto another (orthogonal Procrustes, no reflection)."""
    matrix = umeyama(shape, target, estimate_scale=False)
    return shape @ matrix[:, :2].T


def procrustes_template(
    sets: Iterable[np.ndarray], *, iterations: int = 100, tol: float = 1e-10
) -> np.ndarray:
    """A (51, 2) mean face from landmark sets by generalized Procrustes analysis.

    Each set may be (68, 2) (points 17-67 are used) or (51, 2). Sets that are not finite or
    degenerate are ignored. The mean is turned upright (the line between the eye centres
    horizontal, the image-left eye first) and each axis scaled to [0, 1], like the unit-square
    mean face of Li & Lyu; so the result does not depend on the position, size or rotation
    of any input face."""
    shapes = []
    for points in sets:
        points = np.asarray(points, dtype=np.float64)
        if points.shape == (68, 2):
            points = points[INNER]
        if points.shape != (N_INNER, 2) or not np.isfinite(points).all() or is_degenerate(points):
            continue
        shapes.append(_normalise(points))
    if not shapes:
        raise ValueError("no usable landmark sets for the template")
    stack = np.stack(shapes)
    mean = stack[0]
    for _ in range(iterations):
        aligned = np.stack([_rotate_onto(shape, mean) for shape in stack])
        new_mean = _normalise(aligned.mean(axis=0))
        new_mean = _rotate_onto(new_mean, mean)  # keep the reference orientation from drifting
        change = float(np.abs(new_mean - mean).max())
        mean = new_mean
        if change < tol:
            break
    eye_vector = mean[_EYE_B].mean(axis=0) - mean[_EYE_A].mean(axis=0)
    angle = np.arctan2(eye_vector[1], eye_vector[0])
    cos, sin = np.cos(-angle), np.sin(-angle)
    upright = mean @ np.array([[cos, -sin], [sin, cos]]).T
    low, high = upright.min(axis=0), upright.max(axis=0)
    return (upright - low) / (high - low)


def hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of (N, 2) points (0 for collinear points)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 1, 2)
    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points)))


def is_degenerate(points: np.ndarray) -> bool:
    """True when the points' convex hull has no area compared with their spread (collinear,
    coincident or nearly so)."""
    points = np.asarray(points, dtype=np.float64)
    span = points.max(axis=0) - points.min(axis=0)
    if span.min() <= 0:
        return True
    return hull_area(points) <= 1e-3 * float(span @ span)


def face_size(landmarks: np.ndarray) -> float:
    """The long side of the box holding landmarks 17-67, in pixels (the unit of the blend and swap
    parameters and of the landmarks' tolerance outside the image)."""
    inner = np.asarray(landmarks, dtype=np.float64)[INNER]
    return float((inner.max(axis=0) - inner.min(axis=0)).max())


def check_landmarks(landmarks: np.ndarray | None, shape: tuple[int, ...] | None = None) -> str | None:
    """Why a (68, 2) landmark set can't be used for a fake and crop, or None when it can.

    Points 17-67 must be finite, span an area (the brows + lower lip hull too, for the hull
    mask) and lie inside the image (H, W, ...) give or take OUTSIDE_TOLERANCE of the face box."""
    if landmarks is None:
        return "no landmarks"
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2):
        return f"bad landmarks: shape {landmarks.shape}, expected (68, 2)"
    inner = landmarks[INNER]
    if not np.isfinite(inner).all():
        return "landmarks not finite"
    if is_degenerate(inner) or is_degenerate(landmarks[list(BROWS_AND_LOWER_LIP)]):
        return "degenerate landmarks: no area"
    if shape is not None:
        height, width = shape[:2]
        tolerance = OUTSIDE_TOLERANCE * face_size(landmarks)
        outside = np.maximum.reduce(
            [-inner[:, 0], inner[:, 0] - (width - 1), -inner[:, 1], inner[:, 1] - (height - 1)]
        )
        if outside.max() > tolerance:
            return f"landmarks outside the image: up to {outside.max():.0f} px beyond {width}x{height}"
    return None


def landmark_columns() -> list[str]:
    """The coordinate columns of a landmark table: x00, y00, ..., x67, y67."""
    return [f"{axis}{i:02d}" for i in range(68) for axis in ("x", "y")]


def landmarks_from_table(frame: pd.DataFrame) -> np.ndarray:
    """(N, 68, 2) float landmarks from a table with columns x00, y00, ..., x67, y67."""
    missing = [c for c in landmark_columns() if c not in frame.columns]
    if missing:
        raise ValueError(f"landmark table lacks columns {missing[:3]}{'...' if len(missing) > 3 else ''}")
    values = frame[landmark_columns()].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return values.reshape(len(frame), 68, 2)


def template_json(template: np.ndarray, n_faces: int) -> str:
    """data/template.json: the template's points and how they were made (keys in this order)."""
    doc = {
        "landmarks": list(range(68)[INNER]),
        "points": [[float(x), float(y)] for x, y in template],
        "n_faces": n_faces,
        "method": "generalized Procrustes analysis of the training landmarks 17-67, "
        "upright (eye line horizontal), each axis scaled to [0, 1]",
    }
    return json.dumps(doc, indent=2) + "\n"

"""Face landmarks: dlib's HOG frontal face detector and its 68-point shape predictor (iBUG 300-W
scheme), on single photos and on a whole manifest with every core.

Detection runs on a copy shrunk so that its long side is at most ``max_side`` (cv2.INTER_AREA),
and again on the full-size photo when the copy shows no face (``retry_full_size``: HOG's fixed
pyramid steps miss some faces at one scale that they find at another; on HELEN at 640 px that
recovers 13 of 729 photos). The face box is mapped back and the shape predictor runs on the
full-resolution photo inside it: on HELEN it gave a lower error than predicting on the shrunk copy
and mapping the points back (median NME 0.0256 vs 0.0258, p90 0.0375 vs 0.0386 on 200 photos at
640 px; 0.0257 vs 0.0263 at 320 px) for the same cost (about 3.5 ms a face either way).

Rejects carry a one-line reason: ``no face``, ``N faces`` (with ``multiple_faces: skip``) or
``unreadable: ...``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faceswap_ela.images import ImageError, load_rgb
from faceswap_ela.parallel import n_workers, ordered_map

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
N_POINTS = 68
POINT_COLUMNS = [f"{axis}{i:02d}" for i in range(N_POINTS) for axis in "xy"]
BOX_COLUMNS = ["box_left", "box_top", "box_right", "box_bottom"]
LANDMARK_COLUMNS = ["id", "group", "path", "n_faces", *BOX_COLUMNS, *POINT_COLUMNS]
REJECT_COLUMNS = ["id", "group", "path", "reason"]
OUTCOMES = ("ok", "no_face", "multiple_faces", "unreadable")
NO_FACE = "no face"
UNREADABLE = "unreadable: "
# The 300-W convention: outer eye corners (dlib 36 and 45) for ibug68 ground truth.
IBUG_OUTER_EYES = (36, 45)
# MUCT's pupils (points 31 and 36 of its 76) for muct76 ground truth.
MUCT_PUPILS = (31, 36)
NORMALISATION = {
    "ibug68": "mean error over the 68 points / outer-eye-corner distance (gt points 36, 45; 300-W)",
    "muct76": "mean error over the points MUCT shares with dlib (eye centres, nose tip, mouth corners) "
    "/ inter-pupil distance (gt points 31, 36)",
}


class LandmarkError(RuntimeError):
    """An expected failure (missing model, bad manifest) with a one-line message."""


@dataclass(frozen=True)
class Face:
    """One face: its box (left, top, right, bottom) and 68 landmarks (x, y), in original pixels."""

    box: tuple[float, float, float, float]
    points: np.ndarray

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return max(0.0, right - left) * max(0.0, bottom - top)


@dataclass(frozen=True)
class Detection:
    """The face kept for a photo, and how many faces the detector found in it."""

    face: Face
    n_faces: int


def predictor_path() -> Path:
    """dlib's 68-point model inside the face_recognition_models package, found without importing it
    (its pkg_resources import breaks with setuptools >= 81)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkError(
            "face_recognition_models is not installed: pip install face_recognition_models==0.3.0 "
            f"(it ships dlib's {PREDICTOR_FILE})"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / PREDICTOR_FILE
        if path.is_file():
            return path
    raise LandmarkError(f"{PREDICTOR_FILE} is missing from face_recognition_models; reinstall the package")


def load_models() -> tuple[Any, Any]:
    """(detector, predictor): dlib's HOG frontal face detector and the 68-point shape predictor."""
    try:
        import dlib
    except ImportError as exc:
        raise LandmarkError(f"dlib is not installed ({exc}): pip install dlib-bin") from None
    path = predictor_path()
    try:
        predictor = dlib.shape_predictor(str(path))
    except RuntimeError as exc:
        raise LandmarkError(f"can't load {path}: {exc}") from None
    return dlib.get_frontal_face_detector(), predictor


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """``rgb`` shrunk (cv2.INTER_AREA) so its long side is at most ``max_side`` (0: never), with the
    x and y scale factors (shrunk / original); the photo itself when already small enough."""
    height, width = rgb.shape[:2]
    if max_side <= 0 or max(height, width) <= max_side:
        return rgb, 1.0, 1.0
    import cv2

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return small, size[0] / width, size[1] / height


def detect_faces(
    rgb: np.ndarray,
    detector: Any,
    predictor: Any,
    upsample: int = 0,
    max_side: int = 0,
    retry_full_size: bool = True,
) -> list[Face]:
    """Every face dlib finds in ``rgb`` (H x W x 3 uint8), largest box first (ties: leftmost, then
    topmost). The detector sees a copy shrunk to ``max_side`` (0: full size) and, with
    ``retry_full_size``, the full-size photo when the copy shows no face; the predictor always runs
    on the full-size photo. Boxes and points are in ``rgb``'s pixels."""
    import dlib

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    small, sx, sy = shrink(rgb, max_side)
    rects = detector(small, upsample)
    if not len(rects) and retry_full_size and small is not rgb:
        small, sx, sy = rgb, 1.0, 1.0
        rects = detector(rgb, upsample)
    faces = []
    for rect in rects:
        # dlib boxes are inclusive (right() is the last column): scale the edges, not the pixels.
        box = (rect.left() / sx, rect.top() / sy, (rect.right() + 1) / sx - 1, (rect.bottom() + 1) / sy - 1)
        full = dlib.rectangle(*(int(round(v)) for v in box))
        shape = predictor(rgb, full)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        faces.append(Face(box=box, points=points))
    faces.sort(key=lambda f: (-f.area, f.box[0], f.box[1]))
    return faces


def detect(
    rgb: np.ndarray, detector: Any, predictor: Any, multiple_faces: str = "skip", **options: Any
) -> Detection | str:
    """The face of a photo as a Detection, or the reason it has none: ``no face``, or ``N faces``
    when several are found and ``multiple_faces`` is ``skip`` (``largest`` keeps the largest).
    ``options`` (upsample, max_side, retry_full_size) go to detect_faces."""
    if multiple_faces not in ("skip", "largest"):
        raise ValueError(f"multiple_faces must be 'skip' or 'largest', not {multiple_faces!r}")
    faces = detect_faces(rgb, detector, predictor, **options)
    if not faces:
        return NO_FACE
    if len(faces) > 1 and multiple_faces == "skip":
        return f"{len(faces)} faces"
    return Detection(face=faces[0], n_faces=len(faces))


def outcome(reason: str) -> str:
    """The metrics bucket of a reject reason: no_face, multiple_faces or unreadable."""
    if reason == NO_FACE:
        return "no_face"
    if reason.startswith(UNREADABLE):
        return "unreadable"
    return "multiple_faces"


# ---------------------------------------------------------------- errors against ground truth


def parse_gt(text: str | float | None) -> np.ndarray | None:
    """A manifest ``gt`` cell (JSON list of [x, y] or null) as an (n, 2) array with NaN for null,
    or None when empty."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
        return None
    rows = json.loads(text)
    return np.array([[np.nan, np.nan] if p is None else p for p in rows], dtype=np.float64).reshape(-1, 2)


def corresponding_points(pred68: np.ndarray, gt: np.ndarray, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, ground-truth) points that correspond, visible ones only. ``ibug68``: all 68;
    ``muct76``: eye centres, nose tip and mouth corners through ``faceswap_ela.muct.MUCT_TO_DLIB``."""
    pred68 = np.asarray(pred68, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if scheme == "ibug68":
        if gt.shape != (N_POINTS, 2):
            raise ValueError(f"ibug68 ground truth must be (68, 2), got {gt.shape}")
        pred, truth = pred68, gt
    elif scheme == "muct76":
        from faceswap_ela import muct

        pred, truth = muct.dlib_key_points(pred68), muct.muct_key_points(gt)
    else:
        raise ValueError(f"unknown ground-truth scheme {scheme!r}")
    visible = ~np.isnan(truth).any(axis=1)
    return pred[visible], truth[visible]


def nme(pred68: np.ndarray, gt: np.ndarray, scheme: str) -> float:
    """Normalised mean error of a dlib-68 shape against ground truth (see NORMALISATION); NaN when
    the normalising points or every corresponding point is missing."""
    gt = np.asarray(gt, dtype=np.float64)
    a, b = IBUG_OUTER_EYES if scheme == "ibug68" else MUCT_PUPILS
    if scheme not in NORMALISATION:
        raise ValueError(f"unknown ground-truth scheme {scheme!r}")
    if max(a, b) >= len(gt):
        return float("nan")
    norm = float(np.linalg.norm(gt[a] - gt[b]))
    pred, truth = corresponding_points(pred68, gt, scheme)
    if not len(truth) or not np.isfinite(norm) or norm <= 0:
        return float("nan")
    return float(np.linalg.norm(pred - truth, axis=1).mean() / norm)


def nme_summary(values: Sequence[float], scheme: str) -> dict[str, Any]:
    """{n, median, p90, mean, normalisation} of the finite values."""
    finite = np.array([v for v in values if np.isfinite(v)], dtype=np.float64)
    summary: dict[str, Any] = {"n": int(finite.size), "normalisation": NORMALISATION[scheme]}
    if finite.size:
        summary.update(
            median=round(float(np.median(finite)), 5),
            p90=round(float(np.percentile(finite, 90)), 5),
            mean=round(float(finite.mean()), 5),
        )
    return summary


# ---------------------------------------------------------------- a whole manifest, every core

_WORKER: dict[str, Any] = {}


def init_worker(upsample: int, max_side: int, multiple_faces: str, retry_full_size: bool = True) -> None:
    """Pool initializer: load the detector and predictor once per worker process."""
    import cv2

    cv2.setNumThreads(1)
    if "detector" not in _WORKER:
        _WORKER["detector"], _WORKER["predictor"] = load_models()
    _WORKER.update(
        upsample=upsample, max_side=max_side, multiple_faces=multiple_faces, retry_full_size=retry_full_size
    )


def locate_one(item: tuple[str, str]) -> tuple[str, Any, Any]:
    """Worker task for (file, manifest error): ("ok", n_faces, (box, points)) rounded to 2 decimals,
    or ("reject", reason, None)."""
    file, error = item
    if error:
        return "reject", UNREADABLE + error, None
    try:
        rgb = load_rgb(file)
    except ImageError as exc:
        return "reject", UNREADABLE + str(exc), None
    found = detect(
        rgb,
        _WORKER["detector"],
        _WORKER["predictor"],
        _WORKER["multiple_faces"],
        upsample=_WORKER["upsample"],
        max_side=_WORKER["max_side"],
        retry_full_size=_WORKER["retry_full_size"],
    )
    if isinstance(found, str):
        return "reject", found, None
    box = np.round(np.asarray(found.face.box, dtype=np.float64), 2)
    points = np.round(found.face.points, 2)
    return "ok", found.n_faces, (box, points)


@dataclass
class Located:
    """The landmark stage's outputs: the two tables and the metrics."""

    landmarks: pd.DataFrame
    rejects: pd.DataFrame
    metrics: dict[str, Any]


MANIFEST_NEEDS = ("id", "group", "path", "error")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The download stage's manifest, every column as text ("" for empty)."""
    path = Path(path)
    if not path.is_file():
        raise LandmarkError(f"{path} not found: run the download stage first")
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_NEEDS if c not in manifest.columns]
    if missing:
        raise LandmarkError(f"{path} lacks the column(s) {', '.join(missing)}")
    duplicated = manifest["id"][manifest["id"].duplicated()]
    if len(duplicated):
        raise LandmarkError(f"{path}: duplicate ids, e.g. {duplicated.iloc[0]}")
    return manifest


def locate(
    manifest: pd.DataFrame,
    raw_dir: str | Path,
    *,
    upsample: int = 0,
    max_side: int = 640,
    multiple_faces: str = "skip",
    retry_full_size: bool = True,
    workers: int = 0,
    progress: bool = True,
) -> Located:
    """Landmarks of every manifest row (paths relative to ``raw_dir``), in manifest order, with
    ``workers`` processes (0: every core). Every row lands in exactly one of the two tables."""
    raw_dir = Path(raw_dir)
    rows = manifest.to_dict("records")
    items = [(str(raw_dir / row["path"]), str(row.get("error") or "")) for row in rows]
    used = min(n_workers(workers), max(1, len(items)))
    start = time.perf_counter()
    results = list(
        ordered_map(
            locate_one,
            items,
            workers=used,
            initializer=init_worker,
            initargs=(upsample, max_side, multiple_faces, retry_full_size),
            desc="landmarks" if progress else None,
        )
    )
    seconds = time.perf_counter() - start
    found, rejected = [], []
    counts = dict.fromkeys(OUTCOMES, 0)
    errors: dict[str, list[float]] = {}
    for row, (status, value, shape) in zip(rows, results, strict=True):
        base = {"id": row["id"], "group": row["group"], "path": row["path"]}
        if status != "ok":
            counts[outcome(value)] += 1
            rejected.append({**base, "reason": value})
            continue
        counts["ok"] += 1
        box, points = shape
        found.append([*base.values(), value, *box.tolist(), *points.ravel().tolist()])
        scheme = str(row.get("gt_scheme") or "")
        gt = parse_gt(row.get("gt")) if scheme else None
        if gt is not None:
            errors.setdefault(scheme, []).append(nme(points, gt, scheme))
    landmarks = pd.DataFrame(found, columns=LANDMARK_COLUMNS)
    rejects = pd.DataFrame(rejected, columns=REJECT_COLUMNS)
    metrics: dict[str, Any] = {
        **counts,
        "photos": len(rows),
        "seconds": round(seconds, 3),
        "photos_per_s": round(len(rows) / seconds, 3) if seconds > 0 else None,
        "workers": used,
    }
    for scheme in sorted(errors):
        metrics[f"nme_{scheme}"] = nme_summary(errors[scheme], scheme)
    return Located(landmarks, rejects, metrics)


def read_landmarks(path: str | Path) -> pd.DataFrame:
    """data/landmarks.csv with id/group/path as text and the numbers as floats."""
    frame = pd.read_csv(path, dtype={"id": str, "group": str, "path": str}, keep_default_na=False)
    missing = [c for c in LANDMARK_COLUMNS if c not in frame.columns]
    if missing:
        raise LandmarkError(f"{path} lacks the column(s) {', '.join(missing[:5])}")
    return frame


def points_of(row: pd.Series | dict) -> np.ndarray:
    """The (68, 2) landmarks of one data/landmarks.csv row."""
    return np.array([float(row[c]) for c in POINT_COLUMNS], dtype=np.float64).reshape(N_POINTS, 2)

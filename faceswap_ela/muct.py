"""MUCT access: archive names, subjects, the landmark files, and the points MUCT shares with dlib.

MUCT (Milborrow, Morkel & Nicolls 2010) photos are named like ``i000qa-fn.jpg``: ``i``, a three-digit
subject, the lighting (``q``...), the camera (``a``-``e``), then ``-`` and two letters for sex and
glasses. ``muct76-opencv.csv`` holds one row per photo (``name,tag,x00,y00,...``) in OpenCV
coordinates (origin at the top left), plus rows named ``ir...`` for mirrored copies; ``0,0`` marks a
point that is not visible.

Point scheme. MUCT's 76 points are the 68 XM2VTS points of Stasm 3 followed by 8 extra eye points
(68-75). Stasm 3's ``landmarks.hpp`` (S. Milborrow, "landmark tables for XM2VTS shapes", enum
``eLandmarks``; left/right are the viewer's) names them: 27-30 the viewer's left eye (outer, top,
inner, bottom) and 31 its pupil (``MLEye``), 32-35 the right eye and 36 its pupil (``MREye``), 48 the
left mouth corner (``MLMouthCorner``), 54 the right one (``MRMouthCorner``) and 67 the nose tip
(``MNoseTip``). Patrik Huber's eos mapping of the MUCT annotations agrees (27/32 eye outer
corners, 48/54 mouth corners, 67 nose tip). In dlib's iBUG 300-W scheme (also the viewer's left
first) 36-41 and 42-47 outline the two eyes, 30 is the nose tip and 48/54 are the mouth corners.
On the MUCT sample photos these pairs lie 1-9 px apart (tests/test_muct.py checks it).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

MUCT_URL = "https://github.com/StephenMilborrow/muct/raw/master/"
CAMERAS = "abcde"
LANDMARKS_ARCHIVE = "muct-landmarks-v1.tar.gz"
LANDMARKS_CSV = "muct76-opencv.csv"
N_POINTS = 76

# MUCT point -> the dlib-68 points whose mean corresponds to it (viewer's left first).
MUCT_TO_DLIB: dict[str, tuple[int, tuple[int, ...]]] = {
    "left_eye": (31, (36, 37, 38, 39, 40, 41)),
    "right_eye": (36, (42, 43, 44, 45, 46, 47)),
    "nose_tip": (67, (30,)),
    "left_mouth": (48, (48,)),
    "right_mouth": (54, (54,)),
}
# Left/right partners among those points, for mirrored shapes.
MIRROR_PAIRS = ((31, 36), (48, 54))

_SUBJECT = re.compile(r"^i(\d{3})[a-z]")


def camera_archive(camera: str) -> str:
    """The archive name of one camera, e.g. ``muct-a-jpg-v1.tar.gz``."""
    if camera not in CAMERAS or len(camera) != 1:
        raise ValueError(f"MUCT camera must be one of {', '.join(CAMERAS)}, not {camera!r}")
    return f"muct-{camera}-jpg-v1.tar.gz"


ARCHIVES = tuple(camera_archive(c) for c in CAMERAS) + (LANDMARKS_ARCHIVE,)


def archive_url(base: str, name: str) -> str:
    """``base`` (a folder URL, with or without the trailing slash) joined with an archive name."""
    return base.rstrip("/") + "/" + name


def subject(name: str) -> str | None:
    """The subject of a MUCT photo name or file name (``i000qa-fn.jpg`` -> ``000``), else None."""
    match = _SUBJECT.match(Path(name).name)
    return match.group(1) if match else None


def read_landmarks_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``muct76-opencv.csv`` as photo name -> (n, 2) float array, NaN where MUCT marks ``0,0``.

    Mirrored rows (names starting ``ir``) are skipped; n is whatever the header holds (76, or 68 in
    trimmed copies)."""
    shapes: dict[str, np.ndarray] = {}
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or header[:2] != ["name", "tag"] or len(header) < 4 or len(header) % 2:
            raise ValueError(f"{path}: not a MUCT landmark CSV (header {header[:3] if header else []})")
        n = (len(header) - 2) // 2
        for line, row in enumerate(reader, start=2):
            if not row or row[0].startswith("ir"):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: {len(row)} fields, expected {len(header)}")
            try:
                points = np.array(row[2:], dtype=np.float64).reshape(n, 2)
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
            points[(points == 0).all(axis=1)] = np.nan
            shapes[row[0]] = points
    return shapes


def read_pts(path: str | os.PathLike, n_points: int = 68) -> np.ndarray:
    """An iBUG 300-W ``.pts`` file as an (n_points, 2) float array of (x, y), as stored in the file.
    ValueError, naming the file, when it isn't one (or isn't UTF-8 text)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a .pts file (not UTF-8 text: byte {exc.start})") from None
    match = re.search(r"n_points:\s*(\d+)\s*\{(.*)\}", text, re.S)
    if not match:
        raise ValueError(f"{path}: not a .pts file (no 'n_points:' and '{{ ... }}')")
    declared = int(match.group(1))
    try:
        values = np.array(match.group(2).split(), dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if declared != n_points or values.size != 2 * n_points:
        found = values.size / 2
        raise ValueError(f"{path}: holds {found:g} points (declares {declared}), expected {n_points}")
    return values.reshape(n_points, 2)


def write_pts(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write (n, 2) points as an iBUG ``.pts`` file."""
    lines = ["version: 1", f"n_points: {len(points)}", "{"]
    lines += [f"{x:.3f} {y:.3f}" for x, y in np.asarray(points, dtype=np.float64)]
    Path(path).write_text("\n".join([*lines, "}", ""]))


def muct_key_points(points: np.ndarray) -> np.ndarray:
    """The points of a MUCT shape that dlib also locates, in ``MUCT_TO_DLIB`` order: (5, 2), NaN if hidden."""
    points = np.asarray(points, dtype=np.float64)
    return np.stack([points[index] for index, _ in MUCT_TO_DLIB.values()])


def dlib_key_points(points: np.ndarray) -> np.ndarray:
    """The same five points from a dlib-68 shape: eye centres (mean of each eye's six points),
    nose tip and mouth corners, in ``MUCT_TO_DLIB`` order: (5, 2)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected a (68, 2) dlib shape, got {points.shape}")
    return np.stack([points[list(group)].mean(axis=0) for _, group in MUCT_TO_DLIB.values()])


def key_points(scheme: str, points: np.ndarray) -> np.ndarray:
    """The five shared points of a ground-truth shape of either scheme (``muct76`` or ``ibug68``)."""
    if scheme == "muct76":
        return muct_key_points(points)
    if scheme == "ibug68":
        return dlib_key_points(points)
    raise ValueError(f"unknown landmark scheme {scheme!r}")


def muct_from_dlib(points: np.ndarray, n_points: int = N_POINTS) -> np.ndarray:
    """A MUCT-scheme shape holding only the points that correspond to a dlib-68 shape (others NaN)."""
    shape = np.full((n_points, 2), np.nan)
    for (index, _), point in zip(MUCT_TO_DLIB.values(), dlib_key_points(points), strict=True):
        shape[index] = point
    return shape


def mirror_muct(points: np.ndarray, width: int) -> np.ndarray:
    """A MUCT shape of the horizontally mirrored photo (x -> width - 1 - x, left/right swapped)."""
    mirrored = np.asarray(points, dtype=np.float64).copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    for left, right in MIRROR_PAIRS:
        mirrored[[left, right]] = mirrored[[right, left]]
    return mirrored

"""The manifest of data/raw: one row per photo with its id, group, checksum, size, decode error and
ground truth (landmarks from a ``.pts`` file or MUCT's table), and the checks that keep ground
truth that can't be a face's landmarks out of it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from faceswap_ela.images import ImageError, probe
from faceswap_ela.parallel import ordered_map

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["id", "group", "path", "sha256", "width", "height", "error", "gt_scheme", "gt"]
# what the download leaves out, each warned about: name -> how many
Notes = MutableMapping[str, int]


class ManifestError(ValueError):
    """Photos that can't make one manifest (two files of the same id)."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Photo:
    """One photo in data/raw: its id, path relative to data/raw, and ground truth if any."""

    id: str
    path: str
    file: Path
    gt_scheme: str = ""
    gt: np.ndarray | None = None
    gt_from: str = ""  # where the ground truth was read, for a warning


def photo_id(relative: PurePosixPath) -> str:
    """A photo's id: its path relative to the photo root, without suffix, "/" replaced by "__"."""
    return relative.with_suffix("").as_posix().replace("/", "__")


def group_of(pattern: re.Pattern[str], file_name: str, fallback: str) -> str:
    """The first non-empty capture group of ``pattern`` searched in ``file_name``, else ``fallback``."""
    match = pattern.search(file_name)
    if match:
        for group in match.groups():
            if group:
                return group
    return fallback


def describe(path: str) -> tuple[str, int | None, int | None, str]:
    """(sha256, width, height, error) of one photo; width/height None and the reason in error
    when it can't be decoded."""
    digest = sha256_file(path)
    try:
        width, height = probe(path)
    except ImageError as exc:
        return digest, None, None, str(exc)
    return digest, width, height, ""


def gt_json(points: np.ndarray | None) -> str:
    """Landmarks as compact JSON: [[x, y], ...] with null for a point that isn't visible."""
    if points is None:
        return ""
    rows = [None if np.isnan(p).any() else [round(float(p[0]), 3), round(float(p[1]), 3)] for p in points]
    return json.dumps(rows, separators=(",", ":"))


def ground_truth_problem(
    points: np.ndarray, scheme: str, width: int | None = None, height: int | None = None
) -> str | None:
    """Why ``points`` can't be a face's landmarks in a ``width`` x ``height`` photo (None: they can):
    an infinite coordinate, NaN (MUCT's marker of a hidden point, and only MUCT's), no visible
    point, every point the same, or a point farther outside the photo than its own size."""
    points = np.asarray(points, dtype=np.float64)
    hidden = np.isnan(points).any(axis=1)
    if np.isinf(points).any():
        return f"point {int(np.flatnonzero(np.isinf(points).any(axis=1))[0])} is infinite"
    if scheme != "muct76" and hidden.any():
        return f"point {int(np.flatnonzero(hidden)[0])} is NaN"
    visible = points[~hidden]
    if len(visible) == 0:
        return "no point is visible"
    if len(visible) > 1 and (visible == visible[0]).all():
        return f"all {len(visible)} points are the same point ({visible[0, 0]:g}, {visible[0, 1]:g})"
    if width is not None and height is not None:
        size = np.array([width, height], dtype=np.float64)
        far = ((visible < -size) | (visible > 2 * size)).any(axis=1)
        if far.any():
            x, y = visible[np.flatnonzero(far)[0]]
            return f"a point at ({x:g}, {y:g}) lies far outside the {width} x {height} photo"
    return None


def build_manifest(
    photos: Sequence[Photo], group_pattern: str, workers: int = 0, notes: Notes | None = None
) -> pd.DataFrame:
    """One row per photo, sorted by id, with checksum, size and decode errors (see MANIFEST_COLUMNS).
    Ground truth that can't be the photo's landmarks (ground_truth_problem) is left out, warned
    about and counted in ``notes``."""
    notes = {} if notes is None else notes
    duplicates = sorted(i for i, n in Counter(photo.id for photo in photos).items() if n > 1)
    if duplicates:
        names = ", ".join(duplicates[:10])
        raise ManifestError(f"photo ids must be unique; these name several files: {names}")
    photos = sorted(photos, key=lambda photo: photo.id)
    pattern = re.compile(group_pattern)
    described = ordered_map(describe, [str(p.file) for p in photos], workers=workers, desc="probe photos")
    rows = []
    for photo, (digest, width, height, error) in zip(photos, described, strict=True):
        problem = None if photo.gt is None else ground_truth_problem(photo.gt, photo.gt_scheme, width, height)
        if problem:
            refuse_ground_truth(photo, problem, notes)
        rows.append(
            {
                "id": photo.id,
                "group": group_of(pattern, Path(photo.path).name, photo.id),
                "path": photo.path,
                "sha256": digest,
                "width": "" if width is None else str(width),
                "height": "" if height is None else str(height),
                "error": error,
                "gt_scheme": photo.gt_scheme,
                "gt": gt_json(photo.gt),
            }
        )
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS, dtype=object)


def refuse_ground_truth(photo: Photo, reason: str, notes: Notes) -> None:
    notes["refused_ground_truth"] = notes.get("refused_ground_truth", 0) + 1
    log.warning("refusing the ground truth of %s (%s): %s", photo.path, photo.gt_from, reason)
    photo.gt, photo.gt_scheme = None, ""

"""The batched forward pass that `faceswap-ela predict` and the served detector (detector.py) share:
photos (files, or their encoded bytes) -> decoded by images.load_rgb -> every face dlib finds ->
ROI crops -> ELA as the model's card says -> the CNN -> one Prediction row per face, or one row
saying why a photo gave none (see predict's module doc for the statuses).

Everything before the CNN runs photo by photo in the pipeline's worker pool
(parallel.ordered_map, ``workers`` processes: see pool_size), which hands the results back in input
order; the CNN scores the faces in that order, CHUNK images at a time, while the workers go on with
the next photos. The batches are the same whatever the number of workers, so the rows are too, to
the last bit.

A photo that can't be decoded, or that breaks the landmark or ELA code, gets an error row of its
own; the other photos are scored as usual.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from faceswap_ela import ela, landmarks
from faceswap_ela.images import MAX_PIXELS, ImageError, load_rgb
from faceswap_ela.parallel import n_workers, ordered_map
from faceswap_ela.params import Params
from faceswap_ela.predict import ERROR, NO_FACE, TOO_SMALL, FaceCrops, Prediction, face_crops, score_problem
from faceswap_ela.predict_model import PredictError

if TYPE_CHECKING:
    from faceswap_ela.predict import Predictor

CHUNK = 256  # network inputs per forward pass
MIN_PHOTOS_PER_WORKER = 50  # with workers=0: no more workers than one per this many photos


@dataclass(frozen=True)
class Photo:
    """One input: ``name`` (its rows' ``photo``; its file name seeds random ROIs), ``source`` (a
    file, or its encoded JPEG/PNG bytes) and ``error`` (why it can't be read, known beforehand)."""

    name: str
    source: str | os.PathLike | bytes | None = None
    error: str | None = None


class Scored(NamedTuple):
    """One output row: the index of its photo, the Prediction, and the face's crops and ELA images
    (kept only when asked for, for heatmaps)."""

    photo: int
    row: Prediction
    face: FaceCrops | None = None


@dataclass(frozen=True)
class Settings:
    """What a worker needs to turn a photo into network inputs (picklable: no model in it)."""

    params: Params
    input: str
    rois: int
    keep_crops: bool = False
    max_pixels: int = MAX_PIXELS


def pool_size(workers: int, photos: int) -> int:
    """The processes that read ``photos`` photos: ``workers`` (at most one a photo), or with 0
    every core, but no more than one per MIN_PHOTOS_PER_WORKER photos (1: this process): a worker
    takes 1 to 2 s to start (it imports the package and loads dlib's models), a photo about 40 ms
    of a core, so that a second worker pays off from about a hundred photos."""
    if workers > 0:
        return max(1, min(workers, photos))
    return max(1, min(n_workers(0), photos // MIN_PHOTOS_PER_WORKER))


def check_landmarks() -> None:
    """PredictError, before any photo is read, when dlib or its landmark model is missing."""
    try:
        landmarks.predictor_path()
    except landmarks.LandmarkError as exc:
        raise PredictError(str(exc)) from None
    if importlib.util.find_spec("dlib") is None:
        raise PredictError("dlib is not installed: pip install dlib-bin")


_WORKER: dict[str, Any] = {}


def init_worker(settings: Settings, pooled: bool = False) -> None:
    """Pool initializer (and the in-process set-up): the settings, and dlib's models, loaded once
    per process. It never raises (a pool would start the worker again, forever): should the
    models fail to load, every photo gets the reason as its error."""
    if pooled:
        import cv2

        cv2.setNumThreads(1)
    _WORKER["settings"] = settings
    if not isinstance(_WORKER.get("models"), tuple):
        try:
            _WORKER["models"] = landmarks.load_models()
        except landmarks.LandmarkError as exc:
            _WORKER["models"] = str(exc)


def photo_faces(rgb: np.ndarray, models: tuple[Any, Any], settings: Settings, name: str) -> list[FaceCrops]:
    """Every face of an RGB photo, with its crops and ELA images; ``name`` (the photo's file
    name) seeds the random ROIs."""
    lm, at = settings.params.landmarks, settings.params.ela.at
    found = landmarks.detect_faces(
        rgb, *models, upsample=lm.upsample, max_side=lm.max_side, retry_full_size=lm.retry_full_size
    )
    levels = ela.photo_levels(rgb, settings.params.ela) if found and at == "photo" else None
    return [
        face_crops(rgb, face, i, settings.params, settings.rois, name, levels) for i, face in enumerate(found)
    ]


def prepare(photo: Photo) -> list[Prediction | FaceCrops]:
    """Worker task: one photo's rows in face order, a Prediction where no score is needed (an
    error, no face, a face too small), the FaceCrops to score otherwise."""
    settings, models = _WORKER["settings"], _WORKER["models"]
    error = photo.error if photo.error is not None or isinstance(models, tuple) else models
    if error is None:
        try:
            rgb = load_rgb(photo.source, settings.max_pixels)
            found = photo_faces(rgb, models, settings, Path(photo.name).name)
        except ImageError as exc:
            error = str(exc)
        except Exception as exc:  # one photo that breaks the code must not cost the others
            reason = " ".join(str(exc).split())[:200]
            error = f"can't process this photo: {type(exc).__name__}" + (f": {reason}" if reason else "")
    if error is not None:
        return [Prediction(photo.name, status=ERROR, error=error)]
    if not found:
        return [Prediction(photo.name, status=NO_FACE)]
    for face in found:
        if not settings.keep_crops and settings.input == "ela":
            face.crops = face.crops[:0]  # not sent back: only heatmaps show them
    return [
        face
        if face.elas
        else Prediction(photo.name, face.index, face.box, status=TOO_SMALL, error="empty ROI")
        for face in found
    ]


def score_photos(
    predictor: Predictor,
    photos: Sequence[Photo],
    *,
    workers: int = 0,
    keep_crops: bool = False,
    progress: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> list[Scored]:
    """The rows of ``photos`` scored by ``predictor`` (its params, input kind, ROIs, threshold and
    loaded model), in input order: the photos read by ``workers`` processes (see pool_size), the
    faces through the model CHUNK inputs at a time. ``keep_crops`` keeps each face's crops and ELA
    images in its row; a photo of more than ``max_pixels`` pixels gets an error row. PredictError
    when the landmark model is missing."""
    check_landmarks()
    settings = Settings(predictor.params, predictor.input, predictor.rois, keep_crops, max_pixels)
    used = pool_size(workers, len(photos))
    rows: list[Scored | None] = []
    pending: list[tuple[int, int, Photo, FaceCrops]] = []  # row slot, photo index, photo, face
    queued = 0

    def flush() -> None:
        if pending:
            scores = predictor.score(np.stack([x for *_, face in pending for x in predictor.inputs(face)]))
            start = 0
            for slot, index, photo, face in pending:
                p_fake = float(scores[start : start + len(face.elas)].mean())
                start += len(face.elas)
                problem = score_problem(p_fake)
                if problem:
                    row = Prediction(photo.name, face.index, face.box, status=ERROR, error=problem)
                else:
                    row = Prediction(photo.name, face.index, face.box, p_fake, predictor.label(p_fake))
                rows[slot] = Scored(index, row, face if keep_crops else None)
        pending.clear()

    results = ordered_map(
        prepare, photos, workers=used, initializer=init_worker, initargs=(settings, used > 1),
        desc="photos" if progress else None,
    )  # fmt: skip
    for index, (photo, prepared) in enumerate(zip(photos, results, strict=True)):
        for item in prepared:
            if isinstance(item, FaceCrops):
                pending.append((len(rows), index, photo, item))
                queued += len(item.elas)
                rows.append(None)
            else:
                rows.append(Scored(index, item))
        if queued >= CHUNK:
            flush()
            queued = 0
    flush()
    return [row for row in rows if row is not None]

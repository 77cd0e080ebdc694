"""The swap forger's donors: for each fake rendering of a photo, the photo whose face is pasted
into it, chosen as Face X-ray chooses (a face of a similar pose and build pastes plausibly)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from faceswap_ela import alignment, seeding
from faceswap_ela.testsets import SPLITS

if TYPE_CHECKING:
    from faceswap_ela.materialize import PhotoTask


@dataclass(frozen=True)
class Donor:
    """The photo a swap takes its face from."""

    photo_id: str
    path: str  # relative to raw_dir
    landmarks: np.ndarray


def _shape(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks 17-67 centred and scaled to unit norm: what two faces' poses are compared by."""
    inner = np.asarray(landmarks, dtype=np.float64)[alignment.INNER]
    inner = inner - inner.mean(axis=0)
    return (inner / max(np.linalg.norm(inner), 1e-9)).ravel()


def assign_donors(
    tasks: list[PhotoTask],
    seed: int,
    nearest: int,
    sizes: dict[str, tuple[int, int]] | None = None,
    *,
    splits: tuple[str, ...] = SPLITS,
    stream: str = "donor",
    field: str = "donors",
) -> list[PhotoTask]:
    """Each fake variant's swap donor: drawn (seeded by ``stream``, the photo and variant) among
    the ``nearest`` photos of the same split but another group whose landmarks are closest in
    shape. A donor's landmarks must be usable (inside its photo, of ``sizes``: id -> (width,
    height), when given) and its face at least half as large as the head's, so that it is not
    blown up into a blur. Returns the tasks in their order, those of ``splits`` with their
    ``field`` (``donors``, or ``unseen_donors`` for the held-out swaps) set: None for a real
    variant or where no photo qualifies."""

    def usable(t: PhotoTask) -> bool:
        if t.landmarks is None or (sizes is not None and t.photo_id not in sizes):
            return False
        shape = None if sizes is None else sizes[t.photo_id][::-1]
        return alignment.check_landmarks(t.landmarks, shape) is None

    out = [t for t in tasks if t.split not in splits]
    for split in splits:
        pool = [t for t in tasks if t.split == split and usable(t)]
        shapes = np.stack([_shape(t.landmarks) for t in pool]) if pool else np.zeros((0, 102))
        faces = np.array([alignment.face_size(t.landmarks) for t in pool])
        groups = np.array([t.group for t in pool])
        for task in (t for t in tasks if t.split == split):
            donors: list[Donor | None] = [None] * len(task.labels)
            if pool and task.landmarks is not None and alignment.check_landmarks(task.landmarks) is None:
                distance = np.linalg.norm(shapes - _shape(task.landmarks), axis=1)
                distance[(groups == task.group) | (faces < 0.5 * alignment.face_size(task.landmarks))] = (
                    np.inf
                )
                ranked = [
                    i for i in np.argsort(distance, kind="stable")[:nearest] if np.isfinite(distance[i])
                ]
                for variant, label in enumerate(task.labels):
                    if label == 1 and ranked:
                        rng = seeding.rng(seed, stream, task.photo_id, variant)
                        pick = pool[ranked[rng.integers(len(ranked))]]
                        donors[variant] = Donor(pick.photo_id, pick.path, pick.landmarks)
            out.append(dataclasses.replace(task, **{field: tuple(donors)}))
    order = {t.photo_id: i for i, t in enumerate(tasks)}
    return sorted(out, key=lambda t: order[t.photo_id])

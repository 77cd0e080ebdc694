"""The materialize stage: which photos to render, the renderings of each photo, the gallery
samples, the crop index and its summary. The fakes themselves are made in faceswap_ela.forgery.

Each photo gives ``variants`` renderings. Which ones become fakes is drawn once per photo:
round(fraction * variants) of them (the fractional part decided by a seeded coin), at seeded
positions. So each photo contributes both classes in the paper's half/half ratio (with 4
variants: exactly 2 real + 2 fake), the classes are balanced within every split and group, and
the network can't tell the class from who is in the photo.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from faceswap_ela import alignment, augment, ela, forgery, gallery, images, roi, seeding
from faceswap_ela import params as P
from faceswap_ela.dataset import DatasetError
from faceswap_ela.images import ImageError, load_rgb, save_png
from faceswap_ela.stage import StageError
from faceswap_ela.testsets import (
    MATCHED,
    PAPER_FORGER,
    SPLITS,
    TEST,
    TRAIN,
    forger_set,
    jpeg_set,
    set_order,
)  # fmt: skip

N_SAMPLE_PHOTOS = 2  # gallery photos: each a real and its fake by every forger of the test split
SAMPLE_SIDE = 320  # long side of the preview photos kept for the gallery


@dataclass
class IndexRow:
    """One row of data/crops/index.csv: a crop, or the reason it was skipped."""

    crop_id: str
    photo_id: str
    group: str
    split: str
    label: int
    variant: int
    status: str = "skipped"
    reason: str = ""
    path: str = ""
    forger: str = ""  # a fake's: warp, blend or swap
    donor: str = ""  # a swap's: the photo its face came from
    quality: int | None = None  # the JPEG quality the rendered photo was saved at (fakes.jpeg, a swap tool)
    scale: int | None = None
    mask: str = ""
    roi_x1: int | None = None
    roi_y1: int | None = None
    roi_x2: int | None = None
    roi_y2: int | None = None
    augment: str = ""
    blur_sigma: float | None = None
    piece_path: str = ""  # ela.at: photo: the rendered photo around the ROI, on its JPEG grid
    piece_x1: int | None = None
    piece_y1: int | None = None


INDEX_COLUMNS = [f.name for f in dataclasses.fields(IndexRow)]
GRID = 16  # the JPEG grid of 4:2:0 (two 8 x 8 luma blocks a side); a piece starts on it
PIECE_MARGIN = GRID  # and reaches one grid cell beyond the ROI, so the decoder's chroma upsampling
# sees the same neighbours as in the whole photo


def assign_labels(seed: int, photo_id: str, variants: int, fraction: float) -> list[int]:
    """Which of a photo's renderings are fakes (1) and which stay real (0); see the module doc."""
    rng = seeding.rng(seed, "materialize", photo_id, "labels")
    exact = fraction * variants
    n_fakes = math.floor(exact) + int(rng.random() < exact - math.floor(exact))
    labels = np.zeros(variants, dtype=int)
    labels[rng.permutation(variants)[:n_fakes]] = 1
    return [int(v) for v in labels]


def crop_id(photo_id: str, variant: int) -> str:
    return f"{photo_id}__v{variant}"


def augment_json(values: dict) -> str:
    """The drawn augmentation values as compact, sorted JSON (the index's augment column)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


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


@dataclass(frozen=True)
class Donor:
    """The photo a swap takes its face from."""

    photo_id: str
    path: str  # relative to raw_dir
    landmarks: np.ndarray


@dataclass(frozen=True)
class PhotoTask:
    photo_id: str
    group: str
    split: str
    path: str  # relative to raw_dir
    landmarks: np.ndarray | None
    labels: tuple[int, ...]
    donors: tuple[Donor | None, ...] = ()  # per variant: a fake's swap donor


@dataclass(frozen=True)
class Drawn:
    """Everything random about one rendering, drawn in the same order for reals and fakes."""

    size: int  # the aligned face's side
    mask: str
    box: tuple[int, int, int, int]  # the ROI
    values: dict  # the augmentation's


@dataclass(frozen=True)
class Renderer:
    """Renders photos (``renderer(task)``): what every rendering worker needs, pickled to each."""

    seed: int
    fakes: P.FakeParams
    roi: P.RoiParams
    augment: P.AugmentParams
    template: np.ndarray
    raw_dir: str
    out_dir: str
    samples: frozenset[str] = field(default_factory=frozenset)  # crop ids to keep previews of
    sets: P.ExtraSetsParams = field(default_factory=P.ExtraSetsParams)
    train_forgers: tuple[str, ...] = (PAPER_FORGER,)
    ela_at: str = "crop"

    def __call__(self, task: PhotoTask) -> tuple[list[dict], dict[tuple[str, str], dict[str, np.ndarray]]]:
        """Render, crop, augment (train only), resize and save every variant of one photo.

        Each variant is rendered once by the paper's warp (a real stays as it is) into its split,
        and once by each other forger of the split (``train_forgers``, ``sets.forgers``) into
        ``forger_set(split, forger)``, from the same draws: the same ROI and augmentation, and for
        a real the same crop file. With ``fakes.jpeg`` every rendered photo is re-saved as JPEG at
        a quality drawn per rendering before it is cut; a swap of the test split is saved as a
        swap tool saves, at the head photo's own quality.

        A test crop also gets its extra renderings (``testsets.derived_sets``): the sharpness-matched
        one (a real photo blurred by ``forgery.matched_sigma`` inside the region a fake of the same
        rendering would replace, with the same mask and feather; a fake unchanged) and one per JPEG
        quality (the rendered photo re-saved as JPEG, then cut by the same ROI). With
        ``augment.real_blur`` that share of the real train renderings, drawn per rendering, gets the
        matched blur too.

        Returns the index rows (one per variant, 'skipped' with a reason when something about the
        photo or crop is unusable, then one per other forger and extra rendering of an ok crop) and
        the preview images of the variants named in ``samples``, by (set, crop_id): in the split and
        in each other forger's set."""
        rgb, reason = self._photo(task)
        rows, extra_rows = [], []
        samples: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for variant, label in enumerate(task.labels):
            row = IndexRow(
                crop_id(task.photo_id, variant), task.photo_id, task.group, task.split, label, variant,
                reason=reason or "",
            )  # fmt: skip
            rows.append(row)
            if reason is None:
                extra_rows += self._variant(task, rgb, row, samples)
        return [dataclasses.asdict(row) for row in rows + extra_rows], samples

    def _photo(self, task: PhotoTask) -> tuple[np.ndarray | None, str | None]:
        """The photo, or why it can't be used (landmarks checked before reading: none, NaN, ...)."""
        rgb, reason = None, alignment.check_landmarks(task.landmarks)
        if reason is None:
            try:
                rgb = load_rgb(Path(self.raw_dir) / task.path)
            except ImageError as exc:
                reason = f"unreadable image: {exc}"
        if rgb is not None:
            reason = alignment.check_landmarks(task.landmarks, rgb.shape)
        return rgb, reason

    def forgers(self, split: str) -> tuple[str, ...]:
        """The forgers a split's fakes are rendered by: warp first."""
        others = self.train_forgers if split == TRAIN else self.sets.forgers
        return (PAPER_FORGER, *(f for f in others if f != PAPER_FORGER))

    def draw(self, rng: np.random.Generator, landmarks: np.ndarray, shape: tuple[int, ...]) -> Drawn:
        fakes = self.fakes
        size = int(rng.integers(fakes.scales[0], fakes.scales[1] + 1))
        mask_u = rng.random()
        mask = fakes.mask if fakes.mask != "random" else ("hull" if mask_u < 0.5 else "square")
        box = roi.roi_box(landmarks, shape, rng, dx_max=self.roi.dx_max, dy_max=self.roi.dy_max)
        return Drawn(size, mask, box, augment.draw(rng, self.augment))

    def _quality(self, task: PhotoTask, variant: int, forger: str) -> int | None:
        """The JPEG quality a rendering is saved at before it is cut (None: not re-saved)."""
        if forger == "swap" and task.split == TEST:
            return images.jpeg_quality(Path(self.raw_dir) / task.path)
        if not self.fakes.jpeg:
            return None
        low, high = self.fakes.jpeg
        return int(
            seeding.rng(self.seed, "materialize", task.photo_id, variant, "jpeg").integers(low, high + 1)
        )

    def _variant(self, task: PhotoTask, rgb: np.ndarray, row: IndexRow, samples: dict) -> list[IndexRow]:
        """Render and save one variant, filling in its ``row``; the rows of its other forgers' and
        extra renderings."""
        rng = seeding.rng(self.seed, "materialize", task.photo_id, row.variant)
        drawn = self.draw(rng, task.landmarks, rgb.shape)
        row.roi_x1, row.roi_y1, row.roi_x2, row.roi_y2 = drawn.box
        row.augment = augment_json(drawn.values) if task.split == TRAIN else "{}"
        row.quality = self._quality(task, row.variant, PAPER_FORGER)
        try:
            rendered, soft, sigma = self._rendering(task, rgb, row, drawn)
            rendered = _resaved(rendered, row.quality)
            piece = self._cut(row, rendered, drawn, task.split)
        except (cv2.error, ValueError, np.linalg.LinAlgError) as exc:
            row.reason = _failure(exc)
            return []
        if piece is None:
            return []
        extra_rows = [
            self._forged(task, rgb, row, drawn, forger, samples) for forger in self.forgers(task.split)[1:]
        ]
        if task.split == TEST:
            soft = None if soft is None else _resaved(soft, row.quality)
            for set_name, image in self._extra_renderings(rendered, soft):
                extra = dataclasses.replace(row, split=set_name)
                self._cut(extra, image, drawn, set_name)
                if set_name == MATCHED and soft is not None:
                    extra.scale, extra.mask, extra.blur_sigma = drawn.size, drawn.mask, round(sigma, 4)
                extra_rows.append(extra)
        if row.crop_id in self.samples:
            samples[(task.split, row.crop_id)] = _preview(rgb, rendered, piece)
        return extra_rows

    def _cut(self, row: IndexRow, photo: np.ndarray, drawn: Drawn, folder: str) -> np.ndarray | None:
        """Cut the ROI of a rendered photo, augment it (train), resize and save it into ``folder``
        (with ela.at: photo, also the piece of the photo around it); the crop, or None (with the
        row's reason) when the ROI is too small."""
        box = drawn.box
        piece = roi.crop(photo, box)
        if piece is None:
            row.reason = f"empty crop: ROI {box[2] - box[0] + 1}x{box[3] - box[1] + 1} px"
            return None
        if row.augment != "{}":  # a train crop
            piece = augment.apply(piece, drawn.values)
        piece = roi.resize(piece, self.roi.size)
        row.status, row.reason, row.path = "ok", "", self._save(folder, row.crop_id, piece)
        if self.ela_at == "photo":
            x1, y1, x2, y2 = piece_box(box, photo.shape)
            row.piece_x1, row.piece_y1 = x1, y1
            row.piece_path = self._save(f"pieces/{folder}", row.crop_id, photo[y1 : y2 + 1, x1 : x2 + 1])
        return piece

    def _forged(
        self, task: PhotoTask, rgb: np.ndarray, row: IndexRow, drawn: Drawn, forger: str, samples: dict
    ) -> IndexRow:
        """The row of one variant in another forger's set: a real's own crop, or that forger's fake
        (its preview kept in ``samples`` when the variant is one of ``self.samples``)."""
        set_name = forger_set(task.split, forger)
        out = dataclasses.replace(row, split=set_name)
        if row.label == 0:
            return out
        out.status, out.path, out.piece_path, out.piece_x1, out.piece_y1 = "skipped", "", "", None, None
        out.forger, out.scale, out.mask, out.donor = forger, None, "", ""
        out.quality = self._quality(task, row.variant, forger)
        try:
            fake = _resaved(self._forge(task, rgb, row.variant, forger, out), out.quality)
            piece = self._cut(out, fake, drawn, set_name)
            if piece is not None and row.crop_id in self.samples:
                samples[(set_name, row.crop_id)] = _preview(rgb, fake, piece)
        except (cv2.error, ValueError, np.linalg.LinAlgError, ImageError) as exc:
            out.reason = _failure(exc)
        return out

    def _forge(
        self, task: PhotoTask, rgb: np.ndarray, variant: int, forger: str, row: IndexRow
    ) -> np.ndarray:
        """A fake of ``rgb`` by the blend or swap forger, from the variant's own draws."""
        rng = seeding.rng(self.seed, "materialize", task.photo_id, variant, forger)
        if forger == "blend":
            return forgery.blend(rgb, task.landmarks, rng=rng, params=self.fakes.blend)[0]
        donor = task.donors[variant] if variant < len(task.donors) else None
        if donor is None:
            raise ValueError(
                "no swap donor: no usable face of another group in this split, at least half as large"
            )
        row.donor = donor.photo_id
        donor_rgb = load_rgb(Path(self.raw_dir) / donor.path)
        return forgery.swap(rgb, task.landmarks, donor_rgb, donor.landmarks, rng=rng, params=self.fakes.swap)[
            0
        ]

    def _rendering(
        self, task: PhotoTask, rgb: np.ndarray, row: IndexRow, drawn: Drawn
    ) -> tuple[np.ndarray, np.ndarray | None, float]:
        """(the rendered photo, the real photo as soft as a fake of this rendering where that is
        soft or None, that blur's sigma)."""
        fakes, rendered = self.fakes, rgb
        if row.label == 1:
            rendered, _ = forgery.warp(
                rgb, task.landmarks, self.template, size=drawn.size, mask=drawn.mask,
                blur_kernel=fakes.blur_kernel, feather=fakes.feather,
            )  # fmt: skip
            row.forger, row.scale, row.mask = PAPER_FORGER, drawn.size, drawn.mask
        soft, sigma = None, 0.0
        if row.label == 0 and self._wants_soft(task, row.variant):
            sigma = forgery.matched_sigma(task.landmarks, self.template, drawn.size, fakes.blur_kernel)
            region = forgery.fake_region(
                rgb.shape, task.landmarks, self.template, size=drawn.size, mask=drawn.mask
            )
            soft = forgery.blur_region(rgb, region, sigma, fakes.feather)
        if task.split == TRAIN and soft is not None:
            rendered = soft
            row.scale, row.mask, row.blur_sigma = drawn.size, drawn.mask, round(sigma, 4)
        return rendered, soft, sigma

    def _wants_soft(self, task: PhotoTask, variant: int) -> bool:
        """Whether a real rendering gets the matched blur: always for the test split's matched set, for
        a seeded ``augment.real_blur`` share of the train split (its own draw: the others are unchanged)."""
        if task.split != TRAIN:
            return self.sets.matched_blur
        if self.augment.real_blur <= 0:
            return False
        draw = seeding.rng(self.seed, "materialize", task.photo_id, variant, "real_blur").random()
        return draw < self.augment.real_blur

    def _extra_renderings(
        self, rendered: np.ndarray, soft: np.ndarray | None
    ) -> list[tuple[str, np.ndarray]]:
        """The extra rendered photos of one test variant, by set name (see ``testsets.derived_sets``):
        the matched one (``soft``, a real's matched blur; a fake stays as it is) and one per JPEG
        quality (the rendered photo re-saved)."""
        extras = []
        if self.sets.matched_blur:
            extras.append((MATCHED, rendered if soft is None else soft))
        for quality in self.sets.jpeg_qualities:
            extras.append((jpeg_set(quality), ela.jpeg_roundtrip(rendered, quality)))
        return extras

    def _save(self, folder: str, name: str, image: np.ndarray) -> str:
        relative = f"{folder}/{name}.png"
        target = os.path.join(self.out_dir, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        save_png(target, image)
        return relative


def _preview(original: np.ndarray, rendered: np.ndarray, crop: np.ndarray) -> dict[str, np.ndarray]:
    """A gallery sample's images: the photos shrunk for the figure, the crop as saved."""
    return {
        "original": roi.shrink(original, SAMPLE_SIDE),
        "rendered": roi.shrink(rendered, SAMPLE_SIDE),
        "crop": crop,
    }


def _resaved(rgb: np.ndarray, quality: int | None) -> np.ndarray:
    return rgb if quality is None else ela.jpeg_roundtrip(rgb, quality)


def _failure(exc: BaseException) -> str:
    return f"render failed: {exc}".replace("\n", " ")[:200]


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise StageError(f"{path} not found (run the earlier stages first)")
    frame = pd.read_csv(
        path, dtype={"id": str, "group": str, "split": str, "path": str}, keep_default_na=False
    )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StageError(f"{path} lacks columns {missing}")
    return frame


def build_tasks(
    p: P.Params, split_path: Path, landmarks_path: Path, raw_dir: Path
) -> tuple[list[PhotoTask], list[np.ndarray]]:
    """One task per photo of the split (sorted by id) and the training landmark sets; with swaps,
    each fake's donor (``assign_donors``; the photos' sizes read from their headers in ``raw_dir``)."""
    split = read_table(split_path, ["id", "group", "split"])
    bad = sorted(set(split["split"]) - set(SPLITS))
    if bad:
        raise StageError(f"{split_path}: unknown split names {bad}")
    if split["id"].duplicated().any():
        raise StageError(f"{split_path}: duplicate ids, e.g. {split['id'][split['id'].duplicated()].iloc[0]}")
    table = read_table(landmarks_path, ["id", "path", *alignment.landmark_columns()])
    table = table.drop_duplicates("id", keep="first")
    try:
        points = alignment.landmarks_from_table(table)
    except ValueError as exc:
        raise StageError(f"{landmarks_path}: {exc}") from None
    by_id = {photo_id: (path, points[i]) for i, (photo_id, path) in enumerate(table[["id", "path"]].values)}
    tasks, train_sets = [], []
    for row in split.sort_values("id").itertuples(index=False):
        path, landmarks = by_id.get(row.id, ("", None))
        labels = assign_labels(p.seed, row.id, p.materialize.variants, p.fakes.fraction)
        tasks.append(PhotoTask(row.id, row.group, row.split, path, landmarks, tuple(labels)))
        if row.split == TRAIN and landmarks is not None and alignment.check_landmarks(landmarks) is None:
            train_sets.append(landmarks)
    if "swap" in (*p.train.forgers(), *p.testsets.forgers):
        sizes = {
            t.photo_id: size for t in tasks if (size := images.header_size(raw_dir / t.path)) is not None
        }
        tasks = assign_donors(tasks, p.seed, p.fakes.swap.donors, sizes)
    return tasks, train_sets


def _shape(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks 17-67 centred and scaled to unit norm: what two faces' poses are compared by."""
    inner = np.asarray(landmarks, dtype=np.float64)[alignment.INNER]
    inner = inner - inner.mean(axis=0)
    return (inner / max(np.linalg.norm(inner), 1e-9)).ravel()


def assign_donors(
    tasks: list[PhotoTask], seed: int, nearest: int, sizes: dict[str, tuple[int, int]] | None = None
) -> list[PhotoTask]:
    """Each fake variant's swap donor: drawn (seeded by the photo and variant) among the
    ``nearest`` photos of the same split but another group whose landmarks are closest in shape
    (Face X-ray's choice: a face of a similar pose and build pastes plausibly). A donor's
    landmarks must be usable (inside its photo, of ``sizes``: id -> (width, height), when given)
    and its face at least half as large as the head's, so that it is not blown up into a blur."""

    def usable(t: PhotoTask) -> bool:
        if t.landmarks is None or (sizes is not None and t.photo_id not in sizes):
            return False
        shape = None if sizes is None else sizes[t.photo_id][::-1]
        return alignment.check_landmarks(t.landmarks, shape) is None

    out = []
    for split in SPLITS:
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
                        rng = seeding.rng(seed, "donor", task.photo_id, variant)
                        pick = pool[ranked[rng.integers(len(ranked))]]
                        donors[variant] = Donor(pick.photo_id, pick.path, pick.landmarks)
            out.append(dataclasses.replace(task, donors=tuple(donors)))
    order = {t.photo_id: i for i, t in enumerate(tasks)}
    return sorted(out, key=lambda t: order[t.photo_id])


def template_json(template: np.ndarray, n_faces: int) -> str:
    """data/template.json: the template's points and how they were made (keys in this order)."""
    doc = {
        "landmarks": list(range(68)[alignment.INNER]),
        "points": [[float(x), float(y)] for x, y in template],
        "n_faces": n_faces,
        "method": "generalized Procrustes analysis of the training landmarks 17-67, "
        "upright (eye line horizontal), each axis scaled to [0, 1]",
    }
    return json.dumps(doc, indent=2) + "\n"


def choose_samples(frame: pd.DataFrame, forgers: tuple[str, ...]) -> list[tuple[str, str]]:
    """Gallery samples as (set, crop_id), in column order: for each of N_SAMPLE_PHOTOS test photos,
    its first ok real, then one fake variant in the set of each of ``forgers`` (warp's: ``test``)
    where it is ok. The fake variant is the photo's first that is ok in the most sets; the photos
    whose fake is ok in the most sets come first, then by photo_id."""
    sets = [forger_set(TEST, forger) for forger in forgers]
    ok = frame[frame["status"] == "ok"]
    fakes = ok[(ok["label"] == 1) & ok["split"].isin(sets)]
    n_sets = fakes.groupby("crop_id")["split"].nunique()
    candidates = []
    for photo_id, rows in ok[ok["split"] == TEST].groupby("photo_id", sort=True):
        reals = sorted(rows.loc[rows["label"] == 0, "crop_id"])
        fake_ids = sorted(rows.loc[rows["label"] == 1, "crop_id"])
        if reals and fake_ids:
            fake = max(fake_ids, key=n_sets.get)  # the first of the most
            candidates.append((-n_sets[fake], photo_id, reals[0], fake))
    chosen = []
    for _, _, real, fake in sorted(candidates)[:N_SAMPLE_PHOTOS]:
        have = set(fakes.loc[fakes["crop_id"] == fake, "split"])
        chosen += [(TEST, real), *((name, fake) for name in sets if name in have)]
    return chosen


def render_samples(tasks: list[PhotoTask], renderer: Renderer, frame: pd.DataFrame, folder: Path) -> None:
    """Render the chosen samples' photos again by the test split's forgers (deterministic, so the
    same crops) keeping the previews, and save them with their index into ``folder``."""
    chosen = choose_samples(frame, renderer.forgers(TEST))
    crops = {crop for _, crop in chosen}
    photos = set(frame.loc[frame["crop_id"].isin(crops), "photo_id"])
    previews: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="materialize-samples-") as scratch:
        no_extras = P.ExtraSetsParams(forgers=renderer.sets.forgers, matched_blur=False, jpeg_qualities=())
        again = dataclasses.replace(
            renderer, out_dir=scratch, samples=frozenset(crops), sets=no_extras,
            train_forgers=(PAPER_FORGER,), ela_at="crop",
        )  # fmt: skip
        for task in tasks:
            if task.photo_id in photos:
                previews.update(again(task)[1])
    rows = frame.set_index(["split", "crop_id"], drop=False)
    gallery.write_samples(folder, [(rows.loc[key].to_dict(), previews[key]) for key in chosen])


def set_names(frame: pd.DataFrame) -> list[str]:
    """The splits, then the train split's other forgers' sets (in FORGERS order), then the test
    split's sets in ``set_order``."""
    names = set(frame["split"]) - set(SPLITS)
    train = [forger_set(TRAIN, f) for f in P.FORGERS if forger_set(TRAIN, f) in names]
    return [*SPLITS, *train, *set_order(names - set(train))]


def read_index(folder: str | os.PathLike) -> pd.DataFrame:
    """The ok rows of ``folder``/index.csv (the crops, index order); DatasetError when it is
    missing or lacks a column the ela stage reads."""
    path = Path(folder) / "index.csv"
    if not path.exists():
        raise DatasetError(f"{path} not found (run the materialize stage first)")
    text = (
        "crop_id",
        "photo_id",
        "group",
        "split",
        "path",
        "piece_path",
        "augment",
        "forger",
        "donor",
        "mask",
    )
    frame = pd.read_csv(path, dtype=dict.fromkeys(text, str))
    missing = {"crop_id", "photo_id", "group", "split", "label", "status", "path"} - set(frame.columns)
    if missing:
        raise DatasetError(f"{path} lacks columns {sorted(missing)}")
    for column in set(text) & set(frame.columns):
        frame[column] = frame[column].fillna("")
    return frame[frame["status"] == "ok"].reset_index(drop=True)


def test_rows(index: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of every test set the index holds (``test``, ``test_<forger>``, the extra
    renderings), by set name."""
    return {name: index[index["split"] == name] for name in set_names(index) if name.startswith(TEST)}


def recipe_rows(index: pd.DataFrame, recipe: str, seed: int) -> pd.DataFrame:
    """What a model of a training recipe trains on: the train split's reals, and at each fake's
    place the fake of one of the recipe's forgers (drawn per crop, seeded by its id), in crop order.
    A fake that forger couldn't render is left out."""
    forgers = P.recipe_forgers(recipe)
    if len(forgers) == 1:
        return index[index["split"] == forger_set(TRAIN, forgers[0])]
    base = index[index["split"] == TRAIN]
    chosen = {
        crop: forger_set(TRAIN, forgers[seeding.rng(seed, "recipe", recipe, crop).integers(len(forgers))])
        for crop in base.loc[base["label"] == 1, "crop_id"]
    }
    wanted = (index["label"] == 1) & (index["split"] == index["crop_id"].map(chosen))
    rows = pd.concat([base[base["label"] == 0], index[wanted]])
    return rows.sort_values("crop_id", kind="stable")


def index_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per crop file: the train and test crops in crop_id order, then each extra test
    rendering's rows (same crop ids) in the order the sets were made."""
    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    rank = {name: i for i, name in enumerate(set_names(frame))}
    is_extra = ~frame["split"].isin(SPLITS)
    frame["_rank"] = np.where(is_extra, frame["split"].map(rank), 0)
    frame = frame.sort_values(["_rank", "crop_id"], kind="stable").drop(columns="_rank")
    for column in ("quality", "scale", "roi_x1", "roi_y1", "roi_x2", "roi_y2", "piece_x1", "piece_y1"):
        frame[column] = frame[column].astype("Int64")
    frame["blur_sigma"] = frame["blur_sigma"].astype("Float64")
    return frame.reset_index(drop=True)


def _counts(ok: pd.DataFrame, split: str) -> dict[str, int]:
    return {
        "real": int(((ok["split"] == split) & (ok["label"] == 0)).sum()),
        "fake": int(((ok["split"] == split) & (ok["label"] == 1)).sum()),
    }


def summarise(frame: pd.DataFrame, n_photos: int, seconds: float, workers: int) -> dict:
    extra = ~frame["split"].isin(SPLITS)
    extra_ok = frame[extra & (frame["status"] == "ok")]
    frame = frame[~extra]
    ok = frame[frame["status"] == "ok"]
    counts = {split: _counts(ok, split) for split in SPLITS}
    skipped = frame[frame["status"] != "ok"]
    reasons = Counter(reason.split(":")[0] for reason in skipped["reason"])
    return {
        "photos": n_photos,
        "photos_with_crops": int(ok["photo_id"].nunique()),
        "crops": int(len(ok)),
        "counts": counts,
        "fake_fraction": round(float(ok["label"].mean()), 4) if len(ok) else None,
        "skipped": int(len(skipped)),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "extra_sets": {name: _counts(extra_ok, name) for name in dict.fromkeys(extra_ok["split"])},
        "train_reals_blurred": int(((ok["split"] == TRAIN) & ok["blur_sigma"].notna()).sum()),
        "seconds": round(seconds, 2),
        "photos_per_s": round(n_photos / seconds, 2) if seconds > 0 else None,
        "workers": workers,
    }

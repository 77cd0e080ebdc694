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

from faceswap_ela import alignment, augment, ela, forgery, gallery, roi, seeding
from faceswap_ela import params as P
from faceswap_ela.dataset import DatasetError
from faceswap_ela.images import ImageError, load_rgb, save_png
from faceswap_ela.stage import StageError
from faceswap_ela.testsets import MATCHED, SPLITS, TEST, TRAIN, jpeg_set

N_FAKE_SAMPLES, N_REAL_SAMPLES = 6, 2
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
    scale: int | None = None
    mask: str = ""
    roi_x1: int | None = None
    roi_y1: int | None = None
    roi_x2: int | None = None
    roi_y2: int | None = None
    augment: str = ""
    blur_sigma: float | None = None


INDEX_COLUMNS = [f.name for f in dataclasses.fields(IndexRow)]


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


@dataclass(frozen=True)
class PhotoTask:
    photo_id: str
    group: str
    split: str
    path: str  # relative to raw_dir
    landmarks: np.ndarray | None
    labels: tuple[int, ...]


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
    samples: frozenset[str] = field(default_factory=frozenset)
    sets: P.ExtraSetsParams = field(default_factory=P.ExtraSetsParams)

    def __call__(self, task: PhotoTask) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
        """Render, crop, augment (train only), resize and save every variant of one photo.

        A test crop also gets its extra renderings (``testsets.derived_sets``): the sharpness-matched
        one (a real photo blurred by ``forgery.matched_sigma`` inside the region a fake of the same
        rendering would replace, with the same mask and feather; a fake unchanged) and one per JPEG
        quality (the rendered photo re-saved as JPEG, then cut by the same ROI). With
        ``augment.real_blur`` that share of the real train renderings, drawn per rendering, gets the
        matched blur too.

        Returns the index rows (one per variant, 'skipped' with a reason when something about the
        photo or crop is unusable, then one per extra rendering of an ok test crop) and the preview
        images of the variants named in ``samples``."""
        rgb, reason = self._photo(task)
        rows, extra_rows = [], []
        samples: dict[str, dict[str, np.ndarray]] = {}
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

    def draw(self, rng: np.random.Generator, landmarks: np.ndarray, shape: tuple[int, ...]) -> Drawn:
        fakes = self.fakes
        size = int(rng.integers(fakes.scales[0], fakes.scales[1] + 1))
        mask_u = rng.random()
        mask = fakes.mask if fakes.mask != "random" else ("hull" if mask_u < 0.5 else "square")
        box = roi.roi_box(landmarks, shape, rng, dx_max=self.roi.dx_max, dy_max=self.roi.dy_max)
        return Drawn(size, mask, box, augment.draw(rng, self.augment))

    def _variant(self, task: PhotoTask, rgb: np.ndarray, row: IndexRow, samples: dict) -> list[IndexRow]:
        """Render and save one variant, filling in its ``row``; the rows of its extra renderings."""
        rng = seeding.rng(self.seed, "materialize", task.photo_id, row.variant)
        drawn = self.draw(rng, task.landmarks, rgb.shape)
        box = drawn.box
        row.roi_x1, row.roi_y1, row.roi_x2, row.roi_y2 = box
        try:
            rendered, soft, sigma = self._rendering(task, rgb, row, drawn)
            piece = roi.crop(rendered, box)
            if piece is None:
                row.reason = f"empty crop: ROI {box[2] - box[0] + 1}x{box[3] - box[1] + 1} px"
                return []
            extras: dict[str, np.ndarray] = {}
            if task.split == TRAIN:
                piece = augment.apply(piece, drawn.values)
                row.augment = augment_json(drawn.values)
            else:
                row.augment = "{}"
                extras = self._extra_renderings(rendered, soft, box)
            piece = roi.resize(piece, self.roi.size)
        except (cv2.error, ValueError, np.linalg.LinAlgError) as exc:
            row.reason = f"render failed: {exc}".replace("\n", " ")[:200]
            return []
        row.status, row.path = "ok", self._save(task.split, row.crop_id, piece)
        extra_rows = []
        for set_name, image in extras.items():
            extra = dataclasses.replace(row, split=set_name, path=self._save(set_name, row.crop_id, image))
            if set_name == MATCHED and soft is not None:
                extra.scale, extra.mask, extra.blur_sigma = drawn.size, drawn.mask, round(sigma, 4)
            extra_rows.append(extra)
        if row.crop_id in self.samples:
            samples[row.crop_id] = {
                "original": roi.shrink(rgb, SAMPLE_SIDE),
                "rendered": roi.shrink(rendered, SAMPLE_SIDE),
                "crop": piece,
            }
        return extra_rows

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
            row.scale, row.mask = drawn.size, drawn.mask
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
        self, rendered: np.ndarray, soft: np.ndarray | None, box: tuple[int, int, int, int]
    ) -> dict[str, np.ndarray]:
        """The extra renderings of one test crop, by set name (see ``testsets.derived_sets``): the
        matched one cut from ``soft`` (a real's matched blur; None for a fake, which stays as it is)
        and one per JPEG quality, cut from the rendered photo re-saved."""
        extras = {}
        if self.sets.matched_blur:
            extras[MATCHED] = roi.resize(roi.crop(rendered if soft is None else soft, box), self.roi.size)
        for quality in self.sets.jpeg_qualities:
            resaved = ela.jpeg_roundtrip(rendered, quality)
            extras[jpeg_set(quality)] = roi.resize(roi.crop(resaved, box), self.roi.size)
        return extras

    def _save(self, folder: str, name: str, image: np.ndarray) -> str:
        relative = f"{folder}/{name}.png"
        save_png(os.path.join(self.out_dir, relative), image)
        return relative


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
    p: P.Params, split_path: Path, landmarks_path: Path
) -> tuple[list[PhotoTask], list[np.ndarray]]:
    """One task per photo of the split (sorted by id) and the training landmark sets."""
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
    return tasks, train_sets


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


def choose_samples(frame: pd.DataFrame) -> list[str]:
    """Gallery samples, in crop_id order among the test split's ok crops: the first fake of each
    of the first N_FAKE_SAMPLES photos, then the first real of each of the first N_REAL_SAMPLES."""
    ok = frame[(frame["split"] == TEST) & (frame["status"] == "ok")]
    chosen = []
    for label, count in ((1, N_FAKE_SAMPLES), (0, N_REAL_SAMPLES)):
        firsts = ok[ok["label"] == label].drop_duplicates("photo_id", keep="first")
        chosen += list(firsts["crop_id"][:count])
    return chosen


def render_samples(tasks: list[PhotoTask], renderer: Renderer, frame: pd.DataFrame, folder: Path) -> None:
    """Render the chosen samples' photos again (deterministic, so the same crops) keeping the
    previews, and save them with their index into ``folder``."""
    chosen = choose_samples(frame)
    photos = set(frame.set_index("crop_id").loc[chosen, "photo_id"]) if chosen else set()
    previews: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="materialize-samples-") as scratch:
        for split in SPLITS:
            (Path(scratch) / split).mkdir()
        no_extras = P.ExtraSetsParams(matched_blur=False, jpeg_qualities=())
        again = dataclasses.replace(renderer, out_dir=scratch, samples=frozenset(chosen), sets=no_extras)
        for task in tasks:
            if task.photo_id in photos:
                previews.update(again(task)[1])
    rows = frame[frame["split"].isin(SPLITS)].set_index("crop_id", drop=False)
    gallery.write_samples(folder, [(rows.loc[name].to_dict(), previews[name]) for name in chosen])


def set_names(frame: pd.DataFrame) -> list[str]:
    """The splits, then the extra test renderings, in the order they appear in the index."""
    extra = [name for name in dict.fromkeys(frame["split"]) if name not in SPLITS]
    return [*SPLITS, *extra]


def read_index(folder: str | os.PathLike) -> pd.DataFrame:
    """The ok rows of ``folder``/index.csv (the crops, index order); DatasetError when it is
    missing or lacks a column the ela stage reads."""
    path = Path(folder) / "index.csv"
    if not path.exists():
        raise DatasetError(f"{path} not found (run the materialize stage first)")
    frame = pd.read_csv(
        path, dtype={"crop_id": str, "photo_id": str, "group": str, "split": str, "path": str}
    )
    missing = {"crop_id", "photo_id", "group", "split", "label", "status", "path"} - set(frame.columns)
    if missing:
        raise DatasetError(f"{path} lacks columns {sorted(missing)}")
    return frame[frame["status"] == "ok"].reset_index(drop=True)


def index_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per crop file: the train and test crops in crop_id order, then each extra test
    rendering's rows (same crop ids) in the order the sets were made."""
    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    rank = {name: i for i, name in enumerate(set_names(frame))}
    is_extra = ~frame["split"].isin(SPLITS)
    frame["_rank"] = np.where(is_extra, frame["split"].map(rank), 0)
    frame = frame.sort_values(["_rank", "crop_id"], kind="stable").drop(columns="_rank")
    for column in ("scale", "roi_x1", "roi_y1", "roi_x2", "roi_y2"):
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
        "extra_test_sets": {name: _counts(extra_ok, name) for name in dict.fromkeys(extra_ok["split"])},
        "train_reals_blurred": int(((ok["split"] == TRAIN) & ok["blur_sigma"].notna()).sum()),
        "seconds": round(seconds, 2),
        "photos_per_s": round(n_photos / seconds, 2) if seconds > 0 else None,
        "workers": workers,
    }

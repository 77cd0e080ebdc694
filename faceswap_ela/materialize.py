"""The materialize stage's renderings: which photos to render (one PhotoTask per photo of the
split), and the Renderer that renders, cuts and saves every variant of a photo and says what it
made, from which the crop index's rows are built (faceswap_ela.crop_index). The fakes themselves
are made in faceswap_ela.forgery, the swap donors chosen in faceswap_ela.donors and the gallery's
samples in faceswap_ela.samples.

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
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from faceswap_ela import alignment, augment, ela, forgery, images, roi, seeding
from faceswap_ela import params as P
from faceswap_ela.crop_index import Cut, IndexRow, Made, augment_json, crop_id, index_row
from faceswap_ela.donors import Donor, assign_donors
from faceswap_ela.images import ImageError, load_rgb, save_png
from faceswap_ela.stage import StageError
from faceswap_ela.testsets import MATCHED, PAPER_FORGER, SPLITS, TEST, TRAIN, forger_set, jpeg_set

SAMPLE_SIDE = 320  # long side of the preview photos kept for the gallery
GRID = 16  # the JPEG grid of 4:2:0 (two 8 x 8 luma blocks a side); a piece starts on it
PIECE_MARGIN = GRID  # and reaches one grid cell beyond the ROI, so the decoder's chroma upsampling
# sees the same neighbours as in the whole photo

Previews = dict[tuple[str, str], dict[str, np.ndarray]]  # (set, crop_id) -> a gallery sample's images


@dataclass(frozen=True)
class PhotoTask:
    """One photo to render: its split and group, file, landmarks, the labels of its variants and,
    with swaps, each fake variant's donor."""

    photo_id: str
    group: str
    split: str
    path: str  # relative to raw_dir
    landmarks: np.ndarray | None
    labels: tuple[int, ...]
    donors: tuple[Donor | None, ...] = ()  # per variant: a fake's swap donor


def assign_labels(seed: int, photo_id: str, variants: int, fraction: float) -> list[int]:
    """Which of a photo's renderings are fakes (1) and which stay real (0); see the module doc."""
    rng = seeding.rng(seed, "materialize", photo_id, "labels")
    exact = fraction * variants
    n_fakes = math.floor(exact) + int(rng.random() < exact - math.floor(exact))
    labels = np.zeros(variants, dtype=int)
    labels[rng.permutation(variants)[:n_fakes]] = 1
    return [int(v) for v in labels]


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

    def __call__(self, task: PhotoTask) -> tuple[list[dict], Previews]:
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

        Returns the index rows as dicts (one per variant, 'skipped' with a reason when something
        about the photo or crop is unusable, then one per other forger and extra rendering of an ok
        crop) and the preview images of the variants named in ``samples``, by (set, crop_id): in the
        split and in each other forger's set."""
        rgb, reason = self._photo(task)
        rows, extra_rows = [], []
        samples: Previews = {}
        for variant, label in enumerate(task.labels):
            head = IndexRow(
                crop_id(task.photo_id, variant), task.photo_id, task.group, task.split, label, variant
            )
            if reason is not None:
                rows.append(index_row(head, Cut(reason=reason)))
                continue
            row, extras, previews = self._variant(task, rgb, head)
            rows.append(row)
            extra_rows += extras
            samples.update(previews)
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

    def _variant(
        self, task: PhotoTask, rgb: np.ndarray, head: IndexRow
    ) -> tuple[IndexRow, list[IndexRow], Previews]:
        """Render and save one variant (``head``: its crop's identity): its row, the rows of its
        other forgers' and extra renderings, and its previews when it is one of ``samples``."""
        rng = seeding.rng(self.seed, "materialize", task.photo_id, head.variant)
        drawn = self.draw(rng, task.landmarks, rgb.shape)
        x1, y1, x2, y2 = drawn.box
        head = dataclasses.replace(
            head, roi_x1=x1, roi_y1=y1, roi_x2=x2, roi_y2=y2,
            augment=augment_json(drawn.values) if task.split == TRAIN else "{}",
        )  # fmt: skip
        made = Made(quality=self._quality(task, head.variant, PAPER_FORGER))
        try:
            rendered, soft, sigma, made = self._rendering(task, rgb, head, drawn, made)
            rendered = _resaved(rendered, made.quality)
            cut, crop = self._cut(head, rendered, drawn, task.split)
        except (cv2.error, ValueError, np.linalg.LinAlgError) as exc:
            return index_row(head, Cut(reason=_failure(exc)), made=made), [], {}
        row = index_row(head, cut, made=made)
        if crop is None:
            return row, [], {}
        extra_rows, previews = [], {}
        for forger in self.forgers(task.split)[1:]:
            if head.label == 0:  # a real: its own crop, in that forger's set too
                extra_rows.append(dataclasses.replace(row, split=forger_set(task.split, forger)))
                continue
            forged, preview = self._forged(task, rgb, head, drawn, forger)
            extra_rows.append(forged)
            previews.update(preview)
        if task.split == TEST:
            soft = None if soft is None else _resaved(soft, made.quality)
            for set_name, image in self._extra_renderings(rendered, soft):
                extra_made = made
                if set_name == MATCHED and soft is not None:
                    extra_made = dataclasses.replace(
                        made, scale=drawn.size, mask=drawn.mask, blur_sigma=round(sigma, 4)
                    )
                extra_cut, _ = self._cut(head, image, drawn, set_name)
                extra_rows.append(index_row(head, extra_cut, made=extra_made, split=set_name))
        if head.crop_id in self.samples:
            previews[(task.split, head.crop_id)] = _preview(rgb, rendered, crop)
        return row, extra_rows, previews

    def _cut(
        self, head: IndexRow, photo: np.ndarray, drawn: Drawn, folder: str
    ) -> tuple[Cut, np.ndarray | None]:
        """Cut the ROI of a rendered photo, augment it (a train crop: ``head`` has augmentation),
        resize and save it into ``folder`` (with ela.at: photo, also the piece of the photo around
        it): the Cut and the crop, or a Cut with the reason and None when the ROI is too small."""
        box = drawn.box
        piece = roi.crop(photo, box)
        if piece is None:
            return Cut(reason=f"empty crop: ROI {box[2] - box[0] + 1}x{box[3] - box[1] + 1} px"), None
        if head.augment != "{}":  # a train crop
            piece = augment.apply(piece, drawn.values)
        piece = roi.resize(piece, self.roi.size)
        path = self._save(folder, head.crop_id, piece)
        if self.ela_at != "photo":
            return Cut(path), piece
        x1, y1, x2, y2 = piece_box(box, photo.shape)
        piece_path = self._save(f"pieces/{folder}", head.crop_id, photo[y1 : y2 + 1, x1 : x2 + 1])
        return Cut(path, piece_path, (x1, y1)), piece

    def _forged(
        self, task: PhotoTask, rgb: np.ndarray, head: IndexRow, drawn: Drawn, forger: str
    ) -> tuple[IndexRow, Previews]:
        """The row of one fake variant in another forger's set, and its preview when the variant is
        one of ``samples``."""
        set_name = forger_set(task.split, forger)
        made = Made(forger=forger, quality=self._quality(task, head.variant, forger))
        try:
            donor = None
            if forger == "swap":
                donor = self._donor(task, head.variant)
                made = dataclasses.replace(made, donor=donor.photo_id)
            fake = _resaved(self._forge(task, rgb, head.variant, forger, donor), made.quality)
            cut, crop = self._cut(head, fake, drawn, set_name)
        except (cv2.error, ValueError, np.linalg.LinAlgError, ImageError) as exc:
            return index_row(head, Cut(reason=_failure(exc)), made=made, split=set_name), {}
        previews = {}
        if crop is not None and head.crop_id in self.samples:
            previews[(set_name, head.crop_id)] = _preview(rgb, fake, crop)
        return index_row(head, cut, made=made, split=set_name), previews

    def _donor(self, task: PhotoTask, variant: int) -> Donor:
        """The swap donor of a fake variant (ValueError when it has none)."""
        donor = task.donors[variant] if variant < len(task.donors) else None
        if donor is None:
            raise ValueError(
                "no swap donor: no usable face of another group in this split, at least half as large"
            )
        return donor

    def _forge(
        self, task: PhotoTask, rgb: np.ndarray, variant: int, forger: str, donor: Donor | None
    ) -> np.ndarray:
        """A fake of ``rgb`` by the blend forger, or the swap forger with ``donor``'s face, from the
        variant's own draws."""
        rng = seeding.rng(self.seed, "materialize", task.photo_id, variant, forger)
        if forger == "blend":
            return forgery.blend(rgb, task.landmarks, rng=rng, params=self.fakes.blend)[0]
        donor_rgb = load_rgb(Path(self.raw_dir) / donor.path)
        return forgery.swap(rgb, task.landmarks, donor_rgb, donor.landmarks, rng=rng, params=self.fakes.swap)[
            0
        ]

    def _rendering(
        self, task: PhotoTask, rgb: np.ndarray, head: IndexRow, drawn: Drawn, made: Made
    ) -> tuple[np.ndarray, np.ndarray | None, float, Made]:
        """(the rendered photo, the real photo as soft as a fake of this rendering where that is
        soft or None, that blur's sigma, ``made`` with how the rendering was made)."""
        fakes, rendered = self.fakes, rgb
        if head.label == 1:
            rendered, _ = forgery.warp(
                rgb, task.landmarks, self.template, size=drawn.size, mask=drawn.mask,
                blur_kernel=fakes.blur_kernel, feather=fakes.feather,
            )  # fmt: skip
            made = dataclasses.replace(made, forger=PAPER_FORGER, scale=drawn.size, mask=drawn.mask)
        soft, sigma = None, 0.0
        if head.label == 0 and self._wants_soft(task, head.variant):
            sigma = forgery.matched_sigma(task.landmarks, self.template, drawn.size, fakes.blur_kernel)
            region = forgery.fake_region(
                rgb.shape, task.landmarks, self.template, size=drawn.size, mask=drawn.mask
            )
            soft = forgery.blur_region(rgb, region, sigma, fakes.feather)
        if task.split == TRAIN and soft is not None:
            rendered = soft
            made = dataclasses.replace(made, scale=drawn.size, mask=drawn.mask, blur_sigma=round(sigma, 4))
        return rendered, soft, sigma, made

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

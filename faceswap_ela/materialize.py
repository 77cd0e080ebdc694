"""The materialize stage's renderings: which photos to render (one PhotoTask per photo of the
split), and the Renderer that renders, cuts and saves every variant of a photo and says what it
made, from which the crop index's rows are built (faceswap_ela.crop_index). The fakes themselves
are made in faceswap_ela.forgery, the swap donors chosen in faceswap_ela.donors and the gallery's
samples in faceswap_ela.samples.

Each photo gives ``variants`` renderings (a train photo ``train_variants`` when not 0). Which ones
become fakes is drawn once per photo: round(fraction * variants) of them (the fractional part
decided by a seeded coin), at seeded positions. So each photo contributes both classes in the
paper's half/half ratio (with 4 variants: exactly 2 real + 2 fake), the classes are balanced
within every split and group, and the network can't tell the class from who is in the photo.
With ``train.pairs`` every train variant is a pair instead: its real and its fake, from the same
draws (Self-Blended Images' batches hold each real beside its own fake).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from faceswap_ela import alignment, augment, ela, forgery, images, roi, seeding, swaps, swapsets
from faceswap_ela import params as P
from faceswap_ela.crop_index import Cut, IndexRow, Made, augment_json, crop_id, index_row, pair_fake_id
from faceswap_ela.donors import Donor, assign_donors
from faceswap_ela.images import ImageError, load_rgb, save_png
from faceswap_ela.stage import StageError
from faceswap_ela.swapsets import SwapSet
from faceswap_ela.testsets import MATCHED, PAPER_FORGER, SPLITS, TEST, TRAIN, forger_set, jpeg_set

SAMPLE_SIDE = 320  # long side of the preview photos kept for the gallery

Previews = dict[tuple[str, str], dict[str, np.ndarray]]  # (set, crop_id) -> a gallery sample's images


@dataclass(frozen=True)
class PhotoTask:
    """One photo to render: its split and group, file, landmarks, the labels of its variants and,
    with swaps, each fake variant's donor (and its held-out swap's). A ``paired`` photo's variants
    are each a real and a fake (their labels all 1: each has a fake)."""

    photo_id: str
    group: str
    split: str
    path: str  # relative to raw_dir
    landmarks: np.ndarray | None
    labels: tuple[int, ...]
    donors: tuple[Donor | None, ...] = ()  # per variant: a fake's swap donor
    unseen_donors: tuple[Donor | None, ...] = ()  # the same for test_swap_unseen, drawn apart
    paired: bool = False


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
    each fake's donor (``assign_donors``; the photos' sizes read from their headers in ``raw_dir``),
    for the held-out swaps from a stream of their own."""
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
    variants = {TRAIN: p.materialize.train_variants or p.materialize.variants, TEST: p.materialize.variants}
    for row in split.sort_values("id").itertuples(index=False):
        path, landmarks = by_id.get(row.id, ("", None))
        paired = p.train.pairs and row.split == TRAIN
        n = variants[row.split]
        labels = (1,) * n if paired else tuple(assign_labels(p.seed, row.id, n, p.fakes.fraction))
        tasks.append(PhotoTask(row.id, row.group, row.split, path, landmarks, labels, paired=paired))
        if row.split == TRAIN and landmarks is not None and alignment.check_landmarks(landmarks) is None:
            train_sets.append(landmarks)
    swapped = "swap" in (*p.train.forgers(), *p.testsets.forgers)
    if swapped or p.testsets.unseen_swap is not None:
        sizes = {
            t.photo_id: size for t in tasks if (size := images.header_size(raw_dir / t.path)) is not None
        }
        if swapped:
            tasks = assign_donors(tasks, p.seed, p.fakes.swap.donors, sizes)
        if p.testsets.unseen_swap is not None:
            tasks = assign_donors(
                tasks, p.seed, p.fakes.swap.donors, sizes,
                splits=(TEST,), stream="donor_unseen", field="unseen_donors",
            )  # fmt: skip
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
        a real the same crop file, but in a swap set (``swapsets``: with the held-out swaps of
        ``sets.unseen_swap`` for test), which saves its reals as its fakes. With ``fakes.jpeg``
        every other rendered photo is re-saved as JPEG at a quality drawn per rendering before it is
        cut. A ``paired`` photo's variant is rendered twice: as a real, and as a fake (crop id
        ``pair_fake_id``), both rows naming the real's crop id as their ``pair``.

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
            real_id = crop_id(task.photo_id, variant)
            heads = [IndexRow(real_id, task.photo_id, task.group, task.split, label, variant)]
            if task.paired:
                heads = [
                    dataclasses.replace(heads[0], label=0, pair=real_id),
                    dataclasses.replace(heads[0], crop_id=pair_fake_id(real_id), label=1, pair=real_id),
                ]
            for head in heads:
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

    def _quality(self, task: PhotoTask, variant: int) -> int | None:
        """The JPEG quality a rendering of a set other than a swap set is saved at before it is cut
        (None: not re-saved)."""
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
        made = Made(quality=self._quality(task, head.variant))
        try:
            unsaved, soft, sigma, made = self._rendering(task, rgb, head, drawn, made)
            rendered = _resaved(unsaved, made.quality)
            cut, crop = self._cut(head, rendered, drawn, task.split)
        except (cv2.error, ValueError, np.linalg.LinAlgError) as exc:
            return index_row(head, Cut(reason=_failure(exc)), made=made), [], {}
        row = index_row(head, cut, made=made)
        if crop is None:
            return row, [], {}
        extra_rows, previews = [], {}
        for forger in self.forgers(task.split)[1:]:
            if forger == swapsets.FORGER:  # below, with the held-out swaps
                continue
            if head.label == 0:  # a real: its own crop, in that forger's set too
                extra_rows.append(dataclasses.replace(row, split=forger_set(task.split, forger)))
                continue
            forged, preview = self._blended(task, rgb, head, drawn)
            extra_rows.append(forged)
            previews.update(preview)
        for swap_set in swapsets.swap_sets(task.split, self.train_forgers, self.sets, self.fakes.swap):
            swapped, preview = self._swapped(task, rgb, unsaved, head, drawn, swap_set)
            extra_rows.append(swapped)
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
        previews.update(self._sample(task.split, head, rgb, rendered, crop))
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
        x1, y1, x2, y2 = roi.piece_box(box, photo.shape)
        piece_path = self._save(f"pieces/{folder}", head.crop_id, photo[y1 : y2 + 1, x1 : x2 + 1])
        return Cut(path, piece_path, (x1, y1)), piece

    def _blended(
        self, task: PhotoTask, rgb: np.ndarray, head: IndexRow, drawn: Drawn
    ) -> tuple[IndexRow, Previews]:
        """The row of one fake variant in the blend forger's set, and its preview when the variant
        is one of ``samples``."""
        set_name = forger_set(task.split, "blend")
        made = Made(forger="blend", quality=self._quality(task, head.variant))
        rng = seeding.rng(self.seed, "materialize", task.photo_id, head.variant, "blend")
        try:
            fake = forgery.blend(rgb, task.landmarks, rng=rng, params=self.fakes.blend)[0]
            fake = _resaved(fake, made.quality)
            cut, crop = self._cut(head, fake, drawn, set_name)
        except (cv2.error, ValueError, np.linalg.LinAlgError) as exc:
            return index_row(head, Cut(reason=_failure(exc)), made=made, split=set_name), {}
        return index_row(head, cut, made=made, split=set_name), self._sample(set_name, head, rgb, fake, crop)

    def _swapped(
        self,
        task: PhotoTask,
        rgb: np.ndarray,
        real: np.ndarray,
        head: IndexRow,
        drawn: Drawn,
        swap_set: SwapSet,
    ) -> tuple[IndexRow, Previews]:
        """The row of one variant in a swap set: a real (``real``, its rendering) re-saved as the set
        saves, or a swap of ``rgb`` by settings drawn from the set's (seeded by the photo, variant and
        the set's stream), re-saved; and its preview when the variant is one of ``samples``."""
        raw = Path(self.raw_dir)
        quality = swapsets.save_quality(swap_set, self.seed, task.photo_id, head.variant, raw / task.path)
        made = Made(quality=quality)
        try:
            if head.label == 1:
                donors = task.unseen_donors if swap_set.unseen else task.donors
                donor = self._donor(donors, head.variant)
                rng = seeding.rng(self.seed, "materialize", task.photo_id, head.variant, swap_set.stream)
                settings = swaps.draw(rng, swap_set.params)
                made = dataclasses.replace(made, forger="swap", donor=donor.photo_id, swap=settings.to_json())
                donor_rgb = load_rgb(raw / donor.path)
                real = swaps.paste(
                    rgb, task.landmarks, donor_rgb, donor.landmarks, settings, swap_set.params
                )[0]
            image = _resaved(real, quality)
            cut, crop = self._cut(head, image, drawn, swap_set.name)
        except (cv2.error, ValueError, np.linalg.LinAlgError, ImageError) as exc:
            return index_row(head, Cut(reason=_failure(exc)), made=made, split=swap_set.name), {}
        row = index_row(head, cut, made=made, split=swap_set.name)
        return row, self._sample(swap_set.name, head, rgb, image, crop) if head.label == 1 else {}

    def _sample(
        self, set_name: str, head: IndexRow, rgb: np.ndarray, fake: np.ndarray, crop: np.ndarray | None
    ) -> Previews:
        if crop is None or head.crop_id not in self.samples:
            return {}
        return {(set_name, head.crop_id): _preview(rgb, fake, crop)}

    @staticmethod
    def _donor(donors: tuple[Donor | None, ...], variant: int) -> Donor:
        """The swap donor of a fake variant (ValueError when it has none)."""
        donor = donors[variant] if variant < len(donors) else None
        if donor is None:
            raise ValueError(
                "no swap donor: no usable face of another group in this split, at least half as large"
            )
        return donor

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

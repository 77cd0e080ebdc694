"""The crop index, data/crops/index.csv: one row per crop file the materialize stage wrote, or per
rendering it had to skip (with the reason). Its columns (IndexRow), how a row is built from what a
rendering produced (``index_row`` of a Made and a Cut), the table of all rows in file order
(``index_frame``) and its summary, and the readers the ela stage takes its crops through
(``read_index``, ``recipe_rows``, ``test_rows``).

A real's row in another forger's set names the split's crop file, but in a swap set (``train_swap``,
``test_swap``, ``test_swap_unseen``), which saves its reals as its fakes: there the real has a crop
of its own, so ``test_swap``'s reals are not ``test``'s files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faceswap_ela import params as P
from faceswap_ela import seeding
from faceswap_ela.dataset import DatasetError
from faceswap_ela.testsets import SPLITS, TEST, TRAIN, forger_set, set_order


@dataclass(frozen=True)
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
    pair: str = ""  # train.pairs: the crop id of the variant's real, for its real and its fake
    swap: str = ""  # a swap's drawn settings (swaps.SwapDraw as JSON)


INDEX_COLUMNS = [f.name for f in dataclasses.fields(IndexRow)]


def crop_id(photo_id: str, variant: int) -> str:
    return f"{photo_id}__v{variant}"


def pair_fake_id(real_id: str) -> str:
    """The crop id of the fake beside the real ``real_id`` in a pair (train.pairs)."""
    return f"{real_id}_fake"


def augment_json(values: dict) -> str:
    """The drawn augmentation values as compact, sorted JSON (the index's augment column)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Made:
    """How a rendering was made, as the index records it: a fake's forger (warp, blend or swap)
    and a swap's donor photo and settings, the JPEG quality the rendered photo was saved at, and the
    aligned face's side (``scale``) and mask of a warp, or of a real's matched blur with its sigma."""

    forger: str = ""
    donor: str = ""
    quality: int | None = None
    scale: int | None = None
    mask: str = ""
    blur_sigma: float | None = None
    swap: str = ""


@dataclass(frozen=True)
class Cut:
    """What cutting a rendering gave: the crop's file (relative to the crops folder) and, with
    ela.at: photo, the file and top-left corner of the piece of the rendered photo around the ROI;
    or, without a crop, why there is none."""

    path: str = ""
    piece_path: str = ""
    piece_origin: tuple[int, int] | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.path)


NOT_MADE = Made()


def index_row(head: IndexRow, cut: Cut, *, made: Made = NOT_MADE, split: str | None = None) -> IndexRow:
    """The row of a rendering: ``head`` (the crop's identity, and its ROI and augmentation when they
    were drawn) with how the rendering was ``made``, in ``split`` (default ``head``'s), and the
    ``cut``: status ok with its files, or skipped with the reason."""
    piece_x1, piece_y1 = cut.piece_origin if cut.piece_origin is not None else (None, None)
    return dataclasses.replace(
        head,
        split=head.split if split is None else split,
        status="ok" if cut.ok else "skipped",
        reason="" if cut.ok else cut.reason,
        path=cut.path,
        forger=made.forger,
        donor=made.donor,
        quality=made.quality,
        scale=made.scale,
        mask=made.mask,
        blur_sigma=made.blur_sigma,
        piece_path=cut.piece_path,
        piece_x1=piece_x1,
        piece_y1=piece_y1,
        swap=made.swap,
    )


def set_names(frame: pd.DataFrame) -> list[str]:
    """The splits, then the train split's other forgers' sets (in FORGERS order), then the test
    split's sets in ``set_order``."""
    names = set(frame["split"]) - set(SPLITS)
    train = [forger_set(TRAIN, f) for f in P.FORGERS if forger_set(TRAIN, f) in names]
    return [*SPLITS, *train, *set_order(names - set(train))]


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
        "pair",
        "swap",
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
    """What a model of a training recipe trains on: the train split's crops, each from the set of
    one of the recipe's forgers (drawn per crop, or per pair with train.pairs, seeded by its id), in
    crop order. A real is the same crop in every forger's set but a swap set's, which re-saves it
    as its fakes; a crop that forger couldn't render is left out."""
    forgers = P.recipe_forgers(recipe)
    if len(forgers) == 1:
        return index[index["split"] == forger_set(TRAIN, forgers[0])]
    base = index[index["split"] == TRAIN]
    keys = (
        base["crop_id"].where(base["pair"].fillna("") == "", base["pair"])
        if "pair" in base
        else base["crop_id"]
    )
    chosen = {
        crop: forger_set(TRAIN, forgers[seeding.rng(seed, "recipe", recipe, key).integers(len(forgers))])
        for crop, key in zip(base["crop_id"], keys, strict=True)
    }
    rows = index[index["split"] == index["crop_id"].map(chosen)]
    return rows.sort_values("crop_id", kind="stable")


def _counts(ok: pd.DataFrame, split: str) -> dict[str, int]:
    return {
        "real": int(((ok["split"] == split) & (ok["label"] == 0)).sum()),
        "fake": int(((ok["split"] == split) & (ok["label"] == 1)).sum()),
    }


def summarise(frame: pd.DataFrame, n_photos: int, seconds: float, workers: int) -> dict:
    """metrics/materialize.json: the crops and skips of the splits (by reason), the crops of each
    other set, and the stage's time."""
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

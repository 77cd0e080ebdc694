"""The materialize stage's bookkeeping: which photos to render, the gallery samples, the crop
index and its summary. The rendering itself is in faceswap_ela.forgery."""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from faceswap_ela import alignment, forgery, gallery
from faceswap_ela import params as P
from faceswap_ela.stage import StageError

SPLITS = ("train", "test")
N_FAKE_SAMPLES, N_REAL_SAMPLES = 6, 2
INDEX_COLUMNS = [
    "crop_id", "photo_id", "group", "split", "label", "variant", "status", "reason", "path",
    "scale", "mask", "roi_x1", "roi_y1", "roi_x2", "roi_y2", "augment", "blur_sigma",
]  # fmt: skip


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
) -> tuple[list[forgery.PhotoTask], list[np.ndarray]]:
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
        labels = forgery.assign_labels(p.seed, row.id, p.materialize.variants, p.fakes.fraction)
        tasks.append(forgery.PhotoTask(row.id, row.group, row.split, path, landmarks, tuple(labels)))
        if row.split == "train" and landmarks is not None and alignment.check_landmarks(landmarks) is None:
            train_sets.append(landmarks)
    return tasks, train_sets


def choose_samples(frame: pd.DataFrame) -> list[str]:
    """Gallery samples, in crop_id order among the test split's ok crops: the first fake of each
    of the first N_FAKE_SAMPLES photos, then the first real of each of the first N_REAL_SAMPLES."""
    ok = frame[(frame["split"] == "test") & (frame["status"] == "ok")]
    chosen = []
    for label, count in ((1, N_FAKE_SAMPLES), (0, N_REAL_SAMPLES)):
        firsts = ok[ok["label"] == label].drop_duplicates("photo_id", keep="first")
        chosen += list(firsts["crop_id"][:count])
    return chosen


def render_samples(
    tasks: list[forgery.PhotoTask], config: forgery.RenderConfig, frame: pd.DataFrame, folder: Path
) -> None:
    """Render the chosen samples' photos again (deterministic, so the same crops) keeping the
    previews, and save them with their index into ``folder``."""
    chosen = choose_samples(frame)
    photos = set(frame.set_index("crop_id").loc[chosen, "photo_id"]) if chosen else set()
    previews: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="materialize-samples-") as scratch:
        for split in SPLITS:
            (Path(scratch) / split).mkdir()
        no_extras = P.ExtraSetsParams(matched_blur=False, jpeg_qualities=())
        forgery.init_render(
            dataclasses.replace(config, out_dir=scratch, samples=frozenset(chosen), sets=no_extras)
        )
        for task in tasks:
            if task.photo_id in photos:
                previews.update(forgery.render_photo(task)[1])
    rows = frame[frame["split"].isin(SPLITS)].set_index("crop_id", drop=False)
    gallery.write_samples(folder, [(rows.loc[name].to_dict(), previews[name]) for name in chosen])


def set_names(frame: pd.DataFrame) -> list[str]:
    """The splits, then the extra test renderings, in the order they appear in the index."""
    extra = [name for name in dict.fromkeys(frame["split"]) if name not in SPLITS]
    return [*SPLITS, *extra]


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
        "train_reals_blurred": int(((ok["split"] == "train") & ok["blur_sigma"].notna()).sum()),
        "seconds": round(seconds, 2),
        "photos_per_s": round(n_photos / seconds, 2) if seconds > 0 else None,
        "workers": workers,
    }

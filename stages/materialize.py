"""Stage materialize: real and simulated-DeepFake renderings of every photo, cut to the ROI,
augmented (train split only), resized and stored as lossless PNG crops.

Reads data/raw/, data/landmarks.csv and data/split.csv; writes data/template.json (the mean face
of the training landmarks), data/crops/ (index.csv, {split}/{crop_id}.png, samples/ for the
gallery) and metrics/materialize.json, all or none.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from faceswap_ela import alignment, forgery, gallery, outputs, parallel
from faceswap_ela import params as P

RAW = Path("data/raw")
LANDMARKS = Path("data/landmarks.csv")
SPLIT = Path("data/split.csv")
TEMPLATE = Path("data/template.json")
CROPS = Path("data/crops")
METRICS = Path("metrics/materialize.json")
SPLITS = ("train", "test")
N_FAKE_SAMPLES, N_REAL_SAMPLES = 6, 2
INDEX_COLUMNS = [
    "crop_id", "photo_id", "group", "split", "label", "variant", "status", "reason", "path",
    "scale", "mask", "roi_x1", "roi_y1", "roi_x2", "roi_y2", "augment",
]  # fmt: skip

log = logging.getLogger("materialize")


class StageError(Exception):
    pass


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


def build_tasks(p: P.Params) -> tuple[list[forgery.PhotoTask], list[np.ndarray]]:
    """One task per photo of the split (sorted by id) and the training landmark sets."""
    split = read_table(SPLIT, ["id", "group", "split"])
    bad = sorted(set(split["split"]) - set(SPLITS))
    if bad:
        raise StageError(f"{SPLIT}: unknown split names {bad}")
    if split["id"].duplicated().any():
        raise StageError(f"{SPLIT}: duplicate ids, e.g. {split['id'][split['id'].duplicated()].iloc[0]}")
    table = read_table(LANDMARKS, ["id", "path", *alignment.landmark_columns()])
    table = table.drop_duplicates("id", keep="first")
    try:
        points = alignment.landmarks_from_table(table)
    except ValueError as exc:
        raise StageError(f"{LANDMARKS}: {exc}") from None
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
        forgery.init_render(dataclasses.replace(config, out_dir=scratch, samples=frozenset(chosen)))
        for task in tasks:
            if task.photo_id in photos:
                previews.update(forgery.render_photo(task)[1])
    rows = frame.set_index("crop_id", drop=False)
    gallery.write_samples(folder, [(rows.loc[name].to_dict(), previews[name]) for name in chosen])


def index_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS).sort_values("crop_id", kind="stable")
    for column in ("scale", "roi_x1", "roi_y1", "roi_x2", "roi_y2"):
        frame[column] = frame[column].astype("Int64")
    return frame.reset_index(drop=True)


def summarise(frame: pd.DataFrame, n_photos: int, seconds: float, workers: int) -> dict:
    ok = frame[frame["status"] == "ok"]
    counts = {
        split: {
            "real": int(((ok["split"] == split) & (ok["label"] == 0)).sum()),
            "fake": int(((ok["split"] == split) & (ok["label"] == 1)).sum()),
        }
        for split in SPLITS
    }
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
        "seconds": round(seconds, 2),
        "photos_per_s": round(n_photos / seconds, 2) if seconds > 0 else None,
        "workers": workers,
    }


def run(p: P.Params) -> dict:
    start = time.perf_counter()
    workers = parallel.n_workers(p.materialize.workers)
    # Old outputs go first: a failed run leaves none behind (as under dvc repro)
    with outputs.atomic_outputs(TEMPLATE, f"{CROPS}/", METRICS) as (template_tmp, crops_tmp, metrics_tmp):
        tasks, train_sets = build_tasks(p)
        if not tasks:
            raise StageError(f"{SPLIT} lists no photos")
        try:
            template = alignment.procrustes_template(train_sets)
        except ValueError:
            raise StageError("no usable training landmarks to build the template from") from None
        for split in SPLITS:
            (crops_tmp / split).mkdir()
        config = forgery.RenderConfig(
            seed=p.seed, fakes=p.fakes, roi=p.roi, augment=p.augment, template=template,
            raw_dir=str(RAW), out_dir=str(crops_tmp),
        )  # fmt: skip
        rows = []
        results = parallel.ordered_map(
            forgery.render_photo, tasks, workers=workers, initializer=forgery.init_render,
            initargs=(config,), desc="materialize", chunksize=2,
        )  # fmt: skip
        for photo_rows, _ in results:
            rows.extend(photo_rows)
        frame = index_frame(rows)
        render_samples(tasks, config, frame, crops_tmp / "samples")
        frame.to_csv(crops_tmp / "index.csv", index=False, lineterminator="\n")
        template_doc = {
            "landmarks": list(range(17, 68)),
            "points": [[float(x), float(y)] for x, y in template],
            "n_faces": len(train_sets),
            "method": "generalized Procrustes analysis of the training landmarks 17-67, "
            "upright (eye line horizontal), each axis scaled to [0, 1]",
        }
        template_tmp.write_text(json.dumps(template_doc, indent=2) + "\n")
        metrics = summarise(frame, len(tasks), time.perf_counter() - start, workers)
        metrics_tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        p = P.load("params.yaml")
    except P.ParamsError as exc:
        log.error("%s", exc)
        return 2
    try:
        metrics = run(p)
    except StageError as exc:
        log.error("%s", exc)
        return 1
    log.info(
        "%d crops from %d photos (%d skipped) in %.1f s: %s",
        metrics["crops"], metrics["photos"], metrics["skipped"], metrics["seconds"], metrics["counts"],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

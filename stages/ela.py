"""Stage ela: the ELA image of every crop (§3.2), as uint8 tensors per split.

Reads data/crops/ (index.csv and the PNG crops); for every split and extra test rendering
(test_matched, test_jpeg<q>) writes data/ela/{split}_ela.npy (N x S x S x 3 ELA),
data/ela/{split}_rgb.npy (the crops themselves, same order) and data/ela/{split}.csv (crop_id,
photo_id, group, label in index order, ok rows only), plus plots/gallery.png, all or none.
The tensors are streamed to disk, so memory does not grow with the number of crops.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pandas as pd

from faceswap_ela import dataset, ela, gallery, outputs, stage
from faceswap_ela import params as P
from faceswap_ela.materialize import set_names
from faceswap_ela.stage import StageError

CROPS = Path("data/crops")
ELA_DIR = Path("data/ela")
GALLERY = Path("plots/gallery.png")

log = logging.getLogger("ela")


def read_index() -> pd.DataFrame:
    path = CROPS / "index.csv"
    if not path.exists():
        raise StageError(f"{path} not found (run the materialize stage first)")
    frame = pd.read_csv(
        path, dtype={"crop_id": str, "photo_id": str, "group": str, "split": str, "path": str}
    )
    missing = {"crop_id", "photo_id", "group", "split", "label", "status", "path"} - set(frame.columns)
    if missing:
        raise StageError(f"{path} lacks columns {sorted(missing)}")
    return frame[frame["status"] == "ok"].reset_index(drop=True)


def run(p: P.Params) -> dict[str, int]:
    start = time.perf_counter()
    counts = {}
    # Old outputs go first: a failed run leaves none behind (as under dvc repro)
    with outputs.atomic_outputs(f"{ELA_DIR}/", GALLERY) as (ela_tmp, gallery_tmp):
        index = read_index()
        missing = [str(CROPS / path) for path in index["path"] if not (CROPS / path).is_file()]
        if missing:
            raise StageError(f"{len(missing)} crops listed in the index are missing, e.g. {missing[0]}")
        try:
            size = ela.read_crop(CROPS / index["path"].iloc[0]).shape[0] if len(index) else p.roi.size
        except ValueError as exc:
            raise StageError(str(exc)) from None
        for split in set_names(index):
            rows = index[index["split"] == split]
            paths = [CROPS / path for path in rows["path"]]
            try:
                counts[split] = ela.write_tensors(
                    paths, ela_tmp / f"{split}_ela.npy", ela_tmp / f"{split}_rgb.npy", p.ela,
                    size=size, workers=p.ela.workers, desc=f"ela {split}",
                )  # fmt: skip
            except ValueError as exc:
                raise StageError(str(exc)) from None
            outputs.write_csv(ela_tmp / f"{split}.csv", rows[list(dataset.COLUMNS)])
        gallery.make_gallery(CROPS / "samples", gallery_tmp, p.ela)
    log.info("ELA of %s crops in %.1f s", counts, time.perf_counter() - start)
    return counts


if __name__ == "__main__":
    sys.exit(stage.main(run))

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

from faceswap_ela import dataset, ela, gallery, materialize, outputs, stage
from faceswap_ela import params as P

CROPS = Path("data/crops")
ELA_DIR = Path("data/ela")
GALLERY = Path("plots/gallery.png")

log = logging.getLogger("ela")


def run(p: P.Params) -> dict[str, int]:
    start = time.perf_counter()
    # Old outputs go first: a failed run leaves none behind (as under dvc repro)
    with outputs.atomic_outputs(f"{ELA_DIR}/", GALLERY) as (ela_tmp, gallery_tmp):
        index = materialize.read_index(CROPS)
        counts = ela.write_sets(
            index, CROPS, ela_tmp, p.ela, sets=materialize.set_names(index), size=p.roi.size,
            workers=p.ela.workers,
        )  # fmt: skip
        gallery.make_gallery(CROPS / "samples", gallery_tmp, p.ela)
    log.info("ELA of %s crops in %.1f s", counts, time.perf_counter() - start)
    return counts


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(dataset.DatasetError,)))

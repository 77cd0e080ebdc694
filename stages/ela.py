"""Stage ela: the ELA image of every crop (§3.2), as uint8 tensors per split.

Reads data/crops/ (index.csv and the PNG crops); for every training recipe (train_<recipe>: the
train reals and that recipe's fakes) and every test set (test, test_<forger>, test_matched,
test_jpeg<q>) writes data/ela/{set}_ela.npy (N x S x S x 3 ELA; 3k channels, the ELA at each of
ela.qualities stacked, when set), data/ela/{set}_rgb.npy (the crops themselves, same order) and
data/ela/{set}.csv (crop_id, photo_id, group, label in crop order, ok rows only), plus
plots/gallery.png, all or none. With ela.at: photo the ELA of each crop is that of
the rendered photo at its own resolution and JPEG grid, cut to the ROI (data/crops/pieces/).
The tensors are streamed to disk, so memory does not grow with the number of crops.
"""

from __future__ import annotations

import logging
import sys
import time

from faceswap_ela import crop_index, dataset, ela, gallery, outputs, stage, testsets
from faceswap_ela import params as P
from faceswap_ela.layout import CROPS, ELA_DIR, GALLERY

log = logging.getLogger("ela")


def run(p: P.Params) -> dict[str, int]:
    start = time.perf_counter()
    # Old outputs go first: a failed run leaves none behind (as under dvc repro)
    with outputs.atomic_outputs(f"{ELA_DIR}/", GALLERY) as (ela_tmp, gallery_tmp):
        index = crop_index.read_index(CROPS)
        sets = {testsets.recipe_set(r): crop_index.recipe_rows(index, r, p.seed) for r in p.train.fakes}
        sets.update(crop_index.test_rows(index))
        counts = ela.write_sets(sets, CROPS, ela_tmp, p.ela, size=p.roi.size, workers=p.ela.workers)
        gallery.make_gallery(CROPS / "samples", gallery_tmp, p.ela)
    log.info("ELA of %s crops in %.1f s", counts, time.perf_counter() - start)
    return counts


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(dataset.DatasetError,)))

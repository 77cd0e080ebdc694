"""Stage materialize: real and simulated-DeepFake renderings of every photo, cut to the ROI,
augmented (train split only), resized and stored as lossless PNG crops.

Reads data/raw/, data/landmarks.csv and data/split.csv; writes data/template.json (the mean face
of the training landmarks), data/crops/ (index.csv, {split}/{crop_id}.png, samples/ for the
gallery, one folder per other forger's fakes: train_<forger>/, test_<forger>/, and per extra test
rendering: test_matched/, test_jpeg<q>/, and with ela.at: photo, pieces/ of the rendered photos
around each ROI on their JPEG grid) and metrics/materialize.json, all or none.
"""

from __future__ import annotations

import logging
import sys
import time

from faceswap_ela import alignment, crop_index, materialize, outputs, parallel, samples, stage, testsets
from faceswap_ela import params as P
from faceswap_ela.layout import CROPS, LANDMARKS, MATERIALIZE_METRICS, RAW, SPLIT, TEMPLATE
from faceswap_ela.stage import StageError

log = logging.getLogger("materialize")


def run(p: P.Params) -> dict:
    start = time.perf_counter()
    workers = parallel.n_workers(p.materialize.workers)
    # Old outputs go first: a failed run leaves none behind (as under dvc repro)
    targets = (TEMPLATE, f"{CROPS}/", MATERIALIZE_METRICS)
    with outputs.atomic_outputs(*targets) as (template_tmp, crops_tmp, metrics_tmp):
        tasks, train_sets = materialize.build_tasks(p, SPLIT, LANDMARKS, RAW)
        if not tasks:
            raise StageError(f"{SPLIT} lists no photos")
        try:
            template = alignment.procrustes_template(train_sets)
        except ValueError:
            raise StageError("no usable training landmarks to build the template from") from None
        for split in (*testsets.SPLITS, *testsets.derived_sets(p.testsets)):
            (crops_tmp / split).mkdir()
        renderer = materialize.Renderer(
            seed=p.seed, fakes=p.fakes, roi=p.roi, augment=p.augment, template=template,
            raw_dir=str(RAW), out_dir=str(crops_tmp), sets=p.testsets,
            train_forgers=p.train.forgers(), ela_at=p.ela.at,
        )  # fmt: skip
        results = parallel.ordered_map(renderer, tasks, workers=workers, desc="materialize", chunksize=2)
        frame = crop_index.index_frame([row for photo_rows, _ in results for row in photo_rows])
        samples.render_samples(tasks, renderer, frame, crops_tmp / "samples")
        outputs.write_csv(crops_tmp / "index.csv", frame)
        template_tmp.write_text(alignment.template_json(template, len(train_sets)))
        metrics = crop_index.summarise(frame, len(tasks), time.perf_counter() - start, workers)
        outputs.write_json(metrics_tmp, metrics)
    log.info(
        "%d crops from %d photos (%d skipped) in %.1f s: %s",
        metrics["crops"], metrics["photos"], metrics["skipped"], metrics["seconds"], metrics["counts"],
    )  # fmt: skip
    return metrics


if __name__ == "__main__":
    sys.exit(stage.main(run))

"""Stage materialize: real and simulated-DeepFake renderings of every photo, cut to the ROI,
augmented (train split only), resized and stored as lossless PNG crops.

Reads data/raw/, data/landmarks.csv and data/split.csv; writes data/template.json (the mean face
of the training landmarks), data/crops/ (index.csv, {split}/{crop_id}.png, samples/ for the
gallery, and one folder per extra test rendering: test_matched/, test_jpeg<q>/) and
metrics/materialize.json, all or none.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from faceswap_ela import alignment, forgery, outputs, parallel, stage
from faceswap_ela import params as P
from faceswap_ela.materialize import SPLITS, StageError, build_tasks, index_frame, render_samples, summarise

RAW = Path("data/raw")
LANDMARKS = Path("data/landmarks.csv")
SPLIT = Path("data/split.csv")
TEMPLATE = Path("data/template.json")
CROPS = Path("data/crops")
METRICS = Path("metrics/materialize.json")

log = logging.getLogger("materialize")


def run(p: P.Params) -> dict:
    start = time.perf_counter()
    workers = parallel.n_workers(p.materialize.workers)
    # Old outputs go first: a failed run leaves none behind (as under dvc repro)
    with outputs.atomic_outputs(TEMPLATE, f"{CROPS}/", METRICS) as (template_tmp, crops_tmp, metrics_tmp):
        tasks, train_sets = build_tasks(p, SPLIT, LANDMARKS)
        if not tasks:
            raise StageError(f"{SPLIT} lists no photos")
        try:
            template = alignment.procrustes_template(train_sets)
        except ValueError:
            raise StageError("no usable training landmarks to build the template from") from None
        for split in (*SPLITS, *forgery.derived_sets(p.testsets)):
            (crops_tmp / split).mkdir()
        config = forgery.RenderConfig(
            seed=p.seed, fakes=p.fakes, roi=p.roi, augment=p.augment, template=template,
            raw_dir=str(RAW), out_dir=str(crops_tmp), sets=p.testsets,
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
    log.info(
        "%d crops from %d photos (%d skipped) in %.1f s: %s",
        metrics["crops"], metrics["photos"], metrics["skipped"], metrics["seconds"], metrics["counts"],
    )  # fmt: skip
    return metrics


if __name__ == "__main__":
    sys.exit(stage.main(run))

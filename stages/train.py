"""Stage `train`: the paper's CNN on data/ela/train.npy (memory-mapped, streamed), early-stopped on
a group-disjoint validation slice of the train split.

Writes models/model.keras (the best weights, without optimizer state), models/run.json (the MLflow
run that `evaluate` resumes), metrics/train.json and plots/history.csv, all or none. Logs params,
per-epoch metrics, a history figure and the model to MLflow (see faceswap_ela.tracking).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

from faceswap_ela import dataset, figures, stage, tracking, training
from faceswap_ela import params as P
from faceswap_ela.outputs import atomic_outputs

DATA = Path("data/ela")
ARRAY = "ela"
MODEL = Path("models/model.keras")
RUN = Path("models/run.json")
METRICS = Path("metrics/train.json")
HISTORY = Path("plots/history.csv")

log = logging.getLogger("train")


def run(p: P.Params) -> None:
    split = dataset.load_split(DATA, "train", ARRAY)
    dataset.validation_split(split.groups, p.train.val_fraction, p.seed)

    device = training.describe_device()
    with tracking.start_run(
        p, tags={"backend": device["backend"], "device": device["device"], "input": ARRAY}
    ) as tracker:
        result = training.train(split.images, split.table, p.train, p.seed, on_epoch=tracker.log_epoch)
        metrics = {**result.metrics, "input": ARRAY}
        export = training.inference_copy(result.model, mixed_precision=p.train.mixed_precision)
        with atomic_outputs(MODEL, RUN, METRICS, HISTORY) as (model_tmp, run_tmp, metrics_tmp, history_tmp):
            training.save_model(export, model_tmp)
            run_tmp.write_text(json.dumps(tracker.info(), indent=2, sort_keys=True) + "\n")
            metrics_tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            result.history.to_csv(history_tmp, index=False, lineterminator="\n")
        log.info("wrote %s, %s, %s, %s", MODEL, RUN, METRICS, HISTORY)

        tracker.log_metrics(tracking.numeric_leaves(metrics, "train"))
        with tempfile.TemporaryDirectory() as tmp:
            figure = Path(tmp) / "history.png"
            figures.history_figure(result.history, figure, best_epoch=metrics["best_epoch"])
            tracker.log_artifact(figure, "plots")
        tracker.log_artifact(HISTORY, "plots")
        tracker.log_artifact(METRICS, "metrics")
        if p.tracking.log_model:
            tracker.log_model(export, saved=MODEL)


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(dataset.DatasetError,)))

"""Stage `baseline`: a logistic regression on five sharpness and error-level numbers per crop
(faceswap_ela.baseline), fitted on the train split's crops and scored on every test set.

Reads data/ela (the RGB crops and their ELA images); writes data/predictions/baseline.csv (set,
crop_id, photo_id, label, p_fake) and metrics/baseline.json (its coefficients, and the metrics of
each test set at eval.threshold), all or none.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from faceswap_ela import baseline, dataset, evaluation, outputs, stage
from faceswap_ela import params as P
from faceswap_ela.testsets import TRAIN

DATA = Path("data/ela")
PREDICTIONS = Path("data/predictions/baseline.csv")
METRICS = Path("metrics/baseline.json")

log = logging.getLogger("baseline")


def split_features(name: str) -> tuple[dataset.Split, object]:
    ela = dataset.load_split(DATA, name, "ela")
    rgb = dataset.load_split(DATA, name, "rgb")
    return ela, baseline.features(rgb.images, ela.images)


def run(p: P.Params) -> None:
    train, x_train = split_features(TRAIN)
    model = baseline.fit(x_train, train.labels)

    def score(name: str) -> tuple[dataset.Split, object]:
        split, x = split_features(name)
        return split, baseline.p_fake(model, x)

    predictions, sets = evaluation.score_sets(dataset.test_sets(DATA), score, p.eval.threshold, "baseline")
    metrics = {
        "features": list(baseline.FEATURES),
        "coefficients": baseline.coefficients(model),
        "sets": sets,
    }
    with outputs.atomic_outputs(PREDICTIONS, METRICS) as (predictions_tmp, metrics_tmp):
        outputs.write_csv(predictions_tmp, predictions, float_format="%.7g")
        outputs.write_json(metrics_tmp, metrics)


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(dataset.DatasetError, ValueError)))

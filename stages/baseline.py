"""Stage `baseline@<recipe>`: a logistic regression on five sharpness and error-level numbers per
crop (faceswap_ela.baseline), fitted on a training recipe's crops (train_<recipe>: the same crops a
model of that recipe trains on) and scored on every test set.

Reads data/ela (the RGB crops and their ELA images); writes data/predictions/baseline-<recipe>.csv
(set, crop_id, photo_id, label, p_fake), data/predictions/ghost-<recipe>.csv and
metrics/baseline/<recipe>.json (its coefficients, and the metrics of each test set at
eval.threshold), all or none. With ELA at two or more qualities (ela.qualities) the ghost file holds
the untrained JPEG-ghost score (faceswap_ela.ghosts) of every test crop, a row of the comparison,
and the metrics file its metrics under ``ghost``; its AUC is what counts, the threshold metrics take
the score, a distance in [0, 1], as a p(fake). With fewer the ghost file is the header alone (a DVC
output can't come and go with a parameter).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys

import pandas as pd

from faceswap_ela import baseline, dataset, evaluation, ghosts, layout, outputs, stage, testsets
from faceswap_ela import params as P

log = logging.getLogger("baseline")


def split_features(name: str, *, fitted: bool = False) -> tuple[dataset.Split, object]:
    """A set's ELA split and its features; ``fitted``: the set the regression is fitted on, which
    must hold both classes."""
    ela = (dataset.training_split if fitted else dataset.load_split)(layout.ELA_DIR, name, "ela")
    rgb = dataset.load_split(layout.ELA_DIR, name, "rgb")
    return ela, baseline.features(rgb.images, ela.images)


def run(p: P.Params, fakes: str) -> None:
    train, x_train = split_features(testsets.recipe_set(fakes), fitted=True)
    model = baseline.fit(x_train, train.labels)

    def score(name: str) -> tuple[dataset.Split, object]:
        split, x = split_features(name)
        return split, baseline.p_fake(model, x)

    name = layout.baseline_name(fakes)
    predictions, sets = evaluation.score_sets(
        dataset.test_sets(layout.ELA_DIR), score, p.eval.threshold, name
    )
    metrics = {
        "fakes": fakes,
        "features": list(baseline.FEATURES),
        "coefficients": baseline.coefficients(model),
        "sets": sets,
    }
    ghost = pd.DataFrame(columns=list(evaluation.PREDICTION_COLUMNS))
    if len(p.ela.qualities) >= 2:
        ghost, metrics["ghost"] = ghost_scores(p)
    outs = (
        layout.baseline_predictions(fakes),
        layout.ghost_predictions(fakes),
        layout.baseline_metrics(fakes),
    )
    with outputs.atomic_outputs(*outs) as (predictions_tmp, ghost_tmp, metrics_tmp):
        outputs.write_csv(predictions_tmp, predictions, float_format="%.7g")
        outputs.write_csv(ghost_tmp, ghost, float_format="%.7g")
        outputs.write_json(metrics_tmp, metrics)


def ghost_scores(p: P.Params) -> tuple[pd.DataFrame, dict]:
    """The JPEG-ghost score of every test crop, and its metrics on every test set (its qualities,
    and per set as ``sets``)."""

    def score(name: str) -> tuple[dataset.Split, object]:
        split = dataset.load_split(layout.ELA_DIR, name, "ela")
        return split, ghosts.ghost_scores(split.images, p.ela.qualities)

    names = dataset.test_sets(layout.ELA_DIR)
    predictions, sets = evaluation.score_sets(names, score, p.eval.threshold, layout.GHOST)
    return predictions, {"qualities": list(p.ela.qualities), "sets": sets}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fakes", type=stage.recipe, required=True, help="the training recipe (train.fakes)")
    args = parser.parse_args()
    sys.exit(
        stage.main(functools.partial(run, fakes=args.fakes), expected=(dataset.DatasetError, ValueError))
    )

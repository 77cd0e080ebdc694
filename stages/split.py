"""Stage `split`: data/landmarks.csv -> data/split.csv (id, group, split) and metrics/split.json,
a seeded 4:1 train/test split by group. See faceswap_ela.split."""

import logging
import sys

import pandas as pd

from faceswap_ela import layout, outputs, split, stage
from faceswap_ela import params as P


def run(p: P.Params) -> None:
    if not layout.LANDMARKS.is_file():
        raise stage.StageError(f"{layout.LANDMARKS} not found: run the landmarks stage first")
    photos = pd.read_csv(
        layout.LANDMARKS, dtype=str, keep_default_na=False, usecols=lambda c: c in ("id", "group")
    )
    table, metrics = split.split(photos, p.split.test_fraction, p.seed)
    with outputs.atomic_outputs(layout.SPLIT, layout.SPLIT_METRICS) as (split_tmp, metrics_tmp):
        outputs.write_csv(split_tmp, table)
        outputs.write_json(metrics_tmp, metrics)
    logging.info(
        "%d train / %d test photos (%d / %d groups), test fraction %.4f",
        metrics["photos"]["train"],
        metrics["photos"]["test"],
        metrics["groups"]["train"],
        metrics["groups"]["test"],
        metrics["test_fraction"],
    )


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(split.SplitError,)))

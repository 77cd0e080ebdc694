"""Stage `split`: data/landmarks.csv -> data/split.csv (id, group, split) and metrics/split.json,
a seeded 4:1 train/test split by group. See faceswap_ela.split."""

import json
import logging
import sys
from pathlib import Path

import pandas as pd

from faceswap_ela import params as P
from faceswap_ela import split, stage
from faceswap_ela.outputs import atomic_outputs

LANDMARKS = Path("data/landmarks.csv")
SPLIT = Path("data/split.csv")
METRICS = Path("metrics/split.json")


def run(p: P.Params) -> None:
    if not LANDMARKS.is_file():
        raise stage.StageError(f"{LANDMARKS} not found: run the landmarks stage first")
    photos = pd.read_csv(LANDMARKS, dtype=str, keep_default_na=False, usecols=lambda c: c in ("id", "group"))
    table, metrics = split.split(photos, p.split.test_fraction, p.seed)
    with atomic_outputs(SPLIT, METRICS) as (split_tmp, metrics_tmp):
        table.to_csv(split_tmp, index=False, lineterminator="\n")
        metrics_tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
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

"""The cells of the comparison's tables (faceswap_ela.comparison): a row's AUC on one test set
(seed mean, sd, per seed, bootstrap interval), its false-positive rate at the threshold, a paired
difference of AUC, and a model family's cost and training speed."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from faceswap_ela import evaluation

if TYPE_CHECKING:
    from faceswap_ela.comparison import ModelResult

MIB = 2**20


@dataclass(frozen=True)
class Auc:
    """One row's AUC on one test set: mean and sd over seeds, per seed, and the 95% bootstrap
    interval of the seed mean over test photos."""

    auc_mean: float | None
    auc_sd: float | None
    auc_per_seed: list[float | None]
    ci95: list[float] | None

    @classmethod
    def of(cls, aucs: Sequence[float | None], boot: np.ndarray | None) -> Auc:
        valid = [a for a in aucs if a is not None]
        return cls(
            round(float(np.mean(valid)), 4) if valid else None,
            round(sd(valid), 4) if valid else None,
            [None if a is None else round(a, 4) for a in aucs],
            None if boot is None else evaluation.interval(boot),
        )


@dataclass(frozen=True)
class FalsePositives:
    """The share of one test set's real crops scored p_fake >= eval.threshold: mean over seeds and
    per seed (None for a set without reals)."""

    fpr_mean: float | None
    fpr_per_seed: list[float | None]
    n_real: int

    @classmethod
    def of(cls, results: Sequence[Mapping[str, object]]) -> FalsePositives:
        n_real = int(results[0]["n_real"])
        rates = [r["fp"] / n_real if n_real else None for r in results]
        valid = [r for r in rates if r is not None]
        return cls(
            round(float(np.mean(valid)), 4) if valid else None,
            [None if r is None else round(r, 4) for r in rates],
            n_real,
        )


@dataclass(frozen=True)
class Difference:
    """A paired difference of seed-mean AUC on one test set; for ELA - RGB also the verdict and the
    difference of each seed's two models."""

    diff: float
    ci95: list[float] | None
    verdict: str | None = None
    diff_per_seed: dict[str, float] | None = None
    diff_sd: float | None = None
    seeds_ela_ahead: int | None = None

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        return doc if self.verdict is not None else {"diff": self.diff, "ci95": self.ci95}


@dataclass(frozen=True)
class Family:
    """One model family over its seeds: cost and training speed."""

    seeds: list[int]
    params: object
    multiply_adds: object
    size_mib: float | None
    best_epoch: float | None
    epochs_run: float | None
    epochs_to_95pct_val_accuracy: float | None
    samples_per_s: float | None

    @classmethod
    def of(cls, runs: Sequence[ModelResult]) -> Family:
        train = runs[0].train
        return cls(
            seeds=[m.seed for m in runs],
            params=train.get("params"),
            multiply_adds=train.get("multiply_adds"),
            size_mib=round(float(train["model_bytes"]) / MIB, 1) if train.get("model_bytes") else None,
            best_epoch=_mean([m.train.get("best_epoch") for m in runs]),
            epochs_run=_mean([m.train.get("epochs_run") for m in runs]),
            epochs_to_95pct_val_accuracy=_mean(
                [evaluation.epochs_to_fraction(m.history["val_accuracy"]) for m in runs]
            ),
            samples_per_s=_mean([m.train.get("samples_per_s") for m in runs]),
        )


def sd(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean(values: Sequence[object]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return round(float(np.mean(numbers)), 2) if numbers else None

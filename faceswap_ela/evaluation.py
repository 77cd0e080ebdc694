"""Test-split evaluation: p(fake) from the model, then scikit-learn's metrics (positive = fake)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from faceswap_ela import seeding
from faceswap_ela.testsets import CLASSES

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("set", "crop_id", "photo_id", "label", "p_fake")
PREDICT_BATCH = 100  # memory only: the predictions do not depend on it


def prediction_frame(table: pd.DataFrame, set_name: str, p_fake: np.ndarray) -> pd.DataFrame:
    """One test set's scores as PREDICTION_COLUMNS rows (``table``: the set's crop_id, photo_id, label)."""
    return table[["crop_id", "photo_id", "label"]].assign(set=set_name, p_fake=p_fake)[
        list(PREDICTION_COLUMNS)
    ]


def predict_fake(
    net: keras.Model, images: np.ndarray, batch_size: int = PREDICT_BATCH, verbose: int | str = 0
) -> np.ndarray:
    """p(fake) for every image of a uint8 (memory-mapped) tensor, streamed in batches, in row order."""
    from faceswap_ela import batches  # Keras: baseline and compare, which read only scores, go without

    sequence = batches.CropSequence(images, batch_size=batch_size)
    probabilities = np.asarray(net.predict(sequence, verbose=verbose), dtype=np.float64)
    if probabilities.shape != (len(images), len(CLASSES)):
        raise ValueError(f"model returned {probabilities.shape} for {len(images)} images")
    return probabilities[:, 1]


def score_sets(
    names: Sequence[str], score: Callable[[str], tuple[Any, np.ndarray]], threshold: float, model: str
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Every test set of ``names`` scored: ``score(name)`` gives the set's dataset.Split and
    p(fake). Returns the PREDICTION_COLUMNS rows of all sets and the metrics (evaluate) per set."""
    frames, sets = [], {}
    for name in names:
        split, p_fake = score(name)
        sets[name] = evaluate(split.labels, p_fake, threshold)
        frames.append(prediction_frame(split.table, name, p_fake))
        auc = sets[name]["roc_auc"]
        log.info("%s on %s: AUC %s", model, name, "n/a" if auc is None else f"{auc:.4f}")
    return pd.concat(frames, ignore_index=True), sets


def predict_labels(p_fake: np.ndarray, threshold: float) -> np.ndarray:
    """1 (fake) where p(fake) >= threshold, else 0 (real)."""
    return (np.asarray(p_fake) >= threshold).astype(np.int64)


def evaluate(labels: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> dict[str, object]:
    """Accuracy, ROC AUC, precision, recall, F1 (fake is the positive class) and the confusion matrix
    (rows actual real/fake, columns predicted real/fake). AUC is None when one class is missing."""
    labels = np.asarray(labels, dtype=np.int64)
    p_fake = np.asarray(p_fake, dtype=np.float64)
    if labels.shape != p_fake.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(
            f"need matching non-empty 1-D labels and scores, got {labels.shape} and {p_fake.shape}"
        )
    predicted = predict_labels(p_fake, threshold)
    matrix = skm.confusion_matrix(labels, predicted, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in matrix.ravel())
    if len(np.unique(labels)) < 2:
        log.warning("the test split holds one class only: ROC AUC is undefined")
        auc = None
    else:
        auc = float(skm.roc_auc_score(labels, p_fake))
    return {
        "n": int(len(labels)),
        "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "roc_auc": auc,
        "precision": float(skm.precision_score(labels, predicted, pos_label=1, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, pos_label=1, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, pos_label=1, zero_division=0)),
        "confusion_matrix": matrix.astype(int).tolist(),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


def roc_table(labels: np.ndarray, p_fake: np.ndarray) -> pd.DataFrame:
    """The ROC curve as rows (fpr, tpr, threshold). scikit-learn's first threshold is +inf (nothing
    flagged); it is written as 1.0 so that the table holds plain numbers. Empty with one class."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        return pd.DataFrame({"fpr": [], "tpr": [], "threshold": []})
    fpr, tpr, thresholds = skm.roc_curve(labels, np.asarray(p_fake, dtype=np.float64), pos_label=1)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0)})


def confusion_table(labels: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """One row per sample, ``actual`` and ``predicted`` as class names, for DVC's confusion template."""
    names = np.asarray(CLASSES)
    return pd.DataFrame({"actual": names[np.asarray(labels, dtype=np.int64)], "predicted": names[predicted]})


def photo_weights(photo_ids: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap weights that resample test photos, not crops: ``resamples`` x N, each row how many
    times each crop's photo was drawn (photos drawn with replacement, as many as there are),
    from ``seeding.rng(seed, "bootstrap")``."""
    photos, inverse = np.unique(np.asarray(photo_ids, dtype=str), return_inverse=True)
    draws = seeding.rng(seed, "bootstrap").integers(0, len(photos), size=(resamples, len(photos)))
    counts = np.zeros((resamples, len(photos)))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts[:, inverse]


def weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` (fake = 1 positive) under each row of ``weights`` (B x N), ties
    counted half, as scikit-learn's ``roc_auc_score(..., sample_weight=row)``; NaN for a row that
    leaves one class without weight. All rows at once, in O(B N)."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    w = weights[:, order]
    neg, pos = np.where(positive, 0.0, w), np.where(positive, w, 0.0)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # tie groups
    neg_groups = np.add.reduceat(neg, starts, axis=1)
    pos_groups = np.add.reduceat(pos, starts, axis=1)
    neg_below = np.cumsum(neg_groups, axis=1) - neg_groups
    pairs = (pos_groups * (neg_below + 0.5 * neg_groups)).sum(axis=1)
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / np.where(total > 0, total, 1.0), np.nan)


def interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The central ``level`` percentile interval of bootstrap values (NaNs left out)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]


def epochs_to_fraction(val_accuracy: np.ndarray, fraction: float = 0.95) -> int | None:
    """The first epoch (from 1) whose validation accuracy reaches ``fraction`` of the best."""
    values = np.asarray(val_accuracy, dtype=np.float64)
    if len(values) == 0 or not np.isfinite(values).any():
        return None
    reached = np.flatnonzero(values >= fraction * np.nanmax(values))
    return int(reached[0]) + 1

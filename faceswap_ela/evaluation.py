"""Test-split evaluation: p(fake) from the model, then scikit-learn's metrics (positive = fake)."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from faceswap_ela import dataset
from faceswap_ela.model import CLASSES

log = logging.getLogger(__name__)


def predict_fake(
    net: keras.Model, images: np.ndarray, batch_size: int = 100, verbose: int | str = 0
) -> np.ndarray:
    """p(fake) for every image of a uint8 (memory-mapped) tensor, streamed in batches, in row order."""
    batches = dataset.CropSequence(images, batch_size=batch_size)
    probabilities = np.asarray(net.predict(batches, verbose=verbose), dtype=np.float64)
    if probabilities.shape != (len(images), len(CLASSES)):
        raise ValueError(f"model returned {probabilities.shape} for {len(images)} images")
    return probabilities[:, 1]


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

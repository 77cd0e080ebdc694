"""Test-split metrics against scikit-learn and hand counts; the plot tables and figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from faceswap_ela import evaluation, figures
from faceswap_ela import model as cnn

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
SCORES = np.array([0.1, 0.4, 0.6, 0.2, 0.9, 0.5, 0.3, 0.8, 0.7, 0.05])


def test_metrics_match_hand_counts_and_scikit_learn():
    result = evaluation.evaluate(LABELS, SCORES, threshold=0.5)
    # predicted fake (p >= 0.5): rows 2, 4, 5, 7, 8 -> tp = 4 (4, 5, 7, 8), fp = 1 (2), fn = 1 (6), tn = 4
    assert (result["tn"], result["fp"], result["fn"], result["tp"]) == (4, 1, 1, 4)
    assert result["confusion_matrix"] == [[4, 1], [1, 4]]
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["precision"] == pytest.approx(0.8)
    assert result["recall"] == pytest.approx(0.8)
    assert result["f1"] == pytest.approx(0.8)
    # AUC by hand: of the 25 (fake, real) pairs, the fake scores higher in 22
    assert result["roc_auc"] == pytest.approx(22 / 25)
    predicted = (SCORES >= 0.5).astype(int)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(LABELS, predicted))
    assert result["precision"] == pytest.approx(skm.precision_score(LABELS, predicted))
    assert result["recall"] == pytest.approx(skm.recall_score(LABELS, predicted))
    assert result["f1"] == pytest.approx(skm.f1_score(LABELS, predicted))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(LABELS, SCORES))
    assert (result["n"], result["n_real"], result["n_fake"], result["threshold"]) == (10, 5, 5, 0.5)


def test_threshold_moves_the_decisions():
    strict = evaluation.evaluate(LABELS, SCORES, threshold=0.75)
    assert (strict["tn"], strict["fp"], strict["fn"], strict["tp"]) == (5, 0, 3, 2)
    assert strict["precision"] == 1.0
    assert strict["recall"] == pytest.approx(0.4)
    assert strict["roc_auc"] == pytest.approx(skm.roc_auc_score(LABELS, SCORES))  # threshold-free
    assert evaluation.predict_labels(np.array([0.5, 0.49]), 0.5).tolist() == [1, 0]


def test_one_class_gives_no_auc_and_no_division_errors():
    result = evaluation.evaluate(np.zeros(4, dtype=int), np.array([0.1, 0.2, 0.3, 0.9]))
    assert result["roc_auc"] is None
    assert (result["tn"], result["fp"]) == (3, 1)
    assert result["precision"] == 0.0 and result["recall"] == 0.0 and result["f1"] == 0.0
    assert evaluation.roc_table(np.zeros(4, dtype=int), np.array([0.1, 0.2, 0.3, 0.9])).empty
    with pytest.raises(ValueError):
        evaluation.evaluate(np.array([0, 1]), np.array([0.5]))


def test_roc_table_matches_scikit_learn():
    table = evaluation.roc_table(LABELS, SCORES)
    fpr, tpr, thresholds = skm.roc_curve(LABELS, SCORES)
    assert list(table.columns) == ["fpr", "tpr", "threshold"]
    assert np.allclose(table["fpr"], fpr) and np.allclose(table["tpr"], tpr)
    assert table["threshold"].iloc[0] == 1.0  # scikit-learn's +inf
    assert np.allclose(table["threshold"].iloc[1:], thresholds[1:])
    assert np.isfinite(table.to_numpy()).all()


def test_confusion_table_names_the_classes():
    table = evaluation.confusion_table(np.array([0, 1, 1]), np.array([0, 0, 1]))
    assert table.to_dict("list") == {
        "actual": ["real", "fake", "fake"],
        "predicted": ["real", "real", "fake"],
    }


def test_predict_fake_streams_in_row_order():
    net = cnn.build_model((16, 16, 3))
    images = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    p_fake = evaluation.predict_fake(net, images, batch_size=3)
    direct = np.asarray(net.predict(images.astype(np.float32) / 255, verbose=0))[:, 1]
    assert p_fake.shape == (7,)
    assert np.allclose(p_fake, direct, atol=1e-6)


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_are_png_whatever_the_file_name(tmp_path):
    roc = evaluation.roc_table(LABELS, SCORES)
    figures.roc_figure({"ELA-CNN (AUC = 0.920)": (roc["fpr"], roc["tpr"])}, tmp_path / "roc.png.tmp")
    figures.roc_figure({"a": (roc["fpr"], roc["tpr"]), "b": ([0, 1], [0, 1])}, tmp_path / "roc-two.png")
    curves = pd.DataFrame({"quality": [100, 90, 70], "ela_auc": [0.9, 0.8, 0.7], "rgb_auc": [None, 0.5, 0.6]})
    figures.lines_figure(curves, "quality", {"AUC": ["ela_auc", "rgb_auc", "missing"]}, tmp_path / "lines")
    figures.confusion_figure([[4, 1], [0, 0]], tmp_path / "confusion.tmp")
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "loss": [0.9, 0.5, 0.4], "accuracy": [0.5, 0.7, 0.8],
         "val_loss": [0.8, 0.6, 0.7], "val_accuracy": [0.55, 0.65, 0.6]}
    )  # fmt: skip
    figures.history_figure(history, tmp_path / "history.tmp", best_epoch=2)
    for name in ("roc.png.tmp", "roc-two.png", "lines", "confusion.tmp", "history.tmp"):
        assert _is_png(tmp_path / name), name


def test_weighted_aucs_match_scikit_learn_with_ties_and_empty_classes():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 1)  # many ties
    weights = rng.integers(0, 3, (40, 60)).astype(float)
    weights[0, labels == 1] = 0  # no positives left in the first row
    got = evaluation.weighted_aucs(labels, scores, weights)
    assert np.isnan(got[0])
    for row, value in zip(weights[1:], got[1:], strict=True):
        assert value == pytest.approx(skm.roc_auc_score(labels, scores, sample_weight=row), abs=1e-12)


def test_photo_bootstrap_resamples_photos_not_crops():
    # photo a ranks its fake above its real, photo b the other way round: a resample holds a twice
    # (AUC 1), b twice (AUC 0) or both (3 of 4 pairs right: 0.75); crops drawn alone would give more
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.8])
    photos = np.array(["a", "a", "b", "b"])
    weights = evaluation.photo_weights(photos, 4000, seed=7)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights.sum(axis=1) == 4).all()
    values = evaluation.weighted_aucs(labels, scores, weights)
    assert set(np.unique(values)) == {0.0, 0.75, 1.0}
    assert np.mean(values == 0.75) == pytest.approx(0.5, abs=0.03)
    assert np.mean(values) == pytest.approx(0.625, abs=0.02)
    assert evaluation.interval(values) == [0.0, 1.0]
    np.testing.assert_array_equal(weights, evaluation.photo_weights(photos, 4000, seed=7))  # seeded


def test_bootstrap_interval_of_a_perfect_ranking_is_a_point():
    labels = np.array([0, 1] * 20)
    photos = np.repeat(np.arange(10), 4).astype(str)
    values = evaluation.weighted_aucs(labels, labels + 0.1, evaluation.photo_weights(photos, 200, 0))
    assert evaluation.interval(values) == [1.0, 1.0]
    assert evaluation.interval(np.array([np.nan])) is None


def test_epochs_to_fraction_of_the_best():
    assert evaluation.epochs_to_fraction(np.array([0.5, 0.9, 0.96, 1.0, 0.99])) == 3
    assert evaluation.epochs_to_fraction(np.array([0.8])) == 1
    assert evaluation.epochs_to_fraction(np.array([])) is None

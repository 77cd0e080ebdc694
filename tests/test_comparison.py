"""The comparison of models and baseline: seed statistics, paired bootstrap, tables, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faceswap_ela import comparison, evaluation

GOLDEN = Path(__file__).parent / "golden"
SETS = ["test_jpeg70", "test", "test_matched", "test_jpeg95"]


def _predictions(strength: float, seed: int, n_photos: int = 30) -> pd.DataFrame:
    """Two crops (a real and a fake) per photo on every set; scores separate the classes by strength."""
    rng = np.random.default_rng(seed)
    frames = []
    for set_name in SETS:
        labels = np.tile([0, 1], n_photos)
        scores = 1 / (1 + np.exp(-(strength * (labels - 0.5) + rng.normal(0, 1, len(labels)))))
        frames.append(
            pd.DataFrame(
                {
                    "set": set_name,
                    "crop_id": [f"p{i // 2}__v{i % 2}" for i in range(len(labels))],
                    "photo_id": [f"p{i // 2}" for i in range(len(labels))],
                    "label": labels,
                    "p_fake": scores,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _model(kind: str, seed: int, strength: float) -> comparison.ModelResult:
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "loss": [0.7, 0.5, 0.4], "accuracy": [0.6, 0.8, 0.9],
         "val_loss": [0.6, 0.5, 0.55], "val_accuracy": [0.7, 0.95, 0.9]}
    )  # fmt: skip
    train = {"params": 29520034, "multiply_adds": 435034112, "model_bytes": 118_200_000,
             "best_epoch": 2, "epochs_run": 3, "samples_per_s": 20.0}  # fmt: skip
    return comparison.ModelResult(kind, seed, train, history, _predictions(strength, seed * 10 + len(kind)))


def _models() -> list[comparison.ModelResult]:
    return [_model("ela", s, 6.0) for s in (1, 2)] + [_model("rgb", s, 1.0) for s in (1, 2)]


@pytest.fixture(scope="module")
def result():
    models = _models()
    return comparison.compare(models, _predictions(0.0, 99), resamples=300, seed=0), models


def test_sets_in_order_and_seed_statistics(result):
    result, _ = result
    doc = result.to_json()
    assert doc["sets"] == ["test", "test_matched", "test_jpeg95", "test_jpeg70"]
    ela = doc["inputs"]["ela"]
    assert ela["seeds"] == [1, 2] and ela["params"] == 29520034 and ela["size_mib"] == 112.7
    assert ela["best_epoch"] == 2 and ela["epochs_to_95pct_val_accuracy"] == 2
    test = ela["sets"]["test"]
    assert test["auc_mean"] == pytest.approx(np.mean(test["auc_per_seed"]), abs=1e-4)
    assert test["auc_sd"] == pytest.approx(np.std(test["auc_per_seed"], ddof=1), abs=1e-4)
    low, high = test["ci95"]
    assert low <= test["auc_mean"] <= high


def test_paired_differences_and_verdict(result):
    result, _ = result
    doc = result.to_json()
    diff = doc["differences"]["test"]["ela_minus_rgb"]
    assert diff["diff"] > 0.2 and diff["ci95"][0] > 0 and diff["verdict"] == "ELA better"
    assert doc["baseline"]["sets"]["test"]["auc_mean"] < doc["inputs"]["rgb"]["sets"]["test"]["auc_mean"]
    assert {"ela_minus_rgb", "ela_minus_baseline", "rgb_minus_baseline"} == set(doc["differences"]["test"])
    assert doc["bootstrap"] == {"resamples": 300, "unit": "test photo", "photos": 30, "level": 0.95}
    assert "beats raw RGB" in comparison.claim(result)
    assert "ELA was ahead with 2 of 2 seeds" in comparison.claim(result)
    assert result.auc("ela", "test").auc_mean == doc["inputs"]["ela"]["sets"]["test"]["auc_mean"]
    assert result.auc("baseline", "test").auc_mean == doc["baseline"]["sets"]["test"]["auc_mean"]
    aucs = {k: doc["inputs"][k]["sets"]["test"]["auc_per_seed"] for k in ("ela", "rgb")}
    expected = {str(s): e - r for s, e, r in zip((1, 2), aucs["ela"], aucs["rgb"], strict=True)}
    assert diff["diff_per_seed"] == pytest.approx(expected, abs=2e-4)
    assert diff["seeds_ela_ahead"] == 2 and diff["diff_sd"] >= 0


def test_equal_models_show_no_difference():
    models = [
        _model("ela", 1, 2.0),
        comparison.ModelResult("rgb", 1, {}, _model("rgb", 1, 0).history, _model("ela", 1, 2.0).predictions),
    ]
    result = comparison.compare(models, None, resamples=100, seed=0)
    item = result.to_json()["differences"]["test"]["ela_minus_rgb"]
    assert item["diff"] == 0 and item["ci95"] == [0.0, 0.0] and item["verdict"] == "no difference shown"
    claim = comparison.claim(result)
    assert "does not measurably beat" in claim and "seeds" not in claim
    assert item["diff_per_seed"] == {"1": 0.0} and item["seeds_ela_ahead"] == 0
    assert result.to_json()["baseline"]["sets"] == {}


def test_misaligned_predictions_are_refused():
    good = _model("ela", 1, 2.0)
    shuffled = good.predictions.sample(frac=1.0, random_state=0)
    bad = comparison.ModelResult("rgb", 1, good.train, good.history, shuffled)
    with pytest.raises(ValueError, match="differ"):
        comparison.compare([good, bad], None, resamples=10, seed=0)


def test_tables_and_plots(result):
    result, models = result
    doc = result.to_json()
    text = comparison.markdown(result)
    for needle in ("ELA-CNN (seeds 1, 2)", "RGB-CNN", "sharpness baseline", "VGG16 (paper)", "0.976",
                   "| ELA − RGB | +", "test_matched", "test_jpeg70"):  # fmt: skip
        assert needle in text, needle
    ela_minus_rgb = next(line for line in text.splitlines() if line.startswith("| ELA − RGB |"))
    assert ela_minus_rgb.count(" ± ") == len(doc["sets"])
    robust = comparison.robustness(result)
    assert list(robust["quality"]) == [95, 70]
    assert list(robust.columns) == ["quality", "ela_auc", "rgb_auc", "baseline_auc"]
    curves = comparison.curves(models)
    assert list(curves["epoch"]) == [1, 2, 3] and curves["ela_val_accuracy"].tolist() == [0.7, 0.95, 0.9]
    primary = models[0]
    headline = comparison.headline(result, primary, {"roc_auc": 0.9, "accuracy": 0.8})
    assert headline["model"] == "ela-s1" and headline["roc_auc"] == 0.9
    assert headline["margin_over_baseline"] == pytest.approx(
        doc["inputs"]["ela"]["sets"]["test"]["auc_mean"] - doc["baseline"]["sets"]["test"]["auc_mean"],
        abs=1e-4,
    )
    assert "matched_baseline_auc" in headline and "matched_rgb_auc_mean" in headline


def test_plot_tables_keep_their_columns_with_one_input():
    """dvc.yaml's plots name ela_* and rgb_* columns: they must exist when only ELA is trained."""
    models = [_model("ela", 1, 6.0)]
    result = comparison.compare(models, None, resamples=0, seed=0)
    curves = comparison.curves(models)
    assert curves["rgb_val_accuracy"].isna().all() and curves["ela_val_accuracy"].notna().all()
    robust = comparison.robustness(result)
    assert list(robust.columns) == ["quality", "ela_auc", "rgb_auc", "baseline_auc"]
    assert robust["rgb_auc"].isna().all() and robust["baseline_auc"].isna().all()
    assert robust["ela_auc"].notna().all()


def test_outputs_match_the_golden_files(result):
    """compare.json and compare.md of the fixture, byte for byte as the hand-built tables wrote them."""
    result, _ = result
    assert json.dumps(result.to_json(), indent=2) + "\n" == (GOLDEN / "compare.json").read_text()
    assert comparison.markdown(result) == (GOLDEN / "compare.md").read_text()


def test_roc_curves_of_the_first_seed_and_the_baseline(result):
    result, models = result
    base = _predictions(0.0, 99)
    curves = comparison.roc_curves(result, models, base, seed=1)
    assert [label.split(" (AUC")[0] for label in curves] == [
        "ELA-CNN ela-s1",
        "RGB-CNN rgb-s1",
        "sharpness baseline",
    ]
    fpr, tpr = curves[next(iter(curves))]
    assert fpr.iloc[0] == 0 and tpr.iloc[-1] == 1 and len(fpr) == len(tpr)
    assert len(comparison.roc_curves(result, models, None, seed=2)) == 2


def test_missing_or_incomplete_predictions_are_a_comparison_error(tmp_path):
    path = tmp_path / "baseline.csv"
    with pytest.raises(comparison.ComparisonError, match="baseline.csv not found"):
        comparison.read_predictions(path)
    _predictions(1.0, 0).drop(columns="p_fake").to_csv(path, index=False)
    with pytest.raises(comparison.ComparisonError, match=r"lacks columns \['p_fake'\]"):
        comparison.read_predictions(path)
    _predictions(1.0, 0).to_csv(path, index=False)
    assert tuple(comparison.read_predictions(path).columns) == evaluation.PREDICTION_COLUMNS

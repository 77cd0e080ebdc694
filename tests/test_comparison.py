"""The comparison of model families and baselines: seed statistics, paired bootstrap, the
cross-forger table, tables, plots."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from faceswap_ela import comparison, evaluation, figures, report
from faceswap_ela import params as P

GOLDEN = Path(__file__).parent / "golden"
DVC_YAML = Path(__file__).parents[1] / "dvc.yaml"
SETS = ["test_jpeg70", "test_swap", "test", "test_matched", "test_blend", "test_jpeg95"]
ORDER = ["test", "test_blend", "test_swap", "test_matched", "test_jpeg95", "test_jpeg70"]
ROWS = ["ela-warp", "rgb-warp", "baseline-warp", "ela-blend", "rgb-blend", "baseline-blend"]
MLFLOW_NAME = re.compile(r"[A-Za-z0-9_\-. /]+")


def _predictions(strength: float, seed: int, by_set: dict[str, float] | None = None, n_photos: int = 30):
    """Two crops (a real and a fake) per photo on every set; scores separate the classes by strength
    (``by_set`` overrides it for some sets)."""
    rng = np.random.default_rng(seed)
    frames = []
    for set_name in SETS:
        labels = np.tile([0, 1], n_photos)
        spread = (by_set or {}).get(set_name, strength)
        scores = 1 / (1 + np.exp(-(spread * (labels - 0.5) + rng.normal(0, 1, len(labels)))))
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


def _model(kind: str, fakes: str, seed: int, strength: float, by_set=None) -> comparison.ModelResult:
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "loss": [0.7, 0.5, 0.4], "accuracy": [0.6, 0.8, 0.9],
         "val_loss": [0.6, 0.5, 0.55], "val_accuracy": [0.7, 0.95, 0.9]}
    )  # fmt: skip
    train = {"params": 29520034, "multiply_adds": 435034112, "model_bytes": 118_200_000,
             "best_epoch": 2, "epochs_run": 3, "samples_per_s": 20.0}  # fmt: skip
    predictions = _predictions(strength, seed * 10 + len(fakes), by_set)
    return comparison.ModelResult(kind, fakes, seed, train, history, predictions)


def _models() -> list[comparison.ModelResult]:
    """ELA and RGB trained on warp (two seeds: ELA strong on warp, weak on the other forgers) and
    on blend (one seed), in layout.model_names' order."""
    ela_warp = {"test_blend": 1.5, "test_swap": 0.5}
    return [
        *(_model("ela", "warp", s, 6.0, ela_warp) for s in (1, 2)),
        _model("ela", "blend", 1, 3.0, {"test_swap": 2.0}),
        *(_model("rgb", "warp", s, 1.0) for s in (1, 2)),
        _model("rgb", "blend", 1, 1.0),
    ]


def _baselines() -> dict[str, pd.DataFrame]:
    return {"warp": _predictions(0.0, 99), "blend": _predictions(0.5, 98)}


@pytest.fixture(scope="module")
def result():
    models = _models()
    return comparison.compare(models, _baselines(), resamples=300, seed=0), models


def test_rows_sets_in_order_and_seed_statistics(result):
    result, _ = result
    doc = result.to_json()
    assert doc["sets"] == ORDER and list(doc["rows"]) == ROWS and list(doc["cross_forger"]) == ROWS
    assert doc["rows"]["ela-warp"] == {"label": "ELA-CNN · warp", "input": "ela", "fakes": "warp"}
    assert doc["rows"]["baseline-blend"] == {
        "label": "sharpness baseline · blend",
        "input": None,
        "fakes": "blend",
    }
    assert list(doc["families"]) == ["ela-warp", "rgb-warp", "ela-blend", "rgb-blend"]
    ela = doc["families"]["ela-warp"]
    assert ela["seeds"] == [1, 2] and ela["params"] == 29520034 and ela["size_mib"] == 112.7
    assert ela["best_epoch"] == 2 and ela["epochs_to_95pct_val_accuracy"] == 2
    assert doc["families"]["ela-blend"]["seeds"] == [1]
    test = doc["cross_forger"]["ela-warp"]["test"]
    assert test["auc_mean"] == pytest.approx(np.mean(test["auc_per_seed"]), abs=1e-4)
    assert test["auc_sd"] == pytest.approx(np.std(test["auc_per_seed"], ddof=1), abs=1e-4)
    low, high = test["ci95"]
    assert low <= test["auc_mean"] <= high
    assert result.auc("ela-warp", "test_swap").auc_mean < result.auc("ela-blend", "test_swap").auc_mean
    assert doc["bootstrap"] == {"resamples": 300, "unit": "test photo", "photos": 30, "level": 0.95}


def test_cross_forger_table_has_one_cell_per_row_and_set(result):
    result, _ = result
    doc = result.to_json()["cross_forger"]
    assert all(list(cells) == ORDER for cells in doc.values())
    long = report.cross_forger_long(result)
    assert list(long.columns) == ["model", "set", "auc", "ci_low", "ci_high"]
    assert len(long) == len(ROWS) * len(ORDER) and not long.duplicated(["model", "set"]).any()
    assert set(long["model"]) == set(ROWS) and (long["ci_low"] <= long["auc"]).all()
    table = report.cross_forger_table(result)
    assert list(table.columns) == ["Model", *ORDER] and len(table) == len(ROWS)
    aucs, trained = report.cross_forger_grid(result)
    assert aucs.shape == trained.shape == (len(ROWS), len(ORDER))
    assert aucs.loc["ELA-CNN · blend", "test_swap"] == doc["ela-blend"]["test_swap"]["auc_mean"]
    assert trained.loc["ELA-CNN · warp"].tolist() == [True] + [False] * 5
    assert trained.loc["sharpness baseline · blend"].tolist() == [False, True] + [False] * 4
    assert table.loc[3, "test_blend"].startswith("**") and not table.loc[3, "test"].startswith("**")


def test_paired_differences_are_per_recipe(result):
    result, _ = result
    doc = result.to_json()
    expected = {
        "ela-warp_minus_rgb-warp", "ela-warp_minus_baseline-warp", "rgb-warp_minus_baseline-warp",
        "ela-blend_minus_rgb-blend", "ela-blend_minus_baseline-blend", "rgb-blend_minus_baseline-blend",
    }  # fmt: skip
    for name in ORDER:
        assert set(doc["differences"][name]) == expected
        for pair in doc["differences"][name]:
            a, b = pair.split("_minus_")
            assert doc["rows"][a]["fakes"] == doc["rows"][b]["fakes"], pair
    diff = doc["differences"]["test"]["ela-warp_minus_rgb-warp"]
    assert diff["diff"] > 0.2 and diff["ci95"][0] > 0 and diff["verdict"] == "ELA better"
    aucs = {k: doc["cross_forger"][k]["test"]["auc_per_seed"] for k in ("ela-warp", "rgb-warp")}
    expected_per_seed = {
        str(s): e - r for s, e, r in zip((1, 2), aucs["ela-warp"], aucs["rgb-warp"], strict=True)
    }
    assert diff["diff_per_seed"] == pytest.approx(expected_per_seed, abs=2e-4)
    assert diff["seeds_ela_ahead"] == 2 and diff["diff_sd"] >= 0
    blend = doc["differences"]["test_blend"]["ela-blend_minus_rgb-blend"]
    assert list(blend["diff_per_seed"]) == ["1"] and blend["diff_sd"] == 0
    assert set(doc["differences"]["test"]["ela-warp_minus_baseline-warp"]) == {"diff", "ci95"}
    base = doc["cross_forger"]["baseline-warp"]["test"]["auc_mean"]
    assert base < doc["cross_forger"]["rgb-warp"]["test"]["auc_mean"]
    assert "Trained on warp fakes, ELA input beats raw RGB" in report.claim(result)
    assert "ELA was ahead with 2 of 2 seeds" in report.claim(result)


def test_false_positive_rate_at_the_threshold(result):
    result, models = result
    doc = result.to_json()["fpr_at_threshold"]
    assert doc["threshold"] == 0.5 and list(doc["rows"]) == ROWS
    rates = []
    for m in models[:2]:
        reals = m.predictions[(m.predictions["set"] == "test_jpeg70") & (m.predictions["label"] == 0)]
        rates.append((reals["p_fake"] >= 0.5).mean())
    cell = doc["rows"]["ela-warp"]["test_jpeg70"]
    assert cell["n_real"] == 30 and cell["fpr_per_seed"] == pytest.approx(rates, abs=1e-4)
    assert cell["fpr_mean"] == pytest.approx(np.mean(rates), abs=1e-4)
    assert len(report.false_positive_table(result)) == len(ROWS)


def test_metric_names_are_mlflow_legal(result):
    """Every leaf tracked() gives MLflow is named in its alphabet as it is, so no two collide."""
    result, models = result
    tracked = dict(result.tracked())
    tracked["test"] = comparison.headline(result, models[0], {"roc_auc": 0.9})
    names = [key for prefix, part in tracked.items() for key, _ in P.leaves(part, prefix, expand_lists=True)]
    assert names and all(MLFLOW_NAME.fullmatch(name) for name in names), [
        n for n in names if not MLFLOW_NAME.fullmatch(n)
    ]
    assert len(set(names)) == len(names)
    assert "compare.cross_forger.ela-warp.test_swap.auc_mean" in names
    assert "compare.diff.test.ela-warp_minus_rgb-warp.diff" in names


def test_equal_models_show_no_difference():
    ela = _model("ela", "warp", 1, 2.0)
    rgb = comparison.ModelResult("rgb", "warp", 1, {}, ela.history, ela.predictions)
    result = comparison.compare([ela, rgb], {}, resamples=100, seed=0)
    item = result.to_json()["differences"]["test"]["ela-warp_minus_rgb-warp"]
    assert item["diff"] == 0 and item["ci95"] == [0.0, 0.0] and item["verdict"] == "no difference shown"
    claim = report.claim(result)
    assert "does not measurably beat" in claim and "seeds" not in claim
    assert item["diff_per_seed"] == {"1": 0.0} and item["seeds_ela_ahead"] == 0
    assert list(result.rows) == ["ela-warp", "rgb-warp"]
    assert "not measured" in report.claim(comparison.compare([ela], {}, resamples=0, seed=0))


def test_misaligned_predictions_are_refused():
    good = _model("ela", "warp", 1, 2.0)
    shuffled = good.predictions.sample(frac=1.0, random_state=0)
    bad = comparison.ModelResult("rgb", "warp", 1, good.train, good.history, shuffled)
    with pytest.raises(ValueError, match="differ"):
        comparison.compare([good, bad], {}, resamples=10, seed=0)


def test_tables_headline_and_plots(result):
    result, models = result
    doc = result.to_json()
    text = report.markdown(result)
    for needle in ("ELA-CNN · warp (seeds 1, 2)", "RGB-CNN · blend (seed 1)", "sharpness baseline · blend",
                   "VGG16 (paper)", "0.976", "| ELA − RGB · warp | +", "| ELA-CNN · warp − baseline |",
                   "test_matched", "test_jpeg70", "Cross-forger AUC", "p_fake ≥ 0.5"):  # fmt: skip
        assert needle in text, needle
    ela_minus_rgb = next(line for line in text.splitlines() if line.startswith("| ELA − RGB · warp |"))
    assert ela_minus_rgb.count(" ± ") == len(ORDER)
    robust = report.robustness(result)
    assert list(robust["quality"]) == [95, 70]
    keys = ["ela-warp", "ela-blend", "rgb-warp", "rgb-blend", "baseline-warp", "baseline-blend"]
    assert list(robust.columns) == ["quality", *(f"{k}_auc" for k in keys)]
    jpeg = [doc["cross_forger"]["baseline-blend"][s]["auc_mean"] for s in ("test_jpeg95", "test_jpeg70")]
    assert robust["baseline-blend_auc"].tolist() == jpeg
    curves = report.curves(models)
    assert list(curves["epoch"]) == [1, 2, 3] and curves["ela-warp_val_accuracy"].tolist() == [0.7, 0.95, 0.9]
    primary = models[1]  # ela-warp-s2: its own seed's AUC, not the first seed's
    headline = comparison.headline(result, primary, {"roc_auc": 0.9, "accuracy": 0.8})
    assert headline["model"] == "ela-warp-s2" and headline["roc_auc"] == 0.9
    cross = doc["cross_forger"]
    assert headline["margin_over_baseline"] == pytest.approx(
        cross["ela-warp"]["test"]["auc_mean"] - cross["baseline-warp"]["test"]["auc_mean"], abs=1e-4
    )
    for forger in ("blend", "swap"):
        assert headline[f"{forger}_roc_auc"] == cross["ela-warp"][f"test_{forger}"]["auc_per_seed"][1]
    for key in doc["families"]:
        assert headline[f"swap_{key}_auc_mean"] == cross[key]["test_swap"]["auc_mean"]
        assert headline[f"{key}_auc_mean"] == cross[key]["test"]["auc_mean"]
    assert headline["baseline_auc"] == cross["baseline-warp"]["test"]["auc_mean"]
    assert "matched_baseline_auc" in headline and "matched_rgb-blend_auc_mean" in headline
    assert not any(key.startswith("jpeg") for key in headline)


def _dvc_plot_columns() -> dict[str, set[str]]:
    """The columns dvc.yaml's top-level plots name, by file."""
    named: dict[str, set[str]] = {}
    for entry in yaml.safe_load(DVC_YAML.read_text())["plots"]:
        if isinstance(entry, dict):
            for spec in entry.values():
                for path, columns in spec.get("y", {}).items():
                    named.setdefault(path, set()).update([columns] if isinstance(columns, str) else columns)
    return named


def test_dvc_plots_name_columns_that_exist_with_one_family():
    """dvc.yaml's plots name the default run's columns: they must exist when only ELA on warp is
    trained, empty where not trained."""
    models = [_model("ela", "warp", 1, 6.0)]
    result = comparison.compare(models, {"warp": _predictions(0.0, 99)}, resamples=0, seed=0)
    curves = report.curves(models)
    robust = report.robustness(result)
    named = _dvc_plot_columns()
    assert named["plots/curves.csv"] <= set(curves.columns)
    assert named["plots/robustness.csv"] <= set(robust.columns)
    assert curves["rgb-blend_val_accuracy"].isna().all() and curves["ela-warp_val_accuracy"].notna().all()
    assert robust["rgb-warp_auc"].isna().all() and robust["baseline-blend_auc"].isna().all()
    assert robust["ela-warp_auc"].notna().all() and robust["baseline-warp_auc"].notna().all()
    mix = report.curves([_model("ela", "warp_blend", 1, 6.0)])
    assert named["plots/curves.csv"] <= set(mix.columns) and mix["ela-warp_blend_val_accuracy"].notna().all()


def test_outputs_match_the_golden_files(result):
    """compare.json and compare.md of the fixture, byte for byte as the hand-built tables wrote them."""
    result, _ = result
    assert json.dumps(result.to_json(), indent=2) + "\n" == (GOLDEN / "compare.json").read_text()
    assert report.markdown(result) == (GOLDEN / "compare.md").read_text()


def test_cross_forger_figure(result, tmp_path):
    result, _ = result
    path = tmp_path / "cross_forger.png"
    aucs, trained_on = report.cross_forger_grid(result)
    figures.auc_grid_figure(aucs, path, trained_on)
    figures.auc_grid_figure(aucs.where(aucs > 0.9), tmp_path / "n_a.png")  # NaN cells, no boxes
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_roc_curves_of_the_first_seed_and_the_baselines(result):
    result, models = result
    curves = report.roc_curves(result, models, _baselines(), seed=1)
    assert [label.split(" (AUC")[0] for label in curves] == [
        "ELA-CNN · warp s1",
        "ELA-CNN · blend s1",
        "RGB-CNN · warp s1",
        "RGB-CNN · blend s1",
        "sharpness baseline · warp",
        "sharpness baseline · blend",
    ]
    fpr, tpr = curves[next(iter(curves))]
    assert fpr.iloc[0] == 0 and tpr.iloc[-1] == 1 and len(fpr) == len(tpr)
    second = report.roc_curves(result, models, {}, seed=2)
    ela, rgb = (result.auc(key, "test").auc_per_seed[1] for key in ("ela-warp", "rgb-warp"))
    assert list(second) == [f"ELA-CNN · warp s2 (AUC {ela:.3f})", f"RGB-CNN · warp s2 (AUC {rgb:.3f})"]


def test_missing_or_incomplete_predictions_are_a_comparison_error(tmp_path):
    path = tmp_path / "baseline-warp.csv"
    with pytest.raises(comparison.ComparisonError, match="baseline-warp.csv not found"):
        comparison.read_predictions(path)
    _predictions(1.0, 0).drop(columns="p_fake").to_csv(path, index=False)
    with pytest.raises(comparison.ComparisonError, match=r"lacks columns \['p_fake'\]"):
        comparison.read_predictions(path)
    _predictions(1.0, 0).to_csv(path, index=False)
    assert tuple(comparison.read_predictions(path).columns) == evaluation.PREDICTION_COLUMNS


def test_files_are_the_compare_stage_outputs(result, tmp_path):
    """report.files names every output dvc.yaml declares for compare; written, compare.json and
    compare.md are the golden files, eval.json the primary model's headline, the rest plots."""
    result, models = result
    files = report.files(result, models, _baselines(), models[0], roc_seed=1)
    stage = yaml.safe_load(DVC_YAML.read_text())["stages"]["compare"]
    declared = [next(iter(e)) if isinstance(e, dict) else e for kind in ("outs", "metrics", "plots")
                for e in stage[kind]]  # fmt: skip
    assert sorted(map(str, files)) == sorted(declared)
    for path, content in files.items():
        report.write(tmp_path / path.name, content)
    assert (tmp_path / "compare.json").read_text() == (GOLDEN / "compare.json").read_text()
    assert (tmp_path / "compare.md").read_text() == (GOLDEN / "compare.md").read_text()
    headline = json.loads((tmp_path / "eval.json").read_text())
    assert headline["model"] == "ela-warp-s1" and headline["confusion_matrix"]
    assert headline["roc_auc"] == pytest.approx(result.auc("ela-warp", "test").auc_per_seed[0], abs=1e-4)
    assert list(pd.read_csv(tmp_path / "roc.csv").columns[:2]) == ["fpr", "tpr"]
    assert len(pd.read_csv(tmp_path / "confusion.csv")) == 60  # a real and a fake per test photo
    for name in ("cross_forger", "roc", "confusion", "curves", "robustness"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_a_comparison_read_back_from_its_json_makes_the_same_tables():
    """compare.json of a past run holds everything its tables need (docs/results.md is made so)."""
    doc = json.loads((GOLDEN / "compare.json").read_text())
    again = comparison.Comparison.from_json(doc)
    assert again.to_json() == doc
    assert report.markdown(again) == (GOLDEN / "compare.md").read_text()


def test_the_jpeg_ghost_is_a_last_row_and_leaves_the_others_as_they_were(result):
    """With the ghost's scores the comparison gains a row "JPEG ghost (untrained)" in every table;
    without them (the golden files above) it has none."""
    result, models = result
    with_ghost = comparison.compare(models, _baselines(), resamples=300, seed=0, ghost=_predictions(2.0, 97))
    doc, without = with_ghost.to_json(), result.to_json()
    assert list(doc["rows"]) == [*ROWS, "ghost"]
    assert doc["rows"]["ghost"] == {"label": "JPEG ghost (untrained)", "input": None, "fakes": ""}
    assert {k: v for k, v in doc["cross_forger"].items() if k != "ghost"} == without["cross_forger"]
    assert doc["differences"] == without["differences"] and doc["families"] == without["families"]
    assert (
        list(doc["cross_forger"]["ghost"]) == ORDER and doc["cross_forger"]["ghost"]["test"]["auc_mean"] > 0.6
    )
    text = report.markdown(with_ghost)
    ghost_lines = [line for line in text.splitlines() if line.startswith("| JPEG ghost (untrained) |")]
    assert len(ghost_lines) == 3  # the cost, cross-forger and false-positive tables
    assert "JPEG ghost (untrained): how unlike" in text and text != report.markdown(result)
    robust = report.robustness(with_ghost)
    assert robust["ghost_auc"].tolist() == [doc["cross_forger"]["ghost"][s]["auc_mean"] for s in ORDER[-2:]]
    assert report.markdown(comparison.Comparison.from_json(json.loads(json.dumps(doc)))) == text
    aucs, trained = report.cross_forger_grid(with_ghost)
    assert "JPEG ghost (untrained)" in aucs.index and not trained.loc["JPEG ghost (untrained)"].any()


def test_the_ghost_file_counts_only_when_it_holds_scores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = P.parse({"train": {"fakes": ["blend", "warp"]}})  # the primary recipe: warp
    assert comparison.load_ghost(p) is None  # no file
    path = tmp_path / "data" / "predictions" / "ghost-warp.csv"
    path.parent.mkdir(parents=True)
    path.write_text(",".join(evaluation.PREDICTION_COLUMNS) + "\n")
    assert comparison.load_ghost(p) is None  # the header alone: fewer than two ELA qualities
    _predictions(1.0, 5).to_csv(path, index=False)
    assert len(comparison.load_ghost(p)) == len(_predictions(1.0, 5))


def test_the_held_out_swaps_are_a_column_after_test_swap_and_in_the_headline():
    models = [
        dataclasses.replace(_model("ela", fakes, 1, 3.0), predictions=_predictions_with_unseen(seed))
        for seed, fakes in enumerate(("warp", "swap"))
    ]
    result = comparison.compare(models, {}, resamples=0, seed=0)
    assert result.sets == [*ORDER[:3], "test_swap_unseen", *ORDER[3:]]
    trained = report.cross_forger_grid(result)[1]
    assert (
        trained.loc["ELA-CNN · swap", "test_swap"] and not trained.loc["ELA-CNN · swap", "test_swap_unseen"]
    )
    headline = comparison.headline(result, models[0], {"roc_auc": 0.9})
    assert headline["swap_unseen_roc_auc"] == result.auc("ela-warp", "test_swap_unseen").auc_per_seed[0]
    assert headline["swap_unseen_ela-swap_auc_mean"] == result.auc("ela-swap", "test_swap_unseen").auc_mean
    assert "test_swap_unseen: swaps by settings no training recipe uses" in report.markdown(result)


def _predictions_with_unseen(seed: int) -> pd.DataFrame:
    """The fixture's sets, and the held-out swaps scored as test_swap is, apart."""
    unseen = _predictions(1.0, seed + 50)
    unseen = unseen[unseen["set"] == "test_swap"].assign(set="test_swap_unseen")
    return pd.concat([_predictions(3.0, seed), unseen], ignore_index=True)

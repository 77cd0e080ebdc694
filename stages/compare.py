"""Stage `compare`: every trained model family (train.inputs x train.fakes, one model per seed of
train.seeds) and each recipe's sharpness baseline side by side.

Reads data/predictions/, metrics/train/, metrics/eval/ and plots/history/ for the models the
params name (files of models no longer named are ignored), and data/predictions/baseline-<recipe>.csv
and metrics/baseline/<recipe>.json for each recipe. Writes metrics/compare.json and
metrics/compare.md (the tables: cost and AUC beside the paper's Table 2; the cross-forger table,
each family and baseline on every test set with seed spread and bootstrap intervals; the paired
ELA - RGB and family - baseline differences within each recipe; the false-positive rates at
eval.threshold), metrics/eval.json (the headline: the primary model's test metrics and its AUC on
each forger's set, each family's mean AUC per set, the primary recipe's baseline AUC and margin),
and the plots: plots/cross_forger.csv and .png (the cross-forger table, long form and heat map),
plots/roc.csv and plots/confusion.csv (primary model), plots/curves.csv (training curves per
family), plots/robustness.csv (AUC per JPEG quality), with PNG figures of each, all or none. Logs a
comparison MLflow run and nests the model runs under it; with tracking.register, registers the
primary model as a new version of tracking.model_name.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from faceswap_ela import comparison, evaluation, figures, layout, outputs, report, stage, tracking
from faceswap_ela import params as P
from faceswap_ela.testsets import TEST

COMPARE_JSON = Path("metrics/compare.json")
COMPARE_MD = Path("metrics/compare.md")
EVAL_JSON = Path("metrics/eval.json")
ROC_CSV, ROC_PNG = Path("plots/roc.csv"), Path("plots/roc.png")
CONFUSION_CSV, CONFUSION_PNG = Path("plots/confusion.csv"), Path("plots/confusion.png")
CURVES_CSV, CURVES_PNG = Path("plots/curves.csv"), Path("plots/curves.png")
ROBUSTNESS_CSV, ROBUSTNESS_PNG = Path("plots/robustness.csv"), Path("plots/robustness.png")
CROSS_FORGER_CSV, CROSS_FORGER_PNG = Path("plots/cross_forger.csv"), Path("plots/cross_forger.png")
UPSTREAM_METRICS = {
    "landmarks": Path("metrics/landmarks.json"),
    "materialize": Path("metrics/materialize.json"),
}
GALLERY = Path("plots/gallery.png")

log = logging.getLogger("compare")


def model_runs(name: str) -> tuple[object, object]:
    """The MLflow runs of one model: the one `train@` started and the one `evaluate@` logged to
    (the same run, unless the parameters changed in between)."""
    trained = tracking.read_run_file(layout.run_file(name)).get("run_id")
    evaluated = tracking.read_run_file(layout.eval_metrics(name)).get("mlflow_run_id")
    return trained, evaluated


def register_primary(tracker: tracking.Tracker, p: P.Params, name: str) -> str | None:
    """Register the primary model, as `evaluate@` logged it into its run, as a new version of
    tracking.model_name, tagged with the DVC experiment, the git commit and the runs; the version,
    or None (after one warning) when there is no logged model."""
    if not tracker.active:
        return None
    if not p.tracking.log_model:
        log.warning("tracking.log_model is false: no logged model, %s is not registered", name)
        return None
    run_id = model_runs(name)[1]
    if not isinstance(run_id, str) or not run_id:
        log.warning("no MLflow run of %s's evaluation: it is not registered", name)
        return None
    commit = tracking.git_commit()
    tags = {"dvc_exp_name": tracking.run_name(commit), "git_commit": commit, "model": name,
            "comparison_run_id": tracker.run_id, "params_hash": P.digest(p)}  # fmt: skip
    version = tracker.register_model(run_id, p.tracking.model_name, tags)
    if version is not None:
        tracker.set_tags({"registered_model": p.tracking.model_name, "registered_version": version})
    return version


def run(p: P.Params) -> None:
    models = [
        comparison.load_model_result(kind, fakes, seed) for kind, fakes, seed, _ in layout.model_names(p)
    ]
    baselines = {
        recipe: comparison.read_predictions(layout.baseline_predictions(recipe))
        for recipe in p.train.fakes
        if layout.baseline_predictions(recipe).is_file()
    }
    result = comparison.compare(
        models,
        baselines,
        resamples=p.eval.bootstrap,
        seed=p.seed,
        threshold=p.eval.threshold,
        primary_recipe=layout.primary_recipe(p),
    )
    primary = next(m for m in models if m.name == layout.primary(p))
    test = primary.predictions[primary.predictions["set"] == TEST]
    labels, p_fake = test["label"].to_numpy(), test["p_fake"].to_numpy()
    headline = comparison.headline(result, primary, evaluation.evaluate(labels, p_fake, p.eval.threshold))
    roc = evaluation.roc_table(labels, p_fake)
    confusion = evaluation.confusion_table(labels, evaluation.predict_labels(p_fake, p.eval.threshold))
    curves = report.curves(models)
    robustness = report.robustness(result)
    roc_curves = report.roc_curves(result, models, baselines, p.train.seeds[0])

    outs = (COMPARE_JSON, COMPARE_MD, EVAL_JSON, CROSS_FORGER_CSV, CROSS_FORGER_PNG, ROC_CSV, ROC_PNG,
            CONFUSION_CSV, CONFUSION_PNG, CURVES_CSV, CURVES_PNG, ROBUSTNESS_CSV, ROBUSTNESS_PNG)  # fmt: skip
    families = list(result.families)
    with outputs.atomic_outputs(*outs) as paths:
        tmp = dict(zip(outs, paths, strict=True))
        tmp[COMPARE_JSON].write_text(json.dumps(result.to_json(), indent=2) + "\n")  # keys in document order
        tmp[COMPARE_MD].write_text(report.markdown(result))
        outputs.write_json(tmp[EVAL_JSON], headline)
        outputs.write_csv(tmp[CROSS_FORGER_CSV], report.cross_forger_long(result))
        aucs, trained_on = report.cross_forger_grid(result)
        figures.auc_grid_figure(aucs, tmp[CROSS_FORGER_PNG], trained_on)
        outputs.write_csv(tmp[ROC_CSV], roc)
        figures.roc_figure(roc_curves, tmp[ROC_PNG])
        outputs.write_csv(tmp[CONFUSION_CSV], confusion)
        figures.confusion_figure(headline["confusion_matrix"], tmp[CONFUSION_PNG])
        outputs.write_csv(tmp[CURVES_CSV], curves)
        panels = {
            "validation accuracy": [f"{k}_val_accuracy" for k in families],
            "validation loss": [f"{k}_val_loss" for k in families],
        }
        figures.lines_figure(curves, "epoch", panels, tmp[CURVES_PNG])
        outputs.write_csv(tmp[ROBUSTNESS_CSV], robustness)
        auc_columns = [c for c in robustness.columns if c.endswith("_auc")]
        panels = {"test AUC, photos re-saved as JPEG": auc_columns}
        figures.lines_figure(robustness, "quality", panels, tmp[ROBUSTNESS_PNG], "JPEG quality")
    print(COMPARE_MD.read_text())

    upstream = UPSTREAM_METRICS | {f"baseline.{r}": layout.baseline_metrics(r) for r in p.train.fakes}
    with tracking.start_run(p, tags={"role": "comparison", "primary_model": primary.name}) as tracker:
        tracker.log_metrics(
            tracking.numeric_leaves({k: v for k, v in headline.items() if k != "confusion_matrix"}, TEST)
        )
        for prefix, part in result.tracked().items():
            tracker.log_metrics(tracking.numeric_leaves(part, prefix))
        for path in (COMPARE_JSON, COMPARE_MD, EVAL_JSON):
            tracker.log_artifact(path, "metrics")
        for path in (CROSS_FORGER_PNG, CROSS_FORGER_CSV, ROC_PNG, CONFUSION_PNG, CURVES_PNG, ROBUSTNESS_PNG,
                     GALLERY, ROBUSTNESS_CSV):  # fmt: skip
            tracker.log_artifact(path, "plots")
        for prefix, path in upstream.items():
            tracker.log_json(path, prefix)
        runs = [model_runs(m.name) for m in models]
        runs = list(dict.fromkeys(r for pair in runs for r in pair if isinstance(r, str) and r))
        tracker.set_tags({"model_runs": ",".join(runs), "models": ",".join(m.name for m in models)})
        tracker.adopt(runs)
        if p.tracking.register:
            register_primary(tracker, p, primary.name)


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(comparison.ComparisonError,)))

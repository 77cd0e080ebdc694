"""Stage `compare`: every trained model family (train.inputs x train.fakes, one model per seed of
train.seeds) and each recipe's sharpness baseline side by side.

Reads data/predictions/, metrics/train/, metrics/eval/ and plots/history/ for the models the
params name (files of models no longer named are ignored), data/predictions/baseline-<recipe>.csv
and metrics/baseline/<recipe>.json for each recipe, and the primary recipe's
data/predictions/ghost-<recipe>.csv (the JPEG-ghost row, when not empty). Writes metrics/compare.json and
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

import sys

from faceswap_ela import comparison, layout, outputs, registry, report, stage, tracking
from faceswap_ela import params as P
from faceswap_ela.testsets import TEST

# what the comparison run logs beside its metrics
METRIC_ARTIFACTS = (layout.COMPARE_JSON, layout.COMPARE_MD, layout.EVAL_JSON)
PLOT_ARTIFACTS = (
    layout.CROSS_FORGER_PNG,
    layout.CROSS_FORGER_CSV,
    layout.ROC_PNG,
    layout.CONFUSION_PNG,
    layout.CURVES_PNG,
    layout.ROBUSTNESS_PNG,
    layout.GALLERY,
    layout.ROBUSTNESS_CSV,
)


def run(p: P.Params) -> None:
    models, baselines = comparison.load_results(p)
    result = comparison.compare(
        models,
        baselines,
        resamples=p.eval.bootstrap,
        seed=p.seed,
        threshold=p.eval.threshold,
        primary_recipe=layout.primary_recipe(p),
        ghost=comparison.load_ghost(p),
    )
    primary = next(m for m in models if m.name == layout.primary(p))
    files = report.files(result, models, baselines, primary, roc_seed=p.train.seeds[0])
    with outputs.atomic_outputs(*files) as paths:
        for path, content in zip(paths, files.values(), strict=True):
            report.write(path, content)
    print(layout.COMPARE_MD.read_text())
    track(p, result, files[layout.EVAL_JSON], [m.name for m in models], primary.name)


def track(p: P.Params, result: comparison.Comparison, headline: dict, names: list[str], primary: str) -> None:
    """The comparison MLflow run: the headline and compare.json's metrics, the tables and figures,
    the upstream stages' metrics; the runs of the models (``names``) nested under it; the primary
    model registered."""
    upstream = {"landmarks": layout.LANDMARKS_METRICS, "materialize": layout.MATERIALIZE_METRICS}
    upstream |= {f"baseline.{r}": layout.baseline_metrics(r) for r in p.train.fakes}
    with tracking.start_run(p, tags={"role": "comparison", "primary_model": primary}) as tracker:
        scalars = {k: v for k, v in headline.items() if k != "confusion_matrix"}
        tracker.log_metrics(tracking.numeric_leaves(scalars, TEST))
        for prefix, part in result.tracked().items():
            tracker.log_metrics(tracking.numeric_leaves(part, prefix))
        for path in METRIC_ARTIFACTS:
            tracker.log_artifact(path, "metrics")
        for path in PLOT_ARTIFACTS:
            tracker.log_artifact(path, "plots")
        for prefix, path in upstream.items():
            tracker.log_json(path, prefix)
        runs = registry.run_ids(names)
        tracker.set_tags({"model_runs": ",".join(runs), "models": ",".join(names)})
        tracker.adopt(runs)
        if p.tracking.register:
            registry.register_primary(tracker, p, primary)


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(comparison.ComparisonError,)))

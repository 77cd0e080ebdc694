"""Stage `evaluate`: models/model.keras on the test split (data/ela/test.npy, streamed).

Writes metrics/eval.json (accuracy, ROC AUC, precision, recall, F1 with fake as the positive class
at eval.threshold, the confusion matrix), plots/roc.csv, plots/confusion.csv, plots/roc.png and
plots/confusion.png, all or none. Logs them into the MLflow run that `train` started (from
models/run.json), with the upstream stages' metrics and the gallery figure.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import keras

from faceswap_ela import dataset, evaluation, figures, stage, tracking
from faceswap_ela import params as P
from faceswap_ela.outputs import atomic_outputs

DATA = Path("data/ela")
ARRAY = "ela"
MODEL = Path("models/model.keras")
RUN = Path("models/run.json")
METRICS = Path("metrics/eval.json")
ROC_CSV = Path("plots/roc.csv")
CONFUSION_CSV = Path("plots/confusion.csv")
ROC_PNG = Path("plots/roc.png")
CONFUSION_PNG = Path("plots/confusion.png")
UPSTREAM_METRICS = {
    "landmarks": Path("metrics/landmarks.json"),
    "materialize": Path("metrics/materialize.json"),
}
GALLERY = Path("plots/gallery.png")
PREDICT_BATCH = 100  # memory only: the predictions do not depend on it

log = logging.getLogger("evaluate")


def run(p: P.Params) -> None:
    if not MODEL.is_file():
        raise stage.StageError(f"{MODEL} not found: run the train stage first")
    split = dataset.load_split(DATA, "test", ARRAY)
    try:
        net = keras.saving.load_model(MODEL, compile=False)
    except Exception as exc:
        raise stage.StageError(f"cannot load {MODEL}: {exc}") from None

    with tracking.resume_run(
        tracking.read_run_file(RUN), p, tags={"eval_backend": keras.backend.backend()}
    ) as tracker:
        p_fake = evaluation.predict_fake(net, split.images, batch_size=PREDICT_BATCH)
        labels = split.labels
        metrics = evaluation.evaluate(labels, p_fake, p.eval.threshold)
        roc = evaluation.roc_table(labels, p_fake)
        confusion = evaluation.confusion_table(labels, evaluation.predict_labels(p_fake, p.eval.threshold))
        outs = (METRICS, ROC_CSV, CONFUSION_CSV, ROC_PNG, CONFUSION_PNG)
        with atomic_outputs(*outs) as (metrics_tmp, roc_tmp, confusion_tmp, roc_png, confusion_png):
            metrics_tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            roc.to_csv(roc_tmp, index=False, lineterminator="\n")
            confusion.to_csv(confusion_tmp, index=False, lineterminator="\n")
            figures.roc_figure(roc["fpr"], roc["tpr"], metrics["roc_auc"], roc_png)
            figures.confusion_figure(metrics["confusion_matrix"], confusion_png)
        auc = "n/a" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.4f}"
        log.info(
            "test: accuracy %.4f, AUC %s, precision %.4f, recall %.4f, F1 %.4f on %d crops",
            metrics["accuracy"], auc, metrics["precision"], metrics["recall"], metrics["f1"], metrics["n"],
        )  # fmt: skip

        scalars = {k: v for k, v in metrics.items() if k != "confusion_matrix"}
        tracker.log_metrics(tracking.numeric_leaves(scalars, "test"))
        for path in (METRICS, ROC_CSV, ROC_PNG, CONFUSION_PNG, GALLERY):
            tracker.log_artifact(path, path.parent.name)
        for prefix, path in UPSTREAM_METRICS.items():
            tracker.log_json(path, prefix)


if __name__ == "__main__":
    sys.exit(stage.main(run, expected=(dataset.DatasetError,)))

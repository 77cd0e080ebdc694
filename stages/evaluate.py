"""Stage `evaluate@<input>-<recipe>-<seed>`: models/<name>/model.keras on every test set in data/ela
(the standard test split, the other forgers' test_<forger>, test_matched and test_jpeg<q>), streamed.

Writes data/predictions/<name>.csv (set, crop_id, photo_id, label, p_fake: every test crop of
every set) and metrics/eval/<name>.json (accuracy, ROC AUC, precision, recall, F1 with fake as the
positive class at eval.threshold, and the confusion matrix, per set), all or none. The forward
pass runs under train.precision, as training did. Logs them, with the ROC figure of the standard
test set and (tracking.log_model) the model with its card (models/<name>/card.json, in the MLmodel
metadata), as a Keras model and as the detector a team serves (detector.py), into the model's MLflow
run (models/<name>/run.json).
"""

from __future__ import annotations

import functools
import logging
import sys
import tempfile
from pathlib import Path

import keras

from faceswap_ela import card, dataset, detector, evaluation, figures, hardware, layout, stage, tracking
from faceswap_ela import model as cnn
from faceswap_ela import params as P
from faceswap_ela.outputs import atomic_outputs, write_csv, write_json
from faceswap_ela.testsets import TEST

log = logging.getLogger("evaluate")


def run(p: P.Params, input_kind: str, fakes: str, seed: int) -> None:
    name = layout.model_name(input_kind, fakes, seed)
    model = layout.model_file(name)
    if not model.is_file():
        raise stage.StageError(f"{model} not found: run the train@{input_kind}-{fakes}-{seed} stage first")
    precision = hardware.resolve_precision(p.train.precision)
    try:
        saved = keras.saving.load_model(model, compile=False)  # float32, as train@ saved it
        net = cnn.with_policy(saved, precision.policy)
    except Exception as exc:
        raise stage.StageError(f"cannot load {model}: {exc}") from None

    card_file = layout.card_file(name)
    model_card = card.read(card_file) if card_file.is_file() else None  # logged with the model
    info = tracking.read_run_file(layout.run_file(name))
    tags = {
        "eval_backend": keras.backend.backend(),
        "eval_precision": precision.precision,
        "input": input_kind,
        "fakes": fakes,
        "seed": seed,
    }
    with tracking.resume_run(info, p, tags=tags, model=name) as tracker:
        metrics = {
            "model": name,
            "input": input_kind,
            "fakes": fakes,
            "seed": seed,
            "precision": precision.precision,
            "mlflow_run_id": tracker.run_id,
        }

        def score(set_name: str) -> tuple[dataset.Split, object]:
            split = dataset.load_split(layout.ELA_DIR, set_name, input_kind)
            return split, evaluation.predict_fake(net, split.images)

        predictions, metrics["sets"] = evaluation.score_sets(
            dataset.test_sets(layout.ELA_DIR), score, p.eval.threshold, name
        )
        outs = (layout.predictions_file(name), layout.eval_metrics(name))
        with atomic_outputs(*outs) as (predictions_tmp, metrics_tmp):
            write_csv(predictions_tmp, predictions, float_format="%.7g")
            write_json(metrics_tmp, metrics)

        for set_name, values in metrics["sets"].items():
            scalars = {k: v for k, v in values.items() if k != "confusion_matrix"}
            tracker.log_metrics(tracking.numeric_leaves(scalars, set_name))
        test = predictions[predictions["set"] == TEST]
        roc = evaluation.roc_table(test["label"].to_numpy(), test["p_fake"].to_numpy())
        with tempfile.TemporaryDirectory() as tmp:
            figure = Path(tmp) / "roc.png"
            label = f"{name} (AUC = {metrics['sets'][TEST]['roc_auc'] or float('nan'):.3f})"
            figures.roc_figure({label: (roc["fpr"], roc["tpr"])}, figure)
            tracker.log_artifact(figure, "plots")
        tracker.log_artifact(outs[1], "metrics")
        if p.tracking.log_model:
            tracker.log_model(saved, saved=model, card=model_card)
            detector.log_detector(tracker, model, model_card, p)


if __name__ == "__main__":
    args = stage.model_arguments(__doc__.splitlines()[0])
    sys.exit(
        stage.main(
            functools.partial(run, input_kind=args.input, fakes=args.fakes, seed=args.seed),
            expected=(dataset.DatasetError, card.CardError),
        )
    )

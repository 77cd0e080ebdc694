"""Stage `train@<input>-<recipe>-<seed>`: the paper's CNN on the ELA images (input ela) or the raw
crops (input rgb, "direct detection") of a training recipe's set, data/ela/train_<recipe>_<input>.npy
(the train reals and the fakes of the recipe's forgers: warp, blend, a mix such as warp_blend),
memory-mapped and streamed, with the training seed given, early-stopped on a group-disjoint
validation slice of the train split (drawn by the global seed, so every model holds out the same
groups). With model.arch small it trains the small fully convolutional net instead (faceswap_ela.model).

Writes models/<name>/model.keras (the best weights, without optimizer state), models/<name>/card.json
(what the model needs to be used: input, recipe, ELA and ROI settings, precision),
models/<name>/run.json (the MLflow run that `evaluate` resumes), metrics/train/<name>.json and
plots/history/<name>.csv, all or none. Trains under train.precision (auto: mixed bfloat16 on a CPU
with AMX or AVX-512-BF16, mixed float16 on a GPU, else float32). Logs params, per-epoch metrics and
a history figure to MLflow; `evaluate` logs the model.
"""

from __future__ import annotations

import functools
import logging
import sys
import tempfile
from pathlib import Path

from faceswap_ela import card, dataset, figures, hardware, layout, stage, testsets, tracking, training
from faceswap_ela import params as P
from faceswap_ela.outputs import atomic_outputs, write_csv, write_json

log = logging.getLogger("train")


def run(p: P.Params, input_kind: str, fakes: str, seed: int) -> None:
    name = layout.model_name(input_kind, fakes, seed)
    model, run_file, card_file = layout.model_file(name), layout.run_file(name), layout.card_file(name)
    metrics_file, history_file = layout.train_metrics(name), layout.history_file(name)
    split = dataset.training_split(layout.ELA_DIR, testsets.recipe_set(fakes), input_kind)

    precision = hardware.resolve_precision(p.train.precision)
    tags = {
        "backend": precision.backend,
        "device": precision.device,
        "precision": precision.precision,
        "cpu_flags": " ".join(precision.cpu_flags),
        "input": input_kind,
        "fakes": fakes,
        "seed": seed,
    }
    with tracking.start_run(p, tags=tags, model=name) as tracker:
        result = training.train(
            split.images,
            split.table,
            p.train,
            seed,
            val_seed=p.seed,
            on_epoch=tracker.log_epoch,
            precision=precision,
            arch=p.model,
        )
        metrics = {**result.metrics, "input": input_kind, "fakes": fakes, "seed": seed, "model": name}
        export = training.inference_copy(result.model)
        outs = (model, card_file, run_file, metrics_file, history_file)
        with atomic_outputs(*outs) as (model_tmp, card_tmp, run_tmp, metrics_tmp, history_tmp):
            training.save_model(export, model_tmp)
            write_json(card_tmp, card.make(p, input_kind, fakes, seed, name, precision.precision))
            metrics["model_bytes"] = model_tmp.stat().st_size
            write_json(run_tmp, tracker.info())
            write_json(metrics_tmp, metrics)
            write_csv(history_tmp, result.history)
        log.info("wrote %s", ", ".join(map(str, outs)))

        tracker.log_metrics(tracking.numeric_leaves(metrics, "train"))
        with tempfile.TemporaryDirectory() as tmp:
            figure = Path(tmp) / "history.png"
            figures.history_figure(result.history, figure, best_epoch=metrics["best_epoch"])
            tracker.log_artifact(figure, "plots")
        tracker.log_artifact(history_file, "plots")
        tracker.log_artifact(metrics_file, "metrics")


if __name__ == "__main__":
    args = stage.model_arguments(__doc__.splitlines()[0])
    sys.exit(
        stage.main(
            functools.partial(run, input_kind=args.input, fakes=args.fakes, seed=args.seed),
            expected=(dataset.DatasetError,),
        )
    )

"""Train the ELA-CNN on the ela stage's tensors with the pipeline's own training loop, once per
precision, and print samples/s, epochs and test AUC for each: the GPU check.

The GPU machine has PyTorch (or JAX) but no TensorFlow, so run it under another Keras backend:

    KERAS_BACKEND=torch python benchmarks/gpu.py --data data/ela --precisions float32 float16

`benchmarks/gpu.sh` does that after `dvc repro ela` has written data/ela. Each precision trains in
its own process (a fresh device and dtype state); the seed, the validation groups and every other
setting are params.yaml's. It runs on a CPU too (slowly), which is how it is tested.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def train_once(data: Path, params_file: Path, precision: str, epochs: int | None) -> dict:
    from faceswap_ela import dataset, evaluation, hardware, layout, testsets, training
    from faceswap_ela import params as P

    p = P.load(params_file)
    settings = p.train.model_copy(update={"precision": precision, **({"epochs": epochs} if epochs else {})})
    choice = hardware.resolve_precision(precision)
    seed = p.train.seeds[0]
    split = dataset.load_split(data, testsets.recipe_set(layout.primary_recipe(p)), "ela")
    result = training.train(
        split.images, split.table, settings, seed, val_seed=p.seed, precision=choice, verbose=2
    )
    test = dataset.load_split(data, "test", "ela")
    p_fake = evaluation.predict_fake(result.model, test.images)
    scores = evaluation.evaluate(test.labels, p_fake, p.eval.threshold)
    keys = ("backend", "device", "precision", "dtype_policy", "samples_per_s", "epochs_run", "best_epoch")
    return {
        **{key: result.metrics[key] for key in keys},
        "wall_seconds": result.metrics["wall_seconds"],
        "test_auc": scores["roc_auc"],
        "test_accuracy": scores["accuracy"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ela"), help="the ela stage's folder")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--precisions", nargs="+", default=["float32", "float16"])
    parser.add_argument("--epochs", type=int, help="at most this many epochs (default: train.epochs)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(train_once(args.data, args.params, args.worker, args.epochs)), flush=True)
        return 0

    results = []
    for precision in args.precisions:
        command = [sys.executable, __file__, "--worker", precision, "--data", str(args.data)]
        command += ["--params", str(args.params)] + (["--epochs", str(args.epochs)] if args.epochs else [])
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            print(f"{precision}: failed (exit {done.returncode})", file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)

    print(f"\nKeras backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}, {results[0]['device']}")
    print(f"{'precision':10s} {'samples/s':>10s} {'epochs':>7s} {'best':>5s} {'wall s':>8s} {'test AUC':>9s}")
    for r in results:
        auc = "n/a" if r["test_auc"] is None else f"{r['test_auc']:.4f}"
        print(
            f"{r['precision']:10s} {r['samples_per_s']:10.1f} {r['epochs_run']:7d} {r['best_epoch']:5d} "
            f"{r['wall_seconds']:8.0f} {auc:>9s}"
        )
    base = results[0]["samples_per_s"]
    for r in results[1:]:
        print(f"{r['precision']} / {results[0]['precision']}: x{r['samples_per_s'] / base:.2f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

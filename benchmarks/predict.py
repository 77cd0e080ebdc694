"""Scoring speed of `faceswap-ela predict` on a folder of photos (by default the first 200 of
../shared/datasets/helen-train): photos/s with 1 worker and with 2 (the workers read the photos and
find, crop and ELA their faces; the CNN runs in the main process, in batches, meanwhile), their
ratio, and whether the outputs are identical. Skipped, saying so, where the folder is missing.

Each run is the CLI's own entry point (cli.main) in this process, its output kept in memory, after
a warm-up run on 2 photos that pays TensorFlow's start-up; a run's time includes loading the Keras
model and starting the worker pool. The model is MODEL (default models/ela-warp-s42/model.keras,
the paper's ELA-CNN of the last `dvc repro`); nothing is trained: where there is none, an untrained
paper CNN with a card from params.yaml is built in a temporary folder (the output says so), as
fast as a trained one, its scores meaningless.

    python benchmarks/predict.py [MODEL] [--folder DIR] [--limit 200] [--workers 1 2] [--params FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from faceswap_ela import card, cli, layout
from faceswap_ela import params as P
from faceswap_ela.images import IMAGE_SUFFIXES
from faceswap_ela.parallel import n_workers

ROOT = Path(__file__).resolve().parents[1]
HELEN = ROOT.parent / "shared" / "datasets" / "helen-train"
DEFAULT_MODEL = ROOT / layout.model_file("ela-warp-s42")


def untrained_model(folder: Path, p: P.Params) -> Path:
    """The paper's CNN, untrained, for params.yaml's ROI and ELA settings, with its card."""
    import keras

    from faceswap_ela import ela, training
    from faceswap_ela import model as cnn

    keras.utils.set_random_seed(p.seed)
    net = cnn.build_model((p.roi.size, p.roi.size, ela.channels(p.ela)))
    path = folder / "model.keras"
    training.save_model(training.inference_copy(net), path)
    paper = p.model_copy(update={"model": P.ModelParams()})
    model_card = card.make(paper, "ela", "warp", p.train.seeds[0], "untrained", "float32")
    card.path_for(path).write_text(json.dumps(model_card))
    return path


def predict(photos: list[Path], model: Path, params: Path, workers: int) -> tuple[float, str]:
    """One `faceswap-ela predict` run: its seconds and its JSON output."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["predict", *map(str, photos), "--model", str(model), "--params", str(params),
            "--format", "json", "--workers", str(workers)]  # fmt: skip
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    seconds = time.perf_counter() - start
    if code == 2:
        raise SystemExit(f"faceswap-ela predict failed: {err.getvalue().strip()}")
    return seconds, out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--folder", type=Path, default=HELEN)
    parser.add_argument("--limit", type=int, default=200, help="the first N photos (default 200)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    if not args.folder.is_dir():
        print(f"skipped: {args.folder} is missing (the shared development datasets)")
        return 0
    photos = sorted(f for f in args.folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="bench-predict.") as tmp:
        model = args.model
        if not model.is_file():
            model = untrained_model(Path(tmp), P.load(args.params))
            print(f"no model at {args.model}: an untrained paper CNN (as fast; its scores mean nothing)")
        print(f"faceswap-ela predict on {len(photos)} photos of {args.folder}, model {model}, "
              f"{n_workers(0)} cores")  # fmt: skip
        predict(photos[:2], model, args.params, 1)  # TensorFlow's and dlib's start-up
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        rates, outputs = {}, {}
        for workers in args.workers:
            seconds, outputs[workers] = predict(photos, model, args.params, workers)
            rows = json.loads(outputs[workers])
            faces = sum(row["status"] == "ok" for row in rows)
            failed = sum(row["status"] == "error" for row in rows)
            rates[workers] = len(photos) / seconds
            print(f"workers={workers}: {rates[workers]:.1f} photos/s ({seconds:.1f} s): "
                  f"{faces} faces scored, {failed} photos failed")  # fmt: skip
        print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    first, last = args.workers[0], args.workers[-1]
    print(f"{last} workers / {first} worker(s): {rates[last] / rates[first]:.2f}x")
    same = len(set(outputs.values())) == 1
    print(f"outputs identical with {' and '.join(map(str, args.workers))} workers: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""Training of the paper's CNN on a memory-mapped split, with a group-disjoint validation slice of
the train split and early stopping on validation loss (the best weights are restored).

Only ``keras`` is used for the model and the loop, so the same code runs under
``KERAS_BACKEND=tensorflow`` (the default), ``torch`` or ``jax``; each backend places the work on a
GPU by itself when one is visible. ``train.precision`` picks the dtype policy (see
faceswap_ela.hardware).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from faceswap_ela import batches, dataset, hardware
from faceswap_ela import model as cnn
from faceswap_ela.params import ModelParams, TrainParams

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
EpochHook = Callable[[int, dict[str, float]], None]


class _Timer(keras.callbacks.Callback):
    """Seconds spent in training batches and in validation, per epoch; forwards epoch logs to a hook."""

    def __init__(self, on_epoch: EpochHook | None):
        super().__init__()
        self.on_epoch = on_epoch
        self.train_seconds = 0.0
        self.val_seconds = 0.0
        self._start = 0.0
        self._val_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._val_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.val_seconds += time.perf_counter() - self._val_start

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds += time.perf_counter() - self._start
        if self.on_epoch is not None and logs:
            self.on_epoch(epoch + 1, {k: float(v) for k, v in logs.items()})


@dataclass
class TrainResult:
    model: keras.Model
    history: pd.DataFrame  # HISTORY_COLUMNS, epoch from 1
    metrics: dict[str, object] = field(default_factory=dict)


def train(
    images: np.ndarray,
    table: pd.DataFrame,
    settings: TrainParams,
    seed: int,
    *,
    val_seed: int | None = None,
    on_epoch: EpochHook | None = None,
    workers: int = 1,
    verbose: int | str = "auto",
    precision: hardware.PrecisionChoice | None = None,
    arch: ModelParams | None = None,
) -> TrainResult:
    """Train the CNN on ``images`` (N x H x W x C uint8, a memory map; C is 3, or 3k for ELA at k
    qualities) labelled by ``table`` (columns group, label). A ``settings.val_fraction`` share of
    the groups, drawn by ``val_seed`` (``seed`` when None), is held out for validation and early
    stopping (patience ``settings.patience``, best weights restored); ``seed`` drives the weights,
    dropout and shuffle; a ``pair`` column keeps each real beside its own fake in one batch (a
    pair's crops share a group, so the validation slice never splits one). ``on_epoch(epoch,
    logs)`` is called after each epoch (epoch from 1). ``precision`` is the choice for
    ``settings.precision`` on this machine (resolved here when None). ``arch`` picks the network
    (``model.build``: the paper's CNN when None).
    """
    labels = table["label"].to_numpy(dtype=np.int64)
    train_idx, val_idx = dataset.validation_split(
        table["group"].to_numpy(dtype=str), settings.val_fraction, seed if val_seed is None else val_seed
    )
    train_data = batches.CropSequence(
        images,
        labels,
        indices=train_idx,
        batch_size=settings.batch_size,
        shuffle=True,
        seed=seed,
        workers=workers,
        pairs=table["pair"].to_numpy(dtype=str) if "pair" in table else None,
    )
    val_data = batches.CropSequence(
        images, labels, indices=val_idx, batch_size=settings.batch_size, workers=workers
    )

    if precision is None:
        precision = hardware.resolve_precision(settings.precision)
    keras.utils.set_random_seed(seed)
    net = cnn.build(tuple(images.shape[1:]), arch, policy=precision.policy)
    cnn.compile_model(net, settings.lr, settings.rho, settings.epsilon)
    log.info(
        "training on %s with Keras %s (%s backend, %s): %d train / %d validation crops (%d / %d groups)",
        precision.device, keras.__version__, precision.backend, precision.policy,
        len(train_idx), len(val_idx),
        len(np.unique(table["group"].iloc[train_idx])), len(np.unique(table["group"].iloc[val_idx])),
    )  # fmt: skip
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2

    timer = _Timer(on_epoch)
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True, verbose=1
    )
    start = time.perf_counter()
    fit = net.fit(
        train_data,
        validation_data=val_data,
        epochs=settings.epochs,
        callbacks=[timer, stopper],
        verbose=verbose,
    )
    wall = time.perf_counter() - start

    history = history_frame(fit.history)
    epochs_run = len(history)
    best_epoch = int(history["epoch"][history["val_loss"].idxmin()]) if epochs_run else 0
    train_seconds = max(timer.train_seconds - timer.val_seconds, 1e-9)
    metrics = {
        "backend": precision.backend,
        "device": precision.device,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "best_val_loss": float(history["val_loss"].min()),
        "best_val_accuracy": float(history["val_accuracy"][history["val_loss"].idxmin()]),
        "wall_seconds": round(wall, 3),
        "samples_per_s": round(len(train_idx) * epochs_run / train_seconds, 3),
        "params": cnn.parameter_count(net),
        "multiply_adds": cnn.multiply_adds(net),
        "precision": precision.precision,
        "precision_requested": precision.requested,
        "dtype_policy": precision.policy,
        "cpu_flags": " ".join(precision.cpu_flags),
        "train_samples": int(len(train_idx)),
        "val_samples": int(len(val_idx)),
        "train_groups": int(len(np.unique(table["group"].iloc[train_idx]))),
        "val_groups": int(len(np.unique(table["group"].iloc[val_idx]))),
    }
    log.info(
        "best epoch %d of %d (val_loss %.4f), %.1f training samples/s, %.0f s",
        best_epoch, epochs_run, metrics["best_val_loss"], metrics["samples_per_s"], wall,
    )  # fmt: skip
    return TrainResult(net, history, metrics)


def history_frame(history: dict[str, list[float]]) -> pd.DataFrame:
    """Keras' History.history as a table: epoch (from 1), loss, accuracy, val_loss, val_accuracy."""
    epochs = len(history.get("loss", []))
    frame = pd.DataFrame({"epoch": np.arange(1, epochs + 1)})
    for column in HISTORY_COLUMNS[1:]:
        frame[column] = np.asarray(history.get(column, [np.nan] * epochs), dtype=np.float64)
    return frame


def inference_copy(net: keras.Model) -> keras.Model:
    """The same architecture and weights in float32, without optimizer state (a third of the
    file size); it loads and predicts under any policy (model.load_for_inference)."""
    return cnn.with_policy(net, "float32")


def save_model(net: keras.Model, path: str | os.PathLike) -> None:
    """Save as a .keras archive at ``path`` (any name: Keras insists on the suffix, so the file is
    written under a temporary .keras name beside it, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.keras")
    try:
        net.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

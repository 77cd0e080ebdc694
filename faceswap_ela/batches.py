"""Batches for Keras: (images in [0, 1] float32, one-hot labels) gathered from the uint8 memory maps
of faceswap_ela.dataset, so nothing is loaded whole."""

from __future__ import annotations

import math

import keras
import numpy as np

from faceswap_ela import seeding


def one_hot(labels: np.ndarray, classes: int = 2) -> np.ndarray:
    return keras.utils.to_categorical(labels, classes).astype(np.float32)


class CropSequence(keras.utils.PyDataset):
    """Batches of (images in [0, 1] float32, one-hot labels) gathered from a uint8 memory map.

    ``indices`` selects the rows to serve (all by default). With ``shuffle`` the order is drawn anew
    each epoch by ``seeding.rng(seed, "shuffle", epoch)``, so it depends only on the seed and the
    epoch; each batch is then read with sorted indices (sequential reads through the map). Without
    ``labels`` a batch is the images alone (for predict).

    ``pairs`` (a key per row, "" for none) keeps the rows of one key together: the units shuffled
    are the pairs (a row without a key alone), and a batch holds ``batch_size // 2`` whole pairs.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        indices: np.ndarray | None = None,
        batch_size: int = 100,
        shuffle: bool = False,
        seed: int = 0,
        workers: int = 1,
        max_queue_size: int = 10,
        pairs: np.ndarray | None = None,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(images):
            raise ValueError(f"{len(self.labels)} labels for {len(images)} images")
        if pairs is not None and len(pairs) != len(images):
            raise ValueError(f"{len(pairs)} pair keys for {len(images)} images")
        self.units = None if pairs is None else _units(self.indices, np.asarray(pairs, dtype=str))
        self.batch_size = int(batch_size)
        self.per_batch = self.batch_size  # units per batch: a pair counts two
        if self.units is not None:
            self.per_batch = max(1, self.batch_size // max((len(unit) for unit in self.units), default=1))
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.order = self._order(0)

    def _order(self, epoch: int) -> np.ndarray | list[np.ndarray]:
        if self.units is not None:
            if not self.shuffle:
                return self.units
            return [
                self.units[i] for i in seeding.rng(self.seed, "shuffle", epoch).permutation(len(self.units))
            ]
        if not self.shuffle:
            return self.indices
        return seeding.rng(self.seed, "shuffle", epoch).permutation(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Serve the order of ``epoch`` (0-based) from now on."""
        self.epoch = int(epoch)
        self.order = self._order(self.epoch)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.per_batch)

    def batch_indices(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        chosen = self.order[index * self.per_batch : (index + 1) * self.per_batch]
        return np.sort(np.concatenate(chosen) if self.units is not None else chosen)

    def __getitem__(self, index: int):
        rows = self.batch_indices(index)
        x = np.divide(self.images[rows], 255, dtype=np.float32)
        if self.labels is None:
            return x
        return x, one_hot(self.labels[rows])


def _units(indices: np.ndarray, pairs: np.ndarray) -> list[np.ndarray]:
    """The rows of ``indices`` grouped by their pair key (in the order each key first comes), a row
    without a key alone."""
    units: list[list[int]] = []
    where: dict[str, int] = {}
    for row in indices:
        key = pairs[row]
        if key and key in where:
            units[where[key]].append(int(row))
            continue
        if key:
            where[key] = len(units)
        units.append([int(row)])
    return [np.asarray(unit, dtype=np.int64) for unit in units]

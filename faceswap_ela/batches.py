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
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(images):
            raise ValueError(f"{len(self.labels)} labels for {len(images)} images")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.order = self._order(0)

    def _order(self, epoch: int) -> np.ndarray:
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
        return math.ceil(len(self.indices) / self.batch_size)

    def batch_indices(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        return np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])

    def __getitem__(self, index: int):
        rows = self.batch_indices(index)
        x = np.divide(self.images[rows], 255, dtype=np.float32)
        if self.labels is None:
            return x
        return x, one_hot(self.labels[rows])

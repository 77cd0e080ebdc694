"""Training input: the uint8 tensors of the ela stage, written and memory-mapped.

``data/ela/{split}_ela.npy`` holds the ELA images and ``data/ela/{split}_rgb.npy`` the raw crops in the
same order (the "direct detection" variant trains on those), ``data/ela/{split}.csv`` one row per
crop (crop_id, photo_id, group, label; and pair, the crop id of the pair's real, for a training set
rendered in pairs). Nothing is loaded whole: faceswap_ela.batches gathers a batch
from the memory map and scales it to [0, 1] float32 when Keras asks for it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faceswap_ela import seeding
from faceswap_ela.testsets import TEST, set_order

ARRAYS = ("ela", "rgb")
COLUMNS = ("crop_id", "photo_id", "group", "label")


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Split:
    """One split: ``images`` is a read-only memory map (N, H, W, 3) uint8 ((N, H, W, 3k) for ELA at
    k qualities), ``table`` its rows."""

    images: np.ndarray
    table: pd.DataFrame

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy(dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        return self.table["group"].to_numpy(dtype=str)

    @property
    def pairs(self) -> np.ndarray | None:
        """Each crop's pair (the crop id of the pair's real, "" for none), None without pairs."""
        return self.table["pair"].to_numpy(dtype=str) if "pair" in self.table else None

    def __len__(self) -> int:
        return len(self.table)


def tensor_path(folder: str | os.PathLike, split: str, array: str = "ela") -> Path:
    """``{split}_ela.npy`` for the ELA images, ``{split}_rgb.npy`` for the raw crops."""
    if array not in ARRAYS:
        raise DatasetError(f"unknown array {array!r}: expected one of {', '.join(ARRAYS)}")
    return Path(folder) / f"{split}_{array}.npy"


def create_tensor(path: str | os.PathLike, shape: tuple[int, ...]) -> np.memmap:
    """A writable memory map of a new uint8 .npy file (zero-filled) whose rows are filled in later;
    once flushed it holds the bytes np.save would write. Its blocks are allocated up front: a disk
    too small for it fails here with OSError (ENOSPC) naming it, where a sparse file would kill the
    process with SIGBUS at the first write into a page the disk has no room for."""
    tensor = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    try:
        with open(path, "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as exc:
        del tensor  # unmap it before the caller removes the file
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # a file system without it
            return np.lib.format.open_memmap(path, mode="r+")
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    return tensor


def load_split(folder: str | os.PathLike, split: str, array: str = "ela") -> Split:
    """Memory-map one split's tensor and read its table, checking that they agree."""
    path = tensor_path(folder, split, array)
    table_path = Path(folder) / f"{split}.csv"
    for needed in (path, table_path):
        if not needed.is_file():
            raise DatasetError(f"{needed} not found (run the ela stage first)")
    try:
        images = np.load(path, mmap_mode="r")
    except ValueError as exc:
        raise DatasetError(f"{path}: not a readable .npy file ({exc})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] % 3 or not images.shape[-1]:
        raise DatasetError(f"{path}: expected N x H x W x 3 uint8, got {images.shape} {images.dtype}")
    table = pd.read_csv(
        table_path, dtype={"crop_id": str, "photo_id": str, "group": str, "pair": str}, keep_default_na=False
    )
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise DatasetError(f"{table_path} lacks columns {sorted(missing)}")
    if len(table) != len(images):
        raise DatasetError(f"{table_path} has {len(table)} rows but {path} holds {len(images)} images")
    if len(table) == 0:
        raise DatasetError(f"{table_path} is empty")
    if not table["label"].isin([0, 1]).all():
        raise DatasetError(f"{table_path}: labels must be 0 (real) or 1 (fake)")
    return Split(images, table)


def training_split(folder: str | os.PathLike, split: str, array: str = "ela") -> Split:
    """``load_split`` for a set a model is fitted on: DatasetError when it holds a single class
    (a model would learn to answer that class, and say so only when it is scored)."""
    data = load_split(folder, split, array)
    present = np.unique(data.labels)
    if len(present) < 2:
        kind = "real (label 0)" if present[0] == 0 else "fake (label 1)"
        raise DatasetError(
            f"{Path(folder) / f'{split}.csv'}: all {len(data)} crops are {kind}; training needs both "
            "classes (see fakes.fraction and materialize.variants)"
        )
    return data


def test_sets(folder: str | os.PathLike) -> list[str]:
    """Every test set the ela stage wrote to ``folder`` (a {name}.csv beside its tensors), in
    ``set_order``; DatasetError when the standard test set is missing."""
    folder = Path(folder)
    names = [path.stem for path in folder.glob(f"{TEST}*.csv") if tensor_path(folder, path.stem).is_file()]
    if TEST not in names:
        raise DatasetError(f"{tensor_path(folder, TEST)} not found (run the ela stage first)")
    return set_order(names)


def validation_split(
    groups: Sequence[str] | np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the groups (at least one, never all), drawn by ``seeding.rng(seed, "val")``.

    Returns the sorted row indices (train, validation); no group appears on both sides.
    """
    groups = np.asarray(groups, dtype=str)
    unique = np.unique(groups)  # sorted, so the draw does not depend on row order
    if len(unique) < 2:
        raise DatasetError(f"need at least 2 groups to hold some out for validation, found {len(unique)}")
    n_val = min(max(1, round(fraction * len(unique))), len(unique) - 1)
    held = seeding.rng(seed, "val").permutation(unique)[:n_val]
    is_val = np.isin(groups, held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)

"""The memory-mapped input: loading and checks, scaling, one-hot labels, seeded per-epoch shuffle,
group-disjoint validation split."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from faceswap_ela import batches, dataset


def write_split(folder, split: str, n: int, seed: int = 0, size: int = 16) -> np.ndarray:
    """data/ela-style files: {split}_ela.npy, {split}_rgb.npy and {split}.csv with 4 crops per group."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    np.save(folder / f"{split}_ela.npy", images)
    np.save(folder / f"{split}_rgb.npy", 255 - images)
    table = pd.DataFrame(
        {
            "crop_id": [f"{split}-{i:03d}" for i in range(n)],
            "photo_id": [f"p{i // 2:03d}" for i in range(n)],
            "group": [f"{i // 4:03d}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
        }
    )
    table.to_csv(folder / f"{split}.csv", index=False)
    return images


def test_tensor_path_names_the_arrays(tmp_path):
    assert dataset.tensor_path(tmp_path, "train") == tmp_path / "train_ela.npy"
    assert dataset.tensor_path(tmp_path, "test", "rgb") == tmp_path / "test_rgb.npy"
    with pytest.raises(dataset.DatasetError, match="unknown array"):
        dataset.tensor_path(tmp_path, "train", "depth")


def test_load_split_maps_the_tensor(tmp_path):
    images = write_split(tmp_path, "train", 12)
    split = dataset.load_split(tmp_path, "train")
    assert isinstance(split.images, np.memmap)
    assert not split.images.flags.writeable
    assert np.array_equal(split.images, images)
    assert len(split) == 12
    assert split.labels.tolist() == [i % 2 for i in range(12)]
    assert split.groups.tolist()[:5] == ["000", "000", "000", "000", "001"]
    rgb = dataset.load_split(tmp_path, "train", "rgb")
    assert np.array_equal(rgb.images, 255 - images)
    assert rgb.table.equals(split.table)


def test_load_split_errors(tmp_path):
    with pytest.raises(dataset.DatasetError, match="not found"):
        dataset.load_split(tmp_path, "train")
    write_split(tmp_path, "train", 8)
    table = pd.read_csv(tmp_path / "train.csv")
    table.iloc[:5].to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(dataset.DatasetError, match="5 rows but"):
        dataset.load_split(tmp_path, "train")
    table.assign(label=2).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(dataset.DatasetError, match="labels"):
        dataset.load_split(tmp_path, "train")
    table.drop(columns="group").to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(dataset.DatasetError, match="lacks columns"):
        dataset.load_split(tmp_path, "train")
    table.to_csv(tmp_path / "train.csv", index=False)
    np.save(tmp_path / "train_ela.npy", np.zeros((8, 4, 4, 3), dtype=np.float32))
    with pytest.raises(dataset.DatasetError, match="uint8"):
        dataset.load_split(tmp_path, "train")


def test_batches_are_scaled_and_one_hot():
    images = np.random.default_rng(1).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    seq = batches.CropSequence(images, labels, batch_size=4)
    assert len(seq) == 3
    x, y = seq[0]
    assert x.dtype == np.float32 and x.shape == (4, 8, 8, 3)
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.array_equal(np.rint(x * 255).astype(np.uint8), images[:4])
    assert y.dtype == np.float32
    assert y.tolist() == [[1, 0], [0, 1], [0, 1], [1, 0]]
    x_last, y_last = seq[2]
    assert len(x_last) == len(y_last) == 2  # the last batch holds the rest
    with pytest.raises(IndexError):
        seq[3]
    assert batches.CropSequence(images, batch_size=4)[0].shape == (4, 8, 8, 3)  # predict: images only


def test_every_row_once_per_epoch_in_sorted_batches():
    images = np.zeros((23, 2, 2, 3), dtype=np.uint8)
    indices = np.arange(3, 23)
    seq = batches.CropSequence(images, np.zeros(23), indices=indices, batch_size=6, shuffle=True, seed=7)
    for _ in range(2):
        served = [seq.batch_indices(i) for i in range(len(seq))]
        assert all(np.array_equal(b, np.sort(b)) for b in served)
        assert sorted(np.concatenate(served).tolist()) == indices.tolist()
        seq.on_epoch_end()


def test_pairs_stay_together_in_every_batch():
    """Each batch holds both members of every pair it holds; the pairs (and lone crops) are what is
    shuffled, batch_size // 2 of them a batch."""
    n = 31
    images = np.zeros((n, 2, 2, 3), dtype=np.uint8)
    keys = np.array([f"p{i // 2}" if i < 26 else "" for i in range(n)])  # 13 pairs, 5 crops alone
    labels = np.array([i % 2 for i in range(n)])
    indices = np.arange(2, n)  # a subset holding whole pairs, as the validation split keeps groups
    seq = batches.CropSequence(
        images, labels, indices=indices, batch_size=6, shuffle=True, seed=4, pairs=keys
    )
    assert len(seq) == 6  # 12 pairs and 5 lone crops, 3 a batch
    orders = []
    for _ in range(3):
        served = [seq.batch_indices(i) for i in range(len(seq))]
        assert sorted(np.concatenate(served).tolist()) == indices.tolist()
        for batch in served:
            held = [keys[i] for i in batch if keys[i]]
            assert all(held.count(key) == 2 for key in held)  # the real and its fake
            assert len(batch) <= 6 and set(labels[[i for i in batch if keys[i]]]) <= {0, 1}
        orders.append([b.tolist() for b in served])
        seq.on_epoch_end()
    assert orders[0] != orders[1]  # a new order each epoch
    again = batches.CropSequence(
        images, labels, indices=indices, batch_size=6, shuffle=True, seed=4, pairs=keys
    )
    assert [again.batch_indices(i).tolist() for i in range(len(again))] == orders[0]
    with pytest.raises(ValueError, match="pair keys"):
        batches.CropSequence(images, labels, pairs=keys[:5])


def test_shuffle_is_seeded_per_epoch():
    images = np.zeros((50, 2, 2, 3), dtype=np.uint8)
    labels = np.zeros(50)

    def order(seed: int, epochs_ended: int = 0) -> list[int]:
        seq = batches.CropSequence(images, labels, batch_size=5, shuffle=True, seed=seed)
        for _ in range(epochs_ended):
            seq.on_epoch_end()
        return seq.order.tolist()

    assert order(3) == order(3)  # same seed, same epoch: same order
    assert order(3, 1) == order(3, 1)
    assert order(3) != order(3, 1)  # the next epoch draws a new order
    assert order(3) != order(4)
    assert order(3) != list(range(50))
    seq = batches.CropSequence(images, labels, batch_size=5, shuffle=True, seed=3)
    seq.set_epoch(1)
    assert seq.order.tolist() == order(3, 1)
    assert batches.CropSequence(images, labels, batch_size=5).order.tolist() == list(range(50))


def test_batches_read_from_the_memory_map_without_loading_it(tmp_path):
    n, size = 200, 64  # 200 x 12 KiB = 2.4 MiB on disk
    np.save(tmp_path / "big.npy", np.full((n, size, size, 3), 255, dtype=np.uint8))
    images = np.load(tmp_path / "big.npy", mmap_mode="r")
    seq = batches.CropSequence(images, np.ones(n), batch_size=4, shuffle=True, seed=0)
    assert seq.images is images
    tracemalloc.start()
    try:
        for i in range(len(seq)):
            x, _ = seq[i]
            assert x.max() == 1.0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    batch_bytes = 4 * size * size * 3 * 4  # one float32 batch
    assert peak < 4 * batch_bytes < images.nbytes


def test_one_hot():
    encoded = batches.one_hot(np.array([1, 0, 1]))
    assert encoded.tolist() == [[0, 1], [1, 0], [0, 1]] and encoded.dtype == np.float32


def test_writing_tensors_does_not_load_keras():
    """The ela stage and the materialize workers write tensors and JPEGs: keras (4 s, 600 MB) stays out."""
    code = "import sys, faceswap_ela.ela, faceswap_ela.materialize; print('keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_create_tensor_writes_the_bytes_of_np_save(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    tensor = dataset.create_tensor(tmp_path / "t.npy", images.shape)
    tensor[2:] = images[2:]
    tensor[:2] = images[:2]
    tensor.flush()
    np.save(tmp_path / "saved.npy", images)
    assert (tmp_path / "t.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()


def test_validation_split_holds_out_whole_groups():
    groups = np.array([f"g{i // 3:02d}" for i in range(60)])  # 20 groups of 3
    train, val = dataset.validation_split(groups, 0.15, seed=42)
    assert len(np.intersect1d(train, val)) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60))
    assert not set(groups[train]) & set(groups[val])
    assert len(set(groups[val])) == 3  # round(0.15 * 20)
    assert np.array_equal(train, np.sort(train)) and np.array_equal(val, np.sort(val))
    again = dataset.validation_split(groups, 0.15, seed=42)
    assert np.array_equal(again[1], val)  # seeded
    shuffled_rows = np.random.default_rng(0).permutation(60)
    moved = dataset.validation_split(groups[shuffled_rows], 0.15, seed=42)[1]
    assert set(groups[shuffled_rows][moved]) == set(groups[val])  # the draw is over groups, not rows
    others = {frozenset(groups[dataset.validation_split(groups, 0.15, seed=s)[1]]) for s in range(5)}
    assert len(others) > 1


def test_validation_split_keeps_at_least_one_group_each_side():
    groups = np.array(["a", "a", "b", "b"])
    train, val = dataset.validation_split(groups, 0.01, seed=0)
    assert len(set(groups[val])) == 1 and len(set(groups[train])) == 1
    train, val = dataset.validation_split(groups, 0.99, seed=0)
    assert len(set(groups[val])) == 1 and len(set(groups[train])) == 1
    with pytest.raises(dataset.DatasetError, match="at least 2 groups"):
        dataset.validation_split(np.array(["a", "a"]), 0.5, seed=0)

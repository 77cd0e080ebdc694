"""The untrained JPEG-ghost score (faceswap_ela.ghosts) on ELA at several qualities: a centre saved at
another quality than its frame scores above a photo saved once; the score ignores a gain between
the curves; and `baseline@` reports it when ela.qualities has two or more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
import yaml

from faceswap_ela import ela, evaluation, ghosts
from faceswap_ela.params import ElaParams

ROOT = Path(__file__).resolve().parents[1]
QUALITIES = (50, 60, 70, 80, 90, 95)
SETTINGS = ElaParams(qualities=QUALITIES, scale="fixed", gain=4.0)


def crops(n: int = 6, size: int = 128) -> list[np.ndarray]:
    source = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    return [
        np.ascontiguousarray(source[y : y + size, x : x + size])
        for y, x in rng.integers(0, 512 - size, (n, 2))
    ]


def ghost_pair(image: np.ndarray, first: int = 60, second: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """(real, fake): the image saved once at ``first``; the same with its centre (on the JPEG grid)
    taken from the image saved at ``second`` instead, as a face from another photo is."""
    real = ela.jpeg_roundtrip(image, first)
    fake = real.copy()
    fake[32:96, 32:96] = ela.jpeg_roundtrip(image, second)[32:96, 32:96]
    return real, fake


def test_a_centre_with_another_compression_history_scores_higher():
    pairs = [ghost_pair(image) for image in crops()]
    stack = np.stack([ela.compute(image, SETTINGS) for pair in pairs for image in pair])
    assert stack.shape == (12, 128, 128, 3 * len(QUALITIES))
    scores = ghosts.ghost_scores(stack, QUALITIES)
    real, fake = scores[0::2], scores[1::2]
    assert (fake > real).all(), (real, fake)
    assert fake.min() > real.max()
    # where the curves dip: the frame at the first quality, the pasted centre at its own
    centre, border = ghosts.ghost_curves(stack[1::2], len(QUALITIES))
    assert (np.argmin(border, axis=1) == QUALITIES.index(60)).all()
    assert (np.argmin(centre[:, :-1], axis=1) == QUALITIES.index(90)).all()


def test_the_score_is_a_distance_between_unit_sum_curves():
    size, k = 16, 3
    mask = ghosts.centre_mask(size)
    stack = np.zeros((4, size, size, 3 * k), np.uint8)
    border_curve = np.array([6, 3, 1])
    for j, value in enumerate(border_curve):
        stack[:, ~mask, 3 * j : 3 * j + 3] = value
    stack[0][mask] = np.repeat(2 * border_curve, 3)  # the same shape at twice the level: 0
    stack[1][mask] = np.repeat([1, 3, 6], 3)  # the curve reversed
    stack[3] = 0  # all zero: uniform against uniform
    centre, border = ghosts.ghost_curves(stack, k)
    np.testing.assert_allclose(border[:3], np.tile(border_curve, (3, 1)))
    np.testing.assert_allclose(centre[0], 2 * border_curve)
    scores = ghosts.ghost_scores(stack, (90, 80, 70))
    assert scores[0] == pytest.approx(0.0, abs=1e-12) and scores[3] == 0.0
    assert scores[1] == pytest.approx(0.5 * (5 + 0 + 5) / 10)
    # a zero centre counts as uniform
    assert scores[2] == pytest.approx(0.5 * (abs(1 / 3 - 0.6) + abs(1 / 3 - 0.3) + abs(1 / 3 - 0.1)))
    assert scores.min() >= 0.0 and scores.max() <= 1.0


def test_the_score_reads_memory_maps_in_blocks(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "x.npy", rng.integers(0, 256, (7, 16, 16, 6), dtype=np.uint8))
    stack = np.load(tmp_path / "x.npy", mmap_mode="r")
    whole = ghosts.ghost_scores(stack, (80, 95))
    monkeypatch.setattr(ghosts, "CHUNK", 3)
    np.testing.assert_array_equal(ghosts.ghost_scores(stack, (80, 95)), whole)


def test_a_ghost_needs_two_qualities_and_matching_channels():
    stack = np.zeros((2, 16, 16, 6), np.uint8)
    with pytest.raises(ValueError, match="at least 2 qualities"):
        ghosts.ghost_scores(stack[..., :3], (95,))
    with pytest.raises(ValueError, match="N x S x S x 9"):
        ghosts.ghost_scores(stack, (70, 80, 90))


def write_sets(folder: Path, channels: int) -> None:
    """data/ela with a train_warp and a test set of random crops (ELA of ``channels``), 4 per group."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    for name, n in (("train_warp", 24), ("test", 12)):
        np.save(folder / f"{name}_ela.npy", rng.integers(0, 256, (n, 32, 32, channels), dtype=np.uint8))
        np.save(folder / f"{name}_rgb.npy", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
        pd.DataFrame({"crop_id": [f"{name}-{i}" for i in range(n)], "photo_id": [f"p{i}" for i in range(n)],
                      "group": [f"g{i // 4}" for i in range(n)], "label": [i % 2 for i in range(n)]}).to_csv(
            folder / f"{name}.csv", index=False)  # fmt: skip


@pytest.mark.parametrize("qualities", [[], [95], [80, 95]])
def test_the_baseline_stage_reports_the_ghost_with_two_qualities(tmp_path, qualities):
    write_sets(tmp_path / "data" / "ela", 3 * max(1, len(qualities)))
    scale = "fixed" if qualities else "max"
    params = {"train": {"fakes": ["warp"]}, "ela": {"qualities": qualities, "scale": scale}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    command = [sys.executable, str(ROOT / "stages" / "baseline.py"), "--fakes", "warp"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics" / "baseline" / "warp.json").read_text())
    assert list(metrics["sets"]) == ["test"]
    if len(qualities) < 2:
        assert "ghost" not in metrics
    else:
        ghost = metrics["ghost"]
        assert ghost["qualities"] == qualities and list(ghost["sets"]) == ["test"]
        assert 0.0 <= ghost["sets"]["test"]["roc_auc"] <= 1.0
    predictions = pd.read_csv(tmp_path / "data" / "predictions" / "baseline-warp.csv")
    assert len(predictions) == 12 and sorted(os.listdir(tmp_path / "data" / "predictions")) == [
        "baseline-warp.csv", "ghost-warp.csv",
    ]  # fmt: skip
    # the ghost's scores, a row of the comparison: the header alone below two qualities
    ghost_scores = pd.read_csv(tmp_path / "data" / "predictions" / "ghost-warp.csv")
    assert list(ghost_scores.columns) == list(predictions.columns)
    if len(qualities) < 2:
        assert ghost_scores.empty
    else:
        assert ghost_scores[["set", "crop_id", "label"]].equals(predictions[["set", "crop_id", "label"]])
        assert ghost_scores["p_fake"].between(0, 1).all()
        assert evaluation.evaluate(ghost_scores["label"], ghost_scores["p_fake"])["roc_auc"] == pytest.approx(
            metrics["ghost"]["sets"]["test"]["roc_auc"], abs=1e-6
        )

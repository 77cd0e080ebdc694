"""The stage scripts on a tiny random set, run as DVC runs them (a subprocess in the repository
folder): params.yaml and data/ela/ for one short epoch (make_repo), one stage (run_stage), and
train@ and evaluate@ for each input, then baseline and compare (run_pipeline); and the ROC AUC of
the predictions evaluate@ wrote (predictions_auc)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "stages" / "train.py"
EVALUATE = ROOT / "stages" / "evaluate.py"
BASELINE = ROOT / "stages" / "baseline.py"
COMPARE = ROOT / "stages" / "compare.py"
TEST_SETS = ("test", "test_matched")


def make_repo(
    folder: Path, n_train: int, n_test: int, *, inputs=("ela", "rgb"), log_model: bool = True, seed: int = 0
) -> Path:
    """params.yaml for one short epoch and data/ela/ with random crops, 4 per group; the test
    split twice (test and test_matched)."""
    rng = np.random.default_rng(seed)
    ela = folder / "data" / "ela"
    ela.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
        table = pd.DataFrame(
            {
                "crop_id": [f"{split}-{i}" for i in range(n)],
                "photo_id": [f"{split}-p{i // 2}" for i in range(n)],
                "group": [f"{split}-g{i // 4}" for i in range(n)],
                "label": [i % 2 for i in range(n)],
            }
        )
        for name in ("train_warp",) if split == "train" else TEST_SETS:
            np.save(ela / f"{name}_ela.npy", images)
            np.save(ela / f"{name}_rgb.npy", images[:, ::-1])
            table.to_csv(ela / f"{name}.csv", index=False)
    params = {
        "seed": seed,
        "train": {
            "inputs": list(inputs), "fakes": ["warp"], "seeds": [seed], "epochs": 1, "batch_size": 8,
            "val_fraction": 0.2, "patience": 1,
        },
        "eval": {"bootstrap": 50},
        "tracking": {"experiment": "tiny", "log_model": log_model},
    }  # fmt: skip
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "dvc.yaml").write_text("stages: {}\n")
    return folder


def run_stage(script: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "KERAS_BACKEND"))}
    environ.update(env)
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_pipeline(
    repo: Path, inputs=("ela", "rgb"), seed: int = 0, **env: str
) -> list[subprocess.CompletedProcess]:
    """train@ and evaluate@ for every input, then baseline and compare; each must succeed."""
    done = []
    for script in (TRAIN, EVALUATE):
        for kind in inputs:
            done.append(
                run_stage(script, repo, "--input", kind, "--fakes", "warp", "--seed", str(seed), **env)
            )
            assert done[-1].returncode == 0, done[-1].stderr[-3000:]
    for script, args in ((BASELINE, ("--fakes", "warp")), (COMPARE, ())):
        done.append(run_stage(script, repo, *args, **env))
        assert done[-1].returncode == 0, done[-1].stderr[-3000:]
    return done


def predictions_auc(repo: Path, model: str, set_name: str = "test"):
    """scikit-learn's ROC AUC of ``model`` on one test set, from data/predictions/<model>.csv as
    evaluate@ wrote it, as a pytest.approx. The file keeps 7 significant digits of p_fake: that
    rounding never reverses two scores but may tie a real crop with a fake one, and each such pair
    moves the AUC by at most half a pair (1 / (n_real * n_fake)): the tolerance."""
    rows = pd.read_csv(repo / "data" / "predictions" / f"{model}.csv")
    rows = rows[rows["set"] == set_name]
    real, fake = (rows.loc[rows["label"] == label, "p_fake"].to_numpy() for label in (0, 1))
    ties = int((real[:, None] == fake[None, :]).sum())
    auc = roc_auc_score(rows["label"], rows["p_fake"])
    return pytest.approx(auc, abs=0.5 * ties / (len(real) * len(fake)) + 1e-12)

"""Stages `train` and `evaluate` end to end on a tiny random set (run as DVC runs them: a
subprocess in the repository folder), their MLflow run, MLflow failures, and the torch backend."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from faceswap_ela import training

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "stages" / "train.py"
EVALUATE = ROOT / "stages" / "evaluate.py"


def make_repo(folder: Path, n_train: int, n_test: int, *, log_model: bool = True, seed: int = 0) -> Path:
    """params.yaml for one short epoch and data/ela/ with random crops, 4 per group."""
    rng = np.random.default_rng(seed)
    ela = folder / "data" / "ela"
    ela.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
        np.save(ela / f"{split}.npy", images)
        np.save(ela / f"{split}_rgb.npy", images[:, ::-1])
        pd.DataFrame(
            {
                "crop_id": [f"{split}-{i}" for i in range(n)],
                "photo_id": [f"{split}-p{i // 2}" for i in range(n)],
                "group": [f"{split}-g{i // 4}" for i in range(n)],
                "label": [i % 2 for i in range(n)],
            }
        ).to_csv(ela / f"{split}.csv", index=False)
    params = {
        "seed": seed,
        "train": {"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "patience": 1},
        "tracking": {"experiment": "tiny", "log_model": log_model},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "dvc.yaml").write_text("stages: {}\n")
    return folder


def run_stage(script: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "KERAS_BACKEND"))}
    environ.update(env)
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=environ, capture_output=True, text=True, timeout=600
    )


def check_stage_outputs(repo: Path, n_test: int) -> tuple[dict, dict]:
    train = json.loads((repo / "metrics" / "train.json").read_text())
    assert train["params"] == 29_520_034
    assert train["multiply_adds"] == 435_034_112
    assert train["epochs_run"] == 1 and train["best_epoch"] == 1
    assert train["wall_seconds"] > 0 and train["samples_per_s"] > 0
    assert train["device"].startswith(("CPU:", "GPU:"))
    history = pd.read_csv(repo / "plots" / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == [1]
    assert history.notna().all().all()
    assert (repo / "models" / "model.keras").stat().st_size > 100e6  # 29.5M float32 weights

    result = json.loads((repo / "metrics" / "eval.json").read_text())
    assert result["n"] == n_test and result["n_fake"] + result["n_real"] == n_test
    assert result["tn"] + result["fp"] + result["fn"] + result["tp"] == n_test
    assert result["confusion_matrix"] == [[result["tn"], result["fp"]], [result["fn"], result["tp"]]]
    for key in ("accuracy", "roc_auc", "precision", "recall", "f1"):
        assert 0.0 <= result[key] <= 1.0, key
    roc = pd.read_csv(repo / "plots" / "roc.csv")
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert roc["fpr"].iloc[-1] == 1.0 and roc["tpr"].iloc[-1] == 1.0
    confusion = pd.read_csv(repo / "plots" / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == n_test
    assert set(confusion["actual"]) | set(confusion["predicted"]) <= {"real", "fake"}
    assert (confusion["actual"] == "fake").sum() == result["n_fake"]
    for png in ("roc.png", "confusion.png"):
        assert (repo / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert not list(repo.rglob("*.tmp")), "temporary outputs left behind"
    return train, result


def test_train_and_evaluate_log_one_mlflow_run(tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=40, n_test=20)
    root = tmp_path / "root"  # DVC_ROOT: where the default store lives (e.g. beside a --temp copy)
    root.mkdir()
    (repo / "metrics" / "landmarks.json").parent.mkdir()
    (repo / "metrics" / "landmarks.json").write_text(
        json.dumps({"photos": 10, "faces": {"found": 9}, "ok": True})
    )
    env = {"DVC_ROOT": str(root), "DVC_EXP_NAME": "tiny-exp", "DVC_EXP_BASELINE_REV": "a" * 40}

    trained = run_stage(TRAIN, repo, **env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_info = json.loads((repo / "models" / "run.json").read_text())
    assert run_info["tracking_uri"] == f"sqlite:///{root.resolve()}/mlflow.db"
    assert run_info["experiment"] == "tiny" and run_info["run_id"]
    evaluated = run_stage(EVALUATE, repo, **env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "Traceback" not in trained.stderr + evaluated.stderr
    train, result = check_stage_outputs(repo, n_test=20)
    assert train["backend"] == "tensorflow"
    assert train["train_samples"] + train["val_samples"] == 40
    assert train["val_groups"] == 2  # 20% of 10 groups

    from mlflow import MlflowClient

    from faceswap_ela import params as P

    client = MlflowClient(run_info["tracking_uri"])
    run = client.get_run(run_info["run_id"])
    assert run.info.run_name == "tiny-exp" and run.info.status == "FINISHED"
    p = P.load(repo / "params.yaml")
    assert run.data.params == {k: str(v) for k, v in P.flatten(p).items()}
    tags = run.data.tags
    assert tags["params_hash"] == P.digest(p)
    assert tags["dvc_exp_baseline_rev"] == "a" * 40
    assert tags["backend"] == "tensorflow" and tags["device"] == train["device"]
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        steps = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == [(1, pytest.approx(pd.read_csv(repo / "plots" / "history.csv")[name][0]))], name
    metrics = run.data.metrics
    assert metrics["train.best_epoch"] == 1 and metrics["train.params"] == 29_520_034
    for key in ("accuracy", "roc_auc", "precision", "recall", "f1", "tp"):
        assert metrics[f"test.{key}"] == pytest.approx(result[key]), key
    assert metrics["landmarks.photos"] == 10 and metrics["landmarks.faces.found"] == 9

    artifacts = {
        a.path for folder in ("plots", "metrics") for a in client.list_artifacts(run.info.run_id, folder)
    }
    expected = {
        "plots/history.png",
        "plots/history.csv",
        "plots/roc.png",
        "plots/confusion.png",
        "plots/roc.csv",
    }
    assert expected | {"metrics/train.json", "metrics/eval.json", "metrics/landmarks.json"} <= artifacts
    assert (root / "mlartifacts" / run.info.run_id).is_dir()  # the experiment's artifact root
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]
    assert (
        root / "mlartifacts" / "models" / models[0].model_id / "artifacts" / "data" / "model.keras"
    ).is_file()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_failures_do_not_fail_the_stages(tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=16, n_test=8, seed=1)
    server = f"http://127.0.0.1:{closed_port()}"
    trained = run_stage(TRAIN, repo, MLFLOW_TRACKING_URI=server)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((repo / "models" / "run.json").read_text()) == {
        "run_id": None, "tracking_uri": server, "experiment": "tiny"
    }  # fmt: skip

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    evaluated = run_stage(EVALUATE, repo, MLFLOW_TRACKING_URI=f"sqlite:///{blocker}/mlflow.db")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    check_stage_outputs(repo, n_test=8)
    for stage in (trained, evaluated):
        warnings = [line for line in stage.stderr.splitlines() if "MLflow tracking disabled" in line]
        assert len(warnings) == 1, stage.stderr[-3000:]
        assert "Traceback" not in stage.stderr
    assert "no MLflow server answers" in trained.stderr


def test_missing_input_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text("train: {epochs: 1}\n")
    result = run_stage(TRAIN, tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 1
    assert "data/ela/train.npy not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_the_same_code_trains_under_torch(tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=16, n_test=8, log_model=False, seed=2)
    env = {"KERAS_BACKEND": "torch", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    trained = run_stage(TRAIN, repo, **env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run_stage(EVALUATE, repo, **env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    train, _ = check_stage_outputs(repo, n_test=8)
    assert train["backend"] == "torch"


def test_history_frame_numbers_epochs_from_one():
    frame = training.history_frame({"loss": [0.9, 0.5], "accuracy": [0.5, 0.7], "val_loss": [1.0, 0.8]})
    assert frame["epoch"].tolist() == [1, 2]
    assert list(frame.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert frame["val_accuracy"].isna().all()


def test_describe_device_names_backend_and_device():
    device = training.describe_device()
    assert device["backend"] == "tensorflow"
    assert device["kind"] in ("cpu", "gpu")
    assert device["device"].startswith("GPU: " if device["kind"] == "gpu" else "CPU: ")


def test_save_model_accepts_any_file_name(tmp_path):
    import keras

    from faceswap_ela import model as cnn

    net = cnn.build_model((16, 16, 3))
    training.save_model(net, tmp_path / ".model.keras.123.tmp")  # how atomic_outputs names it
    assert [p.name for p in tmp_path.iterdir()] == [".model.keras.123.tmp"]
    (tmp_path / ".model.keras.123.tmp").rename(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), net.get_weights(), strict=True))

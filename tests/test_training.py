"""Stages `train@`, `evaluate@`, `baseline` and `compare` on a tiny random set (run as DVC runs
them: a subprocess in the repository folder), their MLflow runs, MLflow failures, and the torch
backend."""

from __future__ import annotations

import importlib.util
import json
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faceswap_ela import card, hardware, mlflow_store, training
from tests.helpers.stages import (
    BASELINE,
    COMPARE,
    EVALUATE,
    TEST_SETS,
    TRAIN,
    make_repo,
    run_pipeline,
    run_stage,
)


def check_model_outputs(repo: Path, name: str, n_test: int) -> tuple[dict, dict]:
    train = json.loads((repo / "metrics" / "train" / f"{name}.json").read_text())
    assert train["params"] == 29_520_034 and train["model"] == name
    assert train["multiply_adds"] == 435_034_112
    assert train["epochs_run"] == 1 and train["best_epoch"] == 1
    assert train["wall_seconds"] > 0 and train["samples_per_s"] > 0
    assert train["device"].startswith(("CPU:", "GPU:"))
    expected = hardware.choose_precision("auto", hardware.describe_device())
    assert train["precision"] == expected.precision and train["dtype_policy"] == expected.policy
    assert train["precision_requested"] == "auto" and train["cpu_flags"] == " ".join(hardware.cpu_flags())
    history = pd.read_csv(repo / "plots" / "history" / f"{name}.csv")
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["epoch"].tolist() == [1]
    assert history.notna().all().all()
    model = repo / "models" / name / "model.keras"
    assert 120e6 > model.stat().st_size == train["model_bytes"] > 100e6  # 29.5M float32 weights, no optimizer
    model_card = card.read(card.path_for(model))
    assert model_card["model"] == name and model_card["input"] == train["input"] == name.split("-")[0]
    assert model_card["fakes"] == "warp" and model_card["forgers"] == ["warp"]
    assert model_card["ela"]["quality"] == 95 and model_card["roi"]["size"] == 128
    assert model_card["precision"] == train["precision"]

    evaluated = json.loads((repo / "metrics" / "eval" / f"{name}.json").read_text())
    assert set(evaluated["sets"]) == set(TEST_SETS)
    result = evaluated["sets"]["test"]
    assert result["n"] == n_test and result["n_fake"] + result["n_real"] == n_test
    assert result["tn"] + result["fp"] + result["fn"] + result["tp"] == n_test
    assert result["confusion_matrix"] == [[result["tn"], result["fp"]], [result["fn"], result["tp"]]]
    for key in ("accuracy", "roc_auc", "precision", "recall", "f1"):
        assert 0.0 <= result[key] <= 1.0, key
    predictions = pd.read_csv(repo / "data" / "predictions" / f"{name}.csv")
    assert list(predictions.columns) == ["set", "crop_id", "photo_id", "label", "p_fake"]
    assert list(predictions["set"]) == ["test"] * n_test + ["test_matched"] * n_test
    assert not list(repo.rglob("*.tmp")), "temporary outputs left behind"
    return train, result


def check_compare_outputs(repo: Path, primary: str, n_test: int) -> dict:
    headline = json.loads((repo / "metrics" / "eval.json").read_text())
    assert headline["model"] == primary and headline["n"] == n_test
    model_result = json.loads((repo / "metrics" / "eval" / f"{primary}.json").read_text())["sets"]["test"]
    for key in ("accuracy", "roc_auc", "precision", "recall", "f1"):
        assert headline[key] == pytest.approx(model_result[key]), key
    assert headline["confusion_matrix"] == model_result["confusion_matrix"]
    assert 0 <= headline["baseline_auc"] <= 1 and "matched_baseline_auc" in headline
    compare = json.loads((repo / "metrics" / "compare.json").read_text())
    assert compare["sets"] == list(TEST_SETS) and compare["bootstrap"]["resamples"] == 50
    assert "| Model |" in (repo / "metrics" / "compare.md").read_text()
    roc = pd.read_csv(repo / "plots" / "roc.csv")
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert roc["fpr"].iloc[-1] == 1.0 and roc["tpr"].iloc[-1] == 1.0
    confusion = pd.read_csv(repo / "plots" / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == n_test
    assert set(confusion["actual"]) | set(confusion["predicted"]) <= {"real", "fake"}
    assert (confusion["actual"] == "fake").sum() == headline["n_fake"]
    for png in ("roc.png", "confusion.png", "curves.png", "robustness.png"):
        assert (repo / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert not list(repo.rglob("*.tmp")), "temporary outputs left behind"
    return headline


def test_model_runs_nest_under_one_comparison_run(tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=40, n_test=20)
    root = tmp_path / "root"  # DVC_ROOT: where the default store lives (e.g. beside a --temp copy)
    root.mkdir()
    (repo / "metrics").mkdir()
    (repo / "metrics" / "landmarks.json").write_text(
        json.dumps({"photos": 10, "faces": {"found": 9}, "ok": True})
    )
    env = {"DVC_ROOT": str(root), "DVC_EXP_NAME": "tiny-exp", "DVC_EXP_BASELINE_REV": "a" * 40}
    stages = run_pipeline(repo, **env)
    assert not any("Traceback" in stage.stderr for stage in stages)
    run_info = json.loads((repo / "models" / "ela-warp-s0" / "run.json").read_text())
    evaluated = json.loads((repo / "metrics" / "eval" / "ela-warp-s0.json").read_text())
    assert evaluated["mlflow_run_id"] == run_info["run_id"]  # evaluate@ logged into train@'s run
    assert run_info["tracking_uri"] == f"sqlite:///{root.resolve()}/mlflow.db"
    assert run_info["experiment"] == "tiny" and run_info["run_id"]
    train, result = check_model_outputs(repo, "ela-warp-s0", n_test=20)
    check_model_outputs(repo, "rgb-warp-s0", n_test=20)
    check_compare_outputs(repo, "ela-warp-s0", n_test=20)
    assert train["backend"] == "tensorflow" and train["input"] == "ela"
    assert train["train_samples"] + train["val_samples"] == 40
    assert train["val_groups"] == 2  # 20% of 10 groups

    from mlflow import MlflowClient

    from faceswap_ela import params as P

    client = MlflowClient(run_info["tracking_uri"])
    run = client.get_run(run_info["run_id"])
    assert run.info.run_name == "tiny-exp ela-warp-s0" and run.info.status == "FINISHED"
    p = P.load(repo / "params.yaml")
    assert run.data.params == {k: str(v) for k, v in P.flatten(p).items()}
    tags = run.data.tags
    assert tags["params_hash"] == P.digest(p) and tags["input"] == "ela" and tags["seed"] == "0"
    assert tags["dvc_exp_baseline_rev"] == "a" * 40
    assert tags["backend"] == "tensorflow" and tags["device"] == train["device"]
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        steps = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        history = pd.read_csv(repo / "plots" / "history" / "ela-warp-s0.csv")
        assert steps == [(1, pytest.approx(history[name][0]))], name
    metrics = run.data.metrics
    assert metrics["train.best_epoch"] == 1 and metrics["train.params"] == 29_520_034
    for key in ("accuracy", "roc_auc", "precision", "recall", "f1", "tp"):
        assert metrics[f"test.{key}"] == pytest.approx(result[key]), key
    assert "test_matched.roc_auc" in metrics
    artifacts = {
        a.path for folder in ("plots", "metrics") for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "plots/history.png",
        "plots/ela-warp-s0.csv",
        "plots/roc.png",
        "metrics/ela-warp-s0.json",
    } <= artifacts
    assert (root / "mlartifacts" / run.info.run_id).is_dir()  # the experiment's artifact root
    # each model's run holds its Keras model ("model") and the detector a team serves ("detector")
    models = {
        (m.source_run_id, m.name): m
        for m in client.search_logged_models(experiment_ids=[run.info.experiment_id])
    }
    model_runs = [json.loads((repo / "models" / n / "run.json").read_text())["run_id"]
                  for n in ("ela-warp-s0", "rgb-warp-s0")]  # fmt: skip
    assert sorted(models) == sorted((r, name) for r in model_runs for name in ("detector", "model"))
    stored = root / "mlartifacts" / "models"
    assert (stored / models[run.info.run_id, "model"].model_id / "artifacts/data/model.keras").is_file()
    detector = models[run.info.run_id, "detector"]
    for name in ("model.keras", "card.json"):
        assert (stored / detector.model_id / "artifacts/artifacts" / name).is_file()
    assert json.loads((stored / detector.model_id / "artifacts/artifacts/card.json").read_text()) == (
        card.read(repo / "models" / "ela-warp-s0" / "card.json")
    )

    runs = client.search_runs([run.info.experiment_id])
    assert len(runs) == 3
    (top,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert top.info.run_name == "tiny-exp" and top.data.tags["role"] == "comparison"
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs if r is not top} == {top.info.run_id}
    assert top.data.metrics["test.roc_auc"] == pytest.approx(result["roc_auc"])
    (version,) = client.search_model_versions("name='faceswap-ela-cnn'")  # tracking.register's default
    assert str(version.version) == "1" and version.run_id == run_info["run_id"]
    assert version.tags["dvc_exp_name"] == "tiny-exp" and version.tags["model"] == "ela-warp-s0"
    assert version.tags["comparison_run_id"] == top.info.run_id
    assert version.source == f"models:/{detector.model_id}"  # the detector evaluate@ logged
    assert top.data.tags["registered_version"] == "1"
    assert "test.baseline_auc" in top.data.metrics and "landmarks.faces.found" in top.data.metrics
    top_artifacts = {
        a.path for folder in ("plots", "metrics") for a in client.list_artifacts(top.info.run_id, folder)
    }
    assert {
        "metrics/compare.md",
        "metrics/compare.json",
        "plots/roc.png",
        "plots/robustness.png",
    } <= top_artifacts


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_failures_do_not_fail_the_stages(tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=16, n_test=8, inputs=("ela",), seed=1)
    server = f"http://127.0.0.1:{closed_port()}"
    trained = run_stage(
        TRAIN, repo, "--input", "ela", "--fakes", "warp", "--seed", "1", MLFLOW_TRACKING_URI=server
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((repo / "models" / "ela-warp-s1" / "run.json").read_text()) == {
        "run_id": None, "tracking_uri": server, "experiment": "tiny"
    }  # fmt: skip

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    blocked = {"MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/mlflow.db"}
    evaluated = run_stage(EVALUATE, repo, "--input", "ela", "--fakes", "warp", "--seed", "1", **blocked)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert run_stage(BASELINE, repo, "--fakes", "warp").returncode == 0
    compared = run_stage(COMPARE, repo, **blocked)
    assert compared.returncode == 0, compared.stderr[-3000:]
    check_model_outputs(repo, "ela-warp-s1", n_test=8)
    check_compare_outputs(repo, "ela-warp-s1", n_test=8)
    for stage in (trained, evaluated, compared):
        warnings = [line for line in stage.stderr.splitlines() if "MLflow tracking disabled" in line]
        assert len(warnings) == 1, stage.stderr[-3000:]
        assert "Traceback" not in stage.stderr
    assert "no MLflow server answers" in trained.stderr


def test_a_store_that_is_a_folder_costs_seconds_and_one_warning(tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=8, n_test=4, inputs=("ela",), log_model=False)
    (repo / "mlflow.db").mkdir()  # the default store, at the repository root
    started = time.monotonic()
    trained = run_stage(TRAIN, repo, "--input", "ela", "--fakes", "warp", "--seed", "0")
    took = time.monotonic() - started
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (repo / "models" / "ela-warp-s0" / "model.keras").is_file()
    (warning,) = [line for line in trained.stderr.splitlines() if " WARNING " in line and "MLflow" in line]
    assert f"StoreError: {(repo / 'mlflow.db').resolve()} is a folder, not a database" in warning
    assert "Traceback" not in trained.stderr and "will be retried" not in trained.stderr
    assert took < 100, took  # MLflow's own retries alone took 105 s


@pytest.mark.parametrize("label", [0, 1])
def test_a_training_set_of_one_class_stops_train_and_baseline_at_start(label, tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=8, n_test=4, inputs=("ela",))
    table = repo / "data" / "ela" / "train_warp.csv"
    pd.read_csv(table).assign(label=label).to_csv(table, index=False)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    kind = ("real (label 0)", "fake (label 1)")[label]
    for script, args in ((TRAIN, ("--input", "ela", "--seed", "0")), (BASELINE, ())):
        result = run_stage(script, repo, "--fakes", "warp", *args, **env)
        assert result.returncode == 1, result.stderr[-3000:]
        (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
        assert f"data/ela/train_warp.csv: all 8 crops are {kind}; training needs both classes" in line
        assert "Traceback" not in result.stderr
    assert not (repo / "models").exists() and not (tmp_path / "mlflow.db").exists()


def test_missing_input_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text("train: {epochs: 1}\n")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for kind, missing in (("ela", "data/ela/train_warp_ela.npy"), ("rgb", "data/ela/train_warp_rgb.npy")):
        result = run_stage(TRAIN, tmp_path, "--input", kind, "--fakes", "warp", "--seed", "0", **env)
        assert result.returncode == 1
        assert f"{missing} not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()
    result = run_stage(TRAIN, tmp_path, "--input", "grey", "--fakes", "warp", "--seed", "0", **env)
    assert result.returncode == 2 and "invalid choice: 'grey'" in result.stderr
    result = run_stage(COMPARE, tmp_path, **env)
    assert result.returncode == 1 and "metrics/train/ela-warp-s42.json" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_the_same_code_trains_under_torch(tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=16, n_test=8, inputs=("ela",), log_model=False, seed=2)
    env = {"KERAS_BACKEND": "torch", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for script in (TRAIN, EVALUATE):
        done = run_stage(script, repo, "--input", "ela", "--fakes", "warp", "--seed", "2", **env)
        assert done.returncode == 0, done.stderr[-3000:]
    train, _ = check_model_outputs(repo, "ela-warp-s2", n_test=8)
    assert train["backend"] == "torch"


def test_history_frame_numbers_epochs_from_one():
    frame = training.history_frame({"loss": [0.9, 0.5], "accuracy": [0.5, 0.7], "val_loss": [1.0, 0.8]})
    assert frame["epoch"].tolist() == [1, 2]
    assert list(frame.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert frame["val_accuracy"].isna().all()


def test_describe_device_names_backend_and_device():
    device = hardware.describe_device()
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


def test_compare_skips_registering_without_a_logged_model(tmp_path, monkeypatch, caplog):
    import logging

    from faceswap_ela import params as P
    from faceswap_ela import registry, tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    p = P.parse({"tracking": {"log_model": False}})
    with tracking.start_run(p) as tracker, caplog.at_level(logging.WARNING):
        assert registry.register_primary(tracker, p, "ela-warp-s42") is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "tracking.log_model is false: no logged model, ela-warp-s42 is not registered"
    ]
    from mlflow import MlflowClient

    assert MlflowClient(mlflow_store.tracking_uri()).search_registered_models() == []

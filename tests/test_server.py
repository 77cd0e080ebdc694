"""A real `mlflow server` (sqlite store, proxied artifacts, as `make server` starts it; the `server`
fixture) on a free loopback port: the stages track and register into it over HTTP, and its REST
API shows the runs, the headline metric, the artifacts and the registered model version."""

from __future__ import annotations

import subprocess

import requests

from tests.helpers.mlflow_server import api
from tests.helpers.stages import make_repo, predictions_auc, run_pipeline


def test_stages_track_and_register_into_a_server(server, tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=16, n_test=8, inputs=("ela",), seed=3)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "params.yaml", "dvc.yaml"], ["commit", "-qm", "tiny"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True, timeout=30)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    stages = run_pipeline(
        repo, inputs=("ela",), seed=3, MLFLOW_TRACKING_URI=server, DVC_EXP_NAME="served-exp"
    )
    for stage in stages:
        assert "MLflow tracking disabled" not in stage.stderr and "Traceback" not in stage.stderr, (
            stage.stderr
        )

    experiment = api(server, "experiments/get-by-name", experiment_name="tiny")["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:")  # proxied by the server
    runs = requests.post(
        f"{server}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment["experiment_id"]]},
        timeout=30,
    ).json()["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    (top,) = [run for run, tag in zip(runs, tags, strict=True) if tag.get("role") == "comparison"]
    (child,) = [run for run in runs if run is not top]
    child_tags = {t["key"]: t["value"] for t in child["data"]["tags"]}
    assert top["info"]["status"] == child["info"]["status"] == "FINISHED"
    assert top["info"]["run_name"] == "served-exp" and child["info"]["run_name"] == "served-exp ela-warp-s3"
    assert child_tags["mlflow.parentRunId"] == top["info"]["run_id"]
    metrics = {m["key"]: m["value"] for m in top["data"]["metrics"]}
    assert metrics["test.roc_auc"] == predictions_auc(repo, "ela-warp-s3")  # the primary model

    listed = api(server, "artifacts/list", run_id=top["info"]["run_id"], path="plots")
    assert "plots/roc.png" in {f["path"] for f in listed["files"]}
    artifact_root = top["info"]["artifact_uri"].split("mlflow-artifacts:/", 1)[1]
    png = requests.get(
        f"{server}/api/2.0/mlflow-artifacts/artifacts/{artifact_root}/plots/roc.png", timeout=30
    )
    assert png.ok and png.content[:4] == b"\x89PNG"
    assert png.content == (repo / "plots" / "roc.png").read_bytes()
    assert not (repo / "mlartifacts").exists() and (tmp_path / "mlartifacts-server").is_dir()

    (version,) = api(server, "model-versions/search", filter="name='faceswap-ela-cnn'")["model_versions"]
    version_tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    assert version["version"] == "1" and version["run_id"] == child["info"]["run_id"]
    assert version["status"] == "READY" and version_tags["dvc_exp_name"] == "served-exp"
    assert version_tags["git_commit"] == commit
    assert version_tags["model"] == "ela-warp-s3"
    assert version_tags["comparison_run_id"] == top["info"]["run_id"]
    top_tags = {t["key"]: t["value"] for t in top["data"]["tags"]}
    assert top_tags["registered_model"] == "faceswap-ela-cnn" and top_tags["registered_version"] == "1"

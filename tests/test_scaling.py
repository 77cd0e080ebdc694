"""Beyond one laptop, with the real programs on loopback: a DVC remote (a local folder) and a git
remote (a bare repo) carry a finished pipeline and an experiment to a fresh clone; `dvc artifacts
get` fetches the primary model; queued sweeps on two workers lose no MLflow run, into the sqlite
store and into a tracking server; `dvc queue kill` leaves the killed run KILLED."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image

from faceswap_ela import card, ela, landmarks, layout, roi
from faceswap_ela import params as P
from faceswap_ela.evaluation import predict_fake
from faceswap_ela.images import load_rgb
from tests.helpers.mlflow_server import api
from tests.helpers.sample_data import render_face
from tests.helpers.tiny_pipeline import (
    BIN,
    copy_repo,
    env,
    experiments,
    mlflow_runs,
    primary_model,
    queue,
    queue_status,
    queue_workers,
    run,
    wait_for_queue,
)

pytestmark = pytest.mark.slow
MODEL = layout.model_name("ela", "warp", 42)  # the tiny pipeline's one model
ARTIFACT = "faceswap-ela-cnn"  # dvc.yaml's model artifact, the name MLflow registers it under too
ROUNDS = 3  # queued sweeps against the sqlite store, each on a store that grows
SWEEP = 4  # experiments per sweep, on 2 workers


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Remotes:
    origin: Path  # a copy of the finished tiny pipeline, pushed
    git: Path  # its git remote (bare)
    storage: Path  # its DVC remote (a folder)
    push_s: float


@pytest.fixture(scope="module")
def remotes(tiny_pipeline, tmp_path_factory) -> Remotes:
    tmp = tmp_path_factory.mktemp("remotes")
    origin = copy_repo(tiny_pipeline, tmp / "origin")
    git, storage = tmp / "origin.git", tmp / "storage"
    run(["git", "init", "-q", "--bare", "-b", "main", str(git)], tmp)
    run(["dvc", "remote", "add", "-d", "storage", str(storage)], origin)
    run(["git", "commit", "-qm", "a DVC remote", ".dvc/config"], origin)
    run(["git", "remote", "add", "origin", str(git)], origin)
    run(["git", "push", "-q", "origin", "main"], origin)
    start = time.monotonic()
    pushed = run(["dvc", "push"], origin)
    push_s = time.monotonic() - start
    assert re.search(r"\d+ files? pushed", pushed), pushed
    print(f"dvc push of {sum(f.stat().st_size for f in storage.rglob('*') if f.is_file())} B: {push_s:.1f} s")
    return Remotes(origin, git, storage, push_s)


def centred_crop_score(repo: Path, model: Path, photo: Path) -> float:
    """p(fake) of ``model`` (float32) on a one-face photo, from the pipeline's own pieces: the face
    dlib finds (params.yaml's landmark settings), its centred ROI resized to roi.size and that
    crop's ELA image, with the settings of the model's card."""
    import keras

    lm = P.load(repo / "params.yaml").landmarks
    model_card = card.read(card.path_for(model))
    ela_settings, roi_settings = card.ela_settings(model_card), card.roi_settings(model_card)
    rgb = load_rgb(photo)
    (face,) = landmarks.detect_faces(
        rgb, *landmarks.load_models(), upsample=lm.upsample, max_side=lm.max_side,
        retry_full_size=lm.retry_full_size,
    )  # fmt: skip
    box = roi.roi_box(face.points, rgb.shape, None, dx_max=roi_settings.dx_max, dy_max=roi_settings.dy_max)
    image = ela.compute(roi.resize(roi.crop(rgb, box), roi_settings.size), ela_settings)
    return float(predict_fake(keras.saving.load_model(model, compile=False), image[None])[0])


def clone(remotes: Remotes, dest: Path) -> Path:
    run(["git", "clone", "-q", str(remotes.git), str(dest)], dest.parent)
    return dest


def test_a_fresh_clone_pulls_and_predicts_without_training(remotes, tmp_path):
    repo = clone(remotes, tmp_path / "clone")
    model = primary_model(repo)
    assert not (repo / model).exists()
    start = time.monotonic()
    run(["dvc", "pull"], repo)
    print(f"dvc pull: {time.monotonic() - start:.1f} s")
    assert sha256(repo / model) == sha256(remotes.origin / model)

    assert "Data and pipelines are up to date." in run(["dvc", "status"], repo)
    repro = run(["dvc", "repro"], repo)
    assert "Running stage" not in repro and "Data and pipelines are up to date." in repro, repro

    photo = tmp_path / "face.jpg"
    Image.fromarray(render_face("grace_hopper")).save(photo, quality=92)
    predicted = subprocess.run(
        [str(BIN / "faceswap-ela"), "predict", str(photo), "--format", "json", "--precision", "float32"],
        cwd=repo, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    (row,) = json.loads(predicted.stdout)
    assert row["status"] == "ok"
    assert row["p_fake"] == pytest.approx(centred_crop_score(repo, repo / model, photo), abs=1e-5)
    threshold = P.load(repo / "params.yaml").eval.threshold
    assert row["label"] == ("fake" if row["p_fake"] >= threshold else "real")


def test_an_experiment_travels_through_the_git_and_dvc_remotes(remotes, tmp_path):
    origin = remotes.origin
    # eval.bootstrap shapes only compare's intervals: one cheap stage, and its own metrics
    run(["dvc", "exp", "run", "--temp", "-n", "boot-60", "-S", "eval.bootstrap=60"], origin)
    made = experiments(origin)["boot-60"]
    assert made["metrics"]["metrics/compare.json"]["bootstrap"]["resamples"] == 60
    run(["dvc", "exp", "push", "origin", "boot-60"], origin)

    repo = clone(remotes, tmp_path / "clone")  # no `dvc pull`: the experiment brings its data
    assert "boot-60" not in experiments(repo)
    run(["dvc", "exp", "pull", "origin", "boot-60"], repo)
    pulled = experiments(repo)["boot-60"]
    assert pulled["metrics"] == made["metrics"] and pulled["params"]["eval"]["bootstrap"] == 60
    assert 0.0 <= pulled["metrics"]["metrics/eval.json"]["roc_auc"] <= 1.0

    run(["dvc", "exp", "apply", "boot-60"], repo)
    assert yaml.safe_load((repo / "params.yaml").read_text())["eval"]["bootstrap"] == 60
    applied = json.loads((repo / "metrics/compare.json").read_text())
    assert applied["bootstrap"]["resamples"] == 60
    # every output, the model too, came from the DVC remote: nothing to re-run
    assert (repo / primary_model(repo)).stat().st_size > 100_000_000
    assert "Data and pipelines are up to date." in run(["dvc", "status"], repo)


def test_dvc_artifacts_get_fetches_the_primary_model(remotes, tmp_path):
    origin = remotes.origin
    run(["gto", "register", ARTIFACT, "--version", "v1.0.0"], origin)  # the git tag faceswap-ela-cnn@v1.0.0
    run(["git", "push", "-q", "origin", f"{ARTIFACT}@v1.0.0"], origin)
    expected = sha256(origin / primary_model(origin))
    for version, dest in ((None, tmp_path / "latest.keras"), ("v1.0.0", tmp_path / "v1.keras")):
        rev = ["--rev", version] if version else []
        got = run(
            ["dvc", "artifacts", "get", remotes.git.as_uri(), ARTIFACT, *rev, "-o", str(dest)], tmp_path
        )
        assert "Downloaded 1 file(s)" in got, got
        assert sha256(dest) == expected


def _comparisons(runs) -> dict[str, object]:
    return {r.name: r for r in runs if r.parent is None and r.tags.get("role") == "comparison"}


def _threshold(overrides: str) -> float:
    return float(re.search(r"eval\.threshold=([0-9.]+)", overrides).group(1))


def _check_sweep(repo: Path, queued: dict[str, str], rows: list[dict[str, str]]) -> dict[str, dict]:
    """Every queued experiment succeeded and `dvc exp show` lists it with its own threshold and AUC.
    DVC itself may drop the git ref of an experiment whose task succeeded, when two workers collect
    their results at once (its fetch error is swallowed: treeverse/dvc#8014, #10673): that is
    warned about, not failed on, and the MLflow checks still cover the experiment."""
    statuses = {row["name"]: row["status"] for row in rows}
    assert {statuses.get(name) for name in queued} == {"Success"}, rows
    shown = experiments(repo)
    missing = sorted(set(queued) - set(shown))
    if missing:
        warnings.warn(
            f"DVC lost the ref of succeeded experiment(s) {missing} (parallel collection)", stacklevel=2
        )
    assert len(missing) < len(queued), shown
    for name, overrides in queued.items():
        if name in shown:
            assert shown[name]["params"]["eval"]["threshold"] == _threshold(overrides)
            assert 0.0 <= shown[name]["metrics"]["metrics/eval.json"]["roc_auc"] <= 1.0
    return shown


def test_queued_sweeps_on_two_workers_lose_no_mlflow_run(tiny_pipeline, tmp_path):
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")  # a fresh store: the workers create it together
    for round_ in range(ROUNDS):
        # new thresholds each round: DVC's run cache would restore evaluate@ for one it has seen
        thresholds = ",".join(f"{0.25 + 0.1 * k + 0.01 * round_:.2f}" for k in range(SWEEP))  # never 0.5
        queued = queue(repo, f"eval.threshold={thresholds}")
        assert len(queued) == SWEEP
        start = time.monotonic()
        with queue_workers(repo, 2, again=round_ < ROUNDS - 1):
            rows = wait_for_queue(repo, timeout=600)
            print(f"sweep {round_ + 1}: {SWEEP} experiments on 2 workers in {time.monotonic() - start:.0f} s")
        shown = _check_sweep(repo, queued, rows)

        runs = mlflow_runs(repo)
        assert not [r for r in runs if r.status != "FINISHED"], [(r.name, r.status) for r in runs]
        top = _comparisons(runs)
        assert len(top) == len(runs) / 2 == SWEEP * (round_ + 1)  # nothing lost, nothing doubled
        for name, overrides in queued.items():
            (child,) = [r for r in runs if r.parent == top[name].run_id]
            assert child.name == f"{name} {MODEL}"
            assert float(child.params["eval.threshold"]) == _threshold(overrides)
            assert child.metrics["test.roc_auc"] == pytest.approx(top[name].metrics["test.roc_auc"], abs=1e-6)
            if name in shown:
                headline = shown[name]["metrics"]["metrics/eval.json"]
                assert top[name].metrics["test.roc_auc"] == pytest.approx(headline["roc_auc"])
                assert child.metrics["test.accuracy"] == pytest.approx(headline["accuracy"])


def test_a_queued_sweep_tracks_into_a_server(server, tiny_pipeline, tmp_path):
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    queued = queue(repo, "eval.threshold=0.35,0.45,0.55,0.65", MLFLOW_TRACKING_URI=server)
    start = time.monotonic()
    with queue_workers(repo, 2, MLFLOW_TRACKING_URI=server):
        rows = wait_for_queue(repo, timeout=600)
        print(f"sweep into a server: {SWEEP} experiments on 2 workers in {time.monotonic() - start:.0f} s")
    shown = _check_sweep(repo, queued, rows)
    assert not (repo / "mlflow.db").exists()

    experiment = api(server, "experiments/get-by-name", experiment_name="faceswap-ela")
    found = requests.post(
        f"{server}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment["experiment"]["experiment_id"]], "max_results": 100},
        timeout=30,
    ).json()["runs"]
    runs = {
        r["info"]["run_id"]: (
            r["info"],
            {t["key"]: t["value"] for t in r["data"].get("tags", [])},
            {m["key"]: m["value"] for m in r["data"].get("metrics", [])},
        )
        for r in found
    }
    assert len(runs) == 2 * SWEEP and {info["status"] for info, _, _ in runs.values()} == {"FINISHED"}
    top = {info["run_name"]: (info, metrics) for info, tags, metrics in runs.values() if tags.get("role")}
    assert set(top) == set(queued)
    for name, (info, metrics) in top.items():
        assert metrics["test.roc_auc"] == pytest.approx(
            shown[name]["metrics"]["metrics/eval.json"]["roc_auc"]
        )
        children = [i for i, tags, _ in runs.values() if tags.get("mlflow.parentRunId") == info["run_id"]]
        assert [i["run_name"] for i in children] == [f"{name} {MODEL}"]


def _running(repo: Path, name: str):
    try:
        runs = mlflow_runs(repo)
    except sqlite3.Error:  # the store is being created
        return None
    return next((r for r in runs if r.name == name and r.status == "RUNNING" and "loss" in r.metrics), None)


def test_queue_kill_leaves_the_run_killed(tiny_pipeline, tmp_path):
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    (name,) = queue(repo, "train.epochs=500", "train.patience=500", name="long")
    with queue_workers(repo, 1):
        deadline = time.monotonic() + 300
        while (training := _running(repo, f"{name} {MODEL}")) is None:  # train@ past its first epoch
            assert time.monotonic() < deadline, queue_status(repo)
            time.sleep(1)
        run(["dvc", "queue", "kill", name], repo)
        rows = wait_for_queue(repo, timeout=120)
    assert {row["name"]: row["status"] for row in rows}[name] == "Failed", rows
    (killed,) = [r for r in mlflow_runs(repo) if r.run_id == training.run_id]
    assert killed.status == "KILLED"
    assert not [r for r in mlflow_runs(repo) if r.status == "RUNNING"]
    logs = subprocess.run(
        ["dvc", "queue", "logs", name], cwd=repo, env=env(), capture_output=True, text=True, timeout=120
    )
    assert "stopped by Ctrl-C; no half-written output is left" in logs.stdout + logs.stderr

"""End to end: `dvc repro` through all seven stages in a temporary git repo, on a small MUCT-layout
dataset served over loopback, then `dvc exp run -S ela.quality=...` re-running only the last stages."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.sample_data import build_muct_archives, serve, write_muct_landmarks_csv, write_muct_photos

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["download", "landmarks", "split", "materialize", "ela", "train", "evaluate"]

pytestmark = pytest.mark.slow


def _env(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    return env


def _run(args: list[str], repo: Path, timeout: int = 900) -> str:
    proc = subprocess.run(
        args, cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=timeout, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    """A git + DVC repo holding this project's pipeline, with tiny parameters, after `dvc repro`."""
    tmp = tmp_path_factory.mktemp("e2e")
    photos = tmp / "muct"
    written = write_muct_photos(photos, subjects=5, per_subject=3)
    write_muct_landmarks_csv(photos / "muct76-opencv.csv", written)
    mirror = tmp / "mirror"
    build_muct_archives(photos, mirror)

    repo = tmp / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "pyproject.toml", ".gitignore", ".dvcignore"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    for folder in ("stages", "faceswap_ela"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))

    with serve(mirror) as (url, _log):
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"].update(
            source=url, archives=["muct-a-jpg-v1.tar.gz", "muct-landmarks-v1.tar.gz"], retries=1
        )
        params["materialize"]["variants"] = 2
        params["train"].update(epochs=2, batch_size=8, patience=1, val_fraction=0.25)
        params["tracking"]["log_model"] = True
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

        _run(["git", "init", "-q", "-b", "main"], repo)
        _run(["git", "add", "-A"], repo)
        _run(["git", "commit", "-q", "-m", "pipeline"], repo)
        first = _run(["dvc", "repro"], repo)
        _run(["git", "add", "-A"], repo)
        _run(["git", "commit", "-q", "-m", "first run"], repo)
        exp = _run(["dvc", "exp", "run", "-n", "q70", "-S", "ela.quality=70"], repo)
        # a queued sweep runs in temporary copies under .dvc/tmp/exps: MLflow must still land here
        _run(["dvc", "exp", "run", "--queue", "-S", "ela.quality=60,80"], repo)
        _run(["dvc", "exp", "run", "--run-all"], repo)
    return repo, first, exp


def test_repro_runs_every_stage_and_writes_every_output(pipeline_repo):
    repo, first, _ = pipeline_repo
    assert _ran(first) == STAGES
    manifest = pd.read_csv(repo / "data/raw/manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == 15 and manifest["group"].nunique() == 5
    found = pd.read_csv(repo / "data/landmarks.csv")
    rejects = pd.read_csv(repo / "data/landmark_rejects.csv")
    assert len(found) + len(rejects) == len(manifest)
    split = pd.read_csv(repo / "data/split.csv", dtype=str)
    assert not set(split[split.split == "train"].group) & set(split[split.split == "test"].group)
    index = pd.read_csv(repo / "data/crops/index.csv")
    assert set(index.label) == {0, 1}
    import numpy as np

    for name in ("train", "test"):
        tensors = np.load(repo / f"data/ela/{name}.npy", mmap_mode="r")
        assert tensors.dtype == np.uint8 and tensors.shape[1:] == (128, 128, 3)
        assert len(pd.read_csv(repo / f"data/ela/{name}.csv")) == len(tensors)
    assert (repo / "models/model.keras").stat().st_size > 100_000_000
    for name in ("landmarks", "split", "materialize", "train", "eval"):
        assert json.loads((repo / f"metrics/{name}.json").read_text())
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    assert 0.0 <= evaluation["roc_auc"] <= 1.0
    for plot in ("gallery.png", "roc.png", "confusion.png", "history.csv", "roc.csv", "confusion.csv"):
        assert (repo / "plots" / plot).stat().st_size > 0
    status = _run(["dvc", "status"], repo)
    assert "up to date" in status.lower() or "changed" not in status


def test_mlflow_holds_one_run_per_pipeline_run(pipeline_repo):
    repo, _, _ = pipeline_repo
    db = repo / "mlflow.db"
    assert db.exists()
    with sqlite3.connect(db) as con:
        runs = con.execute("select run_uuid, name, status from runs order by start_time").fetchall()
        assert len(runs) == 4, runs
        assert {status for _, _, status in runs} == {"FINISHED"}
        first_id, _, _ = runs[0]
        params = dict(con.execute("select key, value from params where run_uuid=?", (first_id,)).fetchall())
        metrics = {k for (k,) in con.execute("select key from metrics where run_uuid=?", (first_id,))}
        tags = dict(con.execute("select key, value from tags where run_uuid=?", (first_id,)).fetchall())
        exp_run = runs[1]
        exp_params = dict(con.execute("select key, value from params where run_uuid=?", (exp_run[0],)))
    assert params["ela.quality"] == "95" and params["materialize.variants"] == "2"
    assert {"loss", "val_loss", "accuracy", "val_accuracy", "test.roc_auc"} <= metrics
    assert "params_hash" in tags
    # the experiment's run is named after DVC's experiment and logged the new parameter
    assert exp_run[1] == "q70"
    assert exp_params["ela.quality"] == "70"
    with sqlite3.connect(db) as con:
        sweep = con.execute(
            "select r.name, p.value from runs r join params p on p.run_uuid = r.run_uuid"
            " where p.key = 'ela.quality' order by r.start_time"
        ).fetchall()[2:]
    assert sorted(q for _, q in sweep) == ["60", "80"]
    artifacts = list((repo / "mlartifacts").rglob("*"))
    assert any(p.name == "roc.png" for p in artifacts)


def test_queued_sweep_is_listed_with_auc_per_quality(pipeline_repo):
    repo, _, _ = pipeline_repo
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo))
    aucs = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                quality = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("ela", {})
                auc = data.get("metrics", {}).get("metrics/eval.json", {}).get("data", {}).get("roc_auc")
                if quality and auc is not None:
                    aucs[quality["quality"]] = auc
    assert {60, 70, 80} <= set(aucs), shown


def test_exp_run_reruns_only_ela_and_later(pipeline_repo):
    _, _, exp = pipeline_repo
    assert _ran(exp) == ["ela", "train", "evaluate"]
    for stage in ("download", "landmarks", "split", "materialize"):
        assert re.search(rf"Stage '{stage}' didn't change, skipping", exp), exp[-3000:]

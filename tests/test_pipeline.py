"""End to end: `dvc repro` through every stage (train and evaluate once per input kind and training
recipe) in a temporary git repo, on a small MUCT-layout dataset served over loopback, then
`dvc exp run -S ela.quality=...` re-running only the later stages."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers.sample_data import (
    build_muct_archives,
    default_params,
    serve,
    write_muct_landmarks_csv,
    write_muct_photos,
)
from tests.helpers.stages import predictions_auc
from tests.helpers.tiny_pipeline import env

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ["download", "landmarks", "split", "materialize"]
MODELS = ["ela-warp-s42", "ela-blend-s42", "rgb-warp-s42", "rgb-blend-s42"]
LATER_STAGES = {
    "ela",
    *(f"{stage}@{model.replace('-s42', '-42')}" for stage in ("train", "evaluate") for model in MODELS),
    "baseline@warp",
    "baseline@blend",
    "compare",
}

pytestmark = pytest.mark.slow


def _run(args: list[str], repo: Path, timeout: int = 900) -> str:
    proc = subprocess.run(
        args, cwd=repo, env=env(), capture_output=True, text=True, timeout=timeout, check=False
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
        params = default_params()
        params["data"].update(
            source=url, archives=["muct-a-jpg-v1.tar.gz", "muct-landmarks-v1.tar.gz"], retries=1
        )
        params["materialize"]["variants"] = 2
        params["split"]["test_fraction"] = 0.4  # two test subjects: a swap's donor is another one
        params["train"].update(epochs=2, batch_size=8, patience=1, val_fraction=0.25)
        params["tracking"]["log_model"] = False  # the registry is tested in test_server and test_training
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

        _run(["git", "init", "-q", "-b", "main"], repo)
        _run(["git", "add", "-A"], repo)
        _run(["git", "commit", "-q", "-m", "pipeline"], repo)
        first = _run(["dvc", "repro"], repo)
        _run(["git", "add", "-A"], repo)
        _run(["git", "commit", "-q", "-m", "first run"], repo)
        exp = _run(["dvc", "exp", "run", "-n", "q70", "-S", "ela.quality=70"], repo)
        # queued sweeps (temporary copies under .dvc/tmp/exps) are tested in test_scaling.py
        # parameters that shape no model must train none (--temp: the workspace keeps q70's outputs)
        settings = ["eval.threshold=0.6", "tracking.register=false", "testsets.jpeg_qualities=[90,70]"]
        untrained = _run(
            ["dvc", "exp", "run", "--temp", "-n", "no-training", *(f"-S{s}" for s in settings)], repo
        )
    return repo, first, exp, untrained


def test_repro_runs_every_stage_and_writes_every_output(pipeline_repo):
    repo, first, *_ = pipeline_repo
    ran = _ran(first)
    assert ran[:4] == DATA_STAGES and set(ran[4:]) == LATER_STAGES and len(ran) == 16, ran
    assert ran.index("compare") == len(ran) - 1
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

    test_sets = [
        "test",
        "test_blend",
        "test_swap",
        "test_swap_unseen",
        "test_matched",
        *(f"test_jpeg{q}" for q in (100, 95, 90, 80, 70)),
    ]
    for name in ["train_warp", "train_blend", *test_sets]:
        tensors = np.load(repo / f"data/ela/{name}_ela.npy", mmap_mode="r")
        assert tensors.dtype == np.uint8 and tensors.shape[1:] == (128, 128, 3)
        table = pd.read_csv(repo / f"data/ela/{name}.csv")
        assert len(table) == len(tensors) and set(table["label"]) == {0, 1}, name  # swaps found donors
    for model in MODELS:
        assert (repo / f"models/{model}/model.keras").stat().st_size > 100_000_000
        assert json.loads((repo / f"models/{model}/card.json").read_text())["model"] == model
        assert json.loads((repo / f"metrics/train/{model}.json").read_text())["model"] == model
        evaluated = json.loads((repo / f"metrics/eval/{model}.json").read_text())
        assert set(evaluated["sets"]) == set(test_sets)
        predictions = pd.read_csv(repo / f"data/predictions/{model}.csv")
        assert list(dict.fromkeys(predictions["set"])) == test_sets
    for name in ("landmarks", "split", "materialize", "eval", "baseline/warp", "baseline/blend", "compare"):
        assert json.loads((repo / f"metrics/{name}.json").read_text())
    for recipe in ("warp", "blend"):  # ela.qualities is []: no JPEG ghost, its file the header alone
        assert (
            repo / f"data/predictions/ghost-{recipe}.csv"
        ).read_text() == "set,crop_id,photo_id,label,p_fake\n"
    swaps = index[index["split"].isin(["test_swap", "test_swap_unseen"]) & (index["status"] == "ok")]
    for name, (low, high) in (("test_swap", (75, 100)), ("test_swap_unseen", (50, 70))):
        saved = swaps[swaps["split"] == name]  # reals and fakes alike, by the set's rule
        assert set(saved["label"]) == {0, 1} and saved["quality"].between(low, high).all(), name
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    assert evaluation["model"] == "ela-warp-s42"
    assert evaluation["roc_auc"] == predictions_auc(repo, "ela-warp-s42")
    headline = {"baseline_auc", "rgb-warp_auc_mean", "matched_ela-warp_auc_mean", "swap_roc_auc"}
    assert headline | {"swap_unseen_roc_auc"} <= set(evaluation)
    compare = json.loads((repo / "metrics/compare.json").read_text())
    rows = ["ela-warp", "rgb-warp", "baseline-warp", "ela-blend", "rgb-blend", "baseline-blend"]
    assert sorted(compare["cross_forger"]) == sorted(rows)
    assert all(list(compare["cross_forger"][row]) == test_sets for row in rows)  # one cell per row and set
    assert "ela-warp_minus_rgb-warp" in compare["differences"]["test"]
    assert "| Model |" in (repo / "metrics/compare.md").read_text()
    figures = ("gallery", "roc", "confusion", "curves", "robustness", "cross_forger")
    for plot in [f"{name}.png" for name in figures] + [f"{name}.csv" for name in figures[1:]]:
        assert (repo / "plots" / plot).stat().st_size > 0
    robustness = pd.read_csv(repo / "plots/robustness.csv")
    assert list(robustness["quality"]) == [100, 95, 90, 80, 70]
    # the workspace holds the last `dvc exp run` (q70): every stage's deps, params and outs as
    # dvc.lock records them, so that nothing, not one stage, is out of date
    status = subprocess.run(
        ["dvc", "status", "--json"], cwd=repo, env=env(), capture_output=True, text=True, timeout=300
    )
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout + status.stderr


def test_mlflow_holds_one_top_level_run_per_pipeline_run(pipeline_repo):
    repo, *_ = pipeline_repo
    db = repo / "mlflow.db"
    assert db.exists()
    with sqlite3.connect(db) as con:
        runs = con.execute("select run_uuid, name, status from runs order by start_time").fetchall()
        tags = {
            run: dict(con.execute("select key, value from tags where run_uuid=?", (run,)).fetchall())
            for run, _, _ in runs
        }
        params = {
            run: dict(con.execute("select key, value from params where run_uuid=?", (run,)).fetchall())
            for run, _, _ in runs
        }
        metrics = {
            run: {k for (k,) in con.execute("select key from metrics where run_uuid=?", (run,))}
            for run, _, _ in runs
        }
    assert len(runs) == 15, runs  # 3 pipeline runs x (4 models + 1 comparison)
    assert {status for _, _, status in runs} == {"FINISHED"}
    top = [(run, name) for run, name, _ in runs if "mlflow.parentRunId" not in tags[run]]
    assert len(top) == 3 and all(tags[run].get("role") == "comparison" for run, _ in top)
    children = {
        run: tags[run]["mlflow.parentRunId"] for run, _, _ in runs if "mlflow.parentRunId" in tags[run]
    }
    assert len(children) == 12 and set(children.values()) == {run for run, _ in top}
    first_top, first_models = top[0][0], [r for r, parent in children.items() if parent == top[0][0]]
    assert sorted((tags[r]["input"], tags[r]["fakes"]) for r in first_models) == [
        ("ela", "blend"), ("ela", "warp"), ("rgb", "blend"), ("rgb", "warp"),
    ]  # fmt: skip
    for run in first_models:
        assert params[run]["ela.quality"] == "95" and params[run]["materialize.variants"] == "2"
        assert {
            "loss",
            "val_loss",
            "accuracy",
            "val_accuracy",
            "test.roc_auc",
            "test_matched.roc_auc",
        } <= metrics[run]
        assert "params_hash" in tags[run]
    assert {"test.roc_auc", "test.baseline_auc"} <= metrics[first_top]
    # the experiment's runs are named after DVC's experiment and logged the new parameter
    names = {name for run, name, _ in runs if children.get(run) == top[1][0]}
    assert top[1][1] == "q70" and names == {f"q70 {model}" for model in MODELS}
    assert params[top[1][0]]["ela.quality"] == "70"
    # evaluate@ re-ran without training: its new runs point at the training runs they evaluate
    untrained = [r for r, parent in children.items() if parent == top[2][0]]
    assert top[2][1] == "no-training" and len(untrained) == 4
    trained = {(tags[r]["input"], tags[r]["fakes"]): tags[r]["train_run_id"] for r in untrained}
    assert len(trained) == 4 and all(
        (tags[run]["input"], tags[run]["fakes"]) == key for key, run in trained.items()
    )
    assert all(tags[r]["eval_precision"] in ("float32", "bfloat16", "float16") for r in untrained)
    artifacts = list((repo / "mlartifacts").rglob("*"))
    assert any(p.name == "roc.png" for p in artifacts) and any(p.name == "compare.md" for p in artifacts)


def test_the_experiment_is_listed_with_its_auc(pipeline_repo):
    repo, *_ = pipeline_repo
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
    assert 70 in aucs, shown


def test_exp_run_reruns_only_ela_and_later(pipeline_repo):
    _, _, exp, _ = pipeline_repo
    # the raw crops do not depend on ela.quality: the RGB-CNNs are not trained again
    rgb = {"train@rgb-warp-42", "train@rgb-blend-42"}
    assert set(_ran(exp)) == LATER_STAGES - rgb, _ran(exp)
    for stage in [*DATA_STAGES, *rgb]:
        assert re.search(rf"Stage '{stage}' didn't change, skipping", exp), exp[-3000:]


def test_parameters_that_shape_no_model_train_nothing(pipeline_repo):
    _, _, _, untrained = pipeline_repo
    ran = set(_ran(untrained))
    assert not {stage for stage in ran if stage.startswith("train@")}, ran
    assert {
        "materialize",
        "ela",
        *(s for s in LATER_STAGES if s.startswith("evaluate@")),
        "compare",
    } <= ran, ran
    for stage in (s for s in LATER_STAGES if s.startswith("train@")):
        assert re.search(rf"Stage '{stage}' didn't change, skipping", untrained), untrained[-3000:]

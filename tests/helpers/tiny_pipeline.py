"""A tiny DVC pipeline repo for the scaling-out tests (remotes, queues, the UI): this project's own
`train@`, `evaluate@`, `baseline` and `compare` stages, copied from dvc.yaml with its artifacts,
on random crops in a `dvc add`-ed data/ela (the stages before `ela` are left out: the end-to-end
test in test_pipeline.py covers them). One ELA model, seed 42, one epoch, no logged model: a
`dvc repro` takes about a minute on 2 cores, and an experiment that changes only `eval.threshold`
re-runs `evaluate@`, `baseline` and `compare`, about 20 s.

Public API:
    build(folder) -> repo            # git repo, `dvc repro` done and committed
    copy_repo(repo, dest) -> dest    # an independent copy of it, with a fresh MLflow store
    primary_model(repo) -> Path      # the primary model file, relative to the repo
    run(args, cwd, **env) -> str     # a command that must succeed; its stdout + stderr
    env(**extra) -> dict             # the environment every command runs in
    mlflow_runs(repo) -> list[Run]   # the runs in <repo>/mlflow.db
    wait_for_queue(repo, timeout)    # until DVC's queue has nothing queued or running
    queue(repo, *settings) -> {name: overrides}, queue_workers(repo, jobs), experiments(repo)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from faceswap_ela import layout
from faceswap_ela import params as P
from tests.helpers.sample_data import default_params
from tests.helpers.stages import make_repo

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGES = ("train", "evaluate", "baseline", "compare")
# what compare reads from the stages left out
STUBS = {"metrics/landmarks.json": {"found": 24}, "metrics/materialize.json": {"crops": 24}}


def env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_", "KERAS_BACKEND"))}
    environ.update(
        PATH=f"{BIN}{os.pathsep}{environ.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
        GIT_CONFIG_NOSYSTEM="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    environ.update(extra)
    return environ


def run(args: list[str], cwd: Path, timeout: float = 600, **extra: str) -> str:
    """Run a command that must succeed; its stdout and stderr together."""
    proc = subprocess.run(
        args, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=timeout, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def primary_model(repo: Path) -> Path:
    """The file of the primary model (the ELA model of the first seed) that the pipeline writes."""
    return layout.model_file(layout.primary(P.load(repo / "params.yaml")))


def build(folder: Path) -> Path:
    repo = make_repo(folder, n_train=16, n_test=8, inputs=("ela",), seed=42)
    for name in ("pyproject.toml", ".gitignore", ".dvcignore"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(
        ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local")
    )
    for folder_name in ("stages", "faceswap_ela"):
        shutil.copytree(ROOT / folder_name, repo / folder_name, ignore=shutil.ignore_patterns("__pycache__"))

    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    pipeline["stages"] = {name: pipeline["stages"][name] for name in STAGES}
    params = default_params()
    params["train"].update(
        inputs=["ela"], fakes=["warp"], seeds=[42], epochs=1, batch_size=8, val_fraction=0.2, patience=1
    )
    params["eval"]["bootstrap"] = 50
    params["testsets"]["jpeg_qualities"] = []
    params["tracking"].update(log_model=False, register=False)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the model artifact names the file the pipeline writes (the project's may name a renamed one)
    for artifact in pipeline.get("artifacts", {}).values():
        if artifact.get("type") == "model":
            artifact["path"] = primary_model(repo).as_posix()
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    for name, content in STUBS.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(json.dumps(content) + "\n")
    (repo / "plots").mkdir(exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(repo / "plots" / "gallery.png")

    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "config", "cache.type", "hardlink,copy"], repo)  # no 113 MB copy per experiment
    run(["dvc", "add", "-q", "data/ela"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "tiny pipeline"], repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "first run"], repo)
    return repo


def copy_repo(repo: Path, dest: Path) -> Path:
    """A copy with its own git history and DVC cache, and no MLflow store (a fresh one is made)."""
    skip = {".dvc/tmp", "mlflow.db", "mlartifacts"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(repo)
        return {n for n in names if (rel / n).as_posix().removeprefix("./") in skip}

    shutil.copytree(repo, dest, symlinks=True, ignore=ignore)
    return dest


@dataclass
class Run:
    run_id: str
    name: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def parent(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")


def mlflow_runs(repo: Path) -> list[Run]:
    """Every run of <repo>/mlflow.db, oldest first, read with sqlite directly (no MLflow); none
    while the store does not exist yet."""
    db = repo / "mlflow.db"
    if not db.is_file():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        if not con.execute("select name from sqlite_master where name='runs'").fetchall():
            return []
        runs = [
            Run(*row) for row in con.execute("select run_uuid, name, status from runs order by start_time")
        ]
        for run_ in runs:
            run_.tags = dict(con.execute("select key, value from tags where run_uuid=?", (run_.run_id,)))
            run_.params = dict(con.execute("select key, value from params where run_uuid=?", (run_.run_id,)))
            run_.metrics = dict(
                con.execute("select key, value from latest_metrics where run_uuid=?", (run_.run_id,))
            )
    return runs


def queue_status(repo: Path) -> list[dict[str, str]]:
    """`dvc queue status` as rows (Task, Name, Created, Status)."""
    out = run(["dvc", "queue", "status"], repo, timeout=120)
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[-1] in ("Queued", "Running", "Success", "Failed", "Killed"):
            rows.append({"task": parts[0], "name": parts[1], "status": parts[-1]})
    return rows


def wait_for_queue(repo: Path, timeout: float) -> list[dict[str, str]]:
    """Poll `dvc queue status` until nothing is queued or running; the last rows."""
    deadline = time.monotonic() + timeout
    while True:
        rows = queue_status(repo)
        if not any(row["status"] in ("Queued", "Running") for row in rows):
            return rows
        assert time.monotonic() < deadline, f"the queue did not finish in {timeout} s: {rows}"
        time.sleep(2)


def workers(repo: Path, **extra: str) -> int:
    """How many of DVC's queue workers are alive (active or idle)."""
    out = run(["dvc", "queue", "status"], repo, timeout=120, **extra)
    match = re.search(r"Worker status: (\d+) active, (\d+) idle", out)
    return int(match.group(1)) + int(match.group(2)) if match else 0


@contextlib.contextmanager
def queue_workers(repo: Path, jobs: int, *, again: bool = False, **extra: str) -> Iterator[None]:
    """`dvc queue start -j jobs` for the block, and no worker left after it. With ``again`` (the
    queue is started again later) the workers end by themselves, 10 s after the queue empties:
    `dvc queue stop` leaves a shutdown message in the broker that the next workers would obey.
    Otherwise, or when the block failed, `dvc queue stop --kill`."""
    # the workers are daemons that inherit its output: to a file, or waiting on a pipe waits for them
    log = repo / ".dvc" / "tmp" / "queue-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        started = subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=env(**extra), stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120, check=False,
        )  # fmt: skip
    assert started.returncode == 0, log.read_text()[-3000:]
    failed = True
    try:
        yield
        failed = False
    finally:
        if failed or not again:
            subprocess.run(
                ["dvc", "queue", "stop", "--kill"],
                cwd=repo,
                env=env(**extra),
                capture_output=True,
                timeout=120,
            )
        deadline = time.monotonic() + 60
        while workers(repo, **extra) and time.monotonic() < deadline:
            time.sleep(1)


def queue(repo: Path, *settings: str, name: str | None = None, **extra: str) -> dict[str, str]:
    """`dvc exp run --queue -S ...` (one setting may sweep values: eval.threshold=0.3,0.4): the
    queued experiments' names, each with its overrides as DVC prints them, in order."""
    named = ["-n", name] if name else []
    out = run(["dvc", "exp", "run", "--queue", *named, *(f"-S{s}" for s in settings)], repo, **extra)
    queued = re.findall(r"Queueing with overrides '(.*?)'\.\s+Queued experiment '([^']+)'", out)
    assert queued, out
    return {name: overrides for overrides, name in queued}


def experiments(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json`: every experiment's name -> its params.yaml and metrics files' data."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, timeout=300))
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                if rev.get("name"):
                    found[rev["name"]] = {
                        "params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                        "metrics": {k: v.get("data", {}) for k, v in data.get("metrics", {}).items()},
                    }
    return found

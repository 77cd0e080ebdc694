"""MLflow tracking: store location, run naming and tags, resuming a run, and failures that must not
fail a stage (unwritable store, unreachable server, errors mid-run)."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from faceswap_ela import mlflow_store, tracking
from faceswap_ela import params as P
from tests.helpers import as_user
from tests.helpers.sample_data import loopback


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def warnings_in(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "MLflow" in r.getMessage()
    ]


def test_default_store_is_anchored_at_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert mlflow_store.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert (
        mlflow_store.artifact_location(mlflow_store.tracking_uri())
        == (tmp_path.resolve() / "mlartifacts").as_uri()
    )
    assert (
        mlflow_store.tracking_uri(tmp_path / "elsewhere")
        == f"sqlite:///{tmp_path.resolve()}/elsewhere/mlflow.db"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert mlflow_store.tracking_uri() == "http://127.0.0.1:5000"
    assert mlflow_store.artifact_location("http://127.0.0.1:5000") is None


def test_run_name(monkeypatch):
    assert tracking.run_name("0123456789abcdef0123456789abcdef01234567") == "workspace-0123456"
    assert tracking.run_name(None).startswith("workspace-20")
    monkeypatch.setenv("DVC_EXP_NAME", "brave-owls")
    assert tracking.run_name("0123456789abcdef0123456789abcdef01234567") == "brave-owls"


def test_git_commit_outside_a_repository(tmp_path):
    assert tracking.git_commit(tmp_path) is None


def test_numeric_leaves():
    data = {
        "a": 1,
        "b": {"c": 2.5, "d": [3, {"e": 4}], "f": True, "g": "text", "h": None},
        "i (x)": float("nan"),
    }
    assert tracking.numeric_leaves(data, "up") == {
        "up.a": 1.0,
        "up.b.c": 2.5,
        "up.b.d.0": 3.0,
        "up.b.d.1.e": 4.0,
    }
    assert tracking.numeric_leaves({"k:v": 1}) == {"k_v": 1.0}


def test_start_log_and_resume(store, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-one")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "f" * 40)
    p = P.parse({"seed": 7, "tracking": {"experiment": "unit"}})
    tracker = tracking.start_run(p, tags={"backend": "tensorflow", "device": "CPU: test"})
    assert tracker.active
    assert tracker.info() == {"run_id": tracker.run_id, "tracking_uri": store, "experiment": "unit"}
    tracker.log_epoch(1, {"loss": 0.7, "val_loss": 0.8})
    tracker.log_epoch(2, {"loss": 0.5, "val_loss": 0.6})
    tracker.log_metrics({"best_epoch": 2, "device": "not a number", "flag": True}, prefix="train.")
    (tmp_path / "note.txt").write_text("hello")
    tracker.log_artifact(tmp_path / "note.txt", "notes")
    tracker.log_artifact(tmp_path / "missing.png")  # skipped quietly
    tracker.finish()

    client = MlflowClient(store)
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "exp-one"
    assert run.info.status == "FINISHED"
    assert run.data.params == {k: str(v) for k, v in P.flatten(p).items()}
    tags = run.data.tags
    assert tags["params_hash"] == P.digest(p)
    assert tags["dvc_exp_baseline_rev"] == "f" * 40
    assert tags["dvc_exp_name"] == "exp-one"
    assert (tags["backend"], tags["device"]) == ("tensorflow", "CPU: test")
    assert "git_commit" not in tags  # tmp_path is no git repository
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [
        (1, 0.7),
        (2, 0.5),
    ]
    assert run.data.metrics["train.best_epoch"] == 2
    assert "train.device" not in run.data.metrics and "train.flag" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/note.txt"]
    experiment = client.get_experiment_by_name("unit")
    assert experiment.artifact_location == (tmp_path / "store" / "mlartifacts").as_uri()

    resumed = tracking.resume_run(tracker.info(), p, tags={"eval_backend": "tensorflow"})
    assert resumed.run_id == tracker.run_id
    assert client.get_run(tracker.run_id).info.status == "RUNNING"
    resumed.log_metrics({"accuracy": 0.9}, prefix="test.")
    resumed.finish()
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test.accuracy"] == 0.9
    assert run.data.tags["eval_backend"] == "tensorflow"


def test_resume_starts_a_new_run_when_the_id_is_unknown(store, caplog):
    p = P.parse({"tracking": {"experiment": "unit"}})
    info = {"run_id": "0" * 32, "tracking_uri": store, "experiment": "unit"}
    with caplog.at_level(logging.WARNING):
        tracker = tracking.resume_run(info, p)
    assert tracker.active and tracker.run_id != "0" * 32
    assert any("not found" in m for m in warnings_in(caplog))
    fresh = tracking.resume_run({}, p)  # models/run.json missing or run_id null
    assert fresh.active and fresh.run_id not in (None, tracker.run_id)
    assert MlflowClient(store).get_run(fresh.run_id).data.params["tracking.experiment"] == "unit"


def test_resume_after_a_parameter_change_starts_a_linked_run(store):
    before = P.parse({"tracking": {"experiment": "unit"}})
    trained = tracking.start_run(before)
    trained.finish()
    after = P.parse({"tracking": {"experiment": "unit"}, "eval": {"threshold": 0.7}})
    evaluated = tracking.resume_run(trained.info(), after)
    assert evaluated.run_id != trained.run_id
    run = MlflowClient(store).get_run(evaluated.run_id)
    assert run.data.tags["train_run_id"] == trained.run_id
    assert run.data.params["eval.threshold"] == "0.7"
    assert MlflowClient(store).get_run(trained.run_id).data.params["eval.threshold"] == "0.5"


def test_changed_param_values_are_kept_and_named(store, caplog):
    tracker = tracking.start_run(P.parse({}))
    with caplog.at_level(logging.WARNING):
        tracker.log_params({"seed": 1, "extra.key": "new"})
    assert tracker.active  # not a tracking failure
    params = MlflowClient(store).get_run(tracker.run_id).data.params
    assert params["seed"] == "42" and params["extra.key"] == "new"
    assert any("changed" in r.getMessage() and "seed" in r.getMessage() for r in caplog.records)


def test_unwritable_store_disables_tracking_with_one_warning(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")  # cannot be created
    p = P.parse({})
    with caplog.at_level(logging.WARNING):
        tracker = tracking.start_run(p)
        tracker.log_params({"a": 1})
        tracker.log_epoch(1, {"loss": 1.0})
        tracker.log_model(object())
        tracker.finish()
        resumed = tracking.resume_run({"run_id": "abc"}, p)
    assert not tracker.active and not resumed.active
    assert tracker.info()["run_id"] is None
    assert tracker.info()["tracking_uri"] == f"sqlite:///{blocker}/mlflow.db"
    messages = warnings_in(caplog)
    assert len(messages) == 2  # one for start, one for resume
    assert all("MLflow tracking disabled" in m and "\n" not in m for m in messages)


def _a_store(folder: Path) -> Path:
    """A real MLflow sqlite store with one run in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    tracking.start_run(P.parse({}), root=folder).finish()
    assert db.is_file()
    return db


def _drop_runs(db: Path) -> None:
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA foreign_keys = OFF")
        for table in ("tags", "params", "metrics", "latest_metrics", "runs"):
            con.execute(f"DROP TABLE {table}")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda db: db.mkdir(), "{db} is a folder, not a database"),
        (_drop_runs, "{db} is not an MLflow database, or its schema was changed: no table runs"),
        (lambda db: db.write_bytes(os.urandom(4096)), "{db} is not an SQLite database"),
        (lambda db: os.mkfifo(db), "{db} is not a regular file"),
    ],
    ids=["folder", "tables-dropped", "not-sqlite", "fifo"],
)
def test_a_store_mlflow_cannot_use_is_named_in_one_warning_in_seconds(make, reason, tmp_path, caplog, capfd):
    db = tmp_path / "repo" / "mlflow.db"
    if make is _drop_runs:
        _a_store(db.parent)
    else:
        db.parent.mkdir()
    make(db)
    capfd.readouterr()
    p = P.parse({})
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        tracker = tracking.start_run(p, root=db.parent)
        resumed = tracking.resume_run({"run_id": "0" * 32}, p, root=db.parent)
        took = time.monotonic() - started
    assert not tracker.active and not resumed.active
    assert took < 10, took  # not MLflow's own retries (105 s for a folder)
    messages = warnings_in(caplog)
    assert len(messages) == 2 and all(f"StoreError: {reason.format(db=db)})" in m for m in messages), messages
    assert capfd.readouterr().err == ""  # nothing of MLflow's own


def _start_run_as_nobody(root: Path, warm: Path) -> dict:
    """tracking.start_run(root=root) in a forked child running as user nobody (65534): its warnings
    and what else reached stderr. MLflow is imported and used first, so the child needs no file
    that user can't read (``warm``: where it is used first)."""
    _a_store(warm)

    def body() -> dict:
        err = os.open(os.devnull, os.O_WRONLY)
        captured = os.pipe()
        os.dup2(captured[1], 2)  # MLflow's own handler writes to stderr
        warnings: list[str] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: warnings.append(record.getMessage())
        logging.getLogger("faceswap_ela").addHandler(handler)
        tracker = tracking.start_run(P.parse({}), root=root)
        os.dup2(err, 2)
        os.close(captured[1])
        with os.fdopen(captured[0]) as stream:
            stderr = stream.read()
        return {"active": tracker.active, "warnings": warnings, "stderr": stderr}

    return as_user.run_as(
        as_user.NOBODY, body, "can't switch to user nobody, so a read-only store can't be tested as root"
    )


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="switches to user nobody: needs root"
)
@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_store_is_named_read_only_in_one_warning(what, tmp_path):
    """As root, mode 0444 stops no one: the run starts as user nobody, in a temporary folder it can
    reach (pytest's own are the user's alone)."""
    with tempfile.TemporaryDirectory(prefix="faceswap-ela-test-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        db = _a_store(base / "repo")
        (base / "repo").chmod(0o777 if what == "file" else 0o755)
        db.chmod(0o444 if what == "file" else 0o666)
        db.with_name("mlflow.db.lock").chmod(0o666)  # the store's lock stays usable: only the store isn't
        done = _start_run_as_nobody(base / "repo", tmp_path / "warm")
    reason = f"{db} is read-only" if what == "file" else f"{db} is in a read-only folder"
    assert not done["active"]
    assert len(done["warnings"]) == 1 and f"StoreError: {reason}" in done["warnings"][0], done["warnings"]
    assert done["stderr"] == ""  # none of MLflow's own tracebacks


def test_unreachable_server_fails_fast(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    p = P.parse({})
    with caplog.at_level(logging.WARNING):
        tracker = tracking.start_run(p)
        resumed = tracking.resume_run({"run_id": "abc"}, p)
    assert not tracker.active and not resumed.active
    messages = warnings_in(caplog)
    assert len(messages) == 2 and all("no MLflow server answers" in m for m in messages)


def _half_alive(handler, stop: threading.Event) -> None:
    if handler.path.startswith("/health"):
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"OK")
        return
    stop.wait()  # accepts the API call and never answers


def test_a_half_alive_tracking_server_costs_seconds_and_one_warning(monkeypatch, caplog, capfd):
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "DVC_ROOT"):
        monkeypatch.setenv(name, "")  # so that what the project sets is undone afterwards
        monkeypatch.delenv(name)
    p = P.parse({})
    with loopback(_half_alive, limit_s=60) as (url, seen, _):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url.rstrip("/"))
        with caplog.at_level(logging.WARNING):
            started = time.monotonic()
            tracker = tracking.start_run(p)
            start_s = time.monotonic() - started
            start_warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            caplog.clear()
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")  # the user's own setting wins
            started = time.monotonic()
            resumed = tracking.resume_run({"run_id": "0" * 32}, p)
            resume_s = time.monotonic() - started
            resume_warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert seen.is_set()
    assert not tracker.active and not resumed.active
    assert start_s < mlflow_store.HTTP_TIMEOUT_S + 5, start_s
    assert resume_s < 1 + 4, resume_s
    assert len(start_warnings) == 1 and "MLflow tracking disabled" in start_warnings[0], start_warnings
    assert len(resume_warnings) == 1 and "MLflow tracking disabled" in resume_warnings[0], resume_warnings
    assert "Retrying" not in capfd.readouterr().err


class _BrokenClient:
    calls = 0

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            _BrokenClient.calls += 1
            raise RuntimeError("database is locked\n(details)")

        return fail


def test_a_failure_mid_run_warns_once_and_stops_tracking(caplog):
    tracker = tracking.Tracker(_BrokenClient(), "run", "sqlite:///x.db", "unit")
    with caplog.at_level(logging.WARNING):
        tracker.log_epoch(1, {"loss": 1.0})
        tracker.log_epoch(2, {"loss": 0.5})
        tracker.set_tags({"a": "b"})
        tracker.finish("FAILED")
    assert _BrokenClient.calls == 1
    assert not tracker.active
    assert tracker.info()["run_id"] == "run"
    messages = warnings_in(caplog)
    expected = "MLflow tracking disabled (logging metrics failed: RuntimeError: database is locked)"
    assert messages == [f"{expected}; the stage goes on without it"]


def test_status_for():
    assert tracking.status_for(None) == "FINISHED"
    assert tracking.status_for(KeyboardInterrupt()) == "KILLED"
    assert tracking.status_for(RuntimeError()) == "FAILED"


def test_the_experiment_opens_on_model_training(store):
    client = MlflowClient(store)
    kind, value = tracking.EXPERIMENT_KIND
    tracking.start_run(P.parse({"tracking": {"experiment": "fresh"}})).finish()
    assert client.get_experiment_by_name("fresh").tags[kind] == value == "custom_model_development"
    # an experiment made before the tag existed gets it; a kind chosen in the UI stays
    old = client.create_experiment("old")
    chosen = client.create_experiment("chosen", tags={kind: "finetuning"})
    for name in ("old", "chosen"):
        tracking.start_run(P.parse({"tracking": {"experiment": name}})).finish()
    assert client.get_experiment(old).tags[kind] == "custom_model_development"
    assert client.get_experiment(chosen).tags[kind] == "finetuning"


def test_register_model_from_a_plain_file_and_without_a_model(store, tmp_path, caplog):
    p = P.parse({})
    tracker = tracking.start_run(p)
    with caplog.at_level(logging.WARNING):
        assert tracker.register_model(tracker.run_id, "unit-cnn") is None  # nothing logged yet
    assert [r.getMessage() for r in caplog.records] == [
        f"MLflow run {tracker.run_id} holds no logged model: not registering 'unit-cnn'"
    ]
    assert tracker.active
    saved = tmp_path / "model.keras"
    saved.write_bytes(b"weights")
    tracker.log_artifact(saved, "model")  # what log_model falls back to when mlflow.keras fails
    assert tracker.register_model(tracker.run_id, "unit-cnn", {"git_commit": "c" * 40, "none": None}) == "1"
    assert tracker.register_model(tracker.run_id, "unit-cnn") == "2"  # the model exists: a new version
    # no detector in the run (logged without a card, or MLflow failed): the Keras model instead
    assert tracker.register_model(tracker.run_id, "unit-cnn", None, "detector", fallback="model") == "3"
    tracker.finish()
    client = MlflowClient(store)
    version = client.get_model_version("unit-cnn", "1")
    assert version.run_id == tracker.run_id and version.tags == {"git_commit": "c" * 40}
    assert version.source == f"runs:/{tracker.run_id}/model"
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts("models:/unit-cnn/latest", dst_path=str(tmp_path / "dl"))
    assert (Path(local) / "model.keras").read_bytes() == b"weights"


def test_download_model_fetches_a_registered_model_or_says_why_not_in_one_line(store, tmp_path, monkeypatch):
    tracker = tracking.start_run(P.parse({}))
    saved = tmp_path / "model.keras"
    saved.write_bytes(b"weights")
    tracker.log_artifact(saved, "model")
    assert tracker.register_model(tracker.run_id, "unit-cnn") == "1"
    tracker.finish()
    local = mlflow_store.download_model("models:/unit-cnn/1", tmp_path / "dl", store)
    assert (local / "model.keras").read_bytes() == b"weights"
    for uri in ("models:/unit-cnn/7", "models:/no-such-model/latest"):
        with pytest.raises(mlflow_store.DownloadError) as info:
            mlflow_store.download_model(uri, tmp_path / "none", store)
        assert len(str(info.value).splitlines()) == 1 and str(info.value).startswith("MlflowException: ")
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")):
        monkeypatch.setenv(name, value)
    start = time.monotonic()
    with pytest.raises(mlflow_store.DownloadError, match="no MLflow server answers"):
        mlflow_store.download_model(
            "models:/unit-cnn/1", tmp_path / "none", f"http://127.0.0.1:{closed_port()}"
        )
    assert time.monotonic() - start < 10


def test_register_model_without_tracking_does_nothing(caplog):
    with caplog.at_level(logging.WARNING):
        assert tracking.Tracker.disabled().register_model("run", "unit-cnn") is None
    assert not caplog.records


def test_a_locked_store_is_retried_with_backoff_then_given_up(monkeypatch):
    import sqlite3

    monkeypatch.setattr(mlflow_store, "LOCK_BACKOFF_S", 0.0)
    calls = []

    def flaky(failures: int, error: Exception):
        def call(x):
            calls.append(x)
            if len(calls) <= failures:
                raise RuntimeError("(sqlalchemy wrapper)") from error
            return x * 2

        return call

    locked = sqlite3.OperationalError("database is locked")
    assert mlflow_store.retry_locked(flaky(3, locked), "test")(21) == 42 and len(calls) == 4
    calls.clear()
    with pytest.raises(RuntimeError):
        mlflow_store.retry_locked(flaky(99, locked), "test")(1)
    assert len(calls) == mlflow_store.LOCK_RETRIES
    calls.clear()
    with pytest.raises(RuntimeError):  # any other error is no reason to wait
        mlflow_store.retry_locked(flaky(99, sqlite3.OperationalError("no such table: runs")), "test")(1)
    assert len(calls) == 1


def test_parallel_processes_create_one_store_and_lose_no_run(tmp_path):
    """Four stages at once on a store that does not exist yet (as `dvc queue start -j N` on a fresh
    repo): one creates its tables, under the lock, and every run is recorded and ended."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "from faceswap_ela import params as P, tracking\n"
        "import mlflow\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "with tracking.start_run(P.parse({'tracking': {'experiment': 'parallel'}})) as t:\n"
        "    t.log_metrics({'x': 1.0})\n"
        "sys.exit(0 if t.active else 3)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        time.sleep(4)  # all four have imported mlflow and wait at the line
        go.touch()
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    assert [code for code, _ in results] == [0] * 4, [err[-1500:] for _, err in results]
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("parallel").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.metrics == {"x": 1.0} for r in runs)


class _InterruptingClient:
    """A store that works until parameters are logged, where Ctrl-C arrives."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        if name == "log_batch":

            def interrupt(*args, **kwargs):
                if kwargs.get("params"):
                    raise KeyboardInterrupt
                return self.client.log_batch(*args, **kwargs)

            return interrupt
        return getattr(self.client, name)


def test_an_interrupt_while_a_run_starts_ends_it_killed(store, monkeypatch):
    real = mlflow_store.client
    monkeypatch.setattr(mlflow_store, "client", lambda uri: _InterruptingClient(real(uri)))
    with pytest.raises(KeyboardInterrupt):
        tracking.start_run(P.parse({"tracking": {"experiment": "interrupted"}}))
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("interrupted").experiment_id])
    assert run.info.status == "KILLED"

"""MLflow tracking: per pipeline run, one run per trained model (started by `train@<model>`,
resumed by `evaluate@<model>`) and one comparison run (`compare`) that the model runs are nested
under, so the UI lists one top-level run per pipeline run.

The store is ``sqlite:///<repo root>/mlflow.db`` with artifacts in ``<repo root>/mlartifacts``, both
anchored at ``params.repo_root()`` (DVC_ROOT under DVC, so temporary and queued experiments land in
the same store); ``MLFLOW_TRACKING_URI`` overrides the store. `train@<model>` writes its run's identity to
``models/<model>/run.json``; `evaluate@<model>` logs into that run and `compare` nests it.

Tracking never fails a stage: every call goes through a ``Tracker`` whose first failure (a locked or
unwritable store, an unreachable server) logs one warning line and turns tracking off, and the stage
goes on writing its DVC outputs. The store itself, its client and its locks: faceswap_ela.mlflow_store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from faceswap_ela import mlflow_store
from faceswap_ela import params as P

log = logging.getLogger(__name__)

_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """``git rev-parse HEAD`` in ``cwd``, or None outside a repository or before the first commit."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def run_name(commit: str | None = None) -> str:
    """DVC's experiment name when DVC sets one, else ``workspace-<short commit>`` or a timestamp."""
    name = os.environ.get("DVC_EXP_NAME", "").strip()
    if name:
        return name
    if commit:
        return f"workspace-{commit[:7]}"
    return "workspace-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def run_tags(p: P.Params, commit: str | None, extra: Mapping[str, object] | None = None) -> dict[str, str]:
    """Tags of a run: git commit, DVC baseline and experiment name, params hash, plus ``extra``."""
    tags: dict[str, object] = {"params_hash": P.digest(p)}
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    for env, tag in (("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev"), ("DVC_EXP_NAME", "dvc_exp_name")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    tags.update(extra or {})
    return {k: str(v) for k, v in tags.items() if v is not None}


def numeric_leaves(data: object, prefix: str = "") -> dict[str, float]:
    """Every finite number in nested dicts/lists as ``prefix.path.to.leaf`` (booleans left out),
    with characters MLflow refuses in a metric name replaced by ``_``."""
    return {
        _BAD_KEY.sub("_", key): float(value)
        for key, value in P.leaves(data, prefix, expand_lists=True)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def _warn(what: str, exc: BaseException) -> None:
    log.warning(
        "MLflow tracking disabled (%s failed: %s); the stage goes on without it",
        what,
        mlflow_store.brief(exc),
    )


class Tracker:
    """One MLflow run. Methods never raise: the first failure warns once and disables tracking.
    A Tracker without a run (``Tracker.disabled``) accepts every call and does nothing."""

    def __init__(self, client: Any = None, run_id: str | None = None, uri: str = "", experiment: str = ""):
        self.client = client
        self.run_id = run_id
        self.uri = uri
        self.experiment = experiment

    @classmethod
    def disabled(cls, uri: str = "", experiment: str = "") -> Tracker:
        return cls(None, None, uri, experiment)

    @property
    def active(self) -> bool:
        return self.client is not None and self.run_id is not None

    def info(self) -> dict[str, object]:
        """What models/run.json holds: run_id (None without tracking), tracking_uri, experiment."""
        return {"run_id": self.run_id, "tracking_uri": self.uri, "experiment": self.experiment}

    def _fail(self, what: str, exc: BaseException) -> None:
        _warn(what, exc)
        self.client = None

    def _call(self, what: str, func: Callable[[], Any]) -> Any:
        if not self.active:
            return None
        try:
            return func()
        except Exception as exc:
            self._fail(what, exc)
            return None

    def log_params(self, values: Mapping[str, object]) -> None:
        """Log parameters not yet on the run; a value that differs from the one logged is skipped
        (MLflow forbids changing it) and named in one warning."""
        if not self.active:
            return
        from mlflow.entities import Param

        def run() -> None:
            logged = self.client.get_run(self.run_id).data.params
            new = [Param(k, str(v)) for k, v in values.items() if k not in logged]
            changed = sorted(k for k, v in values.items() if k in logged and logged[k] != str(v))
            if new:
                self.client.log_batch(self.run_id, params=new)  # the client sends it in chunks
            if changed:
                log.warning(
                    "parameters changed since they were logged, the run keeps the old values: %s", changed
                )

        self._call("logging parameters", run)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self._call("setting tags", lambda: self.client.log_batch(self.run_id, tags=items))

    def log_metrics(self, values: Mapping[str, float], step: int = 0, prefix: str = "") -> None:
        """Log numbers (None and non-finite values are left out) at ``step``, keys prefixed."""
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(_BAD_KEY.sub("_", prefix + k), float(v), now, int(step))
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if items:
            self._call("logging metrics", lambda: self.client.log_batch(self.run_id, metrics=items))

    def log_epoch(self, epoch: int, logs: Mapping[str, float]) -> None:
        """A training hook: the epoch's loss/accuracy/val_* at step = epoch (from 1)."""
        self.log_metrics(logs, step=epoch)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log a file if it exists (missing files are skipped quietly)."""
        if Path(path).is_file():
            self._call(
                f"logging {path}", lambda: self.client.log_artifact(self.run_id, str(path), artifact_path)
            )

    def log_json(self, path: str | os.PathLike, prefix: str) -> None:
        """A JSON metrics file, if it exists: as an artifact under metrics/, and its numeric leaves
        as metrics named ``prefix.<path>``."""
        path = Path(path)
        if not path.is_file() or not self.active:
            return
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("not logging %s to MLflow: %s", path, mlflow_store.brief(exc))
            return
        self.log_artifact(path, "metrics")
        self.log_metrics(numeric_leaves(data, prefix))

    def log_model(
        self, net: Any, saved: str | os.PathLike | None = None, name: str = "model", card: dict | None = None
    ) -> None:
        """The model as an MLflow Keras model (``mlflow.keras.log_model``, with a signature and
        explicit requirements so that nothing is inferred by reloading it, and the model ``card``
        as ``card`` in the MLmodel file's metadata, where predict reads it). Should that fail, the
        saved .keras file ``saved`` is logged as a plain artifact instead."""
        if not self.active:
            return
        try:
            self._log_keras_model(net, name, card)
        except Exception as exc:
            if saved is None:
                self._fail("logging the model", exc)
                return
            log.warning(
                "mlflow.keras.log_model failed (%s); logging %s as a file instead",
                mlflow_store.brief(exc),
                saved,
            )
            self.log_artifact(saved, name)

    def _log_keras_model(self, net: Any, name: str, card: dict | None) -> None:
        import importlib.metadata as md

        import keras
        import mlflow
        import mlflow.keras
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *net.input_shape[1:]))])
        outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *net.output_shape[1:]))])
        requirements = [f"keras=={keras.__version__}"]
        backend = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}.get(keras.backend.backend())
        with contextlib.suppress(md.PackageNotFoundError, ValueError, TypeError):
            requirements.append(f"{backend}=={md.version(backend).split('+')[0]}")
        with mlflow_store.global_store(self.uri), mlflow.start_run(run_id=self.run_id):
            mlflow.keras.log_model(
                net, name=name, signature=ModelSignature(inputs, outputs), pip_requirements=requirements,
                metadata=None if card is None else {"card": card},
            )  # fmt: skip

    def adopt(self, run_ids: list[str]) -> None:
        """Nest these runs under this one (MLflow's ``mlflow.parentRunId`` tag), leaving alone a
        run that already has a parent (a model reused from the cache by a later experiment) or
        that lives in another store or experiment."""
        if not self.active:
            return

        def run() -> None:
            own = self.client.get_run(self.run_id).info.experiment_id
            for run_id in run_ids:
                try:
                    child = self.client.get_run(run_id)
                except Exception:
                    continue
                if child.info.experiment_id == own and "mlflow.parentRunId" not in child.data.tags:
                    self.client.set_tag(run_id, "mlflow.parentRunId", self.run_id)

        self._call("nesting the model runs", run)

    def register_model(
        self, run_id: str, name: str, tags: Mapping[str, object] | None = None, artifact_path: str = "model",
        fallback: str | None = None,
    ) -> str | None:  # fmt: skip
        """Register the model logged into run ``run_id`` under ``artifact_path`` (by ``log_model``,
        as a plain .keras file when that failed, or by detector.log_detector), else under
        ``fallback``, as a new version of the registered model ``name``, created if need be, with
        ``tags``: the version, or None (one warning) when the run holds no such model or MLflow fails."""
        if not self.active:
            return None

        def run() -> str | None:
            from mlflow.exceptions import MlflowException

            source, model_id = _model_source(self.client, run_id, artifact_path)
            if source is None and fallback is not None:
                source, model_id = _model_source(self.client, run_id, fallback)
            if source is None:
                log.warning("MLflow run %s holds no logged model: not registering %r", run_id, name)
                return None
            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            items = {k: str(v) for k, v in (tags or {}).items() if v is not None}
            # a sqlite registry resolves a models:/<model id> source through the global store
            with mlflow_store.global_store(self.uri):
                version = self.client.create_model_version(
                    name, source, run_id=run_id, tags=items, model_id=model_id, await_creation_for=0
                )
            return str(version.version)

        version = self._call(f"registering model {name!r}", run)
        if version is not None:
            log.info("registered model %r version %s (from run %s)", name, version, run_id)
        return version

    def finish(self, status: str = "FINISHED") -> None:
        """End the run (FINISHED, FAILED or KILLED); `evaluate` may resume it later."""
        self._call("ending the run", lambda: self.client.set_terminated(self.run_id, status))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Ends the run with the status of how the block ended; exceptions propagate."""
        self.finish(status_for(exc))


def _model_source(client, run_id: str, artifact_path: str) -> tuple[str | None, str | None]:
    """Where the model logged into ``run_id`` lies: ``models:/<model id>`` (and the id) for the
    newest MLflow logged model named ``artifact_path`` that the run produced, else
    ``runs:/<run id>/<artifact_path>`` when the run holds files there, else (None, None)."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    models = [client.get_logged_model(o.model_id) for o in outputs]
    models = [m for m in models if m.name == artifact_path and m.source_run_id == run_id]
    if models:
        newest = max(models, key=lambda m: m.creation_timestamp)
        return f"models:/{newest.model_id}", newest.model_id
    if client.list_artifacts(run_id, artifact_path):
        return f"runs:/{run_id}/{artifact_path}", None
    return None, None


# MLflow 3's UI shows an experiment by its kind: model training, not GenAI traces
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _experiment_id(client, name: str, uri: str) -> str:
    """The experiment ``name``, created if needed and tagged as model training (EXPERIMENT_KIND), so
    that MLflow 3's UI opens it on its runs rather than on the GenAI views; a kind set by hand stays."""
    from mlflow.exceptions import MlflowException

    kind, value = EXPERIMENT_KIND
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name, artifact_location=mlflow_store.artifact_location(uri), tags={kind: value}
            )
        except MlflowException:  # created meanwhile by a parallel (queued) experiment
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if kind not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, kind, value)
    return experiment.experiment_id


def _new_run(
    client, p: P.Params, uri: str, tags: Mapping[str, object] | None, model: str | None = None
) -> Tracker:
    commit = git_commit()
    experiment_id = _experiment_id(client, p.tracking.experiment, uri)
    name = run_name(commit) if model is None else f"{run_name(commit)} {model}"
    run = client.create_run(experiment_id, run_name=name, tags=run_tags(p, commit, tags))
    tracker = Tracker(client, run.info.run_id, uri, p.tracking.experiment)
    return _hand_over(tracker, lambda: tracker.log_params(P.flatten(p)))


def _hand_over(tracker: Tracker, setup: Callable[[], None]) -> Tracker:
    """``setup()`` on a run just started or resumed, then the tracker; a Ctrl-C or SIGTERM meanwhile,
    before the stage's ``with`` block holds the run, ends the run KILLED rather than RUNNING."""
    try:
        setup()
    except BaseException as exc:
        tracker.finish(status_for(exc))
        raise
    return tracker


def start_run(
    p: P.Params,
    *,
    tags: Mapping[str, object] | None = None,
    model: str | None = None,
    root: str | os.PathLike | None = None,
) -> Tracker:
    """Start an MLflow run named after DVC's experiment (followed by ``model``, for a model's run),
    tagged, with every parameter logged. Returns a disabled Tracker, after one warning, when MLflow
    is unavailable."""
    uri = mlflow_store.tracking_uri(root)
    try:
        tracker = _new_run(mlflow_store.client(uri), p, uri, tags, model)
    except Exception as exc:
        _warn(f"starting a run at {uri}", exc)
        return Tracker.disabled(uri, p.tracking.experiment)
    log.info("MLflow run %s in experiment %r at %s", tracker.run_id, p.tracking.experiment, uri)
    return tracker


def read_run_file(path: str | os.PathLike) -> dict[str, object]:
    """models/run.json, or an empty mapping when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resume_run(
    info: Mapping[str, object],
    p: P.Params,
    *,
    tags: Mapping[str, object] | None = None,
    model: str | None = None,
    root: str | os.PathLike | None = None,
) -> Tracker:
    """Resume the run named in ``info`` (models/run.json) in the current store. A fresh run is
    started instead (tagged ``train_run_id``) when the id is missing or unknown (with a warning),
    or when the parameters changed since that run (its ``params_hash`` differs), so that a run's
    parameters always match its metrics."""
    from mlflow.exceptions import MlflowException

    uri = mlflow_store.tracking_uri(root)
    run_id = info.get("run_id")
    try:
        client = mlflow_store.client(uri)
        previous = None
        if isinstance(run_id, str) and run_id:
            try:
                previous = client.get_run(run_id)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
        if previous is None:
            log.warning(
                "MLflow run %r (from the model's run.json) not found in %s: starting a new run", run_id, uri
            )
            return _new_run(client, p, uri, tags, model)
        if previous.data.tags.get("params_hash") != P.digest(p):
            log.info("parameters changed since training run %s: logging this evaluation in a new run", run_id)
            return _new_run(client, p, uri, {"train_run_id": run_id, **(tags or {})}, model)
        experiment = client.get_experiment(previous.info.experiment_id).name
        client.update_run(run_id, status="RUNNING")
        tracker = Tracker(client, run_id, uri, experiment)
        _hand_over(tracker, lambda: tracker.set_tags(tags or {}))
    except Exception as exc:
        _warn(f"resuming run {run_id} at {uri}", exc)
        return Tracker.disabled(uri, p.tracking.experiment)
    log.info("resumed MLflow run %s at %s", run_id, uri)
    return tracker


def status_for(exc: BaseException | None) -> str:
    """The MLflow run status for how a stage ended."""
    if exc is None:
        return "FINISHED"
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"

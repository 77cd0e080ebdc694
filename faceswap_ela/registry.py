"""The comparison run's ties to the models it compares: each model's MLflow runs, read from the
files its stages leave, and the primary model's new version in the model registry."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from faceswap_ela import layout, tracking
from faceswap_ela import params as P

log = logging.getLogger(__name__)

DETECTOR = "detector"  # the name detector.log_detector logs the pyfunc model under


def model_runs(name: str) -> tuple[object, object]:
    """The MLflow runs of one model: the one `train@` started and the one `evaluate@` logged to
    (the same run, unless the parameters changed in between)."""
    trained = tracking.read_run_file(layout.run_file(name)).get("run_id")
    evaluated = tracking.read_run_file(layout.eval_metrics(name)).get("mlflow_run_id")
    return trained, evaluated


def run_ids(names: Iterable[str]) -> list[str]:
    """The MLflow runs of the models, each once, in the models' order: the runs the comparison run
    adopts."""
    runs = (run for name in names for run in model_runs(name))
    return list(dict.fromkeys(run for run in runs if isinstance(run, str) and run))


def register_primary(tracker: tracking.Tracker, p: P.Params, name: str) -> str | None:
    """Register the primary model, as `evaluate@` logged it into its run, as a new version of
    tracking.model_name, tagged with the DVC experiment, the git commit and the runs: its detector
    (the pyfunc model a team serves, see detector.py), else, from a run that holds none, its Keras
    model. The version, or None (after one warning) when there is no logged model."""
    if not tracker.active:
        return None
    if not p.tracking.log_model:
        log.warning("tracking.log_model is false: no logged model, %s is not registered", name)
        return None
    run_id = model_runs(name)[1]
    if not isinstance(run_id, str) or not run_id:
        log.warning("no MLflow run of %s's evaluation: it is not registered", name)
        return None
    commit = tracking.git_commit()
    tags = {"dvc_exp_name": tracking.run_name(commit), "git_commit": commit, "model": name,
            "comparison_run_id": tracker.run_id, "params_hash": P.digest(p)}  # fmt: skip
    version = tracker.register_model(run_id, p.tracking.model_name, tags, DETECTOR, fallback="model")
    if version is not None:
        tracker.set_tags({"registered_model": p.tracking.model_name, "registered_version": version})
    return version

"""The comparison run's ties to the models: their MLflow runs read from the stages' files, and the
primary model's registration (with a stand-in tracker, no MLflow)."""

from __future__ import annotations

import json
import logging

from faceswap_ela import layout, registry
from faceswap_ela import params as P


class Tracker:
    """What register_primary uses of tracking.Tracker, recorded."""

    run_id = "comparison-run"

    def __init__(self, active: bool = True, version: str | None = "3"):
        self.active, self.version = active, version
        self.registered: list[tuple[str, str, dict, tuple[str, str | None]]] = []
        self.tags: dict[str, object] = {}

    def register_model(
        self, run_id: str, name: str, tags: dict, artifact_path: str = "model", fallback: str | None = None
    ) -> str | None:
        self.registered.append((run_id, name, tags, (artifact_path, fallback)))
        return self.version

    def set_tags(self, tags: dict) -> None:
        self.tags.update(tags)


def write_runs(name: str, trained: str | None, evaluated: str | None) -> None:
    for path, key, run in ((layout.run_file(name), "run_id", trained),
                           (layout.eval_metrics(name), "mlflow_run_id", evaluated)):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({key: run}))


def test_run_ids_are_each_models_runs_once_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_runs("ela-warp-s1", "a", "a")  # evaluate@ resumed train@'s run
    write_runs("rgb-warp-s1", "b", "c")  # the parameters changed in between
    write_runs("ela-blend-s1", None, "")  # MLflow was unreachable
    assert registry.model_runs("rgb-warp-s1") == ("b", "c")
    assert registry.model_runs("rgb-blend-s1") == (None, None)  # no files
    names = ["ela-warp-s1", "rgb-warp-s1", "ela-blend-s1", "rgb-blend-s1"]
    assert registry.run_ids(names) == ["a", "b", "c"]


def test_the_primary_model_is_registered_from_its_evaluation_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_runs("ela-warp-s42", "a", "b")
    p = P.parse({"tracking": {"model_name": "detector"}})
    tracker = Tracker()
    assert registry.register_primary(tracker, p, "ela-warp-s42") == "3"
    ((run_id, name, tags, logged),) = tracker.registered
    assert run_id == "b" and name == "detector"
    assert logged == ("detector", "model")  # the served detector, else (an older run) the Keras model
    assert tags["model"] == "ela-warp-s42" and tags["comparison_run_id"] == "comparison-run"
    assert tags["params_hash"] == P.digest(p) and set(tags) >= {"dvc_exp_name", "git_commit"}
    assert tracker.tags == {"registered_model": "detector", "registered_version": "3"}
    failed = Tracker(version=None)  # MLflow refused: no version, no tags
    assert registry.register_primary(failed, p, "ela-warp-s42") is None and failed.tags == {}


def test_nothing_is_registered_without_a_run_or_a_logged_model(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    p = P.parse({})
    with caplog.at_level(logging.WARNING):
        assert registry.register_primary(Tracker(active=False), p, "ela-warp-s42") is None
        assert registry.register_primary(Tracker(), p, "ela-warp-s42") is None
        no_model = P.parse({"tracking": {"log_model": False}})
        assert registry.register_primary(Tracker(), no_model, "ela-warp-s42") is None
    assert [r.getMessage() for r in caplog.records] == [
        "no MLflow run of ela-warp-s42's evaluation: it is not registered",
        "tracking.log_model is false: no logged model, ela-warp-s42 is not registered",
    ]

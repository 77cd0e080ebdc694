"""The MLflow UI, seen: `mlflow ui` (as `make ui` runs it) on a finished tiny pipeline, opened in
headless Chromium. The experiment lists the comparison run; the run page shows its headline metric,
its status and its nested model run; the model run shows its training curves' metrics; the
artifact view lists the figures and renders one. Skipped where Chromium is not installed
(`apt-get install chromium`; .ci/run installs it when it can)."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.helpers.mlflow_server import running
from tests.helpers.tiny_pipeline import mlflow_runs
from tests.helpers.ui import CHROMIUM, dump_dom, visible_text

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]
FIGURES = ("roc.png", "confusion.png", "curves.png", "robustness.png")


@pytest.fixture(scope="module")
def ui(tiny_pipeline, tmp_path_factory):
    """`mlflow ui` on the tiny pipeline's store, its experiment id, and the runs."""
    tmp = tmp_path_factory.mktemp("ui")
    options = ["--backend-store-uri", f"sqlite:///{tiny_pipeline / 'mlflow.db'}",
               "--default-artifact-root", str(tiny_pipeline / "mlartifacts")]  # fmt: skip
    with closing(sqlite3.connect(tiny_pipeline / "mlflow.db")) as con:
        query = "select experiment_id from experiments where name='faceswap-ela'"
        (experiment,) = con.execute(query).fetchone()
    with running(tmp, *options, command="ui") as url:
        yield url, experiment, mlflow_runs(tiny_pipeline), tmp


def page(url: str, profile: Path, *expected: str) -> tuple[str, str]:
    """The rendered DOM and visible text of ``url``; a second, longer look if the app was slow."""
    for budget in (20_000, 60_000):
        dom = dump_dom(url, profile, budget)
        text = visible_text(dom)
        if all(e in text for e in expected):
            break
    return dom, text


def test_the_ui_shows_the_comparison_run_its_nested_run_metric_and_figures(ui):
    url, experiment, runs, tmp = ui
    (top,) = [r for r in runs if r.tags.get("role") == "comparison"]
    (child,) = [r for r in runs if r.parent == top.run_id]
    base = f"{url}/#/experiments/{experiment}"

    _, listing = page(f"{base}/runs", tmp / "p1", top.name)
    assert "Training runs" in listing and top.name in listing, listing[:3000]

    _, text = page(f"{base}/runs/{top.run_id}", tmp / "p2", "test.roc_auc", "Child runs")
    shown = re.search(r"test\.roc_auc (\d\.\d+)", text)
    assert shown, text[:3000]
    assert float(shown.group(1)) == pytest.approx(top.metrics["test.roc_auc"], abs=1e-4)
    assert "Status Finished" in text and f"Child runs {child.name}" in text, text[:3000]

    _, text = page(f"{base}/runs/{child.run_id}", tmp / "p3", "val_accuracy")
    assert {"loss", "val_loss", "val_accuracy", "test.roc_auc"} <= set(text.split()), text[:3000]

    dom, text = page(f"{base}/runs/{top.run_id}/artifacts/plots/roc.png", tmp / "p4", "robustness.png")
    assert all(figure in text for figure in FIGURES) and "metrics" in text, text[:3000]
    # the preview is an image the app fetched from the server (a blob: URL made from the bytes)
    assert re.search(r'<img[^>]+alt="plots/roc\.png"[^>]+src="blob:', dom), text[:3000]

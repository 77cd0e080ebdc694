"""What every stage script does through stage.main: sweep what an interrupted run left, refuse a
bad params.yaml before any work, and stop on SIGTERM or Ctrl-C with one line, an exit status of
128 + the signal and no half-written output (the download stage, stopped mid-download)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from faceswap_ela import muct, stage
from tests.helpers.sample_data import loopback, stage_repo

ROOT = Path(__file__).resolve().parents[1]
A = muct.camera_archive("a")


def test_every_stage_refuses_lax_params_at_start(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    ran = []
    for text in ("ela:\n  quality: true\n", "", "seed: 1\nseed: 2\n"):
        (tmp_path / "params.yaml").write_text(text)
        with caplog.at_level(logging.ERROR):
            caplog.clear()
            assert stage.main(ran.append) == 2
        assert len(caplog.records) == 1 and "params.yaml" in caplog.records[0].getMessage()
    assert ran == []


def test_stale_temporaries_are_swept_at_every_stage_start(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    stale = [
        tmp_path / "data" / ".raw.k2j3h4g5.tmp",
        tmp_path / "metrics" / ".download.json.abc_1234.tmp",
        tmp_path / "models" / "ela-warp-s42" / ".model.keras.4242.keras",
        tmp_path / "plots" / "history" / ".ela-warp-s42.csv.zzzzzzzz.tmp",
    ]
    stale[0].mkdir(parents=True)
    (stale[0] / "photos").mkdir()
    for path in stale[1:]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    kept = [tmp_path / "data" / "raw" / "manifest.csv", tmp_path / "metrics" / ".hidden.tmp"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    with caplog.at_level(logging.INFO):
        assert stage.main(lambda p: None) == 0
    assert [p for p in stale if p.exists()] == []
    assert all(p.read_text() == "mine" for p in kept)
    assert sum("left by an interrupted run" in r.getMessage() for r in caplog.records) == len(stale)


# ---------------------------------------------------------------- interrupted by a signal


def _assert_no_outputs(repo: Path) -> None:
    for folder in (repo / "data", repo / "metrics"):
        assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


def _default_signals() -> None:
    # a shell may start background jobs with SIGINT ignored, and a child keeps that
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_stage(repo: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "download.py")],
        cwd=repo, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=_default_signals,
    )  # fmt: skip


def _hanging(handler, stop: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(10 << 20))
    handler.end_headers()
    handler.wfile.write(b"\x1f\x8b" + bytes(4094))
    handler.wfile.flush()
    stop.wait()


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_download_leaves_nothing_and_no_traceback(sent, code, tmp_path):
    with loopback(_hanging) as (url, seen, _):
        repo = stage_repo(tmp_path, source=url, archives=[A], retries=0)
        proc = _start_stage(repo)
        try:
            assert seen.wait(120), "the stage never asked for the archive"
            deadline = time.monotonic() + 30
            while not list((repo / "data").glob(".raw.*.tmp")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list((repo / "data").glob(".raw.*.tmp")), "no temporary output to clean up"
            proc.send_signal(sent)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert sum("stopped by" in line for line in err.splitlines()) == 1
    _assert_no_outputs(repo)

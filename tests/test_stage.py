"""What every stage script does through stage.main: sweep what an interrupted run left, refuse a
bad params.yaml before any work, and stop on SIGTERM or Ctrl-C with one line, an exit status of
128 + the signal and no half-written output (the download stage, stopped mid-download)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceswap_ela import muct, outputs, stage
from tests.helpers.sample_data import build_archive, loopback, serve, small_disk, stage_repo

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


# ---------------------------------------------------------------- a full disk


def _fill(path: Path, code: int) -> None:
    raise OSError(code, os.strerror(code))  # as a write into a full disk: no file name


@pytest.mark.parametrize(
    ("code", "reason"), [(errno.ENOSPC, "no space left on the disk"), (errno.EDQUOT, "over the disk quota")]
)
def test_a_full_disk_while_writing_an_output_is_one_line_naming_it(
    code, reason, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 1\n")

    def run(p) -> None:
        with outputs.atomic_outputs("data/out/", "metrics/out.json") as (folder, metrics):
            (folder / "part.bin").write_bytes(b"half")
            outputs.write_json(metrics, {"n": 1})
            _fill(folder / "more.bin", code)

    with caplog.at_level(logging.ERROR):
        assert stage.main(run) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    # the write named no file: which of the two outputs can't be told, so both are named
    assert line.startswith(f"{reason} writing data/out and metrics/out.json (")
    assert line.endswith(" MiB free there); free some space and run the stage again")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "metrics", "params.yaml"]


def test_a_full_disk_wrapped_by_a_library_is_found_and_named(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 1\n")

    def run(p) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "models/m/model.keras")
        except OSError as exc:
            raise RuntimeError("Unable to synchronously create file") from exc

    with caplog.at_level(logging.ERROR):
        assert stage.main(run) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("no space left on the disk writing models/m/model.keras (")
    with pytest.raises(RuntimeError, match="not a full disk"):  # any other error stays a traceback
        stage.main(lambda p: (_ for _ in ()).throw(RuntimeError("not a full disk")))


def _noise_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (400, 300, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)  # noise: about 200 KB


@pytest.mark.parametrize("source", ["folder", "mirror"])
def test_the_download_stage_on_a_full_disk_says_so_in_one_line(source, tmp_path):
    photos = tmp_path / "photos"
    for k in range(8):  # some 800 KB: more than the disk holds, packed or not
        _noise_jpeg(photos / "jpg" / f"i00{k}qa-fn.jpg", k)
    build_archive(tmp_path / "mirror" / A, [(f"jpg/{p.name}", p.read_bytes()) for p in photos.glob("jpg/*")])
    with small_disk(tmp_path / "disk", 400) as disk, serve(tmp_path / "mirror") as (url, _):
        repo = stage_repo(disk, source=str(photos) if source == "folder" else url, archives=[A], retries=0)
        proc = _start_stage(repo)
        _, err = proc.communicate(timeout=120)
        leftovers = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.name.endswith(".tmp"))
        outputs_left = [p for p in ("data/raw", "metrics/download.json") if (repo / p).exists()]
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if " ERROR " in line]
    written = "data/raw" if source == "folder" else f"{repo}/.cache/downloads/"
    assert f"no space left on the disk writing {written}" in line, line
    assert leftovers == [] and outputs_left == []


def test_make_repro_sweeps_what_a_killed_run_left_unless_dvc_is_running(tmp_path):
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    stale = [
        tmp_path / "data" / ".ela.k2j3h4g5.tmp" / "train_warp_ela.npy",
        tmp_path / "plots" / ".gallery.png.abcdefgh.tmp",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}

    def sweep() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "faceswap_ela.stage", "sweep"],
            cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    with Repo(str(tmp_path)) as repo, repo.lock:  # a `dvc repro` running here keeps its temporaries
        held = sweep()
    assert held.returncode == 0 and "DVC is running in this workspace" in held.stderr, held.stderr
    assert all(path.exists() for path in stale)
    done = sweep()
    assert done.returncode == 0, done.stderr
    assert not stale[0].parent.exists() and not stale[1].exists()
    assert done.stderr.count("left by an interrupted run") == 2
    make = subprocess.run(["make", "-n", "repro"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    recipe = make.stdout.splitlines()
    sweeps = [i for i, line in enumerate(recipe) if "-m faceswap_ela.stage sweep" in line]
    runs = [i for i, line in enumerate(recipe) if "dvc repro" in line or "dvc exp run" in line]
    assert sweeps and runs and sweeps[0] < runs[0], make.stdout

"""The training benchmarks run and report what they promise (the figures themselves are the
benchmarks' business: timed assertions are flaky on shared machines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from faceswap_ela.images import save_png
from tests.helpers.sample_data import portrait, write_bad_images
from tests.helpers.stages import make_repo, run_stage

ROOT = Path(__file__).resolve().parents[1]


def test_train_benchmark_pairs_precisions_and_input_paths():
    args = ["--samples", "40", "--batch", "20", "--steps", "1", "--rounds", "1"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train.py"), *args],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("  round ") == 1
    for path in ("streamed", "memory", "tfdata"):
        assert f"float32 {path}" in out
    assert "streamed / fastest" in out and "FP32 roofline" in out
    from faceswap_ela import hardware

    if any(flag in hardware.cpu_flags() for flag in hardware.BF16_FLAGS):
        assert "bfloat16 / float32, streamed, per round: x" in out
    else:
        assert "falls back to float32" in out


def test_gpu_check_trains_once_per_precision(tmp_path):
    repo = make_repo(tmp_path / "repo", n_train=24, n_test=8, inputs=("ela",), log_model=False, seed=1)
    done = run_stage(
        ROOT / "benchmarks" / "gpu.py", repo, "--precisions", "float32", "bfloat16", "--epochs", "1"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["precision"] for row in rows] == ["float32", "bfloat16"]
    assert [row["dtype_policy"] for row in rows] == ["float32", "mixed_bfloat16"]
    for row in rows:
        assert row["epochs_run"] == 1 and row["samples_per_s"] > 0 and 0 <= row["test_auc"] <= 1
    assert "bfloat16 / float32: x" in done.stdout


def test_predict_benchmark_times_the_cli_with_1_and_2_workers(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "grace_hopper"):
        save_png(folder / f"{name}.png", portrait(name))
    (folder / "texture.jpg").write_bytes(write_bad_images(tmp_path / "bad")["no_face"].read_bytes())
    script = [sys.executable, str(ROOT / "benchmarks" / "predict.py")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [*script, str(tmp_path / "no-model.keras"), "--folder", str(folder), "--limit", "3"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "an untrained paper CNN" in out and f"on 3 photos of {folder}" in out
    for workers in (1, 2):
        assert f"workers={workers}: " in out and "2 faces scored, 0 photos failed" in out
    assert "2 workers / 1 worker(s): " in out
    assert "outputs identical with 1 and 2 workers: True" in out
    missing = subprocess.run(
        [*script, "--folder", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert missing.returncode == 0 and missing.stdout.startswith(f"skipped: {tmp_path / 'none'} is missing")

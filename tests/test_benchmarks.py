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


CONV_LINE = (
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,"
    "src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB32a2b::f0 bia:bf16:a:blocked:a::f0 "
    "dst:bf16::blocked:acdb::f0,attr-scratchpad:user attr-post-ops:eltwise_relu,alg:convolution_direct,"
    "mb100_ic32oc32_ih124oh120kh5sh1dh0ph0_iw124ow120kw5sw1dw0pw0,94.2112"
)
MATMUL_LINE = (
    "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,"
    "src:bf16::blocked:ab::f0 wei:bf16::blocked:ba::f0 dst:bf16::blocked:ab::f0,attr-scratchpad:user,,"
    "100x256:256x115200,23.5"
)


def _bench_module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_onednn_lines_give_kernel_pass_and_work():
    ops = _bench_module("train_ops")
    conv = ops.parse(CONV_LINE)
    assert (conv.kind, conv.kernel, conv.direction, conv.dtype, conv.ms) == (
        "convolution", "brg_conv_fwd:avx10_1_512_amx", "forward", "bf16", 94.2112,
    )  # fmt: skip
    # 100 crops x 120 x 120 outputs x 32 filters x (5 x 5 x 32) multiply-adds
    assert ops.gflop(conv.kind, conv.shape) == 2 * 100 * 120 * 120 * 32 * 5 * 5 * 32 / 1e9
    assert ops.describe(conv.kind, conv.shape) == "conv 32→32, 5×5, 124×124→120×120, batch 100"
    matmul = ops.parse(MATMUL_LINE)
    assert ops.gflop(matmul.kind, matmul.shape) == 2 * 100 * 256 * 115200 / 1e9
    assert ops.parse("onednn_verbose,v1,info,cpu,runtime:threadpool") is None
    assert ops.parse("Epoch 1/1") is None


def test_op_table_sums_per_step_and_sets_rates_against_the_roof():
    ops = _bench_module("train_ops")
    prims = [ops.parse(CONV_LINE), ops.parse(CONV_LINE), ops.parse(MATMUL_LINE)]
    text = ops.table(prims, steps=2, step_ms=200.0, roof_gflops=4000.0)
    rows = text.splitlines()
    assert rows[2].startswith("| conv 32→32") and "| 94.2 | 47% |" in rows[2]
    rate = 2 * 100 * 120 * 120 * 32 * 5 * 5 * 32 / 1e9 / 0.0942112  # GFLOP/s
    assert f"| {rate / 1000:.2f} | {rate / 4000:.0%} |" in rows[2]
    assert rows[3].startswith("| matmul 100×256 · 256×115200 | – |") and "| 11.8 |" in rows[3]
    # what oneDNN did not run: 200 - 94.2 - 11.8 ms
    assert rows[-1].startswith("| outside oneDNN") and "| 94.0 | 47% |" in rows[-1]


def test_rooflines_give_amx_beside_fp32_and_each_precision_share():
    roofline = _bench_module("roofline")
    xeon = roofline.Roofline(cores=2, clock_ghz=2.1, fma_units=2, fma_why="two AVX-512 FMA units", amx=True)
    assert xeon.fp32_gflops == 2 * 2 * 16 * 2 * 2.1 and xeon.amx_gflops == 16 * xeon.fp32_gflops
    assert xeon.peak_gflops("bfloat16") == xeon.amx_gflops and xeon.peak_gflops("float32") == xeon.fp32_gflops
    lines = xeon.lines({"float32": 50.0, "bfloat16": 165.4})
    assert lines[1].startswith("AMX bfloat16 roofline: 2 cores x 1024 FLOP/cycle x 2.10 GHz = 4301 GFLOP/s")
    assert lines[3] == "bfloat16: 165.4 samples/s = 160% of the FP32 roofline, 10.0% of the AMX roofline"
    zen4 = roofline.Roofline(2, 2.6, *roofline.fma_units("AMD EPYC 9R14", ("avx512f",), 25), amx=False)
    assert zen4.fma_units == 1 and zen4.amx_gflops is None
    assert not any("AMX" in line for line in zen4.lines({"float32": 10.0}))


def test_op_profile_attributes_a_training_step_to_onednn_and_tensorflow_ops():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_ops.py"), "--precision", "float32",
         "--batch", "4", "--warmup", "1", "--steps", "1", "--tf-ops"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("float32, batch 4: ") and "ms per training step" in out
    assert "| conv 32→32, 5×5, 124×124→120×120, batch 4 | forward | f32 | `" in out
    assert "| conv 32→32, 5×5, 124×124→120×120, batch 4 | backward, weights | f32 | `" in out
    assert "| outside oneDNN" in out and "FP32 roofline" in out
    assert "| TensorFlow op | ms / step | runs / step | share of step |" in out
    assert "| `_MklNativeFusedConv2D` |" in out and "| `ReluGrad` |" in out

"""Where a training step of the paper's CNN spends its time, per oneDNN primitive, and what each
run-time setting does to the step, as paired ratios in one run.

Each measurement runs in its own process with ``ONEDNN_VERBOSE=profile_exec`` (oneDNN then prints
every primitive it executes: its kind, its kernel, forward or backward, its shapes and its time) and
trains ``--warmup`` untimed and ``--steps`` timed batches of 100 random 128 x 128 x 3 samples (the
paper's CNN, RMSprop, the precision's Keras policy). The table gives each primitive's milliseconds
per step, its share of the step, the TFLOP/s it reached and its share of the roof it runs under
(AMX's for bfloat16 on a CPU with AMX, else the FP32 one; ``roofline.py``). The profiled process runs
one TensorFlow op at a time (``TF_NUM_INTEROP_THREADS=1``, each op on every core), so that the
primitives' times add up to the step's; the variants run as TensorFlow chooses.

``--variant NAME:VAR=VALUE[,VAR=VALUE...]`` adds a setting to compare with the default, taking turns
with it for ``--rounds`` rounds (order flipped each round); the headline is the median over rounds
of variant / default. ``BENCH_JIT_COMPILE=1`` compiles the train step with XLA; any other variable
goes to the process as is (``TF_NUM_INTEROP_THREADS=1``, ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``,
``TF_ENABLE_ONEDNN_OPTS=0``, ...).

``--tf-ops`` adds a run under TensorFlow's profiler: the time of each TensorFlow op type, the ones
oneDNN does not run (element-wise work, random numbers, the optimizer's update) among them.

Run from the repo root:
    python benchmarks/train_ops.py [--precision bfloat16] [--steps 4] [--rounds 3] [--tf-ops]
        [--variant xla:BENCH_JIT_COMPILE=1] [--variant no-amx:ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roofline import this_cpu  # noqa: E402

BEGIN, END = "### timed steps begin", "### timed steps end"
PASSES = {
    "forward_training": "forward",
    "forward_inference": "forward",
    "forward": "forward",
    "backward_data": "backward, data",
    "backward_weights": "backward, weights",
    "backward": "backward",
    "undef": "–",
}
CONV_SHAPE = re.compile(r"mb(\d+)_(?:g\d+)?ic(\d+)oc(\d+)_ih(\d+)oh(\d+)kh(\d+).*?_iw(\d+)ow(\d+)kw(\d+)")
IP_SHAPE = re.compile(r"mb(\d+)ic(\d+)oc(\d+)")
POOL_SHAPE = re.compile(r"mb(\d+)ic(\d+)_ih(\d+)oh(\d+)kh(\d+).*?_iw(\d+)ow(\d+)kw(\d+)")


@dataclass(frozen=True)
class Primitive:
    kind: str  # convolution, matmul, pooling, ...
    kernel: str  # the implementation oneDNN chose, e.g. brg_conv_fwd:avx10_1_512_amx
    direction: str  # forward | backward, data | backward, weights | ...
    dtype: str  # the source's data type
    shape: str  # oneDNN's problem descriptor
    ms: float


def parse(line: str) -> Primitive | None:
    """One ``onednn_verbose,...,primitive,exec,cpu,...`` line (oneDNN 3.x), or None for any other."""
    fields = line.strip().split(",")
    if len(fields) < 11 or not fields[0].endswith("_verbose") or "exec" not in fields[1:4]:
        return None
    at = fields.index("exec")
    try:
        ms = float(fields[-1])
    except ValueError:
        return None
    kind, kernel, direction, memory = fields[at + 2], fields[at + 3], fields[at + 4], fields[at + 5]
    dtype = memory.split(":")[1] if memory.count(":") >= 1 else ""
    return Primitive(kind, kernel, PASSES.get(direction, direction), dtype, fields[-2], ms)


def gflop(kind: str, shape: str) -> float | None:
    """The multiply-adds of one execution, times 2, in GFLOP (convolutions, matrix products and
    inner products; None for the rest)."""
    if kind == "convolution" and (m := CONV_SHAPE.search(shape)):
        mb, ic, oc, _ih, oh, kh, _iw, ow, kw = map(int, m.groups())
        return 2 * mb * ic * oc * oh * ow * kh * kw / 1e9
    if kind == "inner_product" and (m := IP_SHAPE.search(shape)):
        mb, ic, oc = map(int, m.groups())
        return 2 * mb * ic * oc / 1e9
    if kind in ("matmul", "gemm_api") and ":" in shape:
        src, wei = (list(map(int, part.split("x"))) for part in shape.split(":")[:2])
        return 2 * math.prod(src) * wei[-1] / 1e9
    return None


def describe(kind: str, shape: str) -> str:
    """A readable form of oneDNN's problem descriptor."""
    if kind == "convolution" and (m := CONV_SHAPE.search(shape)):
        mb, ic, oc, ih, oh, kh, iw, ow, kw = map(int, m.groups())
        return f"conv {ic}→{oc}, {kh}×{kw}, {ih}×{iw}→{oh}×{ow}, batch {mb}"
    if kind in ("matmul", "gemm_api") and ":" in shape:
        return "matmul " + " · ".join(part.replace("x", "×") for part in shape.split(":")[:2])
    if kind == "inner_product" and (m := IP_SHAPE.search(shape)):
        mb, ic, oc = m.groups()
        return f"dense {ic}→{oc}, batch {mb}"
    if kind == "pooling" and (m := POOL_SHAPE.search(shape)):
        mb, ic, ih, oh, kh, iw, ow, kw = map(int, m.groups())
        return f"pool {kh}×{kw}, {ih}×{iw}→{oh}×{ow}, {ic} channels, batch {mb}"
    return f"{kind} {shape}"


def table(primitives: list[Primitive], steps: int, step_ms: float, roof_gflops: float) -> str:
    """Markdown: one line per (kind, direction, shape, kernel), slowest first, then the step's time
    outside oneDNN."""
    groups: dict[tuple, float] = defaultdict(float)
    runs: dict[tuple, int] = defaultdict(int)
    for p in primitives:
        key = (p.kind, p.direction, p.dtype, p.shape, p.kernel)
        groups[key] += p.ms
        runs[key] += 1
    lines = [
        "| primitive | pass | type | kernel | ms / step | share of step | TFLOP/s | share of roof |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    inside = 0.0
    for key, ms in sorted(groups.items(), key=lambda item: -item[1]):
        kind, direction, dtype, shape, kernel = key
        per_step = ms / steps
        inside += per_step
        work = gflop(kind, shape)
        rate = work * runs[key] / ms if work and ms else None
        lines.append(
            f"| {describe(kind, shape)} | {direction} | {dtype} | `{kernel}` | {per_step:.1f} | "
            f"{per_step / step_ms:.0%} | {'' if rate is None else f'{rate:.2f}'} | "
            f"{'' if rate is None else f'{rate * 1000 / roof_gflops:.0%}'} |"
        )
    lines.append(
        f"| outside oneDNN (TensorFlow's own ops, the optimizer, the input) | | | | "
        f"{max(step_ms - inside, 0):.1f} | {max(step_ms - inside, 0) / step_ms:.0%} | | |"
    )
    return "\n".join(lines)


def worker(precision: str, batch: int, warmup: int, steps: int) -> None:
    """Trains warmup + steps batches, printing the markers around the timed ones and, last, a JSON
    line with the timed steps' seconds."""
    import keras
    import numpy as np

    from faceswap_ela import hardware
    from faceswap_ela import model as cnn

    keras.utils.set_random_seed(0)
    net = cnn.build_model(policy=hardware.POLICIES[precision])
    net = cnn.compile_model(net, lr=5e-4, rho=0.9, epsilon=1e-8)
    if os.environ.get("BENCH_JIT_COMPILE") == "1":
        net.compile(optimizer=net.optimizer, loss=net.loss, metrics=["accuracy"], jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.random((batch * max(warmup, steps), 128, 128, 3), dtype=np.float32)
    y = keras.utils.to_categorical(np.arange(len(x)) % 2, 2)
    net.fit(x[: batch * warmup], y[: batch * warmup], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda index, logs: ends.append(time.perf_counter())
    )
    print(BEGIN, flush=True)
    start = time.perf_counter()
    timed = slice(0, batch * steps)
    trace = os.environ.get("BENCH_TF_TRACE")
    if trace:
        import tensorflow as tf

        tf.profiler.experimental.start(trace)
    net.fit(x[timed], y[timed], batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    if trace:
        tf.profiler.experimental.stop()
    print(END, flush=True)
    print(json.dumps({"seconds": ends[-1] - start, "steps": steps, "batch": batch}), flush=True)


def measure(
    settings: dict[str, str], args: argparse.Namespace, verbose: bool
) -> tuple[float, list[Primitive]]:
    """One worker process under ``settings``: its ms per timed step and, with ``verbose``, the
    primitives oneDNN ran in the timed steps."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **settings}
    if verbose:  # one op at a time, so that each primitive's time is its own
        env["ONEDNN_VERBOSE"] = "profile_exec"
        env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    command = [
        sys.executable, __file__, "--worker", "--precision", args.precision, "--batch", str(args.batch),
        "--warmup", str(args.warmup), "--steps", str(args.steps),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"the worker failed under {settings or 'the defaults'}:\n{done.stderr[-3000:]}")
    out = done.stdout.splitlines()
    result = json.loads(out[-1])
    timed = out[out.index(BEGIN) + 1 : out.index(END)] if BEGIN in out and END in out else []
    primitives = [p for p in map(parse, timed) if p]
    if verbose and not primitives:
        print("oneDNN printed nothing: this TensorFlow does not run these ops through oneDNN")
    return result["seconds"] * 1000 / result["steps"], primitives


def tensorflow_ops(trace: Path) -> dict[str, tuple[float, int]]:
    """Milliseconds and executions of each TensorFlow op type in a profiler trace (its XSpace
    protobuf), summed over the threads that run the graph's kernels."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for file in trace.rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(file.read_bytes())
        for plane in space.planes:
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    op = name.rsplit(":", 1)[-1]
                    if ":" in name and op != "Process":  # Process: the executor's own span
                        totals[op][0] += event.duration_ps / 1e9
                        totals[op][1] += 1
    return {op: (ms, runs) for op, (ms, runs) in totals.items()}


def ops_table(ops: dict[str, tuple[float, int]], steps: int, step_ms: float, top: int = 16) -> str:
    """Markdown: the ``top`` TensorFlow op types by time per step (``_Mkl*`` ops run oneDNN)."""
    lines = ["| TensorFlow op | ms / step | runs / step | share of step |", "| --- | --- | --- | --- |"]
    for op, (ms, runs) in sorted(ops.items(), key=lambda item: -item[1][0])[:top]:
        lines.append(f"| `{op}` | {ms / steps:.1f} | {runs / steps:g} | {ms / steps / step_ms:.0%} |")
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, body = text.partition(":")
    settings = dict(item.split("=", 1) for item in body.split(",") if "=" in item)
    if not name or not settings:
        raise argparse.ArgumentTypeError(f"a variant is NAME:VAR=VALUE[,VAR=VALUE...], not {text!r}")
    return name, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default=None,
                        help="default: what train.precision auto picks on this CPU")  # fmt: skip
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", type=parse_variant, action="append", default=[])
    parser.add_argument("--tf-ops", action="store_true", help="also trace TensorFlow's ops with its profiler")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.batch, args.warmup, args.steps, args.rounds) < 1:
        parser.error("--batch, --warmup, --steps and --rounds must be >= 1")
    if args.precision is None:
        from faceswap_ela import hardware

        cpu = {"backend": "tensorflow", "kind": "cpu", "device": ""}
        args.precision = hardware.choose_precision("auto", cpu).precision
    if args.worker:
        worker(args.precision, args.batch, args.warmup, args.steps)
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    roof = this_cpu()
    step_ms, primitives = measure({}, args, verbose=True)
    rate = args.batch * 1000 / step_ms
    print(
        f"{args.precision}, batch {args.batch}: {step_ms:.0f} ms per training step ({rate:.1f} samples/s), "
        f"{args.steps} steps after {args.warmup} warm-up\n"
    )
    if roof:
        print(table(primitives, args.steps, step_ms, roof.peak_gflops(args.precision)))
        print()
        for line in roof.lines({args.precision: rate}):
            print(line)
    if args.tf_ops:
        with tempfile.TemporaryDirectory(prefix="bench-trace-") as trace:
            traced_ms, _ = measure(
                {"BENCH_TF_TRACE": trace, "TF_NUM_INTEROP_THREADS": "1"}, args, verbose=False
            )
            ops = tensorflow_ops(Path(trace))
        print(
            f"\nTensorFlow's ops, one at a time, traced ({traced_ms:.0f} ms per step under the profiler):\n"
        )
        print(ops_table(ops, args.steps, traced_ms))
    if not args.variant:
        return 0
    variants = [("default", {}), *args.variant]
    speeds: dict[str, list[float]] = {name: [] for name, _ in variants}
    print(f"\nvariants, {args.rounds} paired rounds ({args.precision}; samples/s):")
    for index in range(args.rounds):
        order = variants if index % 2 == 0 else variants[::-1]
        cells = []
        for name, settings in order:
            ms, _ = measure(settings, args, verbose=False)
            speeds[name].append(args.batch * 1000 / ms)
            cells.append(f"{name} {speeds[name][-1]:.1f}")
        print(f"  round {index + 1}: " + " | ".join(cells), flush=True)
    for name, settings in args.variant:
        ratios = sorted(a / b for a, b in zip(speeds[name], speeds["default"], strict=True))
        shown = ",".join(f"{k}={v}" for k, v in settings.items())
        rounds = ", ".join(f"x{r:.2f}" for r in ratios)
        print(f"{name} ({shown}) / default: x{statistics.median(ratios):.2f} (per round {rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

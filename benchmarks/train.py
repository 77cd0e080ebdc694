"""Benchmark of training throughput: each precision (float32, and bfloat16 where the CPU has it) with
each input path, in paired rounds in one process.

Input paths, all serving batches of float32 images in [0, 1] and one-hot labels:
- `streamed`: the train stage's own `batches.CropSequence` over a uint8 memory map;
- `memory`: every sample loaded into one float32 array first, then `model.fit(x, y)`;
- `tfdata` (TensorFlow backend only): a `tf.data` pipeline gathering batches from the memory map,
  with prefetch.

`--samples` random 128 x 128 x 3 uint8 samples are written to a temporary .npy file. One model per
precision is built and compiled once (the paper's CNN, RMSprop, batch `--batch`). Each round then
trains every (precision, input) pair for `--warmup` untimed + `--steps` timed batches, the order
flipped from round to round. This machine's speed drifts by 10 % or more within a minute, so every
round is printed and the headline figures are medians of per-round ratios:
- bfloat16 / float32 through the streamed path (goal on a CPU with AMX: >= x2.2);
- streamed / the fastest path, per precision: the median over rounds of streamed / each other
  path, the lowest of them (goal: >= 95 %).
Training samples/s are set against the CPU's FP32 roofline and, on a CPU with AMX, its bfloat16 tile
roofline (roofline.py), at 2.6 GFLOP per training sample (forward 0.87, backward about twice that).
Where a step's time goes, per oneDNN primitive: train_ops.py.

`--rss` adds the memory check: the streamed and the in-memory path, each in its own subprocess so
that its peak RSS is its own, read one full epoch of input and train `--steps` batches.

Run from the repo root: python benchmarks/train.py [--samples 3000] [--rounds 5] [--steps 5] [--rss]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import roofline  # noqa: E402

GB = 1e9
SPEEDUP_GOAL = 2.2  # bfloat16 / float32 on a CPU with AMX
INPUT_GOAL = 0.95  # streamed / fastest
RSS_GOAL = 2.5 * GB  # streamed peak RSS
INPUTS = ("streamed", "memory", "tfdata")


def write_samples(path: Path, samples: int) -> None:
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(samples, 128, 128, 3))
    for start in range(0, samples, 500):
        block = images[start : start + 500]
        block[:] = rng.integers(0, 256, block.shape, dtype=np.uint8)
    images.flush()
    del images
    np.save(path.with_suffix(".labels.npy"), np.arange(samples) % 2)


def input_paths(images: np.ndarray, labels: np.ndarray, batch: int, backend: str) -> dict[str, dict]:
    """A function of the shuffle seed giving fit()'s arguments, for each input path."""
    import keras

    from faceswap_ela import batches

    y = keras.utils.to_categorical(labels, 2).astype(np.float32)

    @functools.cache
    def loaded() -> np.ndarray:  # the in-memory copy, made once on first use
        return np.divide(images, 255, dtype=np.float32)

    paths = {
        "streamed": lambda seed: {
            "x": batches.CropSequence(images, labels, batch_size=batch, shuffle=True, seed=seed)
        },
        "memory": lambda seed: {"x": loaded(), "y": y, "batch_size": batch, "shuffle": True},
    }
    if backend == "tensorflow":
        import tensorflow as tf

        def gather(rows):
            rows = np.sort(rows)
            return np.divide(images[rows], 255, dtype=np.float32), y[rows]

        def tfdata(seed):
            data = (
                tf.data.Dataset.range(len(images))
                .shuffle(len(images), seed=seed)
                .batch(batch, drop_remainder=True)
                .map(lambda rows: tf.numpy_function(gather, [rows], (tf.float32, tf.float32)))
                .map(
                    lambda a, b: (
                        tf.ensure_shape(a, (batch, *images.shape[1:])),
                        tf.ensure_shape(b, (batch, 2)),
                    )
                )
                .repeat()
                .prefetch(tf.data.AUTOTUNE)
            )
            return {"x": data}

        paths["tfdata"] = tfdata
    return paths


def timed_fit(net, fit_args: dict, warmup: int, steps: int, batch: int) -> float:
    import keras

    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda i, logs: ends.append(time.perf_counter())
    )
    net.fit(**fit_args, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0)
    return steps * batch / (ends[-1] - ends[warmup - 1])


def paired_rounds(data: Path, args: argparse.Namespace) -> int:
    import keras

    from faceswap_ela import hardware
    from faceswap_ela import model as cnn

    images = np.load(data, mmap_mode="r")
    labels = np.load(data.with_suffix(".labels.npy"))
    device = hardware.describe_device()
    flags = hardware.cpu_flags()
    auto = hardware.choose_precision("auto", device, flags)
    precisions = ["float32"]
    if auto.precision != "float32":
        precisions.append(auto.precision)
    else:
        print(f"auto precision falls back to float32 here ({auto.reason}): float32 alone is measured")
    paths = input_paths(images, labels, args.batch, device["backend"])
    print(f"backend {device['backend']}, {device['device']}; CPU flags: {' '.join(flags) or '-'}")
    print(f"precisions {', '.join(precisions)}; inputs {', '.join(paths)}", flush=True)

    nets = {}
    for precision in precisions:
        keras.utils.set_random_seed(0)
        net = cnn.build_model(policy=hardware.POLICIES[precision])
        nets[precision] = cnn.compile_model(net, lr=5e-4, rho=0.9, epsilon=1e-8)
        timed_fit(nets[precision], paths["memory"](0), 1, 1, args.batch)  # traces the train step

    speed: dict[tuple[str, str], list[float]] = {(p, i): [] for p in precisions for i in paths}
    for round_index in range(args.rounds):
        order = precisions if round_index % 2 == 0 else precisions[::-1]
        inputs = list(paths)[round_index % len(paths) :] + list(paths)[: round_index % len(paths)]
        cells = []
        for precision in order:
            for name in inputs:
                rate = timed_fit(
                    nets[precision], paths[name](round_index), args.warmup, args.steps, args.batch
                )
                speed[(precision, name)].append(rate)
                cells.append(f"{precision} {name} {rate:6.1f}")
        print(f"  round {round_index + 1}: " + " | ".join(cells) + " samples/s", flush=True)

    def median(values) -> float:
        return float(np.median(values))

    print(f"\n{'precision':10s} " + " ".join(f"{name:>9s}" for name in paths) + "  (median samples/s)")
    for precision in precisions:
        print(f"{precision:10s} " + " ".join(f"{median(speed[(precision, n)]):9.1f}" for n in paths))

    for precision in precisions:
        streamed = speed[(precision, "streamed")]
        against = {
            name: median([a / b for a, b in zip(streamed, speed[(precision, name)], strict=True)])
            for name in paths
            if name != "streamed"
        }
        worst = min(against.values())
        verdict = "met" if worst >= INPUT_GOAL else "NOT met"
        print(
            f"{precision}: streamed / other path, median of rounds: "
            + ", ".join(f"/ {name} {ratio:.1%}" for name, ratio in against.items())
            + f"; streamed / fastest {min(worst, 1.0):.1%} (goal >= {INPUT_GOAL:.0%}: {verdict})"
        )
    if len(precisions) > 1:
        fast = precisions[1]
        ratios = [
            a / b for a, b in zip(speed[(fast, "streamed")], speed[("float32", "streamed")], strict=True)
        ]
        amx = "amx_bf16" in flags
        verdict = "met" if median(ratios) >= SPEEDUP_GOAL else "NOT met"
        print(
            f"{fast} / float32, streamed, per round: {', '.join(f'x{r:.2f}' for r in ratios)}; "
            f"median x{median(ratios):.2f} (goal on an AMX CPU >= x{SPEEDUP_GOAL}: "
            f"{verdict if amx else f'this CPU has no AMX; {verdict} all the same'})"
        )

    roof = roofline.this_cpu()
    if roof:
        for line in roof.lines({p: median(speed[(p, "streamed")]) for p in precisions}):
            print(line)
    else:
        print("rooflines: the CPU clock could not be read")
    return 0


def peak_rss() -> int:
    """This process's peak resident set (VmHWM: ru_maxrss would carry the parent's peak over)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_worker(variant: str, data: Path, batch: int, steps: int) -> dict:
    import keras

    from faceswap_ela import model as cnn

    images = np.load(data, mmap_mode="r")
    labels = np.load(data.with_suffix(".labels.npy"))
    paths = input_paths(images, labels, batch, "none")
    fit_args = paths[variant](0)
    if variant == "streamed":
        for i in range(len(fit_args["x"])):  # one epoch of input through the map: every page is read
            fit_args["x"][i]
    keras.utils.set_random_seed(0)
    net = cnn.compile_model(cnn.build_model(), lr=5e-4, rho=0.9, epsilon=1e-8)
    rate = timed_fit(net, fit_args, 1, steps, batch)
    return {"variant": variant, "peak_rss": peak_rss(), "samples_per_s": rate}


def rss_check(data: Path, args: argparse.Namespace) -> None:
    print("\npeak RSS, each input path in its own process:")
    rss = {}
    for variant in ("streamed", "memory"):
        command = [
            sys.executable, __file__, "--rss-worker", variant, "--data", str(data),
            "--batch", str(args.batch), "--steps", str(args.steps),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{variant} variant failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rss[variant] = result["peak_rss"]
        print(f"  {variant:9s}: peak RSS {result['peak_rss'] / GB:.2f} GB")
    met = rss["streamed"] < RSS_GOAL
    print(
        f"streamed / memory peak RSS x{rss['streamed'] / rss['memory']:.2f}; goal streamed < "
        f"{RSS_GOAL / GB:.1f} GB: {'met' if met else 'NOT met'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches at the start of each fit")
    parser.add_argument("--steps", type=int, default=5, help="timed batches per fit")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds; medians of their ratios count")
    parser.add_argument("--rss", action="store_true", help="also compare peak RSS in subprocesses")
    parser.add_argument("--rss-worker", choices=("streamed", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be >= 1")
    if args.samples < args.batch * (args.warmup + args.steps):
        parser.error("--samples must cover --batch x (--warmup + --steps)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.rss_worker:
        print(json.dumps(rss_worker(args.rss_worker, args.data, args.batch, args.steps)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = Path(tmp) / "train.npy"
        write_samples(data, args.samples)
        print(
            f"{args.samples} samples of 128x128x3 ({args.samples * 49152 / GB:.2f} GB as uint8); batch "
            f"{args.batch}, {args.warmup} warm-up + {args.steps} timed steps per fit, {args.rounds} rounds",
            flush=True,
        )
        paired_rounds(data, args)
        if args.rss:
            rss_check(data, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

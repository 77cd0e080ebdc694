"""Benchmark of the training input: streaming (the train stage's PyDataset over a uint8 memory map)
against the naive approach (load every tensor into float32 arrays, then model.fit(x, y)).

6,000 random 128 x 128 x 3 uint8 samples (MUCT's size) are written to a temporary .npy file. Each
variant runs in its own subprocess, so its peak RSS is its own: the streaming variant maps the file
and reads every batch of one full epoch through the map, the naive one loads all 6,000 samples
into float32. Both then train the paper's CNN for `--warmup` + `--steps` batches; throughput is
timed over the last `--steps` batches. Goals: streaming peak RSS < 2.5 GB, and streaming
throughput within 10% of naive.

This machine's speed drifts by 10% or more from one minute to the next (shared cores), more
than the difference being measured. So the variants run in `--rounds` back-to-back pairs, the
order flipped every round, and the headline ratio is the median of the per-pair ratios.

Run from the repo root: python benchmarks/train.py [--samples 6000] [--batch 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GB = 1e9
RSS_GOAL = 2.5 * GB
SPEED_GOAL = 0.9  # streaming throughput / naive throughput


def peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_parts() -> tuple[int, int]:
    """Current anonymous and file-backed resident bytes (file-backed: the memory map's pages, which
    the kernel can drop at any time)."""
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            name, value = line.split(":")
            parts[name] = int(value.split()[0]) * 1024
    return parts.get("RssAnon", 0), parts.get("RssFile", 0)


def worker(variant: str, data: Path, batch: int, warmup: int, steps: int) -> dict:
    import keras

    from faceswap_ela import dataset, training
    from faceswap_ela import model as cnn

    labels = np.load(data.with_suffix(".labels.npy"))
    start = time.perf_counter()
    if variant == "streaming":
        images = np.load(data, mmap_mode="r")
        inputs = dataset.CropSequence(images, labels, batch_size=batch, shuffle=True, seed=0)
        for i in range(len(inputs)):  # one epoch of input through the map: every page is read
            inputs[i]
        fit_args = {"x": inputs}
    else:
        x = np.load(data).astype(np.float32) / 255  # the whole set as float32
        fit_args = {"x": x, "y": dataset.one_hot(labels), "batch_size": batch, "shuffle": True}
    load_seconds = time.perf_counter() - start

    keras.utils.set_random_seed(0)
    net = cnn.compile_model(cnn.build_model(), lr=5e-4, rho=0.9, epsilon=1e-8)
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch_index, logs: ends.append(time.perf_counter())
    )
    net.fit(**fit_args, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0)
    seconds = ends[-1] - ends[warmup - 1]
    device = training.describe_device()
    anon, file_backed = rss_parts()
    return {
        "rss_anon_end": anon,
        "rss_file_end": file_backed,
        "variant": variant,
        "samples_per_s": steps * batch / seconds,
        "peak_rss": peak_rss(),
        "load_seconds": load_seconds,
        "backend": device["backend"],
        "device": device["device"],
    }


def run_variant(variant: str, data: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--worker", variant, "--data", str(data),
        "--batch", str(args.batch), "--warmup", str(args.warmup), "--steps", str(args.steps),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{variant} variant failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (graph tracing)")
    parser.add_argument("--steps", type=int, default=10, help="timed batches")
    parser.add_argument(
        "--rounds", type=int, default=3, help="back-to-back pairs of runs; the median pair ratio counts"
    )
    parser.add_argument("--worker", choices=("streaming", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.batch, args.warmup, args.steps)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = Path(tmp) / "train.npy"
        rng = np.random.default_rng(0)
        images = np.lib.format.open_memmap(data, mode="w+", dtype=np.uint8, shape=(args.samples, 128, 128, 3))
        for start in range(0, args.samples, 500):
            block = images[start : start + 500]
            block[:] = rng.integers(0, 256, block.shape, dtype=np.uint8)
        images.flush()
        del images
        np.save(data.with_suffix(".labels.npy"), np.arange(args.samples) % 2)
        print(
            f"{args.samples} samples of 128x128x3: {args.samples * 49152 / GB:.2f} GB as uint8, "
            f"{args.samples * 49152 * 4 / GB:.2f} GB as float32; batch {args.batch}, "
            f"{args.warmup} warm-up + {args.steps} timed steps, {args.rounds} round(s)",
            flush=True,
        )
        results: dict[str, list[dict]] = {"streaming": [], "naive": []}
        for round_index in range(args.rounds):
            order = ("streaming", "naive") if round_index % 2 == 0 else ("naive", "streaming")
            for variant in order:
                result = run_variant(variant, data, args)
                results[variant].append(result)
                print(
                    f"  round {round_index + 1} {variant:9s}: {result['samples_per_s']:7.1f} samples/s, "
                    f"peak RSS {result['peak_rss'] / GB:.2f} GB, "
                    f"input ready in {result['load_seconds']:.1f} s; at the end RSS "
                    f"{result['rss_anon_end'] / GB:.2f} GB anonymous + "
                    f"{result['rss_file_end'] / GB:.2f} GB file-backed",
                    flush=True,
                )

    ratios = [
        s["samples_per_s"] / n["samples_per_s"]
        for s, n in zip(results["streaming"], results["naive"], strict=True)
    ]
    speed_ratio = float(np.median(ratios))
    median = {v: float(np.median([x["samples_per_s"] for x in r])) for v, r in results.items()}
    rss = {v: max(x["peak_rss"] for x in r) for v, r in results.items()}
    rss_ratio = rss["streaming"] / rss["naive"]
    stream = results["streaming"][0]
    print(f"\nbackend {stream['backend']}, {stream['device']}")
    print(f"{'variant':10s} {'median samples/s':>17s} {'peak RSS (GB)':>14s}")
    for variant in ("streaming", "naive"):
        print(f"{variant:10s} {median[variant]:17.1f} {rss[variant] / GB:14.2f}")
    print(f"streaming / naive per round: {', '.join(f'x{r:.3f}' for r in ratios)}")
    print(f"streaming / naive: throughput x{speed_ratio:.3f} (median of rounds), peak RSS x{rss_ratio:.3f}")
    rss_ok = rss["streaming"] < RSS_GOAL
    speed_ok = speed_ratio >= SPEED_GOAL
    print(f"goal streaming peak RSS < {RSS_GOAL / GB:.1f} GB: {'met' if rss_ok else 'NOT met'}")
    print(f"goal streaming throughput >= {SPEED_GOAL:.0%} of naive: {'met' if speed_ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

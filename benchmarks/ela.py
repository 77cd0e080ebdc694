"""Benchmark of the ELA stage and the materialize stage.

1. ELA throughput: the stage's code path (ela.write_tensors over every core, from PNG crops on
   disk to .npy tensors) on 2,000 jittered 128 x 128 crops of the sample portraits, against the
   common public implementation (save a temporary JPEG, reopen it, ImageChops.difference,
   ImageEnhance.Brightness(diff).enhance(255 / max)) in the same run. Goal: >= 5x.
2. On ../shared/datasets/helen-train (the .pts ground truth as the landmark table, a 4:1 split by
   the name before "_"): materialize throughput (photos/s), and the peak RSS of the ela stage
   for 2 and 4 variants per photo. Goal: < 1 GB and not growing with the number of crops.

Run from the repo root: python benchmarks/ela.py [--crops 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageChops, ImageEnhance

from faceswap_ela import ela, parallel
from faceswap_ela.images import save_png
from faceswap_ela.params import ElaParams

REPO = Path(__file__).resolve().parents[1]
HELEN = REPO.parent / "shared" / "datasets" / "helen-train"
CHUNK = 64  # as ela.write_tensors


def portrait_crops(folder: Path, n: int, size: int = 128, seed: int = 0) -> list[Path]:
    """n PNG crops cut from the two sample portraits at random positions and sizes."""
    import cv2
    import matplotlib.cbook
    import skimage.data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = np.asarray(Image.open(fh).convert("RGB"))
    photos = [skimage.data.astronaut(), hopper]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        photo = photos[i % 2]
        side = int(rng.integers(size, min(photo.shape[:2])))
        y = int(rng.integers(0, photo.shape[0] - side + 1))
        x = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
        path = folder / f"crop{i:05d}.png"
        save_png(path, crop)
        paths.append(path)
    return paths


def public_ela(image: Image.Image, quality: int, tmp_jpeg: Path) -> np.ndarray:
    """The ELA of the widely copied public notebooks (Pillow, a temporary file, 4:2:0)."""
    image.save(tmp_jpeg, "JPEG", quality=quality)
    resaved = Image.open(tmp_jpeg)
    diff = ImageChops.difference(image, resaved)
    max_diff = max(high for _, high in diff.getextrema()) or 1
    return np.asarray(ImageEnhance.Brightness(diff).enhance(255.0 / max_diff))


def _stage_ela_in_memory(crops: list[np.ndarray], quality: int, workers: int) -> list[np.ndarray]:
    """The stage's ELA function over decoded crops, on the stage's thread pool in the stage's
    chunks (one task per crop would cost more in scheduling than the ELA itself)."""
    import cv2

    def chunk_of(rgbs: list[np.ndarray]) -> list[np.ndarray]:
        return [ela.ela_image(rgb, quality) for rgb in rgbs]

    chunks = [crops[i : i + CHUNK] for i in range(0, len(crops), CHUNK)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return [e for done in parallel.ordered_thread_map(chunk_of, chunks, workers=workers) for e in done]
    finally:
        cv2.setNumThreads(threads)


def bench_ela(n: int, quality: int) -> None:
    """Two comparisons, each in the same run: the ELA itself on crops already in memory (what
    the public recipe describes: save, reopen, difference, brighten), and the whole path from
    PNG crop files to ELA arrays (both sides also decode the PNGs)."""
    with tempfile.TemporaryDirectory(prefix="ela-bench-") as tmp:
        tmp = Path(tmp)
        paths = portrait_crops(tmp, n)
        workers = parallel.n_workers(0)
        crops = [ela.read_crop(path) for path in paths]
        images = [Image.fromarray(crop) for crop in crops]

        start = time.perf_counter()
        ours_memory = _stage_ela_in_memory(crops, quality, workers)
        t_ours_memory = time.perf_counter() - start
        start = time.perf_counter()
        public_memory = [public_ela(image, quality, tmp / "resaved.jpg") for image in images]
        t_public_memory = time.perf_counter() - start

        start = time.perf_counter()
        ela.write_tensors(paths, tmp / "ela.npy", tmp / "rgb.npy", ElaParams(quality=quality), workers=0)
        t_ours_files = time.perf_counter() - start
        start = time.perf_counter()
        for path in paths:
            public_ela(Image.open(path).convert("RGB"), quality, tmp / "resaved.jpg")
        t_public_files = time.perf_counter() - start

        tensor = np.load(tmp / "ela.npy", mmap_mode="r")
        gap = max(int(np.abs(tensor[i].astype(int) - b).max()) for i, b in enumerate(public_memory))
        same = all(np.array_equal(tensor[i], o) for i, o in enumerate(ours_memory))
    print(f"ELA, {n} crops 128x128, quality {quality}, 4:2:0, {workers} workers for the stage:")
    print("  crops in memory (the ELA itself):")
    row = "    {:<38}{:8.0f} crops/s  ({:.2f} s)"
    print(row.format("stage ela_image, thread pool:", n / t_ours_memory, t_ours_memory))
    print(row.format("public recipe (temp file, 1 thread):", n / t_public_memory, t_public_memory))
    print(f"    speed-up: {t_public_memory / t_ours_memory:.1f}x (goal >= 5x)")
    print("  PNG crop files -> ELA arrays (both decode the PNGs; the stage also writes two .npy):")
    print(row.format("stage write_tensors:", n / t_ours_files, t_ours_files))
    print(row.format("public recipe:", n / t_public_files, t_public_files))
    print(f"    speed-up: {t_public_files / t_ours_files:.1f}x")
    print(f"  stage tensors equal ela_image: {same}; largest pixel difference from the public output: {gap}")
    print("  (the public recipe truncates the brightened levels, the stage rounds them)")


def read_pts(path: Path) -> np.ndarray:
    lines = path.read_text().split("{", 1)[1].split("}", 1)[0].split()
    return np.asarray(lines, dtype=np.float64).reshape(68, 2)


def helen_workspace(folder: Path, variants: int, seed: int = 42) -> int:
    """A pipeline folder (params.yaml, data/raw, data/landmarks.csv, data/split.csv) over HELEN,
    with the .pts ground truth as landmarks and a seeded 4:1 split by the name before '_'."""
    import pandas as pd

    from faceswap_ela import alignment

    raw = folder / "data" / "raw"
    raw.mkdir(parents=True)
    rows = []
    for jpg in sorted(HELEN.glob("*.jpg")):
        pts = jpg.with_suffix(".pts")
        if not pts.exists():
            continue
        (raw / jpg.name).symlink_to(jpg)
        points = read_pts(pts)
        row = {"id": jpg.stem, "group": jpg.stem.split("_")[0], "path": jpg.name, "n_faces": 1}
        row.update(box_left=points[:, 0].min(), box_top=points[:, 1].min())
        row.update(box_right=points[:, 0].max(), box_bottom=points[:, 1].max())
        row.update(dict(zip(alignment.landmark_columns(), points.ravel(), strict=True)))
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(folder / "data" / "landmarks.csv", index=False)
    groups = sorted(table["group"].unique())
    test = set(np.random.default_rng(seed).permutation(groups)[: round(len(groups) / 5)])
    split = table[["id", "group"]].assign(split=[("test" if g in test else "train") for g in table["group"]])
    split.to_csv(folder / "data" / "split.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["materialize"]["variants"] = variants
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return len(table)


def run_measured(script: str, cwd: Path) -> tuple[float, int, int]:
    """Run a stage script; (seconds, peak RSS of its largest process, peak RSS of the whole
    process tree), from getrusage(RUSAGE_CHILDREN) in a wrapper and psutil polling."""
    import psutil

    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run([sys.executable, sys.argv[1]]);"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
        "sys.exit(r.returncode)"
    )
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, str(REPO / "stages" / script)],
        cwd=cwd,
        stderr=subprocess.PIPE,
        text=True,
    )
    tree_peak = [0]

    def poll() -> None:
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [parent, *parent.children(recursive=True)]
                tree_peak[0] = max(tree_peak[0], sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{err[-3000:]}")
    maxrss_kb = int(err.rsplit("MAXRSS", 1)[1].split()[0])
    return seconds, maxrss_kb * 1024, tree_peak[0]


def bench_helen(keep: Path | None) -> None:
    if not HELEN.is_dir():
        print(f"helen part skipped: {HELEN} not found")
        return
    base = Path(tempfile.mkdtemp(prefix="helen-bench-"))
    try:
        for variants in (2, 4):
            folder = base / f"v{variants}"
            n_photos = helen_workspace(folder, variants)
            seconds, _, _ = run_measured("materialize.py", folder)
            metrics = json.loads((folder / "metrics" / "materialize.json").read_text())
            seconds_ela, maxrss, tree = run_measured("ela.py", folder)
            tensors = sorted((folder / "data" / "ela").glob("*_ela.npy"))
            n_crops = sum(len(np.load(path, mmap_mode="r")) for path in tensors)
            print(f"helen-train, {n_photos} photos, variants: {variants}:")
            print(
                f"  materialize: {metrics['photos_per_s']} photos/s inside the stage ({metrics['seconds']} s,"
                f" {seconds:.1f} s with start-up), {metrics['crops']} crops, {metrics['skipped']} skipped,"
                f" counts {metrics['counts']}, plus {len(metrics['extra_sets'])} extra test sets"
            )
            print(
                f"  ela stage: {n_crops} crops ({len(tensors)} sets) in {seconds_ela:.1f} s; peak RSS of its"
                f" largest process {maxrss / 2**20:.0f} MiB, of its whole process tree"
                f" {tree / 2**20:.0f} MiB (goal < 1 GB)"
            )
        if keep is not None:
            if keep.exists():
                shutil.rmtree(keep)
            shutil.copytree(base / "v4", keep, symlinks=True)
            print(f"  kept the variants: 4 workspace in {keep}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=2000)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--keep", type=Path, default=None, help="copy the helen workspace (4 variants) here")
    parser.add_argument("--skip-helen", action="store_true")
    args = parser.parse_args()
    os.chdir(REPO)
    bench_ela(args.crops, args.quality)
    if args.skip_helen:
        print("helen part skipped: --skip-helen")
    else:
        bench_helen(args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

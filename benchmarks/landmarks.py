"""Landmark stage speed on ../shared/datasets/helen-train: the stage's own code path
(faceswap_ela.landmarks.locate, worker pool included) with 1 worker, then with every core.

Goals on the 2-core development machine: >= 25 photos/s with every core, and every-core/1-worker
>= 1.7. Also prints what was found and the error against HELEN's ground truth.

    python benchmarks/landmarks.py [--folder DIR] [--limit N] [--max-side 640]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from faceswap_ela import landmarks as L
from faceswap_ela.muct import read_pts
from faceswap_ela.parallel import n_workers

ROOT = Path(__file__).resolve().parents[1]
HELEN = ROOT.parent / "shared" / "datasets" / "helen-train"
GOAL_RATE, GOAL_RATIO = 25.0, 1.7


def folder_manifest(folder: Path, limit: int | None = None) -> pd.DataFrame:
    """A manifest like the download stage's for a folder of NAME.jpg + NAME.pts (iBUG 68)."""
    rows = []
    for photo in sorted(folder.glob("*.jpg"))[:limit]:
        pts = photo.with_suffix(".pts")
        gt = read_pts(pts).round(3).tolist() if pts.is_file() else None
        rows.append(
            {
                "id": photo.stem,
                "group": photo.stem.split("_")[0],
                "path": photo.name,
                "error": "",
                "gt_scheme": "ibug68" if gt else "",
                "gt": json.dumps(gt) if gt else "",
            }
        )
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, default=HELEN)
    parser.add_argument("--limit", type=int, default=None, help="first N photos only")
    parser.add_argument("--max-side", type=int, default=640)
    args = parser.parse_args()
    if not args.folder.is_dir():
        print(f"{args.folder} is missing (the shared development datasets)", file=sys.stderr)
        return 1
    manifest = folder_manifest(args.folder, args.limit)
    cores = n_workers(0)
    print(f"{len(manifest)} photos from {args.folder}, max_side {args.max_side}, {cores} cores")
    # other work on the machine lowers both figures, and the ratio most
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    runs = {}
    for workers in (1, cores):
        located = L.locate(manifest, args.folder, max_side=args.max_side, workers=workers, progress=False)
        runs[workers] = located
        m = located.metrics
        rate, seconds = m["photos_per_s"], m["seconds"]
        print(f"workers={workers}: {rate:.1f} photos/s ({seconds:.1f} s, loading the models included)")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    one, every = runs[1].metrics, runs[cores].metrics
    ratio = every["photos_per_s"] / one["photos_per_s"]
    print(f"every core / 1 worker: {ratio:.2f}x")
    same = runs[1].landmarks.equals(runs[cores].landmarks) and runs[1].rejects.equals(runs[cores].rejects)
    print(f"results identical with 1 and {cores} workers: {same}")
    counts = ", ".join(f"{k} {every[k]}" for k in L.OUTCOMES)
    print(f"outcomes: {counts}")
    for reason, n in runs[cores].rejects["reason"].value_counts().items():
        print(f"  rejected: {reason} x{n}")
    if "nme_ibug68" in every:
        s = every["nme_ibug68"]
        print(f"NME (ibug68, outer eye corners) over {s['n']}: median {s['median']:.4f}, p90 {s['p90']:.4f}")
    met = every["photos_per_s"] >= GOAL_RATE and ratio >= GOAL_RATIO
    print(f"goals (>= {GOAL_RATE:g} photos/s, ratio >= {GOAL_RATIO:g}): {'met' if met else 'MISSED'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

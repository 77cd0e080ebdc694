"""Train/test split by group (a MUCT subject, a Flickr photo of HELEN): no group on both sides, and
the share of test photos as close to the target fraction as the group sizes allow.

The groups are shuffled with ``seeding.rng(seed, "split")``; a subset-sum pass over that order then
finds, among every reachable number of test photos, the one nearest ``test_fraction * photos``, and
the groups that first reach it become the test side. The same seed and photos give the same split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from faceswap_ela.seeding import rng

SPLIT_COLUMNS = ["id", "group", "split"]


class SplitError(ValueError):
    """Photos that can't be split (too few groups, bad table), with a one-line message."""


def choose_test_groups(sizes: dict[str, int], test_fraction: float, seed: int) -> set[str]:
    """The groups that go to test: a random subset (seeded) whose photo count is the reachable
    count nearest ``test_fraction`` of all photos, ties going to the smaller count; both sides
    keep at least one group."""
    if not 0 < test_fraction < 1:
        raise SplitError(f"test_fraction must lie strictly between 0 and 1, not {test_fraction}")
    if len(sizes) < 2:
        raise SplitError(f"need at least 2 groups to split, found {len(sizes)}")
    if any(n < 1 for n in sizes.values()):
        raise SplitError("every group needs at least one photo")
    names = sorted(sizes)
    order = [names[i] for i in rng(seed, "split").permutation(len(names))]
    counts = np.array([sizes[g] for g in order], dtype=np.int64)
    total = int(counts.sum())
    target = test_fraction * total
    # first[s]: the index (in shuffled order) of the group that first made s photos reachable;
    # following s -> s - counts[first[s]] never repeats a group, as each step goes to earlier ones.
    first = np.full(total + 1, -1, dtype=np.int64)
    reach = np.zeros(total + 1, dtype=bool)
    reach[0] = True
    for index, count in enumerate(counts):
        new = np.zeros_like(reach)
        new[count:] = reach[:-count] & ~reach[count:]
        first[new] = index
        reach |= new
    candidates = np.flatnonzero(reach[1:total]) + 1  # both sides non-empty
    if not candidates.size:
        raise SplitError("no split leaves photos on both sides")
    best = int(candidates[np.argmin(np.abs(candidates - target))])  # argmin: smaller on ties
    chosen, s = set(), best
    while s > 0:
        index = int(first[s])
        chosen.add(order[index])
        s -= int(counts[index])
    return chosen


def split(photos: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``photos`` (columns id, group) as a table id, group, split ("train" | "test") sorted by id,
    and metrics: photos and groups per side, the test fraction achieved and the target."""
    for column in ("id", "group"):
        if column not in photos.columns:
            raise SplitError(f"the photo table lacks the column {column!r}")
    if photos.empty:
        raise SplitError("no photos to split")
    ids = photos["id"].astype(str)
    if ids.duplicated().any():
        raise SplitError(f"duplicate photo id {ids[ids.duplicated()].iloc[0]!r}")
    groups = photos["group"].astype(str)
    sizes = groups.value_counts().to_dict()
    test = choose_test_groups({str(g): int(n) for g, n in sizes.items()}, test_fraction, seed)
    table = pd.DataFrame({"id": ids.to_numpy(), "group": groups.to_numpy()})
    table["split"] = np.where(table["group"].isin(test), "test", "train")
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    n_test = int((table["split"] == "test").sum())
    metrics = {
        "photos": {"train": len(table) - n_test, "test": n_test, "total": len(table)},
        "groups": {"train": len(sizes) - len(test), "test": len(test), "total": len(sizes)},
        "test_fraction": round(n_test / len(table), 6),
        "test_fraction_target": test_fraction,
    }
    return table[SPLIT_COLUMNS], metrics

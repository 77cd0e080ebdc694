"""The gallery's samples (data/crops/samples/, drawn by faceswap_ela.gallery): which test crops
show a real and its fakes by every forger of the test split, and their photos rendered again with
previews kept."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pandas as pd

from faceswap_ela import gallery
from faceswap_ela import params as P
from faceswap_ela.materialize import PhotoTask, Renderer
from faceswap_ela.testsets import PAPER_FORGER, TEST, forger_set

N_SAMPLE_PHOTOS = 2  # gallery photos: each a real and its fake by every forger of the test split


def choose_samples(frame: pd.DataFrame, forgers: tuple[str, ...]) -> list[tuple[str, str]]:
    """Gallery samples as (set, crop_id), in column order: for each of N_SAMPLE_PHOTOS test photos,
    its first ok real, then one fake variant in the set of each of ``forgers`` (warp's: ``test``)
    where it is ok. The fake variant is the photo's first that is ok in the most sets; the photos
    whose fake is ok in the most sets come first, then by photo_id."""
    sets = [forger_set(TEST, forger) for forger in forgers]
    ok = frame[frame["status"] == "ok"]
    fakes = ok[(ok["label"] == 1) & ok["split"].isin(sets)]
    n_sets = fakes.groupby("crop_id")["split"].nunique()
    candidates = []
    for photo_id, rows in ok[ok["split"] == TEST].groupby("photo_id", sort=True):
        reals = sorted(rows.loc[rows["label"] == 0, "crop_id"])
        fake_ids = sorted(rows.loc[rows["label"] == 1, "crop_id"])
        if reals and fake_ids:
            fake = max(fake_ids, key=n_sets.get)  # the first of the most
            candidates.append((-n_sets[fake], photo_id, reals[0], fake))
    chosen = []
    for _, _, real, fake in sorted(candidates)[:N_SAMPLE_PHOTOS]:
        have = set(fakes.loc[fakes["crop_id"] == fake, "split"])
        chosen += [(TEST, real), *((name, fake) for name in sets if name in have)]
    return chosen


def render_samples(tasks: list[PhotoTask], renderer: Renderer, frame: pd.DataFrame, folder: Path) -> None:
    """Render the chosen samples' photos again by the test split's forgers (deterministic, so the
    same crops) keeping the previews, and save them with their index into ``folder``."""
    chosen = choose_samples(frame, renderer.forgers(TEST))
    crops = {crop for _, crop in chosen}
    photos = set(frame.loc[frame["crop_id"].isin(crops), "photo_id"])
    previews: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="materialize-samples-") as scratch:
        no_extras = P.ExtraSetsParams(
            forgers=renderer.sets.forgers, unseen_swap=None, matched_blur=False, jpeg_qualities=()
        )
        again = dataclasses.replace(
            renderer, out_dir=scratch, samples=frozenset(crops), sets=no_extras,
            train_forgers=(PAPER_FORGER,), ela_at="crop",
        )  # fmt: skip
        for task in tasks:
            if task.photo_id in photos:
                previews.update(again(task)[1])
    rows = frame.set_index(["split", "crop_id"], drop=False)
    gallery.write_samples(folder, [(rows.loc[key].to_dict(), previews[key]) for key in chosen])

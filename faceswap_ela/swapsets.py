"""The sets whose fakes are identity swaps: ``train_swap`` and ``test_swap`` (the training family,
``fakes.swap``) and ``test_swap_unseen`` (``testsets.unseen_swap`` over it). A swap set saves
every rendering, real or fake, as its ``save`` rule says (at the head photo's own JPEG quality, or
at one drawn per rendering), so that storage can't tell its classes apart: its reals are its own
crops, not the split's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from faceswap_ela import images, seeding
from faceswap_ela.fake_params import SwapParams
from faceswap_ela.params import ExtraSetsParams
from faceswap_ela.testsets import TEST, TRAIN, UNSEEN, forger_set

FORGER = "swap"


@dataclass(frozen=True)
class SwapSet:
    """One swap set: its name, the seed stream of its draws (its swaps' settings, save qualities
    and donors), and its settings."""

    name: str
    stream: str
    params: SwapParams

    @property
    def unseen(self) -> bool:
        return self.name == UNSEEN


def swap_sets(
    split: str, train_forgers: tuple[str, ...], sets: ExtraSetsParams, family: SwapParams
) -> list[SwapSet]:
    """The swap sets of a split: ``<split>_swap`` when the split's forgers (a training recipe's for
    train, ``testsets.forgers`` for test) name swap, and for test the held-out one when set."""
    forgers = train_forgers if split == TRAIN else sets.forgers
    out = [SwapSet(forger_set(split, FORGER), FORGER, family)] if FORGER in forgers else []
    if split == TEST and sets.unseen_swap is not None:
        out.append(SwapSet(UNSEEN, f"{FORGER}_unseen", sets.unseen_swap.over(family)))
    return out


def save_quality(swap_set: SwapSet, seed: int, photo_id: str, variant: int, photo: Path) -> int | None:
    """The JPEG quality a rendering of ``swap_set`` is saved at: the head ``photo``'s own (None
    when it isn't a JPEG: not re-saved), or drawn from the range (seeded by the photo, variant and
    the set's stream, so a pair's real and fake share it)."""
    rule = swap_set.params.save
    if rule == "head":
        return images.jpeg_quality(photo)
    low, high = rule
    return int(
        seeding.rng(seed, "materialize", photo_id, variant, swap_set.stream, "save").integers(low, high + 1)
    )

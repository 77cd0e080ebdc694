"""The names of the classes, of the splits and of the sets made from them, and their order.

- ``train`` and ``test``: the splits, with the paper's ``warp`` fakes.
- ``train_<forger>`` and ``test_<forger>`` in data/crops: the same reals, with the fakes of another
  forger (``blend``, ``swap``) rendered at the same positions (params.yaml's ``testsets.forgers``
  for the test split, every forger a training recipe names for the train split).
- ``train_<recipe>`` in data/ela: what a model of that recipe (``train.fakes``: ``warp``, ``blend``,
  a mix such as ``warp_blend``) trains on.
- ``test_swap_unseen``: the same renderings, with swaps made by settings no training recipe uses
  (params.yaml's ``testsets.unseen_swap``). A swap set's reals are re-saved as its fakes are, so
  they are its own crops, not ``test``'s (faceswap_ela.swapsets).
- ``test_matched`` (the sharpness-matched set) and ``test_jpeg<q>`` (the test photos re-saved as
  JPEG), from the warp test set.
"""

from __future__ import annotations

from collections.abc import Sequence

from faceswap_ela.params import FORGERS, ExtraSetsParams, recipe_forgers

CLASSES = ("real", "fake")  # the labels' names, in the CNN's softmax order (index = label)
TRAIN, TEST = "train", "test"
SPLITS = (TRAIN, TEST)
MATCHED = "test_matched"
UNSEEN = "test_swap_unseen"
PAPER_FORGER = "warp"
_JPEG = "test_jpeg"


def jpeg_set(quality: int) -> str:
    return f"{_JPEG}{quality}"


def jpeg_quality(name: str) -> int | None:
    """The quality of a ``test_jpeg<q>`` set; None for any other set."""
    return int(name.removeprefix(_JPEG)) if name.startswith(_JPEG) else None


def forger_set(split: str, forger: str) -> str:
    """The set of ``split``'s renderings whose fakes ``forger`` made: the split itself for warp."""
    return split if forger == PAPER_FORGER else f"{split}_{forger}"


def set_forger(name: str) -> str | None:
    """The forger of a ``test``/``test_<forger>`` set; None for the matched and JPEG sets."""
    if name == TEST:
        return PAPER_FORGER
    forger = name.removeprefix(f"{TEST}_")
    return forger if forger in FORGERS else None


def recipe_set(recipe: str) -> str:
    """The training set of a recipe in data/ela: ``train_warp``, ``train_blend``, ``train_warp_blend``."""
    recipe_forgers(recipe)
    return f"{TRAIN}_{recipe}"


def derived_sets(sets: ExtraSetsParams) -> list[str]:
    """The extra renderings of the test split, in output order."""
    return (
        [forger_set(TEST, f) for f in sets.forgers]
        + ([UNSEEN] if sets.unseen_swap is not None else [])
        + ([MATCHED] if sets.matched_blur else [])
        + [jpeg_set(q) for q in sets.jpeg_qualities]
    )


def set_order(names: Sequence[str]) -> list[str]:
    """test first, then the other forgers' sets, test_swap_unseen, test_matched, and the JPEG sets
    from the highest quality down."""

    def key(name: str) -> tuple[int, int]:
        forger = set_forger(name)
        if forger is not None:
            return (0, FORGERS.index(forger))
        if name == UNSEEN:
            return (0, len(FORGERS))
        quality = jpeg_quality(name)
        return (1, 0) if quality is None else (2, -quality)

    return sorted(dict.fromkeys(names), key=key)

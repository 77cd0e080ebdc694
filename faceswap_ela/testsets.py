"""The names of the classes, of the splits and of the test sets, and their order: the train and
test splits, then the test split's extra renderings (params.yaml's ``testsets``): the
sharpness-matched set and one set per JPEG quality the test photos are re-saved at."""

from __future__ import annotations

from collections.abc import Sequence

from faceswap_ela.params import ExtraSetsParams

CLASSES = ("real", "fake")  # the labels' names, in the CNN's softmax order (index = label)
TRAIN, TEST = "train", "test"
SPLITS = (TRAIN, TEST)
MATCHED = "test_matched"
_JPEG = "test_jpeg"


def jpeg_set(quality: int) -> str:
    return f"{_JPEG}{quality}"


def jpeg_quality(name: str) -> int | None:
    """The quality of a ``test_jpeg<q>`` set; None for any other set."""
    return int(name.removeprefix(_JPEG)) if name.startswith(_JPEG) else None


def derived_sets(sets: ExtraSetsParams) -> list[str]:
    """The extra renderings of the test split, in output order."""
    return ([MATCHED] if sets.matched_blur else []) + [jpeg_set(q) for q in sets.jpeg_qualities]


def set_order(names: Sequence[str]) -> list[str]:
    """test first, then test_matched, then the JPEG sets from the highest quality down."""

    def key(name: str) -> tuple[int, int]:
        if name == TEST:
            return (0, 0)
        quality = jpeg_quality(name)
        return (1, 0) if quality is None else (2, -quality)

    return sorted(dict.fromkeys(names), key=key)

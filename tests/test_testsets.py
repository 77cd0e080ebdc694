"""The names of the splits and test sets, and their order."""

import pytest

from faceswap_ela import testsets
from faceswap_ela.params import ExtraSetsParams


def test_derived_set_names():
    assert testsets.derived_sets(ExtraSetsParams()) == [
        "test_blend", "test_swap", "test_swap_unseen", "test_matched",
        "test_jpeg100", "test_jpeg95", "test_jpeg90", "test_jpeg80", "test_jpeg70",
    ]  # fmt: skip
    only = ExtraSetsParams(forgers=(), unseen_swap=None, matched_blur=False, jpeg_qualities=(50,))
    assert testsets.derived_sets(only) == ["test_jpeg50"]


def test_jpeg_quality_reads_the_set_name_back():
    assert testsets.jpeg_quality(testsets.jpeg_set(85)) == 85
    assert testsets.jpeg_quality("test") is None and testsets.jpeg_quality("test_matched") is None


def test_forger_sets_and_recipe_sets():
    assert (
        testsets.forger_set("test", "warp") == "test" and testsets.forger_set("train", "swap") == "train_swap"
    )
    assert [testsets.set_forger(n) for n in ("test", "test_blend", "test_matched", "test_jpeg90")] == [
        "warp", "blend", None, None,
    ]  # fmt: skip
    assert testsets.recipe_set("warp_blend") == "train_warp_blend"
    with pytest.raises(ValueError, match="not a recipe"):
        testsets.recipe_set("warp_warp")


def test_set_order():
    names = [
        "test_jpeg70",
        "test_swap_unseen",
        "test_matched",
        "test_swap",
        "test_jpeg100",
        "test",
        "test_blend",
    ]
    assert testsets.set_order(names) == [
        "test", "test_blend", "test_swap", "test_swap_unseen", "test_matched", "test_jpeg100", "test_jpeg70",
    ]  # fmt: skip
    assert testsets.set_forger("test_swap_unseen") is None  # not swap's: no training recipe made these

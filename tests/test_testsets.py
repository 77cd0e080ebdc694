"""The names of the splits and test sets, and their order."""

from faceswap_ela import testsets
from faceswap_ela.params import ExtraSetsParams


def test_derived_set_names():
    assert testsets.derived_sets(ExtraSetsParams()) == [
        "test_matched", "test_jpeg100", "test_jpeg95", "test_jpeg90", "test_jpeg80", "test_jpeg70",
    ]  # fmt: skip
    assert testsets.derived_sets(ExtraSetsParams(matched_blur=False, jpeg_qualities=(50,))) == ["test_jpeg50"]


def test_jpeg_quality_reads_the_set_name_back():
    assert testsets.jpeg_quality(testsets.jpeg_set(85)) == 85
    assert testsets.jpeg_quality("test") is None and testsets.jpeg_quality("test_matched") is None


def test_set_order():
    names = ["test_jpeg70", "test_matched", "test_jpeg100", "test", "test_jpeg95", "test"]
    assert testsets.set_order(names) == ["test", "test_matched", "test_jpeg100", "test_jpeg95", "test_jpeg70"]

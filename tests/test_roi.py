import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from faceswap_ela import roi


def landmarks_in(box: tuple[float, float, float, float], seed: int) -> np.ndarray:
    """68 points whose points 17-67 span exactly ``box`` (the jaw is anywhere)."""
    x1, y1, x2, y2 = box
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, (68, 2)) * [x2 - x1, y2 - y1] + [x1, y1]
    points[17], points[18] = (x1, y1), (x2, y2)
    points[:17] = rng.uniform(-5000, 5000, (17, 2))
    return points


coords = st.floats(-300, 1300, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    x1=coords, y1=coords, w=st.floats(0, 800), h=st.floats(0, 800),
    width=st.integers(1, 1200), height=st.integers(1, 1200),
    dx_max=st.floats(0, 1), dy_max=st.floats(0, 1), seed=st.integers(0, 2**32 - 1), random=st.booleans(),
)  # fmt: skip
def test_roi_box_properties(x1, y1, w, h, width, height, dx_max, dy_max, seed, random):
    points = landmarks_in((x1, y1, x1 + w, y1 + h), seed)
    bx1, by1, bx2, by2 = roi.landmark_box(points)
    rng = np.random.default_rng(seed) if random else None
    rx1, ry1, rx2, ry2 = roi.roi_box(points, (height, width, 3), rng, dx_max=dx_max, dy_max=dy_max)
    # inside the image
    assert rx1 >= 0 and ry1 >= 0 and rx2 <= width - 1 and ry2 <= height - 1
    # contains the landmark box, clipped to the image (when that is not empty)
    clip_x1, clip_x2 = min(max(bx1, 0), width - 1), max(min(bx2, width - 1), 0)
    clip_y1, clip_y2 = min(max(by1, 0), height - 1), max(min(by2, height - 1), 0)
    if bx2 >= 0 and bx1 <= width - 1 and by2 >= 0 and by1 <= height - 1:
        assert rx1 <= clip_x1 and clip_x2 <= rx2 and ry1 <= clip_y1 and clip_y2 <= ry2
    # grows by no more than w * dx_max and h * dy_max (and whole pixels)
    assert rx1 >= math.floor(bx1 - (bx2 - bx1) * dx_max) and rx2 <= math.ceil(bx2 + (bx2 - bx1) * dx_max)
    assert ry1 >= math.floor(by1 - (by2 - by1) * dy_max) and ry2 <= math.ceil(by2 + (by2 - by1) * dy_max)


def test_deterministic_roi_is_the_expected_growth():
    points = landmarks_in((100, 200, 180, 300), 0)
    assert roi.roi_box(points, (1000, 1000), None, dx_max=0.125, dy_max=0.2) == (95, 190, 185, 310)
    # by default the paper's growth (w/8, h/5), half of it each side: 80 / 16 = 5 and 100 / 10 = 10
    assert roi.roi_box(points, (1000, 1000), None) == (95, 190, 185, 310)
    # clipped to a 250 x 170 (H x W) image: the right and bottom edges stop at its last pixel
    assert roi.roi_box(points, (250, 170), None) == (95, 190, 169, 249)
    draws = [roi.roi_box(points, (1000, 1000), np.random.default_rng(s)) for s in range(400)]
    assert len(set(draws)) > 10
    mean_x1 = np.mean([d[0] for d in draws])
    assert abs(mean_x1 - 95) < 1.5  # the random growth is centred on the deterministic one
    assert min(d[0] for d in draws) >= 90 and max(d[2] for d in draws) <= 190
    assert min(d[1] for d in draws) >= 180 and max(d[3] for d in draws) <= 320


def test_crop_and_empty_crop():
    image = np.arange(40 * 50 * 3, dtype=np.uint32).reshape(40, 50, 3).astype(np.uint8)
    piece = roi.crop(image, (10, 5, 29, 24))
    assert piece.shape == (20, 20, 3) and piece.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(piece, image[5:25, 10:30])
    assert roi.crop(image, (10, 5, 9, 24)) is None  # x2 < x1: empty
    assert roi.crop(image, (10, 5, 10 + roi.MIN_CROP_SIDE - 2, 24)) is None


def test_resize():
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    for image in (big, small):
        out = roi.resize(image, 128)
        assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    flat = np.full((256, 256, 3), 77, np.uint8)
    np.testing.assert_array_equal(roi.resize(flat, 128), np.full((128, 128, 3), 77, np.uint8))
    same = big[:128, :128]
    np.testing.assert_array_equal(roi.resize(same, 128), same)


def test_shrink():
    image = np.zeros((800, 600, 3), np.uint8)
    assert roi.shrink(image, 320).shape == (320, 240, 3)
    assert roi.shrink(image[:100, :100], 320).shape == (100, 100, 3)

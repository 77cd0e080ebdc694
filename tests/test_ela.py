import io

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from faceswap_ela import alignment, ela, forgery
from faceswap_ela.images import save_png
from faceswap_ela.params import ElaParams


def colourful() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[100:228, 180:308])


def sof_sampling(jpeg: bytes) -> list[tuple[int, int]]:
    """(H, V) sampling factors of each component, from the JPEG's SOF0 marker."""
    at = jpeg.index(b"\xff\xc0")
    count = jpeg[at + 9]
    parts = jpeg[at + 10 : at + 10 + 3 * count]
    return [(parts[3 * i + 1] >> 4, parts[3 * i + 1] & 15) for i in range(count)]


def test_resaved_image_has_lower_error_levels():
    image = colourful()
    for quality in (75, 90, 95):
        resaved = ela.jpeg_roundtrip(image, quality)
        before = ela.error_levels(image, quality).astype(float).mean()
        after = ela.error_levels(resaved, quality).astype(float).mean()
        assert after < 0.8 * before


def test_pasted_region_has_different_error_levels(portraits):
    rgb, points = portraits[0]
    template = alignment.procrustes_template([p for _, p in portraits])
    fake, mask = forgery.warp(rgb, points, template, size=80, mask="square")
    diff = ela.error_levels(fake, 90).astype(float).mean(axis=2)
    inside = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    ring = (cv2.dilate(mask.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0) & ~mask
    inside_level, outside_level = diff[inside].mean(), diff[ring].mean()
    assert inside_level < 0.7 * outside_level  # the blurred paste compresses with less error
    original = ela.error_levels(rgb, 90).astype(float).mean(axis=2)
    assert original[inside].mean() > 0.8 * original[ring].mean()  # not so before the paste


def test_output_is_uint8_stretched_to_255():
    rng = np.random.default_rng(0)
    for image in (colourful(), rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)):
        out = ela.ela_image(image, 90)
        assert out.dtype == np.uint8 and out.shape == image.shape and out.max() == 255
    grey = np.full((32, 32, 3), 128, np.uint8)
    assert not ela.error_levels(grey, 90).any()
    assert not ela.ela_image(grey, 90).any()
    zero = np.zeros((8, 8, 3), np.uint8)
    np.testing.assert_array_equal(ela.scale_levels(zero, "max"), zero)


def test_scales():
    diff = np.array([[[0, 1, 2], [3, 6, 200]]], np.uint8)
    np.testing.assert_array_equal(ela.scale_levels(diff, "max"), np.rint(diff * (255 / 200)).astype(np.uint8))
    np.testing.assert_array_equal(ela.scale_levels(diff, "fixed", 20.0), [[[0, 20, 40], [60, 120, 255]]])
    with pytest.raises(ValueError):
        ela.scale_levels(diff, "log")
    image = colourful()
    raw = ela.error_levels(image, 90)
    np.testing.assert_array_equal(
        ela.ela_image(image, 90, scale="fixed", gain=7.5),
        np.clip(np.rint(raw * 7.5), 0, 255).astype(np.uint8),
    )


def test_quality_changes_the_result():
    image = colourful()
    assert not np.array_equal(ela.ela_image(image, 75), ela.ela_image(image, 95))
    assert ela.error_levels(image, 50).mean() > ela.error_levels(image, 95).mean()


def test_subsampling_is_honoured():
    image = colourful()
    assert sof_sampling(ela.jpeg_bytes(image, 90, "4:4:4"))[0] == (1, 1)
    assert sof_sampling(ela.jpeg_bytes(image, 90, "4:2:2"))[0] == (2, 1)
    assert sof_sampling(ela.jpeg_bytes(image, 90, "4:2:0"))[0] == (2, 2)
    diffs = {s: ela.error_levels(image, 90, s) for s in ela.SUBSAMPLING}
    assert not np.array_equal(diffs["4:4:4"], diffs["4:2:0"])
    assert diffs["4:4:4"].astype(float).mean() < diffs["4:2:0"].astype(float).mean()
    with pytest.raises(ValueError):
        ela.error_levels(image, 90, "4:1:1")


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
@pytest.mark.parametrize("quality", [60, 90, 95])
def test_opencv_round_trip_matches_pillow(subsampling, quality):
    image = colourful()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, subsampling=ela.PIL_SUBSAMPLING[subsampling])
    reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(ela.jpeg_roundtrip(image, quality, subsampling), reference)


def test_bad_input():
    with pytest.raises(ValueError):
        ela.error_levels(np.zeros((8, 8), np.uint8), 90)
    with pytest.raises(ValueError):
        ela.error_levels(np.zeros((8, 8, 3), np.float32), 90)
    with pytest.raises(ValueError):
        ela.error_levels(np.zeros((8, 8, 3), np.uint8), 0)


def test_write_tensors_streams_the_same_bytes_as_np_save(tmp_path):
    rng = np.random.default_rng(0)
    source = skimage.data.astronaut()
    paths = []
    for i in range(23):
        y, x = rng.integers(0, 512 - 32, 2)
        path = tmp_path / f"c{i:02d}.png"
        save_png(path, source[y : y + 32, x : x + 32])
        paths.append(path)
    crops = np.stack([ela.read_crop(p) for p in paths])
    settings = ElaParams(quality=90, subsampling="4:4:4")
    expected = np.stack([ela.compute(c, settings) for c in crops])
    assert np.array_equal(expected, np.stack([ela.ela_image(c, 90, "4:4:4") for c in crops]))
    outputs = {}
    for workers, chunk in ((1, 64), (1, 5), (2, 4)):
        ela_path, rgb_path = tmp_path / f"e{workers}{chunk}.npy", tmp_path / f"r{workers}{chunk}.npy"
        n = ela.write_tensors(paths, ela_path, rgb_path, settings, workers=workers, chunk=chunk)
        assert n == len(paths)
        outputs[workers, chunk] = (ela_path.read_bytes(), rgb_path.read_bytes())
    for ela_bytes, rgb_bytes in outputs.values():
        assert ela_bytes == outputs[1, 64][0] and rgb_bytes == outputs[1, 64][1]
    buffer = io.BytesIO()
    np.save(buffer, expected)
    assert outputs[1, 64][0] == buffer.getvalue()
    np.testing.assert_array_equal(np.load(tmp_path / "r164.npy"), crops)
    empty = tmp_path / "empty.npy"
    assert ela.write_tensors([], empty, None, settings, size=32) == 0
    assert np.load(empty).shape == (0, 32, 32, 3)

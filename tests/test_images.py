"""faceswap_ela.images: every unusable file becomes an ImageError with a reason; odd modes load as
H x W x 3 uint8 RGB."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from PIL import Image

from faceswap_ela import images
from faceswap_ela.images import ImageError, load_rgb, probe, save_png
from tests.helpers.sample_data import _blank_png, face_detector, render_face, write_bad_images


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict:
    return write_bad_images(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("zero_byte", "empty file (0 bytes)"),
        ("truncated", "unreadable or truncated image: image file is truncated"),
        ("random_bytes", "unreadable: not a recognised image format"),
        ("huge", "too large"),
    ],
)
def test_unusable_files_raise_image_error(bad, kind, reason):
    path = bad[kind]
    for source in (path, str(path), path.read_bytes()):
        with pytest.raises(ImageError) as err:
            load_rgb(source)
        assert str(err.value).startswith(reason)
        assert str(path.parent) not in str(err.value)  # reasons never name the (temporary) path
    with pytest.raises(ImageError, match=re.escape(reason)):
        probe(path)


def test_huge_png_is_small_on_disk_and_refused_before_decoding(bad):
    data = bad["huge"].read_bytes()
    assert len(data) < 100_000
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (20_000, 20_000)
    with pytest.raises(ImageError, match="20000x20000|400000000"):
        load_rgb(bad["huge"])


def test_image_just_over_the_pixel_limit_is_refused(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_blank_png(10_000, 9_000))  # 90 M pixels: over MAX_PIXELS, under Pillow's error
    assert images.MAX_PIXELS < 10_000 * 9_000
    with pytest.raises(ImageError, match="too large"):
        load_rgb(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_rgb(tmp_path / "nope.jpg")
    with pytest.raises(ImageError) as err:
        load_rgb(tmp_path)
    assert str(tmp_path) not in str(err.value)


@pytest.mark.parametrize("kind", ["grayscale", "cmyk", "rgba", "no_face", "two_faces"])
def test_odd_but_usable_images_load_as_rgb(bad, kind):
    rgb = load_rgb(bad[kind])
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
    width, height = probe(bad[kind])
    assert (height, width) == rgb.shape[:2]
    np.testing.assert_array_equal(load_rgb(bad[kind].read_bytes()), rgb)


def test_grayscale_has_equal_channels(bad):
    rgb = load_rgb(bad["grayscale"])
    assert rgb.shape == (640, 480, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_cmyk_jpeg_keeps_its_colours(bad):
    rgb = load_rgb(bad["cmyk"]).astype(int)
    reference = render_face("astronaut").astype(int)
    assert np.abs(rgb - reference).mean() < 4  # JPEG loss only, not inverted or shifted channels


def test_transparency_is_laid_over_white(bad):
    rgb = load_rgb(bad["rgba"]).astype(int)
    reference = render_face("grace_hopper").astype(int)
    assert (rgb[:, 0] == 255).all()  # alpha 0 -> white
    np.testing.assert_array_equal(rgb[:, -1], reference[:, -1])  # alpha 255 -> the colour itself


def test_palette_16_bit_and_exif_orientation(tmp_path):
    face = render_face("grace_hopper")
    Image.fromarray(face).convert("P").save(tmp_path / "p.png", transparency=0)
    assert load_rgb(tmp_path / "p.png").shape == (640, 480, 3)
    deep = (np.arange(100 * 80).reshape(100, 80) * 8).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    rgb = load_rgb(tmp_path / "deep.png")
    assert rgb.shape == (100, 80, 3) and rgb.max() == 255 and rgb.min() == 0
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees on display
    Image.fromarray(face).save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").shape == (480, 640, 3)
    assert probe(tmp_path / "rot.jpg") == (640, 480)


def test_bad_image_faces(bad):
    assert len(face_detector()(load_rgb(bad["no_face"]), 0)) == 0
    faces = face_detector()(load_rgb(bad["two_faces"]), 0)
    assert len(faces) == 2 and min(f.width() for f in faces) >= 150


def test_save_png_is_lossless_and_deterministic(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", rgb)
    save_png(tmp_path / "b.png", rgb)
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), rgb)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_image_suffixes():
    assert set(images.IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png"}


@pytest.mark.parametrize("quality", [50, 75, 90, 95, 100])
def test_jpeg_quality_is_read_back_from_the_tables(tmp_path, quality):
    rgb = render_face("grace_hopper", (160, 120))
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=quality)
    assert images.jpeg_quality(path) == quality


def test_jpeg_quality_is_none_for_other_files(tmp_path, bad):
    save_png(tmp_path / "photo.png", np.zeros((8, 8, 3), np.uint8))
    assert images.jpeg_quality(tmp_path / "photo.png") is None
    assert images.jpeg_quality(bad["random_bytes"]) is None

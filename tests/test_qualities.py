"""ELA at several JPEG qualities (ela.qualities): the channels are the single-quality ELAs stacked,
bit for bit, through every path (crop, whole photo, the ela stage's writer); the settings are
validated; the card records them only when set; the downstream readers take 3k channels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import skimage.data

from faceswap_ela import baseline, card, dataset, ela
from faceswap_ela import params as P
from faceswap_ela.images import save_png
from faceswap_ela.params import ElaParams

QUALITIES = (70, 85, 95)
SETTINGS = ElaParams(qualities=QUALITIES, scale="fixed", gain=12.0, subsampling="4:2:0")


def single(q: int, settings: ElaParams = SETTINGS) -> ElaParams:
    return settings.model_copy(update={"quality": q, "qualities": ()})


def jpeg_photo() -> np.ndarray:
    """An unmodified JPEG photo: the astronaut saved once at quality 90, as decoded."""
    return ela.jpeg_roundtrip(np.ascontiguousarray(skimage.data.astronaut()[:480, :400]), 90)


def test_k_quality_ela_of_a_jpeg_photo_is_the_single_qualities_stacked(tmp_path):
    photo = jpeg_photo()
    box = (101, 57, 260, 241)
    values = {"rotation": 7.5, "scale": 1.05, "flip": True, "tx": 0.03, "ty": -0.02, "brightness": 1.1}
    # the whole photo's error levels (ela.at: photo)
    levels = ela.photo_levels(photo, SETTINGS)
    assert levels.shape == (*photo.shape[:2], 9) and levels.dtype == np.uint8
    singles = [ela.error_levels(photo, q, SETTINGS.subsampling) for q in QUALITIES]
    np.testing.assert_array_equal(levels, np.concatenate(singles, axis=2))
    stacked = ela.roi_levels(levels, box, 64, SETTINGS, values)
    expected = [
        ela.roi_levels(s, box, 64, single(q), values) for s, q in zip(singles, QUALITIES, strict=True)
    ]
    assert stacked.shape == (64, 64, 9)
    np.testing.assert_array_equal(stacked, np.concatenate(expected, axis=2))
    # the same through a piece file, as the ela stage reads it
    save_png(tmp_path / "photo.png", photo)
    piece = ela.Piece(str(tmp_path / "photo.png"), box, values)
    np.testing.assert_array_equal(ela.piece_levels(piece, 64, SETTINGS), stacked)
    for i, q in enumerate(QUALITIES):
        np.testing.assert_array_equal(ela.piece_levels(piece, 64, single(q)), stacked[..., 3 * i : 3 * i + 3])
    # the ELA of a crop (ela.at: crop)
    crop = np.ascontiguousarray(photo[100:164, 150:214])
    np.testing.assert_array_equal(
        ela.compute(crop, SETTINGS), np.concatenate([ela.compute(crop, single(q)) for q in QUALITIES], axis=2)
    )
    assert ela.qualities(SETTINGS) == QUALITIES and ela.channels(SETTINGS) == 9
    assert ela.qualities(ElaParams()) == (95,) and ela.channels(ElaParams()) == 3
    np.testing.assert_array_equal(ela.photo_levels(photo, ElaParams()), ela.error_levels(photo, 95))


def test_the_ela_writer_stacks_3k_channels(tmp_path):
    """write_sets (the ela stage's writer), crop and photo modes: N x S x S x 3k ELA, quality by
    quality the single-quality tensors; the RGB stays N x S x S x 3; load_split takes it."""
    photo = jpeg_photo()
    rng = np.random.default_rng(0)
    crops = tmp_path / "crops"
    (crops / "pieces").mkdir(parents=True)
    save_png(crops / "pieces" / "p.png", photo)
    rows = []
    for i in range(7):
        x, y = (int(v) for v in rng.integers(0, 300, 2))
        box = (x, y, x + 90, y + 110)
        save_png(crops / f"c{i}.png", ela.roi_levels(photo, box, 32, ElaParams(scale="fixed", gain=1.0)))
        rows.append({"crop_id": f"c{i}", "photo_id": f"p{i}", "group": f"g{i // 2}", "label": i % 2,
                     "path": f"c{i}.png", "piece_path": "pieces/p.png", "piece_x1": 0, "piece_y1": 0,
                     "roi_x1": box[0], "roi_y1": box[1], "roi_x2": box[2], "roi_y2": box[3],
                     "augment": ""})  # fmt: skip
    frame = pd.DataFrame(rows)
    for at in ("crop", "photo"):
        settings = SETTINGS.model_copy(update={"at": at})
        out = tmp_path / at
        out.mkdir()
        assert ela.write_sets({"test": frame}, crops, out, settings, size=32, workers=2) == {"test": 7}
        tensor = np.load(out / "test_ela.npy")
        assert tensor.shape == (7, 32, 32, 9) and tensor.dtype == np.uint8
        assert np.load(out / "test_rgb.npy").shape == (7, 32, 32, 3)
        for i, q in enumerate(QUALITIES):
            one = tmp_path / f"{at}-{q}"
            one.mkdir()
            ela.write_sets({"test": frame}, crops, one, single(q, settings), size=32)
            np.testing.assert_array_equal(tensor[..., 3 * i : 3 * i + 3], np.load(one / "test_ela.npy"))
        split = dataset.load_split(out, "test", "ela")
        assert split.images.shape == (7, 32, 32, 9) and len(split) == 7


@pytest.mark.parametrize(
    "ela_settings,message",
    [
        ({"qualities": [90, 70]}, "needs scale: fixed"),  # max scaling hides the curve
        ({"qualities": [90, 90], "scale": "fixed"}, "distinct"),
        ({"qualities": [0, 90], "scale": "fixed"}, "1..100"),
        ({"qualities": [90, 101], "scale": "fixed"}, "1..100"),
    ],
)
def test_bad_qualities_name_the_key(ela_settings, message):
    with pytest.raises(P.ParamsError) as info:
        P.parse({"ela": ela_settings})
    assert "ela.qualities" in str(info.value) and message in str(info.value)


def test_the_card_records_qualities_only_when_set():
    default = card.make(P.parse({}), "ela", "warp", 42, "ela-warp-s42", "float32")
    assert list(default) == list(card.KEYS)  # the paper's card, as it always was
    assert list(default["ela"]) == ["quality", "subsampling", "scale", "gain", "at"]
    p = P.parse({"ela": {"qualities": list(QUALITIES), "scale": "fixed", "at": "photo"}})
    made = json.loads(json.dumps(card.make(p, "ela", "warp", 42, "ela-warp-s42", "float32")))
    assert made["ela"]["qualities"] == list(QUALITIES)
    assert card.ela_settings(card.check(made, "card.json")) == p.ela.model_copy(update={"workers": 0})
    made["ela"]["scale"] = "max"
    with pytest.raises(card.CardError, match="qualities"):
        card.check(made, "card.json")


def test_the_sharpness_baseline_takes_3k_channels_as_their_mean():
    rng = np.random.default_rng(1)
    rgbs = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    elas = rng.integers(0, 256, (5, 16, 16, 9), dtype=np.uint8)
    x = baseline.features(rgbs, elas)
    mask = baseline.centre_mask(16)
    means = elas.astype(np.float64).reshape(5, 16, 16, 3, 3).mean(axis=(3, 4))
    np.testing.assert_allclose(x[:, 3], means[:, mask].mean(axis=1))
    np.testing.assert_allclose(x[:, 4], means[:, ~mask].mean(axis=1))
    np.testing.assert_array_equal(x[:, :3], baseline.features(rgbs, elas[..., :3])[:, :3])
    with pytest.raises(ValueError, match="matching"):
        baseline.features(rgbs, elas[..., :4])

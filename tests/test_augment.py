import numpy as np
import skimage.data

from faceswap_ela import augment
from faceswap_ela.params import AugmentParams

OFF = AugmentParams(
    rotation=0, scaling=0, flip=False, translation=0,
    brightness=(1, 1), contrast=(1, 1), color=(1, 1), sharpness=(1, 1),
)  # fmt: skip


def crop() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[60:220, 150:310])


def test_draws_are_seeded_and_within_the_ranges():
    params = AugmentParams()
    draws = [augment.draw(np.random.default_rng(s), params) for s in range(300)]
    assert augment.draw(np.random.default_rng(5), params) == draws[5]
    assert all(abs(d["rotation"]) <= params.rotation for d in draws)
    assert all(abs(d["scale"] - 1) <= params.scaling + 1e-9 for d in draws)
    assert all(abs(d["tx"]) <= params.translation and abs(d["ty"]) <= params.translation for d in draws)
    for name in ("brightness", "contrast", "color", "sharpness"):
        values = [d[name] for d in draws]
        assert min(values) >= 0.8 and max(values) <= 1.2 and max(values) - min(values) > 0.3
    flips = sum(d["flip"] for d in draws)
    assert 100 < flips < 200


def test_switching_one_off_leaves_the_other_draws():
    on = augment.draw(np.random.default_rng(3), AugmentParams())
    no_flip = augment.draw(np.random.default_rng(3), AugmentParams(flip=False))
    assert no_flip["flip"] is False
    assert {k: v for k, v in on.items() if k != "flip"} == {k: v for k, v in no_flip.items() if k != "flip"}


def test_everything_off_is_the_identity():
    image = crop()
    out, values = augment.augment(image, np.random.default_rng(0), OFF)
    np.testing.assert_array_equal(out, image)
    assert values == {
        "rotation": 0.0, "scale": 1.0, "flip": False, "tx": 0.0, "ty": 0.0,
        "brightness": 1.0, "contrast": 1.0, "color": 1.0, "sharpness": 1.0,
    }  # fmt: skip


def test_each_augmentation_changes_the_crop():
    image = crop()
    neutral = augment.draw(np.random.default_rng(0), OFF)
    np.testing.assert_array_equal(augment.apply(image, {**neutral, "flip": True}), image[:, ::-1])
    for change in ({"rotation": 8.0}, {"scale": 1.1}, {"tx": 0.05}, {"ty": -0.05}, {"brightness": 1.2},
                   {"contrast": 0.8}, {"color": 0.8}, {"sharpness": 1.2}):  # fmt: skip
        out = augment.apply(image, {**neutral, **change})
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - image).mean() > 0.3, change
    brighter = augment.apply(image, {**neutral, "brightness": 1.2})
    assert brighter.mean() > image.mean()


def test_geometry_fills_borders_by_reflection():
    flat = np.full((96, 80, 3), (200, 150, 90), np.uint8)
    out = augment.apply(flat, {"rotation": 10.0, "scale": 0.8, "tx": 0.05, "ty": 0.05})
    np.testing.assert_array_equal(out, flat)  # no black corners

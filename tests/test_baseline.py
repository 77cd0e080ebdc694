"""The sharpness baseline's features and fit, on hand-made crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceswap_ela import baseline, ela


def _texture(seed: int, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)


def _soft_centre(rgb: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """The middle half blurred, the border left sharp: what a pasted, blurred face looks like."""
    out = rgb.copy()
    out[32:96, 32:96] = cv2.GaussianBlur(rgb, (0, 0), sigma)[32:96, 32:96]
    return out


def _stack(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    rgbs = np.stack(images)
    elas = np.stack([ela.ela_image(image, 95) for image in images])
    return rgbs, elas


def test_centre_mask():
    mask = baseline.centre_mask(128)
    assert mask.sum() == 64 * 64 and mask[32:96, 32:96].all() and not mask[:32].any()
    with pytest.raises(ValueError):
        baseline.centre_mask(128, 1.0)


def test_a_sharp_crop_and_a_blurred_one_order_correctly():
    sharp = _texture(0)
    rgbs, elas = _stack([sharp, _soft_centre(sharp), cv2.GaussianBlur(sharp, (0, 0), 1.5)])
    x = baseline.features(rgbs, elas)
    assert x.shape == (3, len(baseline.FEATURES))
    centre, border, ratio = x[:, 0], x[:, 1], x[:, 2]
    assert centre[0] > centre[1] and centre[0] > centre[2]  # blur lowers the centre's Laplacian variance
    assert border[1] == pytest.approx(border[0], rel=0.05) and border[2] < border[0]
    assert ratio[1] < ratio[0] and ratio[1] < ratio[2]  # only a soft centre in a sharp frame lowers the ratio


def test_fit_scores_soft_centres_as_fakes():
    reals = [_texture(seed) for seed in range(12)]
    fakes = [
        _soft_centre(image, 1.0 + 0.1 * i) for i, image in enumerate(_texture(s) for s in range(100, 112))
    ]
    rgbs, elas = _stack(reals + fakes)
    labels = np.array([0] * 12 + [1] * 12)
    model = baseline.fit(baseline.features(rgbs, elas), labels)
    test_rgbs, test_elas = _stack([_texture(500), _soft_centre(_texture(501))])
    p_fake = baseline.p_fake(model, baseline.features(test_rgbs, test_elas))
    assert p_fake[1] > 0.5 > p_fake[0]
    assert set(baseline.coefficients(model)) == {*baseline.FEATURES, "intercept"}
    with pytest.raises(ValueError, match="both classes"):
        baseline.fit(baseline.features(rgbs, elas), np.zeros(24))


def test_features_reject_mismatched_stacks():
    rgbs, elas = _stack([_texture(0)])
    with pytest.raises(ValueError, match="matching"):
        baseline.features(rgbs, elas[:, :64])

import cv2
import numpy as np
import pytest

from faceswap_ela import alignment, forgery, roi
from faceswap_ela.fake_params import BlendParams
from tests.helpers.asserts import assert_a_fake_of_the_face


@pytest.fixture(scope="module")
def template(portraits):
    return alignment.procrustes_template([points for _, points in portraits])


def laplacian_variance(rgb: np.ndarray, where: np.ndarray) -> float:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F)[where].var())


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels == 0:
        return mask
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def shrink(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel) > 0


@pytest.mark.parametrize("mask_mode", ["square", "hull"])
@pytest.mark.parametrize("feather", [0, 6])
@pytest.mark.parametrize("size", [64, 127])
def test_fake_changes_only_the_masked_face_and_blurs_it(portraits, template, mask_mode, feather, size):
    for rgb, points in portraits:
        fake, mask = forgery.warp(rgb, points, template, size=size, mask=mask_mode, feather=feather)
        assert fake.shape == rgb.shape and fake.dtype == np.uint8
        assert mask.dtype == bool and 0.01 < mask.mean() < 0.5
        outside = ~grow(mask, feather)
        np.testing.assert_array_equal(fake[outside], rgb[outside])
        inside = shrink(mask, max(feather, 3))
        assert laplacian_variance(fake, inside) < 0.6 * laplacian_variance(rgb, inside)
        # the mask covers the face: the inner landmarks' centre, and for a square all of 17-67 but a few
        centre = np.round(points[17:].mean(0)).astype(int)
        assert mask[centre[1], centre[0]]
        if mask_mode == "square":
            inner = np.round(points[17:]).astype(int)
            assert mask[inner[:, 1], inner[:, 0]].mean() > 0.8


def test_hull_mask_lies_inside_the_square(portraits, template):
    rgb, points = portraits[0]
    _, square = forgery.warp(rgb, points, template, size=100, mask="square")
    _, hull = forgery.warp(rgb, points, template, size=100, mask="hull")
    assert hull.sum() < square.sum() and not (hull & ~square).any()


def test_larger_aligned_size_blurs_less(portraits, template):
    rgb, points = portraits[1]
    energies = []
    for size in (64, 127, 400):
        fake, mask = forgery.warp(rgb, points, template, size=size, mask="square")
        energies.append(laplacian_variance(fake, shrink(mask, 3)))
    assert energies[0] < energies[1] < energies[2]


def test_make_fake_is_deterministic_and_checks_the_mask(portraits, template):
    rgb, points = portraits[0]
    first, _ = forgery.warp(rgb, points, template, size=90, mask="hull", feather=3)
    second, _ = forgery.warp(rgb, points, template, size=90, mask="hull", feather=3)
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="mask"):
        forgery.warp(rgb, points, template, size=90, mask="random")


def test_matched_sigma_follows_the_fakes_softness(portraits, template):
    rgb, points = portraits[0]
    small, large = (forgery.matched_sigma(points, template, s, 5) for s in (64, 127))
    assert small == pytest.approx(large * 127 / 64)  # a smaller aligned face loses more detail
    assert 0.3 < large < small < 10
    assert forgery.gaussian_sigma(5) == pytest.approx(1.1)


@pytest.mark.parametrize("mask_mode", ["square", "hull"])
@pytest.mark.parametrize("feather", [0, 6])
def test_blur_region_softens_the_fakes_region_like_a_fake(portraits, template, mask_mode, feather):
    for rgb, points in portraits:
        region = forgery.fake_region(rgb.shape, points, template, size=64, mask=mask_mode)
        fake, fake_mask = forgery.warp(rgb, points, template, size=64, mask=mask_mode, feather=feather)
        np.testing.assert_array_equal(region, fake_mask)
        sigma = forgery.matched_sigma(points, template, 64, 5)
        soft = forgery.blur_region(rgb, region, sigma, feather)
        outside = ~grow(region, feather)
        np.testing.assert_array_equal(soft[outside], rgb[outside])
        # the same pixels as blurring the whole photo, inside the region
        whole = cv2.GaussianBlur(rgb, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
        np.testing.assert_array_equal(
            soft[region & ~grow(~region, feather)], whole[region & ~grow(~region, feather)]
        )
        inside = shrink(region, max(feather, 3))
        sharp, blurred, faked = (laplacian_variance(x, inside) for x in (rgb, soft, fake))
        assert blurred < 0.6 * sharp and faked < 0.6 * sharp
        assert 0.33 < blurred / faked < 3  # about as soft as the fake
    np.testing.assert_array_equal(forgery.blur_region(rgb, region, 0.0), rgb)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("hull", ["all", "inner"])
def test_blend_changes_only_its_region_around_the_face(portraits, hull):
    for rgb, points in portraits:
        x1, y1, x2, y2 = roi.roi_box(points, rgb.shape)
        in_roi = np.zeros(rgb.shape[:2], bool)
        in_roi[y1 : y2 + 1, x1 : x2 + 1] = True
        for seed in range(8):
            fake, region = forgery.blend(rgb, points, rng=rng(seed), params=BlendParams(hull=hull))
            assert_a_fake_of_the_face(rgb, points, fake, region)
            if hull == "inner":  # the seam lies inside the ROI
                assert (region & in_roi).sum() > 0.95 * region.sum()


def test_blend_is_reproducible_from_the_seed(portraits):
    rgb, points = portraits[0]
    first, again, other = (
        forgery.blend(rgb, points, rng=rng(seed), params=BlendParams())[0] for seed in (7, 7, 8)
    )
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_blend_ratio_is_one_in_about_half_the_fakes(portraits):
    # a grey photo and copies shifted by up to 255 levels per channel: at ratio 1 the face centre
    # takes the copy's clipped 0 or 255 in some channel; below 1 it keeps within 128 +- 0.75 * 128
    rgb, points = portraits[1]
    grey = np.full_like(rgb, 128)
    params = BlendParams(rgb_shift=255.0, hue_shift=0.0, saturation=0.0, brightness=0.0, contrast=0.0)
    cx, cy = np.round(points[17:].mean(0)).astype(int)
    saturated = []
    for seed in range(60):
        fake, _ = forgery.blend(grey, points, rng=rng(seed), params=params)
        saturated.append(bool(np.isin(fake[cy, cx], (0, 255)).any()))
        assert saturated[-1] or 32 <= fake[cy, cx].min() <= fake[cy, cx].max() <= 224
    assert 0.25 < np.mean(saturated) < 0.65  # at ratio 1, 7 in 8 copies saturate a channel


def test_blend_is_not_just_a_blur(portraits):
    # warp's fakes keep under 0.6 of the original's Laplacian variance; these don't, as a rule
    ratios = []
    for rgb, points in portraits:
        for seed in range(20):
            fake, region = forgery.blend(rgb, points, rng=rng(seed), params=BlendParams())
            inside = shrink(region, 3)
            ratios.append(laplacian_variance(fake, inside) / laplacian_variance(rgb, inside))
    ratios = np.array(ratios)
    assert (ratios > 1).mean() > 0.25  # sharpened copies
    assert (ratios < 0.6).mean() > 0.25  # downscaled ones

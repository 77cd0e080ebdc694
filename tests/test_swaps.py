"""The swap forger family: every setting changes only the pixels of its region, each axis does what
it says, the draws follow the seed, and the single swap of earlier versions stays expressible."""

import json

import cv2
import numpy as np
import pytest

from faceswap_ela import alignment, swaps
from faceswap_ela.fake_params import SwapParams
from tests.helpers.asserts import assert_a_fake_of_the_face

# the one swap earlier versions made: Umeyama on 17-67, bilinear, Reinhard, inner hull, no erosion
SINGLE = SwapParams(
    color=("reinhard",), align=("inner",), interpolation=("linear",), mask=("inner",),
    erosion=(0.0, 0.0), scale=(), hull="inner",
)  # fmt: skip
SETTINGS = [
    *(("color", c) for c in ("none", "reinhard", "histogram", "lowfreq")),
    *(("align", a) for a in ("inner", "all", "affine")),
    *(("interpolation", i) for i in ("nearest", "linear", "cubic", "area")),
    *(("mask", m) for m in ("inner", "all", "subset")),
    ("scale", 0.6), ("scale", 1.6), ("erosion", 0.05), ("erosion", 0.0),
]  # fmt: skip


def hull_mask(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    inside = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(inside, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return inside > 0


def shrink(mask: np.ndarray, pixels: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)) > 0


def laplacian_variance(rgb: np.ndarray, where: np.ndarray) -> float:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F)[where].var())


def mean_lab(rgb: np.ndarray, where: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[where].mean(0)


def heads(portraits):
    """(head, its landmarks, donor, its landmarks): each portrait with the other's face."""
    for i, (rgb, points) in enumerate(portraits):
        yield rgb, points, *portraits[1 - i]


def pasted(portraits, params: SwapParams | None = None, **drawn):
    """(head, landmarks, donor, donor landmarks, fake, region) of each head, pasted as ``drawn``
    says (the single swap's settings otherwise, a feather of 5 % of the face)."""
    settings = swaps.SwapDraw(**({"feather": 0.05} | drawn))
    for rgb, points, donor, donor_points in heads(portraits):
        fake, region = swaps.paste(rgb, points, donor, donor_points, settings, params or SwapParams())
        yield rgb, points, donor, donor_points, fake, region


@pytest.mark.parametrize(("axis", "value"), SETTINGS)
def test_each_setting_changes_only_the_pixels_of_its_region(portraits, axis, value):
    """Before any save: the fake is the head, bit for bit, outside the region it returns, and the
    region lies inside the head's hull of the mask's points."""
    for rgb, points, _, _, fake, region in pasted(portraits, SwapParams(), **{axis: value}):
        assert_a_fake_of_the_face(rgb, points, fake, region)
        mask = value if axis == "mask" else "inner"
        assert not (region & ~hull_mask(points[swaps.MASK_POINTS[mask]], rgb.shape)).any()


@pytest.mark.parametrize("hull", ["all", "inner"])
@pytest.mark.parametrize("intersect", [True, False])
def test_the_single_swap_stays_inside_the_heads_hull(portraits, hull, intersect):
    params = SINGLE.model_copy(update={"hull": hull, "intersect": intersect})
    for rgb, points, donor, donor_points in heads(portraits):
        fake, region = swaps.swap(
            rgb, points, donor, donor_points, rng=np.random.default_rng(0), params=params
        )
        assert_a_fake_of_the_face(rgb, points, fake, region)
        assert not (region & ~hull_mask(points[17:], rgb.shape)).any()


def test_masks_cover_the_face_they_name(portraits):
    for rgb, points, donor, donor_points in heads(portraits):
        regions = {
            mask: swaps.paste(rgb, points, donor, donor_points, swaps.SwapDraw(0.0, mask=mask), SwapParams())[
                1
            ]
            for mask in ("inner", "all", "subset")
        }
        brows = hull_mask(points[17:], rgb.shape) & ~hull_mask(points[27:], rgb.shape)
        assert regions["inner"][brows].mean() > 0.3 and not regions["subset"][brows].any()  # no brows ...
        assert regions["all"].sum() > 1.3 * regions["inner"].sum() > 1.3 * regions["subset"].sum()
        clipped = swaps.paste(rgb, points, donor, donor_points, swaps.SwapDraw(0.0, mask="all"), SINGLE)[
            1
        ]  # ... and the hull: inner clips the jaw's mask to 17-67
        assert not (clipped & ~hull_mask(points[17:], rgb.shape)).any()


def test_erosion_shrinks_the_region(portraits):
    for (*_, whole), (*_, eroded) in zip(
        pasted(portraits, erosion=0.0), pasted(portraits, erosion=0.08), strict=True
    ):
        assert not (eroded & ~whole).any() and eroded.sum() < 0.8 * whole.sum()


def test_a_donor_scaled_below_one_is_softer_than_one_scaled_above(portraits):
    for rgb, points, donor, donor_points in heads(portraits):
        energy = {}
        for scale in (0.5, 1.6):
            drawn = swaps.SwapDraw(0.0, color="none", scale=scale, erosion=0.03)
            fake, region = swaps.paste(rgb, points, donor, donor_points, drawn, SwapParams())
            energy[scale] = laplacian_variance(fake, shrink(region, 2))
        assert energy[0.5] < 0.7 * energy[1.6]
    photo, landmarks = portraits[0]
    resized, moved = swaps.rescaled(photo, landmarks, 2 * alignment.face_size(landmarks))
    assert resized.shape[:2] == (2 * photo.shape[0], 2 * photo.shape[1])
    assert alignment.face_size(moved) == pytest.approx(2 * alignment.face_size(landmarks))


def test_colour_corrections_bring_the_donor_to_the_heads_colours(portraits):
    for rgb, points, donor, donor_points in heads(portraits):
        matrix = alignment.umeyama(donor_points[17:], points[17:])
        warped = cv2.warpAffine(donor, matrix, rgb.shape[1::-1], flags=cv2.INTER_LINEAR)
        distance = {}
        for color in ("none", "reinhard", "histogram", "lowfreq"):
            fake, region = swaps.paste(
                rgb, points, donor, donor_points, swaps.SwapDraw(0.0, color=color), SwapParams()
            )
            inside = shrink(region, 3)
            grey = [
                cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[inside].astype(np.float64) for x in (fake, warped, rgb)
            ]
            assert (
                np.corrcoef(grey[0], grey[1])[0, 1] > np.corrcoef(grey[0], grey[2])[0, 1] + 0.1
            )  # donor's face
            distance[color] = np.linalg.norm(mean_lab(fake, region) - mean_lab(rgb, region))
        assert distance["none"] > 8  # the donor's colours
        assert max(distance["reinhard"], distance["histogram"], distance["lowfreq"]) < 4, distance


def test_histogram_matching_gives_the_heads_histogram():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 120, (40, 40, 3), dtype=np.uint8)
    target = rng.integers(100, 256, (40, 40, 3), dtype=np.uint8)
    where = np.zeros((40, 40), bool)
    where[5:35, 5:35] = True
    matched = swaps.COLOR["histogram"](source, target, where, 1.0)
    for c in range(3):
        assert np.quantile(matched[..., c][where], [0.1, 0.5, 0.9]) == pytest.approx(
            np.quantile(target[..., c][where], [0.1, 0.5, 0.9]), abs=3
        )


def test_alignments_fit_the_donors_landmarks_onto_the_heads(portraits):
    (rgb, points), (donor, donor_points) = portraits
    fits = {align: swaps.fit(donor_points, points, align) for align in ("inner", "all", "affine")}
    residual = {
        align: np.linalg.norm(alignment.transform(donor_points[17:], m) - points[17:], axis=1).mean()
        for align, m in fits.items()
    }
    assert residual["affine"] <= residual["inner"] <= residual["all"] + 1e-9
    assert not np.allclose(fits["inner"], fits["all"]) and not np.allclose(fits["inner"], fits["affine"])
    shear = np.array([[1.2, 0.3, 5.0], [-0.1, 0.8, -7.0]])
    np.testing.assert_allclose(
        alignment.affine_fit(points, alignment.transform(points, shear)), shear, atol=1e-9
    )
    with pytest.raises(ValueError, match="collinear"):
        alignment.affine_fit(np.c_[np.arange(5.0), np.arange(5.0)], np.zeros((5, 2)))


def test_interpolations_differ_and_nearest_copies_donor_pixels(portraits):
    (rgb, points), (donor, donor_points) = portraits
    fakes = {}
    for interpolation in ("nearest", "linear", "cubic", "area"):
        drawn = swaps.SwapDraw(0.0, color="none", interpolation=interpolation, scale=1.6)
        fakes[interpolation], region = swaps.paste(rgb, points, donor, donor_points, drawn, SwapParams())
    assert len({f.tobytes() for f in fakes.values()}) == 4
    drawn = swaps.SwapDraw(0.0, color="none", interpolation="nearest")  # the donor photo as it is
    copied, pasted_region = swaps.paste(rgb, points, donor, donor_points, drawn, SwapParams())
    donor_colours = {tuple(c) for c in donor.reshape(-1, 3)}
    assert all(tuple(c) in donor_colours for c in copied[pasted_region])
    inside = shrink(region, 2)
    assert laplacian_variance(fakes["area"], inside) < laplacian_variance(fakes["nearest"], inside)


def test_draws_follow_the_seed_and_the_lists(portraits):
    params = SwapParams()
    drawn = [swaps.draw(np.random.default_rng(seed), params) for seed in range(40)]
    assert drawn[0] == swaps.draw(np.random.default_rng(0), params)
    for axis in ("color", "align", "interpolation", "mask"):
        assert {getattr(d, axis) for d in drawn} == set(getattr(params, axis))
    assert all(0.8 <= d.scale <= 1.25 and 0 <= d.erosion <= 0.05 for d in drawn)
    single = swaps.draw(np.random.default_rng(3), SINGLE)
    first = np.random.default_rng(3).uniform(
        *SINGLE.feather
    )  # the feather first, as earlier versions drew it
    assert single == swaps.SwapDraw(first, "reinhard", "inner", "linear", "inner", 0.0, None)
    doc = json.loads(drawn[0].to_json())
    assert list(doc) == sorted(doc) and doc["color"] == drawn[0].color
    (rgb, points), (donor, donor_points) = portraits
    made = [
        swaps.swap(rgb, points, donor, donor_points, rng=np.random.default_rng(s), params=params)[0]
        for s in (7, 7, 8)
    ]
    np.testing.assert_array_equal(made[0], made[1])
    assert not np.array_equal(made[0], made[2])

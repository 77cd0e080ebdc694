"""Assertions that several test modules share."""

from __future__ import annotations

import numpy as np


def assert_a_fake_of_the_face(rgb, points, fake, region):
    """``fake`` differs from ``rgb`` inside ``region`` only, and ``region`` is a face-sized area
    holding the face's centre."""
    assert fake.shape == rgb.shape and fake.dtype == np.uint8
    assert region.shape == rgb.shape[:2] and region.dtype == bool
    np.testing.assert_array_equal(fake[~region], rgb[~region])
    assert (fake[region] != rgb[region]).any()
    assert 0.005 < region.mean() < 0.2
    centre = np.round(points[17:].mean(0)).astype(int)
    assert region[centre[1], centre[0]]

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceswap_ela import alignment


def similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def face_like(rng: np.random.Generator) -> np.ndarray:
    """A rough 68-point face: jaw, brows, nose, eyes and mouth where they belong, plus noise."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.c_[0.5 - 0.5 * np.cos(t), 0.3 + 0.7 * np.sin(t)]
    brows = np.c_[np.linspace(0.1, 0.9, 10), np.full(10, 0.2)]
    nose = np.c_[np.full(9, 0.5), np.linspace(0.35, 0.6, 9)]
    eye_a = np.c_[
        0.3 + 0.08 * np.cos(np.linspace(0, 2 * np.pi, 7)[:6]), 0.32 + 0.03 * np.sin(np.linspace(0, 6, 6))
    ]
    eye_b = eye_a + [0.4, 0.0]
    mouth = np.c_[
        0.5 + 0.2 * np.cos(np.linspace(0, 2 * np.pi, 21)[:20]), 0.78 + 0.08 * np.sin(np.linspace(0, 6, 20))
    ]
    points = np.vstack([jaw, brows, nose, eye_a, eye_b, mouth])
    assert points.shape == (68, 2)
    return points * 200 + rng.normal(0, 2.0, points.shape)


@settings(max_examples=60, deadline=None)
@given(
    scale=st.floats(0.05, 20),
    angle=st.floats(-np.pi + 1e-3, np.pi - 1e-3),
    shift=st.tuples(st.floats(-1000, 1000), st.floats(-1000, 1000)),
    seed=st.integers(0, 2**32 - 1),
)
def test_umeyama_recovers_a_known_similarity(scale, angle, shift, seed):
    src = np.random.default_rng(seed).uniform(-100, 100, (51, 2))
    truth = similarity(scale, angle, shift)
    fitted = alignment.umeyama(src, alignment.transform(src, truth))
    np.testing.assert_allclose(fitted, truth, atol=1e-6 * max(1.0, scale, *map(abs, shift)))
    got_scale, got_angle, _ = alignment.similarity_parts(fitted)
    assert got_scale == pytest.approx(scale, rel=1e-9)
    assert np.cos(got_angle - angle) == pytest.approx(1.0, abs=1e-9)


def test_umeyama_never_reflects():
    rng = np.random.default_rng(1)
    src = rng.uniform(-50, 50, (51, 2))
    mirrored = src * [-1, 1] + rng.normal(0, 0.5, src.shape)
    fitted = alignment.umeyama(src, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0
    # the best proper rotation is worse than the (forbidden) reflection, but still a least-squares optimum
    residual = np.linalg.norm(alignment.transform(src, fitted) - mirrored)
    for angle in np.linspace(-np.pi, np.pi, 73):
        for scale in (0.01, 0.1, 0.5, 1.0):
            other = similarity(scale, angle, (0, 0))
            other[:, 2] = mirrored.mean(0) - alignment.transform(src.mean(0, keepdims=True), other)[0]
            assert residual <= np.linalg.norm(alignment.transform(src, other) - mirrored) + 1e-9


def closed_form(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Umeyama (1991) written out, as the project computed it before calling scikit-image."""
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    u, d, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = (u * sign) @ vt
    scale = float((d * sign).sum() / ((src_c**2).sum() / len(src))) if estimate_scale else 1.0
    return np.column_stack([scale * rot, mu_dst - scale * rot @ mu_src])


@pytest.mark.parametrize("estimate_scale", [True, False])
@pytest.mark.parametrize("mirror", [1, -1])
def test_umeyama_agrees_with_the_closed_form(estimate_scale, mirror):
    rng = np.random.default_rng(3)
    for _ in range(50):
        src = rng.uniform(-100, 100, (51, 2))
        dst = alignment.transform(
            src * [mirror, 1], similarity(rng.uniform(0.1, 5), rng.uniform(-3, 3), (4, -7))
        )
        dst += rng.normal(0, 1.0, dst.shape)
        expected = closed_form(src, dst, estimate_scale)
        np.testing.assert_allclose(
            alignment.umeyama(src, dst, estimate_scale=estimate_scale), expected, atol=1e-9
        )


def test_umeyama_refuses_bad_input():
    with pytest.raises(ValueError):
        alignment.umeyama(np.ones((10, 2)), np.random.default_rng(0).random((10, 2)))
    with pytest.raises(ValueError):
        alignment.umeyama(np.full((10, 2), np.nan), np.ones((10, 2)))
    with pytest.raises(ValueError):
        alignment.umeyama(np.ones((10, 2)), np.ones((9, 2)))


def test_template_is_upright_unit_square_and_invariant_to_similarities():
    rng = np.random.default_rng(7)
    base = face_like(rng)
    faces = [base + rng.normal(0, 3, base.shape) for _ in range(12)]
    template = alignment.procrustes_template(faces)
    assert template.shape == (51, 2)
    np.testing.assert_allclose(template.min(axis=0), [0, 0], atol=1e-12)
    np.testing.assert_allclose(template.max(axis=0), [1, 1], atol=1e-12)
    eye_a, eye_b = template[36 - 17 : 42 - 17].mean(0), template[42 - 17 : 48 - 17].mean(0)
    assert eye_a[1] == pytest.approx(eye_b[1], abs=1e-9) and eye_a[0] < eye_b[0]
    assert template[48 - 17 :, 1].mean() > eye_a[1]  # mouth below the eyes
    moved = []
    for face in faces:
        matrix = similarity(rng.uniform(0.2, 5), rng.uniform(-np.pi, np.pi), tuple(rng.uniform(-500, 500, 2)))
        moved.append(alignment.transform(face, matrix))
    np.testing.assert_allclose(alignment.procrustes_template(moved[::-1]), template, atol=1e-7)
    # 51-point input, and unusable sets are ignored
    inner = [face[17:] for face in faces] + [np.full((68, 2), np.nan), np.zeros((68, 2))]
    np.testing.assert_allclose(alignment.procrustes_template(inner), template, atol=1e-7)
    with pytest.raises(ValueError):
        alignment.procrustes_template([np.full((68, 2), np.nan)])


def test_template_fits_faces_well():
    rng = np.random.default_rng(3)
    faces = [face_like(rng) for _ in range(8)]
    template = alignment.procrustes_template(faces)
    for face in faces:
        matrix = alignment.umeyama(face[17:], template)
        error = np.abs(alignment.transform(face[17:], matrix) - template).max()
        assert error < 0.1


def test_check_landmarks_reasons():
    rng = np.random.default_rng(0)
    face = face_like(rng) + 100
    shape = (600, 500, 3)
    assert alignment.check_landmarks(face, shape) is None
    assert alignment.check_landmarks(None, shape) == "no landmarks"
    bad = face.copy()
    bad[30] = np.nan
    assert alignment.check_landmarks(bad, shape) == "landmarks not finite"
    bad = face.copy()
    bad[0] = np.nan  # the jaw is not used
    assert alignment.check_landmarks(bad, shape) is None
    assert alignment.check_landmarks(face + 1000, shape).startswith("landmarks outside the image")
    assert alignment.check_landmarks(face - 2, shape) is None or face.min() > 2
    line = face.copy()
    line[:, 1] = 2 * line[:, 0] + 3  # collinear
    assert alignment.check_landmarks(line, (2000, 2000)).startswith("degenerate landmarks")
    assert alignment.check_landmarks(np.full((68, 2), 50.0), shape).startswith("degenerate landmarks")
    assert alignment.check_landmarks(np.ones((5, 2)), shape).startswith("bad landmarks")


def test_landmarks_from_table_round_trip():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (3, 68, 2))
    frame = pd.DataFrame(points.reshape(3, -1), columns=alignment.landmark_columns())
    np.testing.assert_array_equal(alignment.landmarks_from_table(frame), points)
    frame = frame.astype(object)
    frame.loc[1, "x05"] = ""
    assert np.isnan(alignment.landmarks_from_table(frame)[1, 5, 0])
    with pytest.raises(ValueError, match="lacks columns"):
        alignment.landmarks_from_table(frame.drop(columns=["y67"]))

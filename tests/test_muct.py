"""MUCT access (names, landmark files, the MUCT <-> dlib correspondence) and the MUCT-layout test
data of tests/helpers/sample_data.py."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from PIL import Image

from faceswap_ela import muct
from faceswap_ela import params as P
from tests.helpers.sample_data import HOSTILE_KINDS, build_hostile_archive, dlib_shapes, face_detector


def test_archive_names_match_the_default_params():
    assert P.DataParams().archives == muct.ARCHIVES
    assert muct.camera_archive("c") == "muct-c-jpg-v1.tar.gz"
    with pytest.raises(ValueError, match="camera"):
        muct.camera_archive("f")
    assert P.DataParams().muct_url == muct.MUCT_URL


@pytest.mark.parametrize("base", ["http://h/x", "http://h/x/"])
def test_archive_url(base):
    assert muct.archive_url(base, "muct-a-jpg-v1.tar.gz") == "http://h/x/muct-a-jpg-v1.tar.gz"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("i000qa-fn", "000"),
        ("i123sb-mg.jpg", "123"),
        ("jpg/i042re-fn.jpg", "042"),
        ("ir000qa-fn", None),  # a mirrored row, not a photo
        ("100032540_1.jpg", None),
    ],
)
def test_subject(name, expected):
    assert muct.subject(name) == expected


def _csv_text(n_points: int, rows: list[list[object]]) -> str:
    header = ["name", "tag"] + [f"{a}{i:02d}" for i in range(n_points) for a in "xy"]
    return "\n".join(",".join(str(v) for v in row) for row in [header, *rows]) + "\n"


@pytest.mark.parametrize("n_points", [76, 68])
def test_read_landmarks_csv(n_points, tmp_path):
    values = np.arange(1, 2 * n_points + 1, dtype=float).reshape(n_points, 2) + 0.5
    values[5] = 0  # not visible
    path = tmp_path / "muct76-opencv.csv"
    path.write_text(
        _csv_text(
            n_points,
            [
                ["i000qa-fn", "0000", *values.ravel()],
                ["i001qa-mn", "0", *np.ones(2 * n_points)],
                ["ir000qa-fn", "0000", *np.zeros(2 * n_points)],
            ],
        )
    )
    shapes = muct.read_landmarks_csv(path)
    assert sorted(shapes) == ["i000qa-fn", "i001qa-mn"]
    shape = shapes["i000qa-fn"]
    assert shape.shape == (n_points, 2)
    assert np.isnan(shape[5]).all() and not np.isnan(np.delete(shape, 5, axis=0)).any()
    np.testing.assert_array_equal(np.delete(shape, 5, axis=0), np.delete(values, 5, axis=0))


def test_read_landmarks_csv_rejects_bad_files(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not a MUCT landmark CSV"):
        muct.read_landmarks_csv(path)
    path.write_text(_csv_text(76, [["i000qa-fn", "0", 1, 2]]))
    with pytest.raises(ValueError, match=r"x\.csv:2: 4 fields, expected 154"):
        muct.read_landmarks_csv(path)
    path.write_text(_csv_text(2, [["i000qa-fn", "0", 1, 2, "oops", 4]]))
    with pytest.raises(ValueError, match=r"x\.csv:2"):
        muct.read_landmarks_csv(path)


def test_pts_round_trip(tmp_path):
    points = np.random.default_rng(0).uniform(0, 500, (68, 2)).round(3)
    path = tmp_path / "a.pts"
    muct.write_pts(path, points)
    text = path.read_text()
    assert text.startswith("version: 1\nn_points: 68\n{\n") and text.endswith("}\n")
    np.testing.assert_allclose(muct.read_pts(path), points)


def test_read_pts_rejects_bad_files(tmp_path):
    path = tmp_path / "a.pts"
    muct.write_pts(path, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="holds 5 points"):
        muct.read_pts(path)
    path.write_text("version: 1\nn_points: 68\n{\n1 2 3\n}\n")
    with pytest.raises(ValueError, match="holds 1.5 points"):
        muct.read_pts(path)
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a .pts file"):
        muct.read_pts(path)


def test_read_pts_on_helen(shared_datasets):
    pts = sorted((shared_datasets / "helen-train").glob("*.pts"))[:3]
    if not pts:
        pytest.skip("no .pts files in helen-train")
    for path in pts:
        points = muct.read_pts(path)
        assert points.shape == (68, 2) and np.isfinite(points).all()


def test_key_points_follow_the_table():
    dlib68 = np.arange(136, dtype=float).reshape(68, 2)
    keys = muct.dlib_key_points(dlib68)
    np.testing.assert_allclose(keys[0], dlib68[36:42].mean(axis=0))
    np.testing.assert_allclose(keys[1], dlib68[42:48].mean(axis=0))
    np.testing.assert_allclose(keys[2:], dlib68[[30, 48, 54]])
    shape = muct.muct_from_dlib(dlib68)
    assert shape.shape == (76, 2)
    assert sorted(np.flatnonzero(~np.isnan(shape[:, 0]))) == [31, 36, 48, 54, 67]
    np.testing.assert_allclose(muct.key_points("muct76", shape), keys)
    np.testing.assert_allclose(muct.key_points("ibug68", dlib68), keys)
    with pytest.raises(ValueError, match="unknown landmark scheme"):
        muct.key_points("other", dlib68)
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        muct.dlib_key_points(np.zeros((5, 2)))


def test_mirror_muct_swaps_left_and_right():
    shape = np.full((76, 2), np.nan)
    points = {31: (100, 50), 36: (200, 52), 48: (120, 150), 54: (180, 151), 67: (150, 100)}
    for index, point in points.items():
        shape[index] = point
    mirrored = muct.mirror_muct(shape, width=480)
    np.testing.assert_allclose(mirrored[31], (479 - 200, 52))
    np.testing.assert_allclose(mirrored[36], (479 - 100, 50))
    np.testing.assert_allclose(mirrored[48], (479 - 180, 151))
    np.testing.assert_allclose(mirrored[67], (479 - 150, 100))
    assert np.isnan(mirrored[0]).all()


def test_correspondence_on_real_muct_photos(shared_datasets, tmp_path):
    """dlib's points and MUCT's manual ones agree through MUCT_TO_DLIB: within a few pixels on
    the sample, where a swapped eye or mouth corner would be ~90 px off."""
    sample = shared_datasets / "muct-sample"
    if not (sample / muct.LANDMARKS_ARCHIVE).is_file() or not (sample / muct.camera_archive("a")).is_file():
        pytest.skip(f"{sample} lacks the archives")
    for name in (muct.LANDMARKS_ARCHIVE, muct.camera_archive("a")):
        with tarfile.open(sample / name) as tar:
            tar.extractall(tmp_path, filter="data")
    shapes = muct.read_landmarks_csv(tmp_path / "muct-landmarks" / muct.LANDMARKS_CSV)
    photos = sorted((tmp_path / "jpg").glob("*.jpg"))[::4]
    assert photos
    for photo in photos:
        found = dlib_shapes(np.asarray(Image.open(photo).convert("RGB")))
        assert len(found) == 1, photo.name
        truth = muct.key_points("muct76", shapes[photo.stem])
        predicted = muct.dlib_key_points(found[0])
        errors = np.linalg.norm(truth - predicted, axis=1)
        assert errors.max() < 15, (photo.name, errors)
        assert truth[0, 0] < truth[1, 0] and truth[3, 0] < truth[4, 0]  # viewer's left first


# ---------------------------------------------------------------- tests/helpers/sample_data.py


def test_sample_photos_are_muct_like_with_one_detectable_face(muct_mirror):
    names = sorted(p.name for p in muct_mirror.photos)
    assert len(names) == 12
    assert names[:3] == ["i000qa-fn.jpg", "i000ra-fn.jpg", "i000sa-fn.jpg"]
    assert {muct.subject(n) for n in names} == {"000", "001", "002", "003"}
    for photo in muct_mirror.photos:
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        assert rgb.shape == (640, 480, 3)
        faces = face_detector()(rgb, 0)
        assert len(faces) == 1, photo.name
        assert faces[0].width() >= 150, (photo.name, faces[0].width())


def test_sample_photos_are_deterministic(muct_mirror, tmp_path):
    from tests.helpers.sample_data import write_muct_photos

    again = write_muct_photos(tmp_path, subjects=2, per_subject=2)
    originals = {p.name: p.read_bytes() for p in muct_mirror.photos}
    for photo in again:
        assert photo.read_bytes() == originals[photo.name]


def test_sample_landmark_csv(muct_mirror):
    text = muct_mirror.csv.read_text().splitlines()
    header = text[0].split(",")
    assert header[:4] == ["name", "tag", "x00", "y00"] and header[-1] == "y75" and len(header) == 154
    assert sum(line.startswith("ir") for line in text) == 12
    shapes = muct.read_landmarks_csv(muct_mirror.csv)
    assert sorted(shapes) == sorted(p.stem for p in muct_mirror.photos)
    for photo in muct_mirror.photos:
        keys = muct.key_points("muct76", shapes[photo.stem])
        assert np.isfinite(keys).all()
        assert (keys[:, 0] > 0).all() and (keys[:, 0] < 480).all() and (keys[:, 1] < 640).all()
        assert keys[0, 0] < keys[1, 0] and keys[3, 0] < keys[4, 0]
        assert keys[0, 1] < keys[2, 1] < keys[3, 1]  # eyes above the nose tip above the mouth


def test_sample_archives(muct_mirror):
    assert sorted(muct_mirror.archives) == [muct.camera_archive("a"), muct.LANDMARKS_ARCHIVE]
    with tarfile.open(muct_mirror.archives[muct.camera_archive("a")]) as tar:
        assert sorted(tar.getnames()) == sorted(f"jpg/{p.name}" for p in muct_mirror.photos)
        assert all(m.isfile() and m.mtime == 0 for m in tar.getmembers())
    with tarfile.open(muct_mirror.archives[muct.LANDMARKS_ARCHIVE]) as tar:
        assert tar.getnames() == ["muct-landmarks/muct76-opencv.csv"]


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_archive_kinds(kind, tmp_path):
    member = build_hostile_archive(tmp_path / "h.tar.gz", kind)
    with tarfile.open(tmp_path / "h.tar.gz") as tar:
        info = tar.getmember(member)
    check = {
        "dotdot": lambda m: m.name == "../evil" and m.isfile(),
        "absolute": lambda m: m.name == "/etc/x" and m.isfile(),
        "symlink": lambda m: m.issym(),
        "hardlink": lambda m: m.islnk(),
        "device": lambda m: m.ischr(),
        "fifo": lambda m: m.isfifo(),
    }[kind]
    assert check(info)
    with pytest.raises(ValueError, match="unknown hostile kind"):
        build_hostile_archive(tmp_path / "other.tar.gz", "zip-bomb")

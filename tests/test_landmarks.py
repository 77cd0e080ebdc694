import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceswap_ela import landmarks as L
from faceswap_ela.muct import read_pts

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "stages" / "landmarks.py"
GREY = 128


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def two_faces() -> np.ndarray:
    """Grace Hopper (face about 215 px wide) beside the astronaut's head enlarged 1.5x (face about
    130 px) on grey: 917 x 600, both faces big enough for the detector at max_side 640."""
    head = cv2.resize(astronaut()[20:290, 90:360], None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    right = np.full((600, head.shape[1], 3), GREY, np.uint8)
    right[: head.shape[0]] = head  # her head, without the mission patch that passes for a face
    return np.hstack([grace_hopper(), right])


def texture() -> np.ndarray:
    y, x = np.mgrid[0:480, 0:640]
    wave = 128 + 60 * np.sin(x / 7.0) * np.cos(y / 11.0)
    return np.dstack([wave, wave * 0.8, wave * 0.6]).astype(np.uint8)


@pytest.fixture(scope="module")
def models():
    return L.load_models()


def assert_inside(face: L.Face, margin: float = 0.25) -> None:
    left, top, right, bottom = face.box
    dx, dy = margin * (right - left), margin * (bottom - top)
    x, y = face.points[:, 0], face.points[:, 1]
    assert face.points.shape == (68, 2)
    assert (x >= left - dx).all() and (x <= right + dx).all()
    assert (y >= top - dy).all() and (y <= bottom + dy).all()


@pytest.mark.parametrize("make", [grace_hopper, astronaut])
def test_one_face_in_each_portrait(models, make):
    rgb = make()
    found = L.detect(rgb, *models, upsample=0, max_side=640)
    assert isinstance(found, L.Detection), found
    assert found.n_faces == 1
    assert_inside(found.face)
    # the eyes (36-47) lie above the mouth (48-67) in an upright portrait
    assert found.face.points[36:48, 1].mean() < found.face.points[48:68, 1].mean()


def test_max_side_maps_back_to_full_size_pixels(models):
    rgb = grace_hopper()
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    full = L.detect(big, *models, max_side=0)
    small = L.detect(big, *models, max_side=320)
    assert isinstance(full, L.Detection) and isinstance(small, L.Detection)
    width = full.face.box[2] - full.face.box[0]  # about 370 px
    distance = np.linalg.norm(full.face.points - small.face.points, axis=1)
    assert distance.mean() < 0.03 * width  # about 6 px here: a 320 px copy sees a 4x coarser face
    assert np.abs(np.subtract(full.face.box, small.face.box)).max() < 0.1 * width
    assert_inside(small.face)


def test_full_size_retry_when_the_shrunk_copy_shows_no_face(models):
    canvas = np.full((1600, 1600, 3), GREY, np.uint8)
    canvas[500:1100, 600:1112] = grace_hopper()  # at max_side 400 the face is 54 px: below HOG's 80
    assert L.detect(canvas, *models, max_side=400, retry_full_size=False) == L.NO_FACE
    found = L.detect(canvas, *models, max_side=400)
    assert isinstance(found, L.Detection)
    assert found.face.box == pytest.approx((761, 637, 976, 852), abs=5)  # (161, 137, 376, 352) moved
    assert_inside(found.face)


def test_shrink_keeps_small_photos_and_the_aspect_ratio():
    rgb = np.zeros((600, 400, 3), np.uint8)
    assert L.shrink(rgb, 0)[0] is rgb and L.shrink(rgb, 600)[0] is rgb
    small, sx, sy = L.shrink(rgb, 300)
    assert small.shape == (300, 200, 3) and sx == sy == 0.5


def test_multiple_faces_skip_or_largest(models):
    pair = two_faces()
    faces = L.detect_faces(pair, *models)
    assert len(faces) == 2 and faces[0].area > faces[1].area
    assert L.detect(pair, *models, multiple_faces="skip") == "2 faces"
    largest = L.detect(pair, *models, multiple_faces="largest")
    assert isinstance(largest, L.Detection) and largest.n_faces == 2
    assert largest.face.box[2] < 512  # Grace Hopper, on the left half
    assert_inside(largest.face)
    with pytest.raises(ValueError, match="multiple_faces"):
        L.detect(pair, *models, multiple_faces="all")


def test_no_face(models):
    assert L.detect(texture(), *models) == L.NO_FACE
    assert L.detect(np.full((50, 60, 3), GREY, np.uint8), *models, max_side=20) == L.NO_FACE
    assert L.detect_faces(texture(), *models) == []


def test_nme_known_cases():
    rng = np.random.default_rng(0)
    gt = rng.uniform(100, 300, (68, 2))
    gt[36], gt[45] = (100.0, 200.0), (200.0, 200.0)  # outer eye corners 100 px apart
    shifted = gt + [3.0, 4.0]  # every point 5 px off
    assert L.nme(shifted, gt, "ibug68") == pytest.approx(0.05)
    assert L.nme(gt, gt, "ibug68") == 0.0
    # muct76: pupils 31/36 are 50 px apart; dlib's eye centres are the means of 36-41 and 42-47
    muct = np.full((76, 2), np.nan)
    muct[[31, 36, 67, 48, 54]] = [(100, 100), (150, 100), (125, 130), (105, 150), (145, 150)]
    pred = np.zeros((68, 2))
    pred[36:42], pred[42:48] = (100, 100), (150, 100)
    pred[30], pred[48], pred[54] = (125, 130), (105, 150), (145, 160)  # right mouth corner 10 px low
    assert L.nme(pred, muct, "muct76") == pytest.approx(10 / 5 / 50)
    muct[54] = np.nan  # not visible: left out
    assert L.nme(pred, muct, "muct76") == pytest.approx(0.0)
    muct[31] = np.nan  # no pupil: no normalisation
    assert np.isnan(L.nme(pred, muct, "muct76"))
    with pytest.raises(ValueError, match="scheme"):
        L.nme(pred, gt, "muct77")


def test_parse_gt_and_summary():
    assert L.parse_gt("") is None
    points = L.parse_gt("[[1.5,2],null,[3,4]]")
    assert points.shape == (3, 2) and np.isnan(points[1]).all() and points[2, 1] == 4
    summary = L.nme_summary([0.01, 0.03, float("nan"), 0.02], "ibug68")
    assert summary["n"] == 3 and summary["median"] == 0.02
    assert "outer-eye" in summary["normalisation"]


def test_missing_model_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(L.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(L.LandmarkError, match="face_recognition_models is not installed"):
        L.predictor_path()


# ---------------------------------------------------------------- the stage end to end

GT_SHIFT = 2.0  # the hand-made ground truth: the portrait's own landmarks moved 2 px right


def write_dataset(folder: Path, models) -> pd.DataFrame:
    """data/raw/ with two portraits (with ibug68 ground truth: their own landmarks shifted), a
    texture, two faces, a truncated JPEG and a row the download stage already found unreadable,
    plus the manifest."""
    raw = folder / "data" / "raw"
    (raw / "photos").mkdir(parents=True)
    images = {"hopper_1": grace_hopper(), "astro_1": astronaut(), "wall_1": texture(), "pair_1": two_faces()}
    rows = []
    for name, rgb in images.items():
        # the astronaut stays PNG: as a JPEG, her mission patch passes for a second, small face
        path = f"photos/{name}.png" if name == "astro_1" else f"photos/{name}.jpg"
        Image.fromarray(rgb).save(raw / path, quality=95)
        gt_scheme, gt = "", ""
        if name in ("hopper_1", "astro_1"):
            found = L.detect(np.asarray(Image.open(raw / path).convert("RGB")), *models)
            gt_scheme, gt = "ibug68", json.dumps((found.face.points + [GT_SHIFT, 0]).tolist())
        rows.append((name, name.split("_")[0], path, "", gt_scheme, gt))
    whole = (raw / "photos" / "hopper_1.jpg").read_bytes()
    (raw / "photos" / "cut_1.jpg").write_bytes(whole[: len(whole) // 3])
    rows.append(("cut_1", "cut", "photos/cut_1.jpg", "", "", ""))
    rows.append(("zero_1", "007", "photos/zero_1.jpg", "empty file (0 bytes)", "", ""))
    manifest = pd.DataFrame(rows, columns=["id", "group", "path", "error", "gt_scheme", "gt"])
    manifest.insert(3, "sha256", "")
    manifest.insert(4, "width", "")
    manifest.insert(5, "height", "")
    manifest = manifest.sort_values("id").reset_index(drop=True)
    manifest.to_csv(raw / "manifest.csv", index=False)
    return manifest


def run_stage(folder: Path, params: str) -> subprocess.CompletedProcess:
    (folder / "params.yaml").write_text(params)
    command = [sys.executable, str(STAGE)]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)


def test_stage_end_to_end(tmp_path, models):
    manifest = write_dataset(tmp_path, models)
    outputs = {}
    for workers in (1, 2):
        result = run_stage(tmp_path, f"landmarks:\n  workers: {workers}\n  max_side: 640\n")
        assert result.returncode == 0, result.stderr
        names = ("landmarks.csv", "landmark_rejects.csv")
        outputs[workers] = {name: (tmp_path / "data" / name).read_bytes() for name in names}
    assert outputs[1] == outputs[2]

    found = pd.read_csv(tmp_path / "data" / "landmarks.csv", dtype={"id": str, "group": str})
    rejects = pd.read_csv(tmp_path / "data" / "landmark_rejects.csv", dtype=str)
    assert list(found.columns) == L.LANDMARK_COLUMNS
    assert list(rejects.columns) == L.REJECT_COLUMNS
    # nothing lost, nothing twice, manifest order kept in each table
    assert sorted([*found["id"], *rejects["id"]]) == sorted(manifest["id"])
    assert list(found["id"]) == ["astro_1", "hopper_1"]
    reasons = dict(zip(rejects["id"], rejects["reason"], strict=True))
    assert reasons["wall_1"] == "no face"
    assert reasons["pair_1"] == "2 faces"
    assert reasons["zero_1"] == "unreadable: empty file (0 bytes)"
    assert reasons["cut_1"].startswith("unreadable: ")
    assert dict(zip(rejects["id"], rejects["group"], strict=True))["zero_1"] == "007"
    assert (found["n_faces"] == 1).all()
    # two decimals at most
    assert (found[L.POINT_COLUMNS].to_numpy() * 100 % 1 < 1e-6).all()
    assert_inside(L.Face(tuple(found.loc[0, L.BOX_COLUMNS]), L.points_of(found.loc[0])))

    metrics = json.loads((tmp_path / "metrics" / "landmarks.json").read_text())
    assert metrics["photos"] == 6 and metrics["workers"] == 2
    expected = {"ok": 2, "no_face": 1, "multiple_faces": 1, "unreadable": 2}
    assert {k: metrics[k] for k in L.OUTCOMES} == expected
    nme = metrics["nme_ibug68"]
    assert nme["n"] == 2 and "nme_muct76" not in metrics
    assert 0 < nme["median"] < 0.1  # the 2 px shift over eye corners about 100 / 40 px apart

    # with `largest`, the pair keeps Grace Hopper's face and reports both faces
    result = run_stage(tmp_path, "landmarks:\n  workers: 1\n  multiple_faces: largest\n")
    assert result.returncode == 0, result.stderr
    found = pd.read_csv(tmp_path / "data" / "landmarks.csv", dtype={"id": str})
    pair = found[found["id"] == "pair_1"].iloc[0]
    assert pair["n_faces"] == 2 and pair["box_right"] < 512


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ("landmarks:\n  multiple_faces: all\n", "landmarks.multiple_faces"),
        ("landmarks:\n  upsampel: 1\n", "landmarks.upsampel"),
        ("landmarks:\n  max_side: -5\n", "landmarks.max_side"),
    ],
)
def test_stage_rejects_bad_params_naming_the_key(tmp_path, params, key):
    result = run_stage(tmp_path, params)
    assert result.returncode != 0
    assert key in result.stderr
    assert not (tmp_path / "data" / "landmarks.csv").exists()


def test_stage_without_manifest_fails_clearly(tmp_path):
    result = run_stage(tmp_path, "landmarks:\n  workers: 1\n")
    assert result.returncode == 1
    assert "manifest.csv not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "metrics").exists()


# ---------------------------------------------------------------- real ground truth


def test_helen_subset_accuracy(shared_datasets):
    folder = shared_datasets / "helen-train"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing")
    photos = sorted(folder.glob("*.jpg"))[::18][:40]  # spread over the set
    rows = [
        {
            "id": p.stem,
            "group": p.stem.split("_")[0],
            "path": p.name,
            "error": "",
            "gt_scheme": "ibug68",
            "gt": json.dumps(read_pts(p.with_suffix(".pts")).tolist()),
        }
        for p in photos
    ]
    located = L.locate(pd.DataFrame(rows), folder, max_side=640, workers=0, progress=False)
    m = located.metrics
    assert m["photos"] == 40 and m["ok"] >= 39, located.rejects
    assert m["nme_ibug68"]["n"] == m["ok"]
    assert m["nme_ibug68"]["median"] <= 0.05

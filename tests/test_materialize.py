"""The materialize and ela stages: renderings of each photo, bad inputs, determinism, and the
stage scripts run as subprocesses in a folder built from the two sample portraits."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from faceswap_ela import alignment, batches, crop_index, donors, ela, materialize, roi
from faceswap_ela.images import load_rgb
from faceswap_ela.params import Params
from tests.helpers.sample_data import default_params, dlib_shapes, portrait, small_disk

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = 4
# photo id -> (split, expected skip reason prefix or None)
BAD = {
    "bad_nan": ("train", "landmarks not finite"),
    "bad_outside": ("test", "landmarks outside the image"),
    "bad_line": ("test", "degenerate landmarks"),
    "bad_tiny": ("test", "empty crop"),
    "bad_corrupt": ("train", "unreadable image"),
    "bad_missing": ("test", "no landmarks"),
}


def similarity(scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), shift[0]], [scale * np.sin(a), scale * np.cos(a), shift[1]]]
    )


def build_photos() -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Four renderings of each portrait (moved, scaled, turned; landmarks moved with them) and
    the bad cases, as id -> (rgb, landmarks)."""
    photos = {}
    for name in ("astronaut", "grace_hopper"):
        rgb = portrait(name)
        shapes = dlib_shapes(rgb)
        assert len(shapes) == 1
        points = shapes[0]
        moves = [(1.0, 0.0, (0, 0)), (0.8, 6.0, (40, 10)), (1.1, -5.0, (-30, -20)), (0.9, 2.0, (15, -5))]
        for i, (scale, degrees, shift) in enumerate(moves):
            matrix = similarity(scale, degrees, shift)
            moved = cv2.warpAffine(
                rgb, matrix, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REFLECT_101
            )
            photos[f"{name[:5]}_{i}"] = (moved, alignment.transform(points, matrix))
    rgb, points = photos["astro_0"]
    nan = points.copy()
    nan[40] = np.nan
    line = points.copy()
    line[:, 1] = 0.5 * line[:, 0] + 10
    tiny = (points - points[17:].min(0)) * (3.0 / np.ptp(points[17:], axis=0).max()) + 100
    photos.update(
        bad_nan=(rgb, nan), bad_outside=(rgb, points + 5000), bad_line=(rgb, line), bad_tiny=(rgb, tiny),
        bad_corrupt=(rgb, points), bad_missing=(rgb, None),
    )  # fmt: skip
    return photos


def write_workspace(folder: Path, photos: dict, **changes: dict) -> None:
    """params.yaml, data/raw/, data/landmarks.csv and data/split.csv for the stages."""
    raw = folder / "data" / "raw"
    raw.mkdir(parents=True)
    landmark_rows, split_rows = [], []
    for photo_id, (rgb, points) in photos.items():
        path = raw / f"{photo_id}.jpg"
        ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        path.write_bytes(data.tobytes()[: 600 if photo_id == "bad_corrupt" else None])
        group = photo_id.rsplit("_", 1)[0] if not photo_id.startswith("bad") else photo_id
        split = BAD[photo_id][0] if photo_id in BAD else ("test" if photo_id.endswith("_3") else "train")
        split_rows.append({"id": photo_id, "group": group, "split": split})
        if points is None:
            continue
        row = {"id": photo_id, "group": group, "path": path.name, "n_faces": 1}
        row.update(box_left=0, box_top=0, box_right=1, box_bottom=1)
        row.update(dict(zip(alignment.landmark_columns(), points.ravel(), strict=True)))
        landmark_rows.append(row)
    pd.DataFrame(landmark_rows).to_csv(folder / "data" / "landmarks.csv", index=False)
    pd.DataFrame(split_rows).to_csv(folder / "data" / "split.csv", index=False)
    params = default_params()
    params["materialize"].update(variants=VARIANTS, workers=2)
    params["ela"]["workers"] = 2
    for section, values in changes.items():
        for key, value in values.items():  # a section within a section is updated key by key too
            nested = isinstance(value, dict) and isinstance(params[section].get(key), dict)
            params[section][key] = params[section][key] | value if nested else value
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(name: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{name}.py")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tree_bytes(folder: Path, parts: list[str]) -> dict[str, bytes]:
    out = {}
    for part in parts:
        path = folder / part
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out.update({str(p.relative_to(folder)): p.read_bytes() for p in files})
    return out


@pytest.fixture(scope="module")
def photos():
    return build_photos()


@pytest.fixture(scope="module")
def pipeline(photos, tmp_path_factory):
    """The folder after materialize and ela ran with 2 workers."""
    folder = tmp_path_factory.mktemp("stages") / "run"
    write_workspace(folder, photos)
    for stage in ("materialize", "ela"):
        result = run_stage(stage, folder)
        assert result.returncode == 0, result.stderr[-3000:]
    return folder


OUTPUTS = ["data/template.json", "data/crops", "data/ela", "metrics/materialize.json", "plots/gallery.png"]


EXTRA_SETS = ["test_matched", "test_jpeg100", "test_jpeg95", "test_jpeg90", "test_jpeg80", "test_jpeg70"]
# params.yaml: train.fakes [warp, blend], testsets.forgers [blend, swap] and unseen_swap set
FORGER_SETS = ["train_blend", "test_blend", "test_swap", "test_swap_unseen"]


def test_materialize_outputs(pipeline, photos):
    index = pd.read_csv(pipeline / "data/crops/index.csv", dtype={"reason": str, "path": str, "mask": str})
    assert list(index.columns) == [
        "crop_id", "photo_id", "group", "split", "label", "variant", "status", "reason", "path",
        "forger", "donor", "quality", "scale", "mask", "roi_x1", "roi_y1", "roi_x2", "roi_y2", "augment",
        "blur_sigma", "piece_path", "piece_x1", "piece_y1", "pair", "swap",
    ]  # fmt: skip
    assert list(dict.fromkeys(index["split"]))[2:] == [*FORGER_SETS, *EXTRA_SETS]
    index = index[index["split"].isin(["train", "test"])]
    assert list(index["crop_id"]) == sorted(index["crop_id"])
    assert index["blur_sigma"].isna().all()  # augment.real_blur is 0 by default
    assert len(index) == len(photos) * VARIANTS
    for photo_id, rows in index.groupby("photo_id"):
        assert sorted(rows["variant"]) == list(range(VARIANTS))
        assert sorted(rows["label"]) == [0, 0, 1, 1]  # each photo gives both classes
        if photo_id in BAD:
            assert (rows["status"] == "skipped").all()
            assert rows["reason"].str.startswith(BAD[photo_id][1]).all(), rows["reason"].iloc[0]
            assert rows["path"].isna().all()
            continue
        assert (rows["status"] == "ok").all() and rows["reason"].isna().all()
        rgb = photos[photo_id][0]
        for row in rows.itertuples():
            crop = load_rgb(pipeline / "data/crops" / row.path)
            assert row.path == f"{row.split}/{row.crop_id}.png" and crop.shape == (128, 128, 3)
            assert 0 <= row.roi_x1 < row.roi_x2 < rgb.shape[1] and 0 <= row.roi_y1 < row.roi_y2 < rgb.shape[0]
            values = json.loads(row.augment)
            if row.split == "train":
                assert set(values) == {
                    "rotation",
                    "scale",
                    "flip",
                    "tx",
                    "ty",
                    "brightness",
                    "contrast",
                    "color",
                    "sharpness",
                }
            else:
                assert values == {}
            if row.label == 1:
                assert 64 <= row.scale <= 127 and row.mask in ("square", "hull") and row.forger == "warp"
            else:
                assert pd.isna(row.scale) and pd.isna(row.mask) and pd.isna(row.forger)
            assert pd.isna(row.quality) and pd.isna(row.piece_path)  # fakes.jpeg is off, ela.at crop
    metrics = json.loads((pipeline / "metrics/materialize.json").read_text())
    ok = index[index["status"] == "ok"]
    assert metrics["crops"] == len(ok) == 8 * VARIANTS
    assert metrics["counts"] == {"train": {"real": 12, "fake": 12}, "test": {"real": 4, "fake": 4}}
    assert (
        metrics["skipped"] == len(BAD) * VARIANTS
        and sum(metrics["skipped_by_reason"].values()) == metrics["skipped"]
    )
    assert metrics["photos"] == len(photos) and metrics["photos_per_s"] > 0
    template = json.loads((pipeline / "data/template.json").read_text())
    points = np.array(template["points"])
    assert points.shape == (51, 2) and points.min() == 0 and points.max() == 1
    assert not list((pipeline / "data").glob(".*tmp")) and not list((pipeline / "metrics").glob(".*tmp"))


def test_fakes_differ_from_the_reals_inside_the_face(pipeline):
    index = pd.read_csv(pipeline / "data/crops/index.csv")
    test = index[(index["split"] == "test") & (index["status"] == "ok")]
    sharpness = {0: [], 1: []}
    for row in test.itertuples():
        grey = cv2.cvtColor(load_rgb(pipeline / "data/crops" / row.path), cv2.COLOR_RGB2GRAY)
        sharpness[row.label].append(cv2.Laplacian(grey[40:88, 40:88].astype(float), cv2.CV_64F).var())
    assert np.mean(sharpness[1]) < 0.8 * np.mean(sharpness[0])


def _sharpness(rgb: np.ndarray) -> float:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(float)
    return float(cv2.Laplacian(grey[32:96, 32:96], cv2.CV_64F).var())


def test_extra_sets(pipeline):
    index = pd.read_csv(pipeline / "data/crops/index.csv", dtype={"path": str})
    test = index[(index["split"] == "test") & (index["status"] == "ok")].reset_index(drop=True)
    metrics = json.loads((pipeline / "metrics/materialize.json").read_text())
    assert sorted(metrics["extra_sets"]) == sorted(FORGER_SETS + EXTRA_SETS)
    errors = {}
    for name in EXTRA_SETS:
        rows = index[index["split"] == name].reset_index(drop=True)
        assert metrics["extra_sets"][name] == metrics["counts"]["test"]
        assert list(rows["crop_id"]) == list(test["crop_id"]) and list(rows["label"]) == list(test["label"])
        assert (rows["path"] == name + "/" + rows["crop_id"] + ".png").all()
        diffs = []
        for row, base in zip(rows.itertuples(), test.itertuples(), strict=True):
            crop = load_rgb(pipeline / "data/crops" / row.path)
            original = load_rgb(pipeline / "data/crops" / base.path)
            assert crop.shape == original.shape == (128, 128, 3)
            if name == "test_matched":
                if row.label == 1:  # fakes are left as they are
                    np.testing.assert_array_equal(crop, original)
                    assert pd.isna(row.blur_sigma)
                else:  # reals are blurred, by the softness of a fake of that rendering
                    assert 0.3 < row.blur_sigma < 5
                    assert _sharpness(crop) < 0.8 * _sharpness(original)
            else:
                diffs.append(np.abs(crop.astype(int) - original).mean())
        errors[name] = np.mean(diffs) if diffs else None
    assert 0 < errors["test_jpeg100"] < errors["test_jpeg90"] < errors["test_jpeg70"] < 10, errors


def test_real_blur_augmentation_blurs_a_seeded_share_of_train_reals(photos, tmp_path):
    folder = tmp_path / "blur"
    write_workspace(
        folder, photos, augment={"real_blur": 0.5}, train={"fakes": ["warp"]},
        testsets={"forgers": [], "unseen_swap": None, "matched_blur": False, "jpeg_qualities": []},
    )  # fmt: skip
    assert run_stage("materialize", folder).returncode == 0
    index = pd.read_csv(folder / "data/crops/index.csv")
    assert set(index["split"]) == {"train", "test"}
    train = index[(index["split"] == "train") & (index["status"] == "ok")]
    blurred = train["blur_sigma"].notna()
    assert blurred.any() and not blurred.all()
    assert (train.loc[blurred, "label"] == 0).all()  # fakes are never blurred again
    metrics = json.loads((folder / "metrics/materialize.json").read_text())
    assert metrics["train_reals_blurred"] == int(blurred.sum()) and metrics["extra_sets"] == {}


def test_gallery_samples(pipeline):
    """Each test photo's first real, and its first fake by every test forger (same crop id), each
    crop equal to the one in its set's folder."""
    folder = pipeline / "data/crops/samples"
    samples = pd.read_csv(folder / "index.csv", dtype=str, keep_default_na=False)
    index = pd.read_csv(pipeline / "data/crops/index.csv", dtype=str, keep_default_na=False)
    index = index.set_index(["split", "crop_id"])
    # grace_3 has no swap: the only other test face, the astronaut's, is under half as large as hers
    assert list(samples["photo_id"]) == ["astro_3"] * 4 + ["grace_3"] * 3
    assert list(samples["set"]) == ["test", "test", "test_blend", "test_swap", "test", "test", "test_blend"]
    assert list(samples["forger"]) == ["", "warp", "blend", "swap", "", "warp", "blend"]
    assert list(samples["label"]) == ["0", "1", "1", "1", "0", "1", "1"]
    for photo in samples.groupby("photo_id"):
        assert photo[1]["crop_id"].iloc[1:].nunique() == 1  # one fake variant, by each forger
    assert ((samples["donor"] != "") == (samples["forger"] == "swap")).all()
    assert (samples["donor"] != samples["photo_id"]).all()
    for row in samples.itertuples():
        original = load_rgb(folder / row.original)
        rendered = load_rgb(folder / row.rendered)
        assert max(original.shape) <= 320 and original.shape == rendered.shape
        assert (original != rendered).any() == (row.label == "1")
        crop = load_rgb(folder / row.crop)
        indexed = index.loc[(row.set, row.crop_id)]
        assert (indexed["status"], indexed["forger"], indexed["donor"]) == ("ok", row.forger, row.donor)
        np.testing.assert_array_equal(crop, load_rgb(pipeline / "data/crops" / indexed["path"]))
    gallery = load_rgb(pipeline / "plots/gallery.png")
    assert gallery.shape[0] > 300 and gallery.shape[1] > 7 * 150


def test_ela_outputs(pipeline):
    p = Params.model_validate(yaml.safe_load((pipeline / "params.yaml").read_text()))
    index = pd.read_csv(pipeline / "data/crops/index.csv", dtype={"photo_id": str, "group": str})
    ok = index[index["status"] == "ok"]
    assert sorted(p.name for p in (pipeline / "data/ela").glob("*.csv")) == sorted(
        f"{name}.csv" for name in ("train_warp", "train_blend", "test", *FORGER_SETS[1:], *EXTRA_SETS)
    )
    for split in ("train_warp", "train_blend", "test", *FORGER_SETS[1:], *EXTRA_SETS):
        rows = ok[ok["split"] == split.removesuffix("_warp")].sort_values("crop_id", kind="stable")
        rows = rows.reset_index(drop=True)
        table = pd.read_csv(pipeline / f"data/ela/{split}.csv", dtype={"photo_id": str, "group": str})
        pd.testing.assert_frame_equal(table, rows[["crop_id", "photo_id", "group", "label"]])
        tensor = np.load(pipeline / f"data/ela/{split}_ela.npy")
        rgb = np.load(pipeline / f"data/ela/{split}_rgb.npy")
        assert tensor.shape == rgb.shape == (len(rows), 128, 128, 3) and tensor.dtype == np.uint8
        for i, path in enumerate(rows["path"]):
            crop = load_rgb(pipeline / "data/crops" / path)
            np.testing.assert_array_equal(rgb[i], crop)
            expected = ela.compute(crop, p.ela)
            np.testing.assert_array_equal(tensor[i], expected)
            assert tensor[i].max() == 255


def _tree_size(folder: Path) -> int:
    """What a tree takes on a tmpfs: whole 4 KiB pages per file and folder."""
    return sum(-(-p.stat().st_size // 4096) * 4096 if p.is_file() else 4096 for p in folder.rglob("*"))


def test_ela_on_a_full_disk_fails_in_one_line_not_by_sigbus(pipeline, tmp_path):
    """The ELA tensors are memory maps: on a sparse file a full disk kills the process with SIGBUS
    at the first write into a page it has no room for, leaving its temporaries. Allocated up front,
    they fail at once with ENOSPC, which the stage says in one line, leaving nothing."""
    needed = _tree_size(pipeline / "data/crops") + (256 << 10)
    assert _tree_size(pipeline / "data/ela") > 10 * (256 << 10)  # far more than is left
    with small_disk(tmp_path / "disk", needed >> 10) as disk:
        shutil.copy(pipeline / "params.yaml", disk / "params.yaml")
        shutil.copytree(pipeline / "data/crops", disk / "data/crops")
        result = run_stage("ela", disk)
        left = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if ".tmp" in p.name)
        outputs = [o for o in ("data/ela", "plots/gallery.png") if (disk / o).exists()]
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert "no space left on the disk writing data/ela" in line, line
    assert left == [] and outputs == []


def test_same_bytes_with_one_worker_and_across_runs(pipeline, photos, tmp_path):
    reference = tree_bytes(
        pipeline, [o for o in OUTPUTS if o not in ("metrics/materialize.json", "plots/gallery.png")]
    )
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        write_workspace(folder, photos, materialize={"workers": workers}, ela={"workers": workers})
        for stage in ("materialize", "ela"):
            result = run_stage(stage, folder)
            assert result.returncode == 0, result.stderr[-3000:]
        again = tree_bytes(
            folder, [o for o in OUTPUTS if o not in ("metrics/materialize.json", "plots/gallery.png")]
        )
        assert again.keys() == reference.keys()
        assert [k for k in reference if again[k] != reference[k]] == []


@pytest.fixture(scope="module")
def family(photos, tmp_path_factory):
    """The folder after materialize and ela ran with the train split in pairs, 3 variants a train
    photo, and recipes that train on swaps."""
    folder = tmp_path_factory.mktemp("family") / "run"
    write_workspace(
        folder, photos, materialize={"train_variants": 3},
        train={"fakes": ["warp", "swap", "warp_swap"], "pairs": True},
    )  # fmt: skip
    for stage in ("materialize", "ela"):
        result = run_stage(stage, folder)
        assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_pairs_render_each_train_variant_as_a_real_and_its_fake(family, photos):
    index = pd.read_csv(family / "data/crops/index.csv", dtype={"pair": str, "path": str})
    for split in ("train", "train_swap"):
        rows = index[(index["split"] == split) & index["photo_id"].isin(set(photos) - set(BAD))]
        assert rows.groupby("photo_id").size().eq(6).all()  # train_variants 3, each a pair
        assert (rows["pair"] == rows["crop_id"].str.removesuffix("_fake")).all()
        ok = rows[rows["status"] == "ok"]
        for pair, members in ok.groupby("pair"):
            if len(members) < 2:  # a swap without a donor: its real alone
                assert split == "train_swap" and (members["label"] == 0).all()
                continue
            assert sorted(members["label"]) == [0, 1] and set(members["crop_id"]) == {pair, f"{pair}_fake"}
            for column in ("variant", "roi_x1", "roi_y1", "roi_x2", "roi_y2", "augment"):
                assert members[column].nunique() == 1, column  # the same draws
            if split == "train_swap":  # saved alike, at one drawn quality
                assert members["quality"].nunique() == 1 and members["quality"].between(75, 100).all()
        assert set(ok["label"]) == {0, 1}
    for name in ("train_warp", "train_swap", "train_warp_swap"):
        table = pd.read_csv(family / f"data/ela/{name}.csv", dtype={"pair": str}, keep_default_na=False)
        assert list(table.columns) == ["crop_id", "photo_id", "group", "label", "pair"]
        assert (table["pair"] == table["crop_id"].str.removesuffix("_fake")).all()
        seq = batches.CropSequence(
            np.zeros((len(table), 1, 1, 3), np.uint8),
            table["label"],
            batch_size=6,
            shuffle=True,
            pairs=table["pair"],
        )
        for i in range(len(seq)):
            keys = table["pair"].to_numpy()[seq.batch_indices(i)].tolist()
            complete = table["pair"].value_counts()
            assert all(keys.count(key) == complete[key] for key in keys)  # every pair whole in its batch
    # a mix draws the set per pair: a pair's real is re-saved when its fake is a swap, not otherwise
    index = crop_index.read_index(family / "data/crops")
    mixed = crop_index.recipe_rows(index, "warp_swap", seed=42)
    assert mixed.groupby("pair")["split"].nunique().eq(1).all() and set(mixed["split"]) == {
        "train",
        "train_swap",
    }


def test_train_variants_and_pairs_leave_the_test_split_as_it_was(pipeline, family):
    """The test split and every test set: the same crops, index rows and tensors as without them."""
    for folder in ("data/crops", "data/ela"):
        names = sorted(p.name for p in (pipeline / folder).iterdir() if p.name.startswith("test"))
        assert names == sorted(p.name for p in (family / folder).iterdir() if p.name.startswith("test"))
        assert "test_swap_unseen" in {
            n.split(".")[0].removesuffix("_ela").removesuffix("_rgb") for n in names
        }
        assert tree_bytes(pipeline, [f"{folder}/{n}" for n in names]) == tree_bytes(
            family, [f"{folder}/{n}" for n in names]
        )
    indexes = [pd.read_csv(f / "data/crops/index.csv", dtype=str) for f in (pipeline, family)]
    tests = [frame[frame["split"].str.startswith("test")].reset_index(drop=True) for frame in indexes]
    pd.testing.assert_frame_equal(*tests)
    train = indexes[1][indexes[1]["split"] == "train"]
    assert sorted(train["variant"].astype(int).unique()) == [0, 1, 2]


def test_pairs_and_swap_sets_are_the_same_bytes_with_one_worker(family, photos, tmp_path):
    folder = tmp_path / "again"
    write_workspace(
        folder, photos, materialize={"train_variants": 3, "workers": 1}, ela={"workers": 1},
        train={"fakes": ["warp", "swap", "warp_swap"], "pairs": True},
    )  # fmt: skip
    for stage in ("materialize", "ela"):
        result = run_stage(stage, folder)
        assert result.returncode == 0, result.stderr[-3000:]
    parts = ["data/template.json", "data/crops", "data/ela"]
    reference, again = tree_bytes(family, parts), tree_bytes(folder, parts)
    assert again.keys() == reference.keys() and any("train_swap/" in k for k in reference)
    assert [k for k in reference if again[k] != reference[k]] == []


def test_bad_params_or_inputs_leave_no_outputs(photos, tmp_path):
    folder = tmp_path / "bad"
    write_workspace(
        folder, {k: photos[k] for k in ("astro_0", "grace_1", "grace_3")}, fakes={"blur_kernel": 4}
    )
    result = run_stage("materialize", folder)
    assert result.returncode == 2 and "fakes.blur_kernel" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((folder / o).exists() for o in OUTPUTS)
    # a good run, then a missing input: the stage fails and its old outputs are gone too
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["fakes"]["blur_kernel"] = 5
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage("materialize", folder).returncode == 0
    assert run_stage("ela", folder).returncode == 0
    crop = next((folder / "data/crops/train").glob("*.png"))
    crop.unlink()
    result = run_stage("ela", folder)
    assert result.returncode == 1 and "missing" in result.stderr and "Traceback" not in result.stderr
    assert not (folder / "data/ela").exists() and not (folder / "plots/gallery.png").exists()
    (folder / "data/split.csv").unlink()
    result = run_stage("materialize", folder)
    assert result.returncode == 1 and "split.csv" in result.stderr
    assert not any((folder / o).exists() for o in OUTPUTS[:2] + ["metrics/materialize.json"])
    assert not [p.name for p in folder.rglob(".*.tmp")]


def test_labels_per_photo():
    from faceswap_ela import seeding

    for variants in (2, 4, 6):
        for photo in ("a", "b", "c"):
            labels = materialize.assign_labels(42, photo, variants, 0.5)
            assert sorted(labels) == [0] * (variants // 2) + [1] * (variants // 2)
    assert materialize.assign_labels(42, "a", 4, 0.0) == [0, 0, 0, 0]
    assert materialize.assign_labels(42, "a", 4, 1.0) == [1, 1, 1, 1]
    # the rule written out: the photo's own generator rounds fraction x variants (its first draw,
    # made even when 0.5 x 4 = 2 needs no rounding), then its permutation's first 2 are the fakes
    rng = seeding.rng(42, "materialize", "a", "labels")
    rng.random()
    fakes = set(rng.permutation(4)[:2].tolist())
    assert materialize.assign_labels(42, "a", 4, 0.5) == [int(v in fakes) for v in range(4)]
    positions = {tuple(materialize.assign_labels(42, f"p{i}", 4, 0.5)) for i in range(50)}
    assert len(positions) > 3  # which variants are fakes varies from photo to photo
    single = [materialize.assign_labels(42, f"p{i}", 1, 0.5)[0] for i in range(400)]
    assert 0.4 < np.mean(single) < 0.6
    odd = [sum(materialize.assign_labels(7, f"p{i}", 3, 0.5)) for i in range(400)]
    assert set(odd) == {1, 2} and 1.35 < np.mean(odd) < 1.65


def test_render_photo_skips_bad_input_with_reasons(photos, tmp_path):
    raw = tmp_path / "raw"
    write_workspace(tmp_path, photos)
    template = alignment.procrustes_template([photos[f"astro_{i}"][1] for i in range(3)])
    out = tmp_path / "crops"
    (out / "train").mkdir(parents=True)
    (out / "test").mkdir()
    p = Params()
    render = materialize.Renderer(
        p.seed, p.fakes, p.roi, p.augment, template, str(tmp_path / "data/raw"), str(out)
    )
    for photo_id, (split, reason) in BAD.items():
        landmarks = photos[photo_id][1]
        task = materialize.PhotoTask(photo_id, photo_id, split, f"{photo_id}.jpg", landmarks, (0, 1))
        rows, samples = render(task)
        assert [r["status"] for r in rows] == ["skipped", "skipped"] and samples == {}
        assert all(r["reason"].startswith(reason) for r in rows), rows[0]["reason"]
    assert not list(out.rglob("*.png")) and not raw.exists()
    task = materialize.PhotoTask("astro_1", "astro", "train", "astro_1.jpg", photos["astro_1"][1], (0, 1, 1))
    rows, _ = render(task)
    assert [r["status"] for r in rows] == ["ok"] * 3 and len(list(out.rglob("*.png"))) == 3
    again, _ = render(task)
    assert again == rows


def _split_of(index: pd.DataFrame) -> dict[str, tuple[str, str]]:
    base = index[index["split"].isin(["train", "test"])].drop_duplicates("photo_id")
    return {row.photo_id: (row.split, row.group) for row in base.itertuples()}


SAVES = {"swap": (75, 100), "swap_unseen": (50, 70)}  # params.yaml: each swap set's save range


@pytest.mark.parametrize("forger", ["blend", "swap", "swap_unseen"])
def test_other_forgers_share_the_renderings_and_swap_sets_save_their_reals_as_their_fakes(pipeline, forger):
    p = Params.model_validate(yaml.safe_load((pipeline / "params.yaml").read_text()))
    settings = p.fakes.swap if forger == "swap" else p.testsets.unseen_swap.over(p.fakes.swap)
    index = pd.read_csv(pipeline / "data/crops/index.csv", dtype={"path": str, "donor": str})
    where = _split_of(index)
    for split in ("train", "test"):
        base = index[(index["split"] == split) & (index["status"] == "ok")].set_index("crop_id")
        rows = index[index["split"] == f"{split}_{forger}"].set_index("crop_id")
        if forger != "blend" and split == "train":  # train.fakes names no swap
            assert rows.empty
            continue
        # one row per usable rendering, and each forger renders every one of them
        assert list(rows.index) == list(base.index) and (rows["label"] == base["label"]).all()
        ok = rows[rows["status"] == "ok"]
        if forger != "blend":  # a head whose every candidate donor face is under half its size gets none
            skipped = rows[rows["status"] != "ok"]
            assert skipped["reason"].str.startswith("render failed: no swap donor").all()
            assert (skipped["label"] == 1).all() and (ok["label"] == 1).any()
            # reals and fakes alike saved by the set's rule, a quality drawn per rendering
            low, high = SAVES[forger]
            assert ok["quality"].between(low, high).all() and set(ok["label"]) == {0, 1}
        else:
            assert len(ok) == len(base), rows["reason"].dropna().unique()
        for crop, row in ok.iterrows():
            same_box = [
                row[c] == base.loc[crop, c] for c in ("roi_x1", "roi_y1", "roi_x2", "roi_y2", "augment")
            ]
            assert all(same_box)
            own, split_crop = (
                load_rgb(pipeline / "data/crops" / path) for path in (row.path, base.loc[crop, "path"])
            )
            if row.label == 0 and forger == "blend":
                assert row.path == base.loc[crop, "path"]  # the very same real crop
                continue
            assert row.path == f"{split}_{forger}/{crop}.png"
            if row.label == 0:  # a swap set's real: the split's rendering, re-saved as the set's fakes
                assert pd.isna(row.forger) and 0.1 < np.abs(own.astype(int) - split_crop).mean() < 8
                continue
            assert row.forger == forger.removesuffix("_unseen")
            assert np.abs(own.astype(int) - split_crop).mean() > 1  # not the warp's fake
            if forger != "blend":
                donor_split, donor_group = where[row.donor]
                assert donor_split == split and donor_group != row.group
                assert row.donor not in BAD  # never a photo whose landmarks lie outside it, or a tiny face
                drawn = json.loads(row.swap)
                for axis in ("color", "align", "interpolation", "mask"):
                    assert drawn[axis] in getattr(settings, axis), (axis, drawn)
                assert settings.scale[0] <= drawn["scale"] <= settings.scale[1]


def test_swap_donors_are_from_another_group_of_the_same_split():
    rng = np.random.default_rng(0)
    face = alignment.landmark_columns()
    assert len(face) == 136
    tasks = []
    for i in range(24):
        points = rng.normal(0, 1, (68, 2)) * 3 + np.linspace(100, 200, 68)[:, None]
        split = "test" if i % 4 == 0 else "train"
        tasks.append(
            materialize.PhotoTask(f"p{i:02d}", f"g{i // 3}", split, f"p{i:02d}.jpg", points, (0, 1, 1, 0))
        )
    tasks.append(materialize.PhotoTask("none", "g99", "train", "none.jpg", None, (1, 1)))
    out = donors.assign_donors(tasks, seed=42, nearest=4)
    assert [t.photo_id for t in out] == [t.photo_id for t in tasks]
    by_id = {t.photo_id: t for t in tasks}
    for task in out:
        if task.photo_id == "none":
            assert task.donors == (None, None)
            continue
        for label, donor in zip(task.labels, task.donors, strict=True):
            assert (donor is None) == (label == 0)
            if donor is not None:
                assert by_id[donor.photo_id].split == task.split and by_id[donor.photo_id].group != task.group
    again = donors.assign_donors(tasks, seed=42, nearest=4)
    ids = [[d and d.photo_id for d in t.donors] for t in out]
    assert [[d and d.photo_id for d in t.donors] for t in again] == ids  # seeded: the same donors


def test_a_mixed_recipe_keeps_the_reals_and_draws_one_forger_per_fake(pipeline):
    index = crop_index.read_index(pipeline / "data/crops")
    rows = crop_index.recipe_rows(index, "warp_blend", seed=42)
    train = index[index["split"] == "train"]
    assert list(rows["crop_id"]) == sorted(train["crop_id"])  # each crop once, in order
    reals = rows[rows["label"] == 0]  # from either set: the same crop files
    assert set(reals["split"]) == {"train", "train_blend"}
    assert (reals["path"].str.removeprefix("train/") == reals["crop_id"] + ".png").all()
    fakes = rows[rows["label"] == 1]
    assert set(fakes["split"]) == {"train", "train_blend"}
    again = crop_index.recipe_rows(index, "warp_blend", seed=42)
    pd.testing.assert_frame_equal(rows, again)
    single = crop_index.recipe_rows(index, "blend", seed=42)
    assert (single["split"] == "train_blend").all() and len(single) == len(train)


def test_jpeg_after_forging_resaves_reals_and_fakes_and_swap_sets_at_the_photo_quality(photos, tmp_path):
    folder = tmp_path / "jpeg"
    write_workspace(
        folder, photos, fakes={"jpeg": [60, 90], "swap": {"save": "head"}}, train={"fakes": ["warp"]},
        testsets={"forgers": ["swap"], "unseen_swap": None, "matched_blur": False, "jpeg_qualities": []},
    )  # fmt: skip
    result = run_stage("materialize", folder)
    assert result.returncode == 0, result.stderr[-3000:]
    index = pd.read_csv(folder / "data/crops/index.csv")
    ok = index[index["status"] == "ok"]
    drawn = ok[ok["split"].isin(["train", "test"])]
    assert drawn["quality"].between(60, 90).all() and set(drawn["label"]) == {0, 1}
    assert drawn["quality"].nunique() > 3
    swaps = ok[ok["split"] == "test_swap"]  # its reals as its fakes: write_workspace saves the photos at 92
    assert set(swaps["label"]) == {0, 1} and (swaps["quality"] == 92).all()


def test_ela_at_photo_cuts_the_photo_ela_at_the_crop_roi(photos, tmp_path):
    folder = tmp_path / "photo"
    write_workspace(
        folder, photos, ela={"at": "photo"}, train={"fakes": ["warp"]},
        testsets={"forgers": [], "unseen_swap": None, "matched_blur": False, "jpeg_qualities": []},
    )  # fmt: skip
    for stage in ("materialize", "ela"):
        result = run_stage(stage, folder)
        assert result.returncode == 0, result.stderr[-3000:]
    p = Params.model_validate(yaml.safe_load((folder / "params.yaml").read_text()))
    index = crop_index.read_index(folder / "data/crops")
    test = index[index["split"] == "test"].reset_index(drop=True)
    tensor = np.load(folder / "data/ela/test_ela.npy")
    crops = np.load(folder / "data/ela/test_rgb.npy")
    for i, row in test.astype(
        {c: int for c in test.columns if c.startswith(("roi_", "piece_x", "piece_y"))}
    ).iterrows():
        piece = load_rgb(folder / "data/crops" / row.piece_path)
        assert row.piece_x1 % 16 == 0 and row.piece_y1 % 16 == 0  # on the photo's JPEG grid
        box = (
            row.roi_x1 - row.piece_x1,
            row.roi_y1 - row.piece_y1,
            row.roi_x2 - row.piece_x1,
            row.roi_y2 - row.piece_y1,
        )
        # the same ROI as the crop: the piece cut and resized is the crop
        np.testing.assert_array_equal(roi.resize(roi.crop(piece, box), 128), crops[i])
        if row.label == 0:  # an unmodified JPEG photo: the ELA of the whole photo, cut at the ROI
            photo = load_rgb(folder / "data/raw" / f"{row.photo_id}.jpg")
            whole = ela.error_levels(photo, p.ela.quality, p.ela.subsampling)
            box = (row.roi_x1, row.roi_y1, row.roi_x2, row.roi_y2)
            expected = ela.scale_levels(roi.resize(roi.crop(whole, box), 128), p.ela.scale, p.ela.gain)
            np.testing.assert_array_equal(tensor[i], expected)
        assert not np.array_equal(tensor[i], ela.compute(crops[i], p.ela))  # not the crop's ELA


def test_index_rows_are_built_from_what_a_rendering_made():
    head = crop_index.IndexRow("p__v1", "p", "g", "test", 1, 1, roi_x1=1, roi_y1=2, roi_x2=30, roi_y2=40)
    head = dataclasses.replace(head, augment="{}")
    made = crop_index.Made(forger="swap", donor="q", quality=80)
    cut = crop_index.Cut("test_swap/p__v1.png", "pieces/test_swap/p__v1.png", (0, 16))
    ok = crop_index.index_row(head, cut, made=made, split="test_swap")
    assert (ok.status, ok.reason, ok.split, ok.path) == ("ok", "", "test_swap", "test_swap/p__v1.png")
    assert (ok.piece_x1, ok.piece_y1, ok.roi_x2, ok.donor, ok.quality) == (0, 16, 30, "q", 80)
    skipped = crop_index.index_row(head, crop_index.Cut(reason="empty crop: ROI 6x6 px"), made=made)
    assert (skipped.status, skipped.reason, skipped.path, skipped.split) == (
        "skipped", "empty crop: ROI 6x6 px", "", "test",
    )  # fmt: skip
    assert skipped.donor == "q" and skipped.piece_x1 is None and skipped.roi_x1 == 1
    assert (head.status, head.forger, head.split) == ("skipped", "", "test")  # the head is left as it was
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.reason = "x"
    assert list(dataclasses.asdict(ok)) == crop_index.INDEX_COLUMNS

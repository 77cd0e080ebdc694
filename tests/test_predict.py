"""`faceswap-ela predict`: a model trained here (the paper's CNN on ELA crops of the two public-domain
portraits and of fakes made by the pipeline's materializer) must score a fake above the real
photo; bad inputs give one-line errors while the other photos are still scored."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from faceswap_ela import (
    alignment,
    card,
    cli,
    ela,
    forgery,
    landmarks,
    layout,
    mlflow_store,
    predict,
    roi,
    scoring,
    seeding,
)
from faceswap_ela import params as P
from faceswap_ela.images import load_rgb, save_png
from faceswap_ela.parallel import n_workers
from tests.helpers.sample_data import default_params, portrait, write_bad_images

ROOT = Path(__file__).resolve().parents[1]
PORTRAITS = ("astronaut", "grace_hopper")
SIZE = 64  # roi.size of the test model: a quarter of the paper's pixels keeps CPU training short
VARIANTS = 8  # real + fake crops per portrait and class
EPOCHS = 18
SEED = 0


@dataclass(frozen=True)
class Trained:
    """A model trained once for these tests (a bare .keras file, without a card, as older models are),
    the params.yaml it was trained with, and test photos."""

    model: Path
    params: Path
    real: dict[str, Path]
    fake: dict[str, Path]


def _test_params(folder: Path) -> Path:
    """The repo's params.yaml with roi.size = SIZE."""
    raw = default_params()
    raw["roi"]["size"] = SIZE
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """Train the paper's CNN (at SIZE x SIZE) on ELA crops made by the pipeline's own code: random
    ROIs (eq. 6) of each portrait and of fakes with hull or square masks at several scales, then
    write the model, its params and held-out photos (a fake at a scale not drawn for training)."""
    pytest.importorskip("dlib")
    keras = pytest.importorskip("keras")
    from faceswap_ela import batches, training
    from faceswap_ela import model as cnn

    base = tmp_path_factory.mktemp("predict")
    params_path = _test_params(base)
    p = P.load(params_path)
    detector, predictor = landmarks.load_models()
    photos = {name: portrait(name) for name in PORTRAITS}
    points = {name: landmarks.detect_faces(photos[name], detector, predictor)[0].points for name in PORTRAITS}
    template = alignment.procrustes_template(points.values())

    def crop_ela(rgb: np.ndarray, shape: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        box = roi.roi_box(shape, rgb.shape, rng, dx_max=p.roi.dx_max, dy_max=p.roi.dy_max)
        return predict.ela_input(roi.resize(roi.crop(rgb, box), p.roi.size), p)

    images, labels, real, fake = [], [], {}, {}
    for name, rgb in photos.items():
        for variant in range(VARIANTS):
            rng = seeding.rng(SEED, "test-predict", name, variant)
            scale = int(rng.integers(64, 128))
            mask = forgery.MASKS[variant % 2]
            forged, _ = forgery.warp(rgb, points[name], template, size=scale, mask=mask)
            images += [crop_ela(rgb, points[name], rng), crop_ela(forged, points[name], rng)]
            labels += [0, 1]
        forged, _ = forgery.warp(rgb, points[name], template, size=90, mask="hull")
        real[name], fake[name] = base / f"{name}.png", base / f"{name}_fake.png"
        save_png(real[name], rgb)
        save_png(fake[name], forged)

    keras.utils.set_random_seed(SEED)
    net = cnn.build_model((SIZE, SIZE, 3))
    cnn.compile_model(net, p.train.lr, p.train.rho, p.train.epsilon)
    sequence = batches.CropSequence(
        np.stack(images), np.array(labels), batch_size=16, shuffle=True, seed=SEED
    )
    net.fit(sequence, epochs=EPOCHS, verbose=0)
    model_path = base / "model.keras"
    training.save_model(training.inference_copy(net), model_path)
    return Trained(model_path, params_path, real, fake)


def run(capsys, *args: str | Path) -> tuple[int, str, str]:
    """cli.main(["predict", ...]) in this process: (exit status, stdout, stderr)."""
    code = cli.main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def using(trained: Trained) -> list[str]:
    return ["--model", str(trained.model), "--params", str(trained.params)]


def with_card(trained: Trained, folder: Path, **changes) -> Path:
    """A copy of the trained model in ``folder`` with a card as train@ writes it (ELA input, recipe
    warp, precision float32, the settings it was trained with), ``changes`` merged in (a dict
    updates its section); returns the model file."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.keras"
    shutil.copy(trained.model, model)
    data = card.make(P.load(trained.params), "ela", "warp", SEED, folder.name, "float32")
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    card.path_for(model).write_text(json.dumps(data))
    return model


def with_params(trained: Trained, folder: Path, **sections) -> Path:
    """The test params.yaml with ``sections`` updated, written in ``folder``."""
    raw = yaml.safe_load(trained.params.read_text())
    for name, values in sections.items():
        raw[name].update(values)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def scores(capsys, *args: str | Path) -> tuple[list[float], str]:
    """p_fake of each row of a successful run, and its stderr."""
    code, out, err = run(capsys, *args, "--format", "json")
    assert code == 0, err
    return [row["p_fake"] for row in json.loads(out)], err


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("faceswap-ela: warning:")]


def centred_roi(photo: Path, p: P.Params) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A one-face photo as RGB and the centred ROI of its face, found as predict finds it."""
    rgb, lm = load_rgb(photo), p.landmarks
    (face,) = landmarks.detect_faces(
        rgb, *landmarks.load_models(), upsample=lm.upsample, max_side=lm.max_side,
        retry_full_size=lm.retry_full_size,
    )  # fmt: skip
    return rgb, roi.roi_box(face.points, rgb.shape, None, dx_max=p.roi.dx_max, dy_max=p.roi.dy_max)


def model_scores(trained: Trained, images: list[np.ndarray]) -> np.ndarray:
    """p(fake) of the trained model (float32) on these inputs."""
    import keras

    from faceswap_ela.evaluation import predict_fake

    return predict_fake(keras.saving.load_model(trained.model, compile=False), np.stack(images))


def by_photo(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(Path(row["photo"]).name, []).append(row)
    return grouped


def test_fake_scores_above_its_real_photo(trained, capsys):
    photos = [path for name in PORTRAITS for path in (trained.real[name], trained.fake[name])]
    code, out, err = run(capsys, *photos, *using(trained), "--format", "json")
    assert code == 0, err
    rows = by_photo(json.loads(out))
    threshold = P.load(trained.params).eval.threshold
    for name in PORTRAITS:
        real, fake = rows[f"{name}.png"], rows[f"{name}_fake.png"]
        assert len(real) == len(fake) == 1  # one face each
        for row in (*real, *fake):
            assert row["status"] == "ok" and row["error"] is None and row["face"] == 0
            assert len(row["box"]) == 4 and all(isinstance(v, int) for v in row["box"])
            assert row["label"] == ("fake" if row["p_fake"] >= threshold else "real")
        assert fake[0]["p_fake"] > real[0]["p_fake"], (name, real, fake)
    assert "4 face(s) scored" in err


def test_any_precision_scores_the_same_model(trained, capsys):
    photos = [trained.fake[PORTRAITS[0]], trained.real[PORTRAITS[0]]]
    scores = {}
    for precision in ("float32", "bfloat16"):
        code, out, err = run(capsys, *photos, *using(trained), "--format", "json", "--precision", precision)
        assert code == 0, err
        scores[precision] = [row["p_fake"] for row in json.loads(out)]
    assert np.allclose(scores["float32"], scores["bfloat16"], atol=0.05), scores
    code, _, err = run(capsys, photos[0], *using(trained), "--precision", "float32", "--verbose")
    assert code == 0 and "precision float32 (asked for) on " in err
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, photos[0], *using(trained), "--precision", "half")
    assert exit_info.value.code == 2 and "invalid choice: 'half'" in capsys.readouterr().err


def test_rois_and_heatmaps(trained, capsys, tmp_path):
    name = PORTRAITS[0]
    photos = (trained.real[name], trained.fake[name])
    heatmaps = tmp_path / "heatmaps"
    code, out, err = run(capsys, *photos, *using(trained), "--format", "json", "--rois", "3",
                         "--heatmap", heatmaps)  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert all(0.0 <= row["p_fake"] <= 1.0 for row in rows)
    assert rows[1]["p_fake"] > rows[0]["p_fake"]
    written = sorted(p.name for p in heatmaps.iterdir())
    assert written == [f"{name}_face0.png", f"{name}_fake_face0.png"]
    for file in written:
        with Image.open(heatmaps / file) as image:
            assert image.format == "PNG" and image.width > 2 * SIZE
    # the random ROIs are seeded: the same scores again, and the threshold moves only the labels
    code, again, _ = run(capsys, *photos, *using(trained), "--format", "json", "--rois", "3",
                         "--threshold", "0.0")  # fmt: skip
    assert code == 0
    repeat = json.loads(again)
    assert [r["p_fake"] for r in repeat] == [r["p_fake"] for r in rows]
    assert [r["label"] for r in repeat] == ["fake", "fake"]


def test_bad_inputs_are_reported_and_the_rest_scored(trained, capsys, tmp_path):
    bad = write_bad_images(tmp_path / "bad")
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not a photo\n")
    real = trained.real[PORTRAITS[1]]
    code, out, err = run(capsys, bad["zero_byte"], bad["truncated"], bad["random_bytes"], bad["huge"],
                         not_image, tmp_path / "missing.jpg", bad["no_face"], bad["two_faces"], real,
                         *using(trained), "--format", "json")  # fmt: skip
    assert code == 1
    rows = by_photo(json.loads(out))
    failed = ("zero_byte.jpg", "truncated.jpg", "random_bytes.jpg", "huge.png", "notes.txt", "missing.jpg")
    for name in failed:
        (row,) = rows[name]
        assert row["status"] == "error" and row["p_fake"] is None and row["face"] is None
        assert row["error"] and "\n" not in row["error"]
    assert "too large" in rows["huge.png"][0]["error"]
    assert rows["missing.jpg"][0]["error"] == "file not found"
    assert [(r["status"], r["face"], r["error"]) for r in rows["no_face.jpg"]] == [("no face", None, None)]
    assert [r["face"] for r in rows["two_faces.jpg"]] == [0, 1]
    assert all(r["status"] == "ok" for r in rows["two_faces.jpg"] + rows[real.name])
    # one line per failed input on stderr, each naming the file
    errors = [line for line in err.splitlines() if line.startswith("faceswap-ela: error:")]
    assert len(errors) == 6
    assert any("truncated.jpg" in line for line in errors)

    # csv and table: the same rows
    subset = (bad["truncated"], bad["no_face"], real)
    code, out, _ = run(capsys, *subset, *using(trained), "--format", "csv")
    assert code == 1
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == list(predict.COLUMNS)
    assert [r["status"] for r in table] == ["error", "no face", "ok"]
    assert json.loads(table[2]["box"]) == rows[real.name][0]["box"]
    assert 0.0 <= float(table[2]["p_fake"]) <= 1.0 and table[1]["p_fake"] == ""
    code, out, _ = run(capsys, *subset, *using(trained))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["photo", "face", "box", "p_fake", "label", "status"]
    assert len(lines) == 4 and "no face" in lines[2] and lines[3].rstrip().endswith("ok")
    face_column = lines[0].index("face")  # aligned columns
    assert lines[2][face_column] == "-" and lines[3][face_column] == "0"


def test_the_rows_are_the_same_whatever_the_number_of_workers(trained, capsys, tmp_path, monkeypatch):
    """Photos are read, and their faces found, cropped and ELA'd, by a pool of worker processes:
    1 or 2 workers give the same rows to the last bit, random ROIs and heatmaps included; the CNN's
    batches (scoring.CHUNK inputs) change the scores by rounding at most."""
    folder = tmp_path / "photos"
    write_bad_images(folder / "bad")
    for name in PORTRAITS:
        shutil.copy(trained.real[name], folder)
        shutil.copy(trained.fake[name], folder)
    args = [folder, *using(trained), "--format", "json", "--rois", "3", "--precision", "float32"]
    outputs, heatmaps = {}, {}
    for workers in (1, 2):
        heatmaps[workers] = tmp_path / f"heatmaps-{workers}"
        code, outputs[workers], err = run(capsys, *args, "--workers", workers, "--heatmap", heatmaps[workers])
        assert code == 1 and err.count("faceswap-ela: error:") == 4, err  # the 4 unusable images
    assert outputs[1] == outputs[2]
    rows = json.loads(outputs[1])
    assert sum(row["status"] == "ok" for row in rows) == 2 * len(PORTRAITS) + 5
    assert sorted(p.name for p in heatmaps[1].iterdir()) == sorted(p.name for p in heatmaps[2].iterdir())
    monkeypatch.setattr(scoring, "CHUNK", 2)  # a forward pass per photo
    code, out, _ = run(capsys, *args, "--workers", "2")
    small = json.loads(out)
    assert [{**row, "p_fake": None} for row in small] == [{**row, "p_fake": None} for row in rows]
    assert [row["p_fake"] for row in small] == pytest.approx([row["p_fake"] for row in rows], abs=1e-6)
    # workers=0: every core, but a pool only where there are photos enough for it
    cores, many = n_workers(0), scoring.MIN_PHOTOS_PER_WORKER * n_workers(0) * 4
    assert [scoring.pool_size(0, n) for n in (0, 3, many)] == [1, 1, cores]
    assert [scoring.pool_size(2, n) for n in (1, 3)] == [1, 2]


def test_folder_walk_and_default_model(trained, capsys, tmp_path, monkeypatch):
    # a repository-like folder: the default model and params come from <root>/models, <root>/params.yaml
    repo = tmp_path / "repo"
    default = repo / layout.model_file(layout.primary(P.load(trained.params)))
    default.parent.mkdir(parents=True)
    (repo / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(trained.params, repo / "params.yaml")
    shutil.copy(trained.model, default)
    photos = repo / "photos"
    (photos / "a" / "b").mkdir(parents=True)
    shutil.copy(trained.real[PORTRAITS[0]], photos / "a" / "b" / "real.png")
    Image.open(trained.fake[PORTRAITS[0]]).save(photos / "a" / "fake.JPG", quality=95)
    (photos / "a" / "readme.txt").write_text("skipped: not a photo suffix\n")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(repo / "photos")
    code, out, err = run(capsys, ".", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    # in walk order (a JPEG fake may show dlib a second, false face: every face gets a row)
    assert list(dict.fromkeys(Path(r["photo"]).as_posix() for r in rows)) == ["a/b/real.png", "a/fake.JPG"]
    assert all(r["status"] == "ok" for r in rows)


def test_the_card_settings_are_used_not_params(trained, capsys, tmp_path):
    photos = [trained.real[PORTRAITS[0]], trained.fake[PORTRAITS[0]]]
    expected, err = scores(capsys, *photos, *using(trained), "--precision", "float32")
    (warning,) = warnings_in(err)  # a bare model: params.yaml's settings, said once
    assert warning == (
        f"faceswap-ela: warning: no model card: {trained.model.with_name('card.json')} not found; "
        "using params.yaml's ELA and ROI settings, input ela"
    )
    model = with_card(trained, tmp_path / "ela-warp-s0")
    other = with_params(trained, tmp_path, ela={"quality": 50})
    got, err = scores(
        capsys, *photos, "--model", model, "--params", other, "--verbose", "--precision", "float32"
    )
    assert got == expected and warnings_in(err) == []  # the card's quality 95, not params' 50
    assert (
        f"faceswap-ela: model {model}, settings of {card.path_for(model)}: input ela, recipe warp, "
        f"ELA quality 95 subsampling 4:2:0 scale max gain 20 at crop, ROI size {SIZE} dx_max 0.125 "
        "dy_max 0.2, precision float32 (trained in float32)\n"
    ) in err
    _, err = scores(capsys, photos[0], "--model", model, "--params", other, "--verbose")
    assert ", precision auto (trained in float32)" in err  # the forward pass runs at this machine's precision
    bare, err = scores(capsys, *photos, "--model", trained.model, "--params", other, "--verbose",
                       "--precision", "float32")  # fmt: skip
    assert bare != expected and len(warnings_in(err)) == 1  # params' quality 50 this time
    assert "settings of params.yaml (no model card): input ela, recipe unknown, ELA quality 50 " in err


def test_an_rgb_model_is_fed_rgb_crops(trained, capsys, tmp_path):
    photo = trained.fake[PORTRAITS[1]]
    rgb, box = centred_roi(photo, P.load(trained.params))
    crop = roi.resize(roi.crop(rgb, box), SIZE)
    model = with_card(trained, tmp_path / "rgb-warp-s0", input="rgb")
    got, err = scores(
        capsys, photo, "--model", model, "--params", trained.params, "--verbose", "--precision", "float32"
    )
    assert got == pytest.approx(model_scores(trained, [crop]).tolist(), abs=1e-5)
    assert got != scores(capsys, photo, *using(trained))[0]  # an ELA image gives another score
    assert "input rgb, recipe warp," in err
    # a bare model says nothing: --input tells; one that contradicts the card is refused
    assert scores(capsys, photo, *using(trained), "--input", "rgb", "--precision", "float32")[0] == got
    assert (
        scores(
            capsys,
            photo,
            "--model",
            model,
            "--params",
            trained.params,
            "--input",
            "rgb",
            "--precision",
            "float32",
        )[0]
        == got
    )
    code, out, err = run(capsys, photo, "--model", model, "--params", trained.params, "--input", "ela")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"faceswap-ela: error: --input ela contradicts the model card: input rgb ({card.path_for(model)})"
    ]


def test_ela_at_photo_takes_the_error_levels_of_the_whole_photo(trained, capsys, tmp_path):
    photo = trained.fake[PORTRAITS[0]]
    p = P.load(trained.params)
    rgb, box = centred_roi(photo, p)
    levels = ela.roi_levels(ela.error_levels(rgb, p.ela.quality, p.ela.subsampling), box, SIZE, p.ela)
    model = with_card(trained, tmp_path / "ela-warp-s0", ela={"at": "photo"})
    got, err = scores(
        capsys, photo, "--model", model, "--params", trained.params, "--verbose", "--precision", "float32"
    )
    assert got == pytest.approx(model_scores(trained, [levels]).tolist(), abs=1e-5)
    assert got != scores(capsys, photo, *using(trained))[0]  # not the ELA of the resized crop
    assert " at photo, " in err


def test_a_model_name_resolves_in_the_repository(trained, capsys, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    model = with_card(trained, repo / "models" / "ela-blend-s0", fakes="blend", forgers=["blend"])
    (repo / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(trained.params, repo / "params.yaml")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(repo / "models")
    photo = trained.real[PORTRAITS[0]]
    _, err = scores(capsys, photo, "--model", "ela-blend-s0", "--verbose")
    assert f"faceswap-ela: model {model}, settings of {card.path_for(model)}: input ela, recipe blend," in err
    code, _, err = run(capsys, photo, "--model", "ela-swap-s0")
    assert code == 2
    assert f"model {repo / 'models' / 'ela-swap-s0' / 'model.keras'} not found" in err


def test_usage_errors_exit_2(trained, capsys, tmp_path):
    photo = trained.real[PORTRAITS[0]]
    code, _, err = run(capsys, photo, "--model", tmp_path / "none.keras", "--params", trained.params)
    assert code == 2 and "run dvc repro first or pass --model" in err
    bad_params = tmp_path / "params.yaml"
    bad_params.write_text("ela:\n  quality: 500\n")
    code, _, err = run(capsys, photo, "--model", trained.model, "--params", bad_params)
    assert code == 2 and "ela.quality" in err
    # the repo's params (roi.size 128) don't fit the 64-pixel test model
    code, _, err = run(capsys, photo, "--model", trained.model, "--params", ROOT / "params.yaml")
    assert code == 2 and "roi.size" in err
    not_model = tmp_path / "model.keras"
    not_model.write_bytes(b"not a keras archive")
    code, _, err = run(capsys, photo, "--model", not_model, "--params", trained.params)
    assert code == 2 and "can't load model" in err
    # a card that doesn't fit the model, or that can't be read: one line, naming the card
    model = with_card(trained, tmp_path / "carded", roi={"size": 128})
    code, _, err = run(capsys, photo, "--model", model, "--params", trained.params)
    assert code == 2 and err.splitlines() == [
        f"faceswap-ela: error: model {model} takes ({SIZE}, {SIZE}, 3) input but its card "
        f"{card.path_for(model)} says roi.size 128"
    ]
    card.path_for(model).write_text("{not json")
    code, _, err = run(capsys, photo, "--model", model, "--params", trained.params)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"faceswap-ela: error: bad model card: {card.path_for(model)} is not JSON")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", str(photo), "--rois", "0"])
    assert exit_info.value.code == 2


def test_module_entry_point_loads_the_model_before_any_photo(trained, tmp_path):
    """Run as `python -m faceswap_ela.cli`: a missing model is a one-line usage error, and a file
    that is no model is one too, even when no photo has a face to score."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    photo = trained.real[PORTRAITS[0]]
    done = subprocess.run(
        [sys.executable, "-m", "faceswap_ela.cli", "predict", str(photo),
         "--model", str(tmp_path / "x.keras"), "--params", str(trained.params)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"faceswap-ela: error: model {tmp_path / 'x.keras'} not found: run dvc repro first or pass --model"
    ]
    no_face = write_bad_images(tmp_path / "bad")["no_face"]
    not_model = tmp_path / "model.keras"
    not_model.write_bytes(b"not a keras archive")
    for model, code in ((trained.model, 0), (not_model, 2)):
        done = subprocess.run(
            [sys.executable, "-m", "faceswap_ela.cli", "predict", str(no_face), "--model", str(model),
             "--params", str(trained.params), "--format", "csv"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        assert ("no face" in done.stdout) == (code == 0)


def test_find_photos_and_heatmap_names(tmp_path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    for name in ("x/b.PNG", "x/y/a.jpeg", "x/c.gif", "x/a.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    found = predict.find_photos([tmp_path / "x", tmp_path / "empty", tmp_path / "nope.png"])
    names = [(p.relative_to(tmp_path).as_posix(), e) for p, e in found]
    assert names[:3] == [("x/a.jpg", None), ("x/b.PNG", None), ("x/y/a.jpeg", None)]
    assert names[3][0] == "empty" and "no .jpg/.jpeg/.png files" in names[3][1]
    assert names[4] == ("nope.png", "file not found")
    taken: set[str] = set()
    assert [predict.heatmap_name(Path(p), 0, taken) for p in ("a/x.jpg", "b/x.png", "c/x.jpg")] == [
        "x_face0.png",
        "x-2_face0.png",
        "x-3_face0.png",
    ]


@pytest.fixture
def registry(trained, tmp_path, monkeypatch) -> str:
    """A sqlite MLflow store holding the trained model, logged and registered by the pipeline's own
    Tracker: with its card as version 1 of faceswap-ela-cnn (alias ``champion``), without one as
    version 1 of faceswap-ela-bare; MLFLOW_TRACKING_URI points at it."""
    import keras
    from mlflow import MlflowClient

    from faceswap_ela import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("tiny", artifact_location=mlflow_store.artifact_location(uri))
    net = keras.saving.load_model(trained.model, compile=False)
    model_card = card.read(card.path_for(with_card(trained, tmp_path / "ela-warp-s0")))
    for name, logged_card in (("faceswap-ela-cnn", model_card), ("faceswap-ela-bare", None)):
        run_id = client.create_run(experiment).info.run_id
        tracker = tracking.Tracker(client, run_id, uri, "tiny")
        tracker.log_model(net, saved=trained.model, card=logged_card)
        assert tracker.register_model(run_id, name, {"git_commit": "f" * 40}) == "1"
        assert tracker.active, "logging or registering failed"
    client.set_registered_model_alias("faceswap-ela-cnn", "champion", "1")
    return uri


def test_predict_with_a_registered_model(trained, registry, capsys, tmp_path):
    photos = [trained.real[PORTRAITS[0]], trained.fake[PORTRAITS[0]]]
    expected, _ = scores(capsys, *photos, *using(trained), "--precision", "float32")
    other = with_params(trained, tmp_path, ela={"quality": 50})  # the card's quality 95 wins
    for uri in (
        "models:/faceswap-ela-cnn/latest",
        "models:/faceswap-ela-cnn/1",
        "models:/faceswap-ela-cnn@champion",
    ):
        got, err = scores(
            capsys, *photos, "--model", uri, "--params", other, "--verbose", "--precision", "float32"
        )
        assert got == pytest.approx(expected, abs=1e-5), uri
        assert "2 face(s) scored" in err and warnings_in(err) == []
        assert f"settings of {uri} (MLmodel metadata): input ela, recipe warp, ELA quality 95 " in err
    # logged without a card: params.yaml's settings, with a warning
    uri = "models:/faceswap-ela-bare/1"
    got, err = scores(capsys, *photos, "--model", uri, "--params", trained.params, "--precision", "float32")
    assert got == pytest.approx(expected, abs=1e-5)
    assert warnings_in(err) == [
        f"faceswap-ela: warning: no model card: {uri} has none in its MLmodel metadata; "
        "using params.yaml's ELA and ROI settings, input ela"
    ]


def test_unknown_registered_model_is_a_usage_error(trained, registry, capsys, tmp_path, monkeypatch):
    photo = trained.real[PORTRAITS[0]]
    for uri in (
        "models:/no-such-model/latest",
        "models:/faceswap-ela-cnn/7",
        "models:/faceswap-ela-cnn@nobody",
    ):
        code, out, err = run(capsys, photo, "--model", uri, "--params", trained.params)
        assert code == 2 and out == "", err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"faceswap-ela: error: can't load model {uri} from {registry}: "), line
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    code, _, err = run(
        capsys, photo, "--model", "models:/faceswap-ela-cnn/latest", "--params", trained.params
    )
    assert code == 2 and "no MLflow store at" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()

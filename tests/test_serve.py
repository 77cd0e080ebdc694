"""The served detector. A model (the paper's CNN, untrained: the numbers only have to agree) is
logged and registered by the project's own code on an `mlflow server` (tracking.Tracker.log_model,
detector.log_detector, registry.register_primary); the registered version shows its signature
through the REST API, as the UI reads it; `mlflow models serve` of models:/faceswap-ela-cnn@champion
(what `make serve` runs) answers a real photo, its fake and a photo without a face as
`faceswap-ela predict` does, answers bad requests with error rows or HTTP 400, never a 500, and
still serves after them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from faceswap_ela import (
    alignment,
    card,
    cli,
    detector,
    forgery,
    landmarks,
    layout,
    mlflow_store,
    registry,
    tracking,
)
from faceswap_ela import params as P
from faceswap_ela.images import save_png
from tests.helpers.mlflow_server import api, running
from tests.helpers.sample_data import bomb_png, portrait, write_bad_images

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # roi.size: a quarter of the paper's pixels keeps the model small
NAME = "faceswap-ela-cnn"  # tracking.model_name
MODEL = layout.model_name("ela", "warp", 0)
PHOTOS = ("real", "fake", "no_face")


@dataclass(frozen=True)
class Registered:
    tracking: str  # the tracking server's URL
    model: Path  # the .keras file, its card beside it
    params: Path
    photos: dict[str, Path]
    version: str


def write_photos(folder: Path) -> dict[str, Path]:
    """A real photo (the astronaut), its fake (the pipeline's warp forger) and a photo without a face."""
    rgb = {name: portrait(name) for name in ("astronaut", "grace_hopper")}
    models = landmarks.load_models()
    points = {name: landmarks.detect_faces(image, *models)[0].points for name, image in rgb.items()}
    template = alignment.procrustes_template(points.values())
    forged, _ = forgery.warp(rgb["astronaut"], points["astronaut"], template, size=90, mask="hull")
    folder.mkdir(parents=True)
    photos = {"real": folder / "astronaut.png", "fake": folder / "astronaut_fake.png"}
    save_png(photos["real"], rgb["astronaut"])
    save_png(photos["fake"], forged)
    photos["no_face"] = write_bad_images(folder / "bad")["no_face"]
    return photos


def untrained_model(path: Path, p: P.Params) -> Path:
    """The paper's CNN, untrained, saved as train@ saves a model, with its card beside it."""
    import keras

    from faceswap_ela import model as cnn
    from faceswap_ela import training

    keras.utils.set_random_seed(0)
    path.parent.mkdir(parents=True)
    training.save_model(training.inference_copy(cnn.build_model((SIZE, SIZE, 3))), path)
    card.path_for(path).write_text(json.dumps(card.make(p, "ela", "warp", 0, MODEL, "float32")))
    return path


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Iterator[Registered]:
    """The model logged into its run as evaluate@ logs it (Keras model and detector), and registered
    by compare's registry.register_primary, on an `mlflow server`; alias ``champion``."""
    import keras

    base = tmp_path_factory.mktemp("serve")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["roi"]["size"] = SIZE
    params = base / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    p = P.load(params)
    model = untrained_model(base / layout.model_file(MODEL), p)
    photos = write_photos(base / "photos")
    store = ("--backend-store-uri", f"sqlite:///{base / 'mlflow-server.db'}",
             "--serve-artifacts", "--artifacts-destination", str(base / "artifacts"))  # fmt: skip
    with running(base, *store) as url, pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)  # where register_primary reads the model's run files
        client = mlflow_store.client(url)
        experiment = client.create_experiment("serve")
        run_id = client.create_run(experiment).info.run_id
        model_run = tracking.Tracker(client, run_id, url, "serve")
        model_card = card.read(card.path_for(model))
        model_run.log_model(keras.saving.load_model(model, compile=False), saved=model, card=model_card)
        assert detector.log_detector(model_run, model, model_card, p)
        model_run.finish()
        for path, key in ((layout.run_file(MODEL), "run_id"), (layout.eval_metrics(MODEL), "mlflow_run_id")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({key: run_id}))
        comparison = tracking.Tracker(client, client.create_run(experiment).info.run_id, url, "serve")
        version = registry.register_primary(comparison, p, MODEL)
        assert version == "1" and comparison.active and model_run.active
        client.set_registered_model_alias(NAME, "champion", version)
        yield Registered(url, model, params, photos, version)


def logged_file(url: str, model_id: str, path: str) -> str:
    """A file of a logged model, fetched as the UI fetches it."""
    answer = requests.get(
        f"{url}/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files",
        params={"artifact_file_path": path},
        timeout=30,
    )
    assert answer.ok, answer.text[:500]
    return answer.text


def test_the_registered_version_shows_the_detectors_signature(registered):
    url = registered.tracking
    version = api(url, "model-versions/get", name=NAME, version=registered.version)["model_version"]
    assert version["source"].startswith("models:/m-")  # the logged model: its id
    model_id = version["source"].removeprefix("models:/")
    assert api(url, f"logged-models/{model_id}")["model"]["info"]["name"] == "detector"
    # the run holds the Keras model too, for whoever wants the tensor model
    run = api(url, "runs/get", run_id=version["run_id"])["run"]
    outputs = run["outputs"]["model_outputs"]
    names = {api(url, f"logged-models/{o['model_id']}")["model"]["info"]["name"] for o in outputs}
    assert names == {"detector", "model"}
    assert "params" not in run["data"]  # the run's parameters are the stages' alone
    # the MLmodel file, as the UI fetches it, and the params.yaml beside the model
    meta = yaml.safe_load(logged_file(url, model_id, "MLmodel"))
    params = yaml.safe_load(logged_file(url, model_id, "artifacts/params.yaml"))
    assert P.parse(params) == P.load(registered.params)
    inputs = json.loads(meta["signature"]["inputs"])
    assert [(c["name"], c["type"], c["required"]) for c in inputs] == [
        ("image", "string", True),
        ("path", "string", False),
    ]
    assert [c["name"] for c in json.loads(meta["signature"]["outputs"])] == list(detector.COLUMNS)
    assert meta["metadata"]["card"] == card.read(card.path_for(registered.model))
    assert set(meta["flavors"]["python_function"]["artifacts"]) == {"keras_model", "card", "params"}
    # nothing of the detector among the run's parameters: params.yaml's, as the stages logged them
    assert "config" not in meta["flavors"]["python_function"]
    alias = api(url, "registered-models/alias", name=NAME, alias="champion")["model_version"]
    assert alias["version"] == registered.version


def b64(data: bytes | Path) -> str:
    return base64.b64encode(data.read_bytes() if isinstance(data, Path) else data).decode("ascii")


def post(url: str, body: dict | bytes) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = requests.post(
        f"{url}/invocations", data=data, headers={"Content-Type": "application/json"}, timeout=120
    )
    assert answer.status_code < 500 and "Traceback" not in answer.text, answer.text[:2000]
    return answer


def cli_rows(capsys, photos: list[Path], *options: str | Path) -> list[dict]:
    code = cli.main(["predict", *map(str, photos), *map(str, options), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_the_served_detector_answers_as_the_cli(registered, capsys, tmp_path, monkeypatch):
    photos = [registered.photos[name] for name in PHOTOS]
    expected = cli_rows(capsys, photos, "--model", registered.model, "--params", registered.params)
    assert [row["status"] for row in expected] == ["ok", "ok", "no face"]
    # predict takes the registered detector too: the .keras file inside it, its card from MLmodel
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.tracking)
    uri = f"models:/{NAME}@champion"
    assert cli_rows(capsys, photos, "--model", uri, "--params", registered.params) == expected

    serve = ("-m", uri, "--env-manager", "local")
    env = {"MLFLOW_TRACKING_URI": registered.tracking}
    with running(tmp_path, *serve, command="models serve", env=env, skip_unless_started=True) as url:
        data = [[b64(photo), photo.name] for photo in photos] + [["not base64 at all!", "broken"]]
        answer = post(url, {"dataframe_split": {"columns": ["image", "path"], "data": data}})
        assert answer.status_code == 200, answer.text[:2000]
        *served, broken = answer.json()["predictions"]
        assert len(served) == len(expected)
        for index, (row, want) in enumerate(zip(served, expected, strict=True)):
            assert row["photo"] == index and row["path"] == photos[index].name
            for key in ("face", "box", "label", "status", "error"):
                assert row[key] == want[key], (key, row, want)
            assert (row["p_fake"] is None) == (want["p_fake"] is None)
            if want["p_fake"] is not None:
                assert row["p_fake"] == pytest.approx(want["p_fake"], abs=1e-5)
        assert broken["photo"] == 3 and broken["path"] == "broken" and broken["status"] == "error"
        assert broken["error"].startswith("not base64") and broken["p_fake"] is None

        # each bad photo gets its own error row
        bad = {
            "text": b64(b"these are not the pixels you are looking for"),
            "bomb": b64(bomb_png(7072, 7072)),  # 50 megapixels in a few kilobytes
            "empty": "",
            "number": 7,
        }
        records = [{"image": image, "path": name} for name, image in bad.items()]
        rows = post(url, {"dataframe_records": records}).json()["predictions"]
        assert [(row["path"], row["status"]) for row in rows] == [(name, "error") for name in bad]
        errors = {row["path"]: row["error"] for row in rows}
        assert errors["text"] == "unreadable: not a recognised image format"
        assert errors["bomb"] == "too large: 7072x7072 pixels exceeds the 40,000,000-pixel limit"
        assert errors["empty"] == "empty image (no bytes)"
        assert errors["number"] == "the image must be base64 text, not int"
        # an empty frame: no rows; a request that isn't one: HTTP 400 saying why
        empty = post(url, {"dataframe_split": {"columns": ["image"], "data": []}})
        assert empty.status_code == 200 and empty.json() == {"predictions": []}
        for body, says in (
            (b"{not json", "valid JSON"),
            ({"dataframe_split": {"columns": ["picture"], "data": [["x"]]}}, "missing inputs ['image']"),
        ):
            refused = post(url, body)
            assert refused.status_code == 400 and says in refused.json()["message"], refused.text[:2000]

        # still serving
        again = post(url, {"dataframe_records": [{"image": b64(photos[0])}]})
        (row,) = again.json()["predictions"]
        assert row["path"] is None and row["p_fake"] == pytest.approx(expected[0]["p_fake"], abs=1e-5)
        assert requests.get(f"{url}/health", timeout=10).ok

"""The detector a team serves: an MLflow pyfunc model (``Detector``) that scores the faces of photos
with the same code as `faceswap-ela predict` (scoring.score_photos: landmarks, the card's ROI and
ELA settings, the CNN), so that its numbers are the CLI's for the same photo and model.

``log_detector`` logs it into a model's MLflow run as the logged model ``detector``, beside the
Keras model ``model`` (evaluate@ logs both); registry.register_primary registers it as
tracking.model_name, and `make serve` serves it (``mlflow models serve --env-manager local``: it
runs in the project's environment, where the faceswap_ela package is installed). Its artifacts are
what `faceswap-ela predict --model model.keras --params params.yaml` reads: the model's .keras
file, its card (``card.json``, also in the MLmodel metadata as ``card``, where `predict --model
models:/...` reads it) and the run's params (``params.yaml``: landmarks, threshold, precision). A
signature and an input example are logged with it; no model_config, which MLflow would log among
the run's parameters. A request's photos are read in the server's process (workers=1), one request
at a time; a photo of more than MAX_PIXELS pixels is refused.

Input: a DataFrame with a column ``image``, each cell a photo's JPEG or PNG bytes in base64 (line
breaks and a ``data:image/...;base64,`` prefix are allowed), and optionally a column ``path``
naming the photos. Output: COLUMNS, one row per face, or one row per photo that gave none:
``photo`` (the photo's row in the input), ``path``, ``face``, ``box`` (left, top, right, bottom),
``p_fake``, ``label`` (at the threshold), ``status`` (``ok``, ``no face``, ``face too small`` or
``error``) and ``error`` (why). A cell that isn't base64, isn't an image, is too large (a
decompression bomb) or is empty gets an error row; the other photos are scored. A frame without
an ``image`` column is refused (MLflow's scoring server answers HTTP 400); an empty frame gets no
rows.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.metadata as md
import io
import json
import logging
import math
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import yaml

from faceswap_ela import mlflow_store, scoring
from faceswap_ela import params as P
from faceswap_ela.predict_model import PredictError
from faceswap_ela.registry import DETECTOR

log = logging.getLogger(__name__)

KERAS_MODEL, CARD, PARAMS = "keras_model", "card", "params"  # its artifacts
MAX_PIXELS = 40_000_000  # a photo's pixels: more is refused from its header (a 12 MP photo is 12e6)
MAX_BASE64 = 64 * 2**20  # characters of one photo's base64 text
CODE = Path(__file__).with_name("detector_code.py")  # the model's code: it makes a Detector
COLUMNS = ("photo", "path", "face", "box", "p_fake", "label", "status", "error")


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    text, whole = DataType.string, DataType.long
    inputs = Schema([ColSpec(text, "image"), ColSpec(text, "path", required=False)])
    outputs = Schema(
        [ColSpec(whole, "photo"), ColSpec(text, "path", required=False),
         ColSpec(whole, "face", required=False), ColSpec(Array(whole), "box", required=False),
         ColSpec(DataType.double, "p_fake", required=False), ColSpec(text, "label", required=False),
         ColSpec(text, "status"), ColSpec(text, "error", required=False)]
    )  # fmt: skip
    return ModelSignature(inputs, outputs)


def input_example() -> pd.DataFrame:
    """A photo without a face (a grey 32 x 32 PNG): the smallest request that runs every step."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return pd.DataFrame({"image": [encoded], "path": ["grey.png"]})


def decode(cell: object) -> tuple[bytes | None, str | None]:
    """A cell of the ``image`` column as (the photo's bytes, None), or (None, why not)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None, "no image"
    if not isinstance(cell, str):
        return None, f"the image must be base64 text, not {type(cell).__name__}"
    text = cell.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    if not text:
        return None, "empty image (no bytes)"
    if len(text) > MAX_BASE64:
        return None, f"too large: more than {MAX_BASE64:,} characters of base64"
    try:
        return base64.b64decode(text, validate=True), None
    except (binascii.Error, ValueError):
        return None, "not base64: the image must be base64-encoded JPEG or PNG bytes"


def photos_of(frame: pd.DataFrame) -> tuple[list[scoring.Photo], list[str | None]]:
    """The photos of a request, and their paths (None where none was given)."""
    from mlflow.exceptions import MlflowException

    if not isinstance(frame, pd.DataFrame) or "image" not in frame.columns:
        raise MlflowException.invalid_parameter_value(
            "the input needs a column 'image': each photo's JPEG or PNG bytes in base64"
        )
    paths = list(frame["path"]) if "path" in frame.columns else [None] * len(frame)
    paths = [None if path is None or isinstance(path, float) else str(path) for path in paths]
    photos = []
    for index, (cell, path) in enumerate(zip(frame["image"], paths, strict=True)):
        data, error = decode(cell)
        photos.append(scoring.Photo(path or f"photo {index}", data, error))
    return photos, paths


def frame_of(scored: list[scoring.Scored], paths: list[str | None]) -> pd.DataFrame:
    """The output frame (COLUMNS)."""
    records = []
    for item in scored:
        row = item.row
        records.append(
            {"photo": item.photo, "path": paths[item.photo], "face": row.face,
             "box": None if row.box is None else list(row.box), "p_fake": row.p_fake, "label": row.label,
             "status": row.status, "error": row.error}
        )  # fmt: skip
    return pd.DataFrame(records, columns=list(COLUMNS), dtype=object)


class Detector(mlflow.pyfunc.PythonModel):
    """The served detector (see the module doc). One request is scored at a time."""

    def load_context(self, context: Any) -> None:
        from faceswap_ela.predict import Predictor

        self.predictor = Predictor(
            P.load(context.artifacts[PARAMS]),
            context.artifacts[KERAS_MODEL],
            verbose=True,  # a server's log may show TensorFlow's lines; stderr is left alone
        )
        if self.predictor.card is None:
            raise PredictError(f"the detector's card is missing: {self.predictor.warning}")
        self.predictor.load()
        self.lock = threading.Lock()
        log.info("detector: %s", self.predictor.settings())

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        photos, paths = photos_of(model_input)
        with self.lock:
            scored = scoring.score_photos(self.predictor, photos, workers=1, max_pixels=MAX_PIXELS)
        return frame_of(scored, paths)


def requirements() -> list[str]:
    """The project's dependencies at their installed versions (for environment managers other
    than ``local``, which need the project itself installed as well)."""
    from packaging.requirements import Requirement

    try:
        names = [Requirement(r).name for r in md.requires("faceswap-ela") or []]
    except md.PackageNotFoundError:
        names = ["mlflow", "keras", "tensorflow", "dlib-bin", "face_recognition_models"]
    pinned = []
    for name in names:
        with contextlib.suppress(md.PackageNotFoundError):
            pinned.append(f"{name}=={md.version(name)}")
    return pinned


def log_detector(tracker: Any, model_file: str | Path, model_card: dict | None, p: P.Params) -> bool:
    """Log the detector for the Keras model ``model_file`` and its card into ``tracker``'s run
    (a tracking.Tracker) as DETECTOR; whether it was. Without a card, or should MLflow fail, one
    warning and nothing else: the Keras model logged beside it stays, and is registered instead."""
    if not tracker.active:
        return False
    if model_card is None:
        log.warning("%s has no card: the detector is not logged (the Keras model is)", model_file)
        return False
    import mlflow

    try:
        with tempfile.TemporaryDirectory(prefix="detector.") as tmp:
            files = {KERAS_MODEL: Path(tmp) / "model.keras", CARD: Path(tmp) / "card.json",
                     PARAMS: Path(tmp) / "params.yaml"}  # fmt: skip
            shutil.copyfile(model_file, files[KERAS_MODEL])
            files[CARD].write_text(json.dumps(model_card, indent=2) + "\n")
            files[PARAMS].write_text(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))
            with mlflow_store.global_store(tracker.uri), mlflow.start_run(run_id=tracker.run_id):
                mlflow.pyfunc.log_model(
                    name=DETECTOR, python_model=str(CODE), signature=signature(),
                    artifacts={name: str(path) for name, path in files.items()},
                    input_example=input_example(), pip_requirements=requirements(),
                    metadata={"card": model_card},
                )  # fmt: skip
    except Exception as exc:
        log.warning("the detector was not logged (%s); the Keras model is", mlflow_store.brief(exc))
        return False
    return True

"""The served detector's request handling, without a model: decoding each photo's base64 cell into
bytes or a one-line reason, the rows going back as a frame (a non-finite score becomes an error
row), the signature. Serving it for real: tests/test_serve.py."""

from __future__ import annotations

import base64
import math

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from faceswap_ela import detector, predict, scoring
from faceswap_ela.predict import Prediction

PNG = base64.b64decode(detector.input_example()["image"][0])


def test_a_cell_is_base64_text_or_says_why_not(monkeypatch):
    text = base64.b64encode(PNG).decode()
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))  # as base64(1) writes it
    for cell in (text, wrapped + "\n", f"data:image/png;base64,{text}"):
        assert detector.decode(cell) == (PNG, None)
    not_base64 = "not base64: the image must be base64-encoded JPEG or PNG bytes"
    assert detector.decode("not base64!") == (None, not_base64)
    assert detector.decode(" \n") == (None, "empty image (no bytes)")
    assert detector.decode(None) == detector.decode(math.nan) == (None, "no image")
    assert detector.decode(b"bytes") == (None, "the image must be base64 text, not bytes")
    monkeypatch.setattr(detector, "MAX_BASE64", 8)
    assert detector.decode(text) == (None, "too large: more than 8 characters of base64")


def test_a_request_gives_one_photo_a_row_with_its_path():
    frame = pd.DataFrame({"image": [base64.b64encode(PNG).decode(), "%"], "path": ["a.png", None]})
    photos, paths = detector.photos_of(frame)
    assert paths == ["a.png", None]
    assert photos == [scoring.Photo("a.png", PNG), scoring.Photo("photo 1", None, detector.decode("%")[1])]
    assert detector.photos_of(frame[["image"]])[1] == [None, None]
    with pytest.raises(MlflowException, match="needs a column 'image'"):
        detector.photos_of(pd.DataFrame({"picture": ["x"]}))


def test_rows_go_back_as_a_frame():
    """The rows as scoring.score_photos gives them (which makes a non-finite score an error row, for
    the CLI and the detector alike: tests/test_cli.py) become one record each."""
    nan = predict.score_problem(math.nan)
    scored = [
        scoring.Scored(0, Prediction("a.png", 0, (1, 2, 3, 4), 0.25, "real")),
        scoring.Scored(0, Prediction("a.png", 1, (5, 6, 7, 8), status="error", error=nan)),
        scoring.Scored(1, Prediction("photo 1", status="no face")),
    ]
    frame = detector.frame_of(scored, ["a.png", None])
    assert list(frame.columns) == list(detector.COLUMNS)
    assert frame.to_dict("records") == [
        {"photo": 0, "path": "a.png", "face": 0, "box": [1, 2, 3, 4], "p_fake": 0.25, "label": "real",
         "status": "ok", "error": None},
        {"photo": 0, "path": "a.png", "face": 1, "box": [5, 6, 7, 8], "p_fake": None, "label": None,
         "status": "error", "error": "the model gave a non-finite score (nan)"},
        {"photo": 1, "path": None, "face": None, "box": None, "p_fake": None, "label": None,
         "status": "no face", "error": None},
    ]  # fmt: skip
    assert detector.frame_of([], []).empty


def test_the_signature_names_the_columns_and_requirements_are_pinned():
    signature = detector.signature()
    assert signature.inputs.input_names() == ["image", "path"]
    assert [c.required for c in signature.inputs.inputs] == [True, False]
    assert signature.outputs.input_names() == list(detector.COLUMNS)
    pinned = detector.requirements()
    assert any(r.startswith("mlflow==") for r in pinned) and all("==" in r for r in pinned)

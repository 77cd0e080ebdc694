"""Classify the faces of ordinary photos with a trained model: photo -> faces -> ROI crops -> ELA
(for an ELA model) -> p(fake), through the same code as the pipeline (landmarks.detect_faces,
roi.roi_box / crop / resize, ela.compute or, for ``ela.at: photo``, ela.roi_levels of the whole
photo's error levels, at each of the card's ``ela.qualities`` when it has some,
evaluation.predict_fake).

The model's card (card.json beside the model file, or the MLmodel metadata of a registered model)
gives the input kind (ELA or RGB crops), the ELA and ROI settings and the default precision of the
run that trained it; params.yaml gives the rest (landmarks, threshold, the seed of random ROIs).
A model without a card is used with params.yaml's settings as an ELA model, with a warning.

Every face dlib finds is scored. The ROI is the deterministic centred box (``roi_box`` with
rng=None), or with ``rois`` > 1 the mean p(fake) over that many random ROIs drawn like the training
crops, each from ``seeding.rng(seed, "predict", photo file name, face index, k)``. The photos are
read and their faces found, cropped and ELA'd in a pool of worker processes, and the faces go
through the model in batches (scoring.score_photos, which the served detector shares); the rows do
not depend on the number of workers. The model is loaded and checked, and the heatmap folder
checked, before the first photo is read, so that a usage problem costs no work; TensorFlow's
start-up lines on stderr are silenced unless ``verbose``.

Each input gives one or more Predictions: one per face (status ``ok``, or ``error`` when the
model's score is no probability, NaN from broken weights say), or one row with status ``no face``,
``face too small`` (the ROI lies outside the photo) or ``error`` (missing, unreadable, truncated or
oversized file, a broken or looping link, a FIFO or device, a folder that can't be read); the reason
is in ``error``. Usage problems (no model file, a file that isn't a Keras model or isn't a regular
file, an unknown registered model or version, a bad card or one that an explicit setting
contradicts, a model that doesn't fit ``roi.size``, a heatmap folder that can't be written) raise
PredictError. The output formats show file names with printable (undecodable bytes and, in a
table, control characters escaped).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from faceswap_ela import card, ela, landmarks, roi, seeding
from faceswap_ela.images import find_photos, os_reason
from faceswap_ela.params import Params
from faceswap_ela.predict_model import PredictError, load_model, quiet_stderr, resolve_model

OK = "ok"
NO_FACE = "no face"
TOO_SMALL = "face too small"
ERROR = "error"
COLUMNS = ("photo", "face", "box", "p_fake", "label", "status", "error")
TABLE_COLUMNS = COLUMNS[:-1]  # the error follows the status
FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class Prediction:
    """One output row: a face and its score, or an input that gave none (see the module doc).
    ``box`` is dlib's face box (left, top, right, bottom) in the photo's pixels."""

    photo: str
    face: int | None = None
    box: tuple[int, int, int, int] | None = None
    p_fake: float | None = None
    label: str | None = None
    status: str = OK
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == ERROR

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON types, keys in COLUMNS order."""
        return {
            "photo": self.photo,
            "face": self.face,
            "box": None if self.box is None else list(self.box),
            "p_fake": None if self.p_fake is None else round(float(self.p_fake), 6),
            "label": self.label,
            "status": self.status,
            "error": self.error,
        }


@dataclass
class FaceCrops:
    """One detected face: its box and, per ROI, the resized RGB crop and its ELA image."""

    index: int
    box: tuple[int, int, int, int]
    crops: list[np.ndarray] = field(default_factory=list)
    elas: list[np.ndarray] = field(default_factory=list)


def check_heatmap_dir(folder: str | os.PathLike) -> Path:
    """Create the heatmap folder if need be and check that a file can be written in it, before any
    photo is scored; PredictError if not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PredictError(f"heatmap folder {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise PredictError(f"can't write heatmaps to {folder}: {os_reason(exc)}") from None
    return folder


def roi_boxes(
    points: np.ndarray, shape: tuple[int, ...], params: Params, rois: int, name: str, index: int
) -> list[tuple[int, int, int, int]]:
    """The ROI of a face: the centred box when ``rois`` is 1, else ``rois`` random boxes drawn as in
    training, from ``seeding.rng(seed, "predict", name, index, k)``."""
    settings = {"dx_max": params.roi.dx_max, "dy_max": params.roi.dy_max}
    if rois <= 1:
        return [roi.roi_box(points, shape, None, **settings)]
    return [
        roi.roi_box(points, shape, seeding.rng(params.seed, "predict", name, index, k), **settings)
        for k in range(rois)
    ]


def ela_input(crop: np.ndarray, params: Params) -> np.ndarray:
    """The network's input for a resized crop: its ELA image with params.ela's settings (at each
    of ``ela.qualities``, stacked as channels, when set)."""
    return ela.compute(crop, params.ela)


def face_crops(
    rgb: np.ndarray,
    face: landmarks.Face,
    index: int,
    params: Params,
    rois: int,
    name: str,
    levels: np.ndarray | None = None,
) -> FaceCrops:
    """A FaceCrops for one detected face (crops resized to roi.size, ELA of each: of the resized
    crop, or with ``levels``, the photo's raw error levels (ela.at: photo), cut from those); crops
    that are empty or too small are left out."""
    left, top, right, bottom = (int(round(v)) for v in face.box)
    out = FaceCrops(index=index, box=(left, top, right, bottom))
    for roi_box in roi_boxes(face.points, rgb.shape, params, rois, name, index):
        piece = roi.crop(rgb, roi_box)
        if piece is None:
            continue
        piece = roi.resize(piece, params.roi.size)
        out.crops.append(piece)
        if levels is None:
            out.elas.append(ela_input(piece, params))
        else:
            out.elas.append(ela.roi_levels(levels, roi_box, params.roi.size, params.ela))
    return out


class Predictor:
    """Scores the faces of photos with one model, its card and one params.yaml.

    ``model`` (a path, a pipeline model's name, or a ``models:/...`` URI; see
    predict_model.resolve_model) defaults to the paper's ELA-CNN; ``threshold`` to
    params.eval.threshold. The model's card (card.json beside the model file, or the registered
    model's MLmodel metadata) sets the input kind and the ``ela`` and ``roi`` sections of
    ``params``, which keeps the rest; without a card, params.yaml's settings are used and
    ``warning`` says so. ``input_kind`` (ela or rgb, default the card's, else ela) must agree with
    the card. The Keras model is loaded on first use and kept (predict loads it before any photo;
    dlib's models are loaded where the photos are read, see scoring). PredictError when the model
    file is missing, its card is bad or contradicted, or ``rois`` < 1. ``verbose`` lets
    TensorFlow's start-up lines through. Heatmaps that could not be written are listed in
    ``heatmap_errors``. The forward pass runs under ``precision`` (default params.train.precision,
    resolved for this machine as training and evaluation resolve it: a model trained in float16 on
    a GPU is not run in emulated float16 on a CPU); the choice is in ``precision_choice``.
    """

    def __init__(
        self,
        params: Params,
        model: str | os.PathLike | None = None,
        *,
        threshold: float | None = None,
        rois: int = 1,
        verbose: bool = False,
        precision: str | None = None,
        input_kind: str | None = None,
    ):
        self.resolved = resolve_model(model, params, quiet=not verbose)
        self.model_path, self.card = self.resolved.path, self.resolved.card
        self.warning: str | None = None
        if self.card is None:
            self.settings_from = "params.yaml (no model card)"
            self.params = params
            self.input = input_kind or "ela"
            self.warning = (
                f"no model card: {self.resolved.no_card}; using params.yaml's ELA and ROI settings, "
                f"input {self.input}"
            )
        else:
            if input_kind is not None and input_kind != self.card["input"]:
                raise PredictError(
                    f"--input {input_kind} contradicts the model card: input {self.card['input']} "
                    f"({self.resolved.source})"
                )
            self.settings_from = self.resolved.source
            self.params = params.model_copy(
                update={"ela": card.ela_settings(self.card), "roi": card.roi_settings(self.card)}
            )
            self.input = self.card["input"]
        # the forward pass runs at this machine's precision; a card's is what training used
        self.precision = params.train.precision if precision is None else precision
        self.precision_choice: Any = None
        self.threshold = float(params.eval.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise PredictError(f"threshold must be in [0, 1], not {self.threshold}")
        if rois < 1:
            raise PredictError(f"rois must be at least 1, not {rois}")
        self.rois = int(rois)
        self.verbose = verbose
        self.heatmap_errors: list[str] = []
        self._net: Any = None

    def settings(self) -> str:
        """One line naming the settings the model is used with, and where they come from."""
        e, r = self.params.ela, self.params.roi
        recipe = self.card["fakes"] if self.card is not None else "unknown"
        if self.card is not None and "arch" in self.card:
            recipe += f", network {self.card['arch']} ({self.card.get('residual')})"
        quality = f"qualities {list(e.qualities)}" if e.qualities else f"quality {e.quality}"
        return (
            f"model {self.model_path}, settings of {self.settings_from}: input {self.input}, "
            f"recipe {recipe}, ELA {quality} subsampling {e.subsampling} scale {e.scale} "
            f"gain {e.gain:g} at {e.at}, ROI size {r.size} dx_max {r.dx_max:g} dy_max {r.dy_max:g}, "
            f"precision {self.precision}"
            + (f" (trained in {self.card['precision']})" if self.card is not None else "")
        )

    @property
    def net(self) -> Any:
        """The Keras model (loaded on first use, or by ``load``)."""
        if self._net is None:
            with quiet_stderr(not self.verbose):
                from faceswap_ela import hardware

                self.precision_choice = hardware.resolve_precision(self.precision)
            self._net = load_model(
                self.model_path,
                self.params.roi.size,
                policy=self.precision_choice.policy,
                quiet=not self.verbose,
                card_from=None if self.card is None else self.settings_from,
                channels=ela.channels(self.params.ela) if self.input == "ela" else 3,
            )
        return self._net

    def load(self) -> None:
        """Load and check the model now (PredictError when it is none or does not fit)."""
        _ = self.net

    def inputs(self, face: FaceCrops) -> list[np.ndarray]:
        """What the model takes of a face: its ELA images, or its RGB crops for an rgb model."""
        return face.crops if self.input == "rgb" else face.elas

    def score(self, images: np.ndarray) -> np.ndarray:
        """p(fake) of each input image (N x S x S x 3 uint8), in one batched predict."""
        if not len(images):
            return np.zeros(0, dtype=np.float64)
        net = self.net
        with quiet_stderr(not self.verbose):
            from faceswap_ela.evaluation import predict_fake

            return predict_fake(net, np.ascontiguousarray(images))

    def label(self, p_fake: float) -> str:
        return "fake" if p_fake >= self.threshold else "real"

    def _heatmap(self, folder: Path, path: Path, face: FaceCrops, p_fake: float, names: set[str]) -> None:
        from faceswap_ela import figures

        target = folder / heatmap_name(path, face.index, names)  # named with the photo's own bytes
        try:
            figures.heatmap(target, face.crops[0], face.elas[0][..., :3], p_fake, self.label(p_fake),
                            printable(path.name), face.index, len(face.elas))  # fmt: skip
        except Exception as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
            self.heatmap_errors.append(f"{target}: heatmap not written: {reason}")

    def predict(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        heatmap_dir: str | os.PathLike | None = None,
        progress: bool = False,
        workers: int = 0,
    ) -> list[Prediction]:
        """Predictions for every photo named by ``paths`` (files, or folders walked recursively),
        in input order, one row per face, the photos read and their faces found by ``workers``
        processes (0: every core; see scoring.pool_size). With ``heatmap_dir``, a PNG per face (see
        figures.heatmap): the folder is checked first (PredictError), and a figure that can't be
        written is left out and named in ``heatmap_errors``."""
        from faceswap_ela import scoring

        if heatmap_dir is not None:
            heatmap_dir = check_heatmap_dir(heatmap_dir)
        self.net  # noqa: B018 - load and check the model before any photo
        self.heatmap_errors = []
        photos = [scoring.Photo(str(path), path, error) for path, error in find_photos(paths)]
        scored = scoring.score_photos(
            self, photos, workers=workers, keep_crops=heatmap_dir is not None, progress=progress
        )
        if heatmap_dir is not None:
            names: set[str] = set()
            for item in scored:
                if item.face is not None and item.row.p_fake is not None:
                    self._heatmap(heatmap_dir, Path(item.row.photo), item.face, item.row.p_fake, names)
        return [item.row for item in scored]


def score_problem(p_fake: float) -> str | None:
    """Why ``p_fake`` is no score to label (NaN from broken weights would read "real"), or None."""
    if not np.isfinite(p_fake):
        return f"the model gave a non-finite score ({p_fake})"
    if not 0.0 <= p_fake <= 1.0:
        return f"the model gave p(fake) = {p_fake:g}, not a probability in [0, 1]"
    return None


def heatmap_name(photo: Path, index: int, taken: set[str]) -> str:
    """``{stem}_face{index}.png``, with ``-2``, ``-3``... after the stem when photos share a name."""
    stem, n = photo.stem, 1
    name = f"{stem}_face{index}.png"
    while name in taken:
        n += 1
        name = f"{stem}-{n}_face{index}.png"
    taken.add(name)
    return name


# ---------------------------------------------------------------- output formats


# C0 and C1 controls, DEL and the Unicode line and paragraph separators: each would break a table
# row or a stderr line in two, or (ESC) drive the terminal
_CONTROLS = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
} | {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def printable(text: str, *, controls: bool = True) -> str:
    """``text`` (a file name, or a message naming one) fit for any UTF-8 output. The bytes of a
    name that aren't UTF-8 (Python holds them as lone surrogates, which no UTF-8 stream takes) are
    shown as ``\\xff`` escapes; with ``controls``, so are control characters (``\\n``, ``\\t``,
    ``\\x1b``), so that a table row or a stderr line stays one line. A name is shown, not kept:
    a backslash in it is left as it is."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte: none comes from a file name
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.translate(_CONTROLS) if controls else text


def _shown(row: Prediction, *, controls: bool) -> dict[str, Any]:
    """``row.as_dict()`` with its photo and error printable."""
    data = row.as_dict()
    for key in ("photo", "error"):
        if data[key] is not None:
            data[key] = printable(data[key], controls=controls)
    return data


def to_json(rows: Sequence[Prediction]) -> str:
    """A JSON list of {photo, face, box, p_fake, label, status, error}, one object a line: always
    valid JSON (a NaN score raises ValueError rather than print NaN; see printable for names)."""
    if not rows:
        return "[]\n"
    lines = (json.dumps(_shown(r, controls=False), allow_nan=False) for r in rows)
    return "[\n" + ",\n".join("  " + line for line in lines) + "\n]\n"


def to_csv(rows: Sequence[Prediction]) -> str:
    """CSV with the COLUMNS (box as a JSON list, empty cells for missing values). A name holding a
    newline or a comma is quoted, as CSV quotes it, so it reads back whole (see printable)."""
    frame = pd.DataFrame([_shown(r, controls=False) for r in rows], columns=list(COLUMNS), dtype=object)
    frame["box"] = frame["box"].map(lambda box: None if box is None else json.dumps(box))
    return frame.to_csv(index=False, lineterminator="\n")


def to_table(rows: Sequence[Prediction]) -> str:
    """Aligned, human-readable columns: photo, face, box, p_fake, label, status (with the error);
    one line a row, control characters escaped (see printable)."""
    cells = [
        (
            printable(row.photo),
            "-" if row.face is None else row.face,
            "-" if row.box is None else " ".join(map(str, row.box)),
            "-" if row.p_fake is None else f"{row.p_fake:.4f}",
            row.label or "-",
            f"{row.status}: {printable(row.error)}" if row.status == ERROR and row.error else row.status,
        )
        for row in rows
    ]
    # the header as a first row: tabulate would pad header columns by two more spaces
    text = tabulate([TABLE_COLUMNS, *cells], tablefmt="plain", disable_numparse=True, stralign="left")
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def render(rows: Sequence[Prediction], fmt: str) -> str:
    """The rows in ``fmt``: table, json or csv."""
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "table":
        return to_table(rows)
    raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")

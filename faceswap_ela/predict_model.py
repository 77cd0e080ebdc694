"""The model ``faceswap-ela predict`` scores with: which file a ``--model`` names (the default
model, a pipeline model's name, a file, or a registered model ``models:/...`` fetched from the
MLflow store), its card (card.json beside the file, or the registered model's MLmodel metadata),
and the Keras model loaded and checked to fit. Problems with any of these are usage problems:
PredictError.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from faceswap_ela import card, files, layout
from faceswap_ela.images import os_reason
from faceswap_ela.params import Params, repo_root


class PredictError(ValueError):
    """A usage problem (no model, a model that does not fit the params): nothing can be scored."""


def named_model(name: str, root: str | os.PathLike | None = None) -> Path:
    """The pipeline's model ``name`` (``ela-blend-s42``): ``<repo root>/models/<name>/model.keras``."""
    return Path(root if root is not None else repo_root()) / layout.model_file(name)


def default_model(params: Params, root: str | os.PathLike | None = None) -> Path:
    """The paper's ELA-CNN of the last ``dvc repro``: the model ``ela-warp-s<first seed>``."""
    if "ela" not in params.train.inputs:
        raise PredictError("params.yaml train.inputs trains no ELA model: pass --model")
    return named_model(layout.primary(params), root)


def is_model_name(model: object) -> bool:
    """Whether ``model`` is text naming a pipeline model rather than a file: no folder, no suffix
    (``ela-blend-s42``, not ``model.keras`` or ``./ela-blend-s42``)."""
    return (
        isinstance(model, str)
        and bool(model)
        and not model.startswith(".")
        and Path(model).name == model
        and not Path(model).suffix
    )


REGISTRY_PREFIX = "models:/"


def is_registry_uri(model: object) -> bool:
    """Whether ``model`` names a registered model: ``models:/<name>/<version|latest>`` or
    ``models:/<name>@<alias>``."""
    return isinstance(model, str) and model.startswith(REGISTRY_PREFIX)


@dataclass(frozen=True)
class ResolvedModel:
    """A model file to load, its card (None without one) and ``source``: where the card lies, or
    would lie (the card.json beside the file, or the registered model's MLmodel metadata)."""

    path: Path
    card: dict | None
    source: str
    uri: str | None = None  # a registered model's models:/ URI

    @property
    def no_card(self) -> str:
        """Why there is no card, in the words of the warning predict gives."""
        if self.uri is not None:
            return f"{self.uri} has none in its MLmodel metadata"
        return f"{self.source} not found"


def resolve_model(
    model: str | os.PathLike | None,
    params: Params,
    root: str | os.PathLike | None = None,
    *,
    quiet: bool = True,
) -> ResolvedModel:
    """The model ``model`` names, with its card: the default model (None, see default_model), a
    registered model (a ``models:/...`` URI, fetched by fetch_registered), a pipeline model's name
    (named_model) or a file. ``root`` is the repository root (default: params.repo_root()); with
    ``quiet``, stderr is silenced while a registered model is fetched. PredictError when the model
    is missing or can't be fetched, or its card is bad."""
    if is_registry_uri(model):
        path, registered = fetch_registered(str(model), root, quiet=quiet)
        return ResolvedModel(path, registered, f"{model} (MLmodel metadata)", uri=str(model))
    if model is None:
        path = default_model(params, root)
    elif isinstance(model, str) and not model.strip():
        raise PredictError(
            f"empty model name {model!r}: name a pipeline model, a .keras file or models:/NAME/latest"
        )
    elif is_model_name(model):
        path = named_model(str(model), root)
    else:
        path = Path(model)
    if not path.exists():
        raise PredictError(f"model {path} not found: run dvc repro first or pass --model")
    problem = _not_a_file(path)
    if problem:
        raise PredictError(f"can't load model {path}: {problem}")
    source = card.path_for(path)
    if not source.is_file():
        return ResolvedModel(path, None, str(source))
    try:
        return ResolvedModel(path, card.read(source), str(source))
    except card.CardError as exc:
        raise PredictError(f"bad model card: {exc}") from None


def fetch_registered(
    uri: str, root: str | os.PathLike | None = None, *, quiet: bool = True
) -> tuple[Path, dict | None]:
    """Download the registered model ``uri`` from the MLflow store (MLFLOW_TRACKING_URI, else the
    sqlite store at the repository root) into a temporary folder removed at exit, and return the
    .keras file inside and the card of its MLmodel metadata (None without one); PredictError when
    the store, the model or the version is missing, or the card is bad."""
    import atexit
    import shutil

    from faceswap_ela import mlflow_store

    store = mlflow_store.tracking_uri(root)
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///") :]).is_file():
        raise PredictError(f"can't load model {uri}: no MLflow store at {store} (set MLFLOW_TRACKING_URI)")
    folder = tempfile.mkdtemp(prefix="faceswap-ela-model.")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        with quiet_stderr(quiet):
            local = mlflow_store.download_model(uri, folder, store)
    except mlflow_store.DownloadError as exc:
        raise PredictError(f"can't load model {uri} from {store}: {exc}") from None
    found = sorted(local.rglob("*.keras"))
    if not found:
        raise PredictError(f"can't load model {uri}: the registered model holds no .keras file")
    return found[0], registered_card(local, uri)


def registered_card(folder: Path, uri: str) -> dict | None:
    """The card that evaluate@ logged in the MLmodel metadata of a downloaded model (see
    tracking.Tracker.log_model), None when there is none (no MLmodel file: a plain .keras file)."""
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        return None
    try:
        meta = yaml.safe_load(mlmodel.read_text())
        data = meta.get("metadata") if isinstance(meta, dict) else None
        if not isinstance(data, dict) or "card" not in data:
            return None
        return card.check(data["card"], f"{uri} (MLmodel metadata)")
    except (OSError, yaml.YAMLError, card.CardError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else " ".join(str(exc).split())
        raise PredictError(f"can't read the card of {uri}: {reason}") from None


@contextlib.contextmanager
def quiet_stderr(quiet: bool = True) -> Iterator[None]:
    """With ``quiet``, send file descriptor 2 to /dev/null for the block: TensorFlow's C++ start-up
    lines (CUDA, oneDNN, absl) bypass Python and TF_CPP_MIN_LOG_LEVEL alike."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` can't be a model file, from its stat alone: a folder, or anything but a regular
    file (a FIFO would block the reader, /dev/zero never ends). A regular file is not capped: Keras
    reads a .keras archive's members, guarding against decompression bombs itself."""
    try:
        files.check_regular(path)
    except IsADirectoryError:
        return "it is a folder, not a .keras file"
    except OSError as exc:
        return os_reason(exc)
    return None


def _not_a_model(path: Path) -> str | None:
    """Why ``path`` is plainly no Keras model, before Keras reads it (its own messages mislead:
    a .keras file that isn't a zip archive reads "File not found")."""
    problem = _not_a_file(path)
    if problem:
        return problem
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        return "Keras loads .keras (or legacy .h5) files only"
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            return "not a Keras model (a .keras file is a zip archive; this one is not)"
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return "not a Keras model (the archive holds no config.json)"
    return None


def load_model(
    path: str | os.PathLike,
    size: int,
    *,
    policy: str = "float32",
    quiet: bool = True,
    card_from: str | None = None,
    channels: int = 3,
) -> Any:
    """The Keras model at ``path`` (imports Keras) computing under the dtype ``policy``, checked to
    take ``size`` x ``size`` x ``channels`` input (the roi.size of params.yaml, or of the card
    ``card_from``; 3k channels for ELA at k qualities) and to give two class probabilities; with
    ``quiet``, TensorFlow's start-up chatter is dropped."""
    path = Path(path)
    problem = _not_a_model(path)
    if problem:
        raise PredictError(f"can't load model {path}: {problem}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with quiet_stderr(quiet):
            from faceswap_ela.model import load_for_inference

            net = load_for_inference(path, policy)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if reason.startswith("File not found"):
            reason = "not a Keras model"
        raise PredictError(f"can't load model {path}: {reason}") from None
    shape = tuple(net.input_shape[1:])
    if shape[:2] == (size, size) and shape[2:] != (channels,):
        where = "params.yaml" if card_from is None else f"its card {card_from}"
        raise PredictError(f"model {path} takes {shape} input but {where} asks for {channels} channels")
    if shape != (size, size, channels):
        if card_from is None:
            problem = f"params roi.size is {size}: pass the params.yaml it was trained with (--params)"
        else:
            problem = f"its card {card_from} says roi.size {size}"
        raise PredictError(f"model {path} takes {shape} input but {problem}")
    if tuple(net.output_shape[1:]) != (2,):
        raise PredictError(f"model {path} gives {tuple(net.output_shape[1:])} outputs, not p(real), p(fake)")
    return net

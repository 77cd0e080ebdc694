"""The MLflow store: where it is (``sqlite:///<repo root>/mlflow.db``, artifacts beside it in
``mlartifacts``, or ``MLFLOW_TRACKING_URI``), a client for it, and a registered model downloaded
from it.

Against a server every HTTP call is bounded by HTTP_TIMEOUT_S and not retried
(``MLFLOW_HTTP_REQUEST_TIMEOUT`` and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` override this), and a
server that does not answer ``/health`` fails at once, so that a dead or hung server costs seconds,
not minutes. On a sqlite store, parallel writers (``dvc queue start -j N``) are safe: a process
creates the store's tables under a file lock (``mlflow.db.lock``), since two processes creating
them at once fail, and a call that finds the database locked beyond MLflow's own 20 s busy timeout
is retried with backoff (LOCK_RETRIES).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import tenacity
from filelock import FileLock

from faceswap_ela import params as P

log = logging.getLogger(__name__)

STORE_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
HTTP_TIMEOUT_S = 5  # per request to an MLflow server, unless MLFLOW_HTTP_REQUEST_TIMEOUT is set
HTTP_RETRIES = 0  # unless MLFLOW_HTTP_REQUEST_MAX_RETRIES is set: a failure disables tracking anyway
LOCK_RETRIES = 8  # attempts of a call that finds a sqlite store locked
LOCK_BACKOFF_S = 0.25  # the first wait between them; doubled each time, up to LOCK_BACKOFF_MAX_S
LOCK_BACKOFF_MAX_S = 4.0


def tracking_uri(root: str | os.PathLike | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the sqlite store at the repository root."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    root = Path(root) if root is not None else P.repo_root()
    return f"sqlite:///{(root / STORE_NAME).resolve()}"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of an absolute ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(unquote(uri[len("sqlite:///") :]))
    if not db.is_absolute() or str(db) in ("", ":memory:"):
        return None
    return db


def artifact_location(uri: str) -> str | None:
    """Artifacts of a new experiment go beside a sqlite store (``<store folder>/mlartifacts``);
    other stores (servers) keep their own default (None)."""
    db = _sqlite_file(uri)
    return None if db is None else (db.parent / ARTIFACTS_NAME).as_uri()


def brief(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 240 else text[:237] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _probe_server(uri: str, timeout: float = 3.0) -> None:
    """Fail fast on an http(s) store that does not answer, instead of MLflow's minutes of retries."""
    import requests

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
    parsed = urlparse(uri)
    try:
        requests.get(f"{parsed.scheme}://{parsed.netloc}/health", timeout=timeout)
    except requests.RequestException as exc:
        raise ConnectionError(f"no MLflow server answers at {parsed.netloc} ({type(exc).__name__})") from None


def _quiet_store_logs() -> None:
    # sqlite stores log their schema migrations at INFO on every fresh database
    for name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


class DownloadError(Exception):
    """A registered model that could not be downloaded; the message says why, in one line."""


def download_model(uri: str, dst: str | os.PathLike, store: str) -> Path:
    """Download the registered model ``uri`` (``models:/<name>/<version|latest>`` or
    ``models:/<name>@<alias>``) from the MLflow store ``store`` (its tracking and registry URI) into
    the folder ``dst``; returns the local folder. A server that does not answer fails at once rather
    than after MLflow's retries, and a sqlite store's schema migrations are not logged. DownloadError
    (the exception's type and first line) when the store, the model or the version is missing or
    MLflow fails."""
    try:
        import mlflow.artifacts

        _quiet_store_logs()
        if urlparse(store).scheme in ("http", "https"):
            _probe_server(store)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst), tracking_uri=store, registry_uri=store
        )
    except Exception as exc:
        raise DownloadError(brief(exc)) from None
    return Path(local)


@contextlib.contextmanager
def global_store(uri: str) -> Iterator[None]:
    """mlflow.keras.log_model takes no client or URI, only the global store's active run: point
    the global store (and MLFLOW_TRACKING_URI, which mlflow sets with it) at ``uri`` for the block."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _locked(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is sqlite's "database is locked"."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).lower()
        if "database is locked" in text or "database table is locked" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_locked(func: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``func``, called again while it fails because the store is locked: LOCK_RETRIES attempts in
    all, the waits between them LOCK_BACKOFF_S doubled each time up to LOCK_BACKOFF_MAX_S, each
    times a random 0.5 to 1.5 (so that waiting processes spread out). Any other error, and the
    last attempt's, is raised as it is."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_locked),
        stop=tenacity.stop_after_attempt(LOCK_RETRIES),
        # the doubled wait d with its jitter: d / 2, plus a random 0 to d
        wait=tenacity.wait_exponential(multiplier=LOCK_BACKOFF_S / 2, max=LOCK_BACKOFF_MAX_S / 2)
        + tenacity.wait_random_exponential(multiplier=LOCK_BACKOFF_S, max=LOCK_BACKOFF_MAX_S),
        before_sleep=lambda state: log.info(
            "MLflow store locked (%s): retrying in %.1f s", what, state.next_action.sleep
        ),
        reraise=True,
    )
    return functools.partial(retrying, func)


class _RetryingClient:
    """An MlflowClient whose calls are retried while a sqlite store is locked (see retry_locked)."""

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        return retry_locked(value, name) if callable(value) else value


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` for a sqlite store: MLflow creates a store's tables on first use, and two
    processes doing it at once fail ("table alembic_version already exists")."""
    db = _sqlite_file(uri)
    if db is None:
        yield
        return
    with FileLock(db.with_name(db.name + ".lock")):
        yield


def client(uri: str):
    from mlflow import MlflowClient

    _quiet_store_logs()
    if urlparse(uri).scheme in ("http", "https"):
        _probe_server(uri)
        return MlflowClient(tracking_uri=uri)
    with _store_lock(uri):
        client = retry_locked(MlflowClient, "opening the store")(tracking_uri=uri)
    return _RetryingClient(client)

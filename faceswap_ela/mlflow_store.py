"""The MLflow store: where it is (``sqlite:///<repo root>/mlflow.db``, artifacts beside it in
``mlartifacts``, or ``MLFLOW_TRACKING_URI``), a client for it, and a registered model downloaded
from it.

Against a server every HTTP call is bounded by HTTP_TIMEOUT_S and not retried
(``MLFLOW_HTTP_REQUEST_TIMEOUT`` and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` override this), and a
server that does not answer ``/health`` fails at once, so that a dead or hung server costs seconds,
not minutes. On a sqlite store, parallel writers (``dvc queue start -j N``) are safe: a process
creates the store's tables under a file lock (``mlflow.db.lock``), since two processes creating
them at once fail, and a call that finds the database locked beyond MLflow's own 20 s busy timeout
is retried with backoff (LOCK_RETRIES). A sqlite store that can't be used is named for what it is
before MLflow opens it (``check_store``: a folder, not a database, not MLflow's, read-only), in
milliseconds rather than after MLflow's own retries, and MLflow's own logging of the database
errors it re-raises is silenced: the caller says what failed, once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import stat
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
SQLITE_HEADER = b"SQLite format 3\x00"
MLFLOW_TABLES = ("alembic_version", "experiments", "runs")  # what every MLflow sqlite store holds


class StoreError(Exception):
    """A sqlite store that can't be used, with a one-line reason naming it."""


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
    """An exception's type and first line; for an error of the database under MLflow's and
    SQLAlchemy's wrappers, the database's own ("attempt to write a readonly database")."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, sqlite3.Error):
        exc = root
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
    for name in ("alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a database error is logged with its whole traceback (some 90 lines) before MLflow raises it
    # again; the caller reports what it raises, in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def _tables(db: Path) -> set[str] | None:
    """The tables of a sqlite database, read-only; None when it can't be read now (locked)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as con:
            return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return None
        raise StoreError(f"{db} can't be read as a database: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db} is not an SQLite database ({exc})") from None


def check_store(uri: str, *, write: bool = True) -> None:
    """StoreError naming a sqlite store's file when MLflow can't use it: its folder a file, the file
    a folder or no regular file, not a database, a database without MLflow's tables, or, to
    ``write``, read-only (the file, or its folder, where sqlite writes its journal). A store that
    doesn't exist yet (nor its folder), or an empty file, is fine: MLflow creates its tables. Other
    stores pass."""
    db = _sqlite_file(uri)
    if db is None:
        return
    if not db.parent.exists():
        return  # a new store: its folder is made with it
    if not db.parent.is_dir():
        raise StoreError(f"{db.parent} is not a folder: no {db.name} there")
    writable_folder = os.access(db.parent, os.W_OK | os.X_OK)
    try:
        info = db.stat()
    except FileNotFoundError:
        if write and not writable_folder:
            raise StoreError(f"{db.parent} is read-only: {db.name} can't be created there") from None
        return
    if stat.S_ISDIR(info.st_mode):
        raise StoreError(f"{db} is a folder, not a database")
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"{db} is not a regular file")
    if write and not os.access(db, os.W_OK):
        raise StoreError(f"{db} is read-only")
    if write and not writable_folder:
        raise StoreError(f"{db} is in a read-only folder (sqlite writes its journal beside it)")
    if info.st_size == 0:
        return
    try:
        with open(db, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"can't read {db}: {exc.strerror or exc}") from None
    if header != SQLITE_HEADER:
        raise StoreError(f"{db} is not an SQLite database")
    tables = _tables(db)
    missing = [t for t in MLFLOW_TABLES if tables and t not in tables]
    if missing:
        raise StoreError(f"{db} is not an MLflow database, or its schema was changed: no table {missing[0]}")


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
        check_store(store, write=False)
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
    """A client of the store ``uri`` to write runs into: StoreError when a sqlite store can't take
    them (check_store), ConnectionError when a server does not answer."""
    from mlflow import MlflowClient

    _quiet_store_logs()
    check_store(uri)
    if urlparse(uri).scheme in ("http", "https"):
        _probe_server(uri)
        return MlflowClient(tracking_uri=uri)
    with _store_lock(uri):
        client = retry_locked(MlflowClient, "opening the store")(tracking_uri=uri)
    return _RetryingClient(client)

"""Atomic outputs: a stage writes into a temporary sibling that is renamed only when complete,
so a failed or interrupted stage leaves no half-written file or folder behind. A process killed
outright (SIGKILL, power loss) can't clean up: ``sweep_stale`` removes what it left, at the next
stage's start."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

# atomic_path's temporaries (tempfile's 8 random characters) and training.save_model's
STALE = re.compile(r"^\..+\.(?:[a-z0-9_]{8}\.tmp|\d+\.keras)$")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    os.chmod(tmp, 0o755 if directory else 0o644)
    _remove(path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Several outputs that appear together or not at all: existing ones are removed first,
    then each is written to a temporary sibling and all are renamed once every one is done.
    A path ending in '/' is a folder."""
    specs = [(Path(p), str(p).endswith("/")) for p in paths]
    for path, _ in specs:
        _remove(path)
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(path, directory=is_dir)) for path, is_dir in specs]
        yield tmps


def write_json(path: str | os.PathLike, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, float_format: str | None = None) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", float_format=float_format)


def sweep_stale(*folders: str | os.PathLike) -> list[Path]:
    """Remove the temporaries an interrupted run left anywhere under ``folders`` (names matching
    STALE; links are not followed); return what was removed. Only for folders no other process
    is writing into."""
    removed = []
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in [*dirnames, *filenames]:
                if STALE.match(name):
                    path = Path(dirpath) / name
                    _remove(path)
                    removed.append(path)
            dirnames[:] = [d for d in dirnames if not STALE.match(d)]
    return removed

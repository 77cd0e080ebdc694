"""Atomic outputs: a stage writes into a temporary sibling that is renamed only when complete,
so a failed or interrupted stage leaves no half-written file or folder behind. A process killed
outright (SIGKILL, power loss) can't clean up: ``sweep_stale`` removes what it left, at the next
stage's start. A disk that fills up while an output is written is an OSError naming that output
(``disk_full`` finds it, however it was wrapped)."""

from __future__ import annotations

import contextlib
import errno
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
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # no space left, or over the user's quota


def disk_full(exc: BaseException | None) -> OSError | None:
    """The OSError of a full disk (or an exceeded quota) that ``exc`` is or was raised from, else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class DiskFullError(OSError):
    """A full disk while outputs were written (``outputs``: a group's, when the write named no file)."""

    def __init__(self, full: OSError, *outputs: str | os.PathLike):
        super().__init__(full.errno, full.strerror, str(outputs[0]))
        self.outputs = tuple(str(p) for p in outputs)


def _written(exc: OSError) -> str | None:
    """The file a failed write named, if any (shutil's copies name the source first, the copy second)."""
    target = exc.filename2 or exc.filename
    return None if target is None else os.fsdecode(target)


def _full_disk_in(exc: BaseException, tmp: Path) -> OSError | None:
    """The full-disk error of ``exc`` when its write went into ``tmp`` or named no file."""
    full = disk_full(exc)
    written = None if full is None else _written(full)
    if full is None or (written is not None and not Path(written).absolute().is_relative_to(tmp.absolute())):
        return None
    return full


def disk_full_message(exc: OSError) -> str:
    """One line for a full disk: what was being written and how much room is left there."""
    target = _written(exc)
    shown = " and ".join(exc.outputs) if isinstance(exc, DiskFullError) else target
    where = f" writing {shown}" if target else ""
    free = ""
    if target:
        folder = Path(target).absolute()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        with contextlib.suppress(OSError):
            free = f" ({shutil.disk_usage(folder).free / (1 << 20):,.1f} MiB free there)"
    reason = "no space left on the disk" if exc.errno == errno.ENOSPC else "over the disk quota"
    return f"{reason}{where}{free}; free some space and run the stage again"


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
    except BaseException as exc:
        _remove(tmp)
        full = _full_disk_in(exc, tmp)
        if full is not None:  # a write into this output: name the output, not its temporary (or nothing)
            raise DiskFullError(full, path) from exc
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
        try:
            yield tmps
        except BaseException as exc:
            full = disk_full(exc)
            if full is not None and _written(full) is None:  # which of them can't be told: name all
                raise DiskFullError(full, *(path for path, _ in specs)) from exc
            raise


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

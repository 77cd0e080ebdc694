"""Opening the files a user names (a params.yaml, a model) without hanging or filling memory: only
a regular file is read (a FIFO blocks its reader until someone writes, a device such as /dev/zero
never ends), and never more than a cap. Problems are OSErrors whose strerror is a one-line reason,
so that callers report them as they report any other OSError."""

from __future__ import annotations

import errno
import os
import stat

MIB = 1 << 20


def kind(mode: int) -> str:
    """What a file of this mode is, in words: "a regular file", "a folder", "a FIFO"..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def irregular(mode: int) -> str | None:
    """Why a file of this mode can't be read as a file (a FIFO would block its reader), or None."""
    return None if stat.S_ISREG(mode) else f"not a regular file ({kind(mode)})"


def _refuse(info: os.stat_result, path: str | os.PathLike) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
    problem = irregular(info.st_mode)
    if problem:
        raise OSError(errno.EINVAL, problem, str(path))


def check_regular(path: str | os.PathLike) -> os.stat_result:
    """The stat of ``path`` (links followed) when it is a regular file; IsADirectoryError for a
    folder, OSError (strerror "not a regular file (a FIFO)", ...) for anything else."""
    info = os.stat(path)
    _refuse(info, path)
    return info


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file ``path``, refused (see check_regular) before it is opened when
    it is anything else, and refused (OSError EFBIG) when it holds more than ``limit`` bytes: its
    size is checked first and the read stops one byte past the cap, for files whose size lies
    (/proc)."""
    info = check_regular(path)
    too_large = OSError(errno.EFBIG, f"too large: over the {limit:,}-byte limit", str(path))
    if info.st_size > limit:
        raise too_large
    # O_NONBLOCK: should a FIFO have replaced the file since the stat, opening it does not wait
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as stream:
        _refuse(os.fstat(fd), path)
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise too_large
    return data

"""Safe tar archives: ``check_archive`` reads one to the end of its stream (so that gzip's CRC and
length are verified) and checks every member (no absolute paths, ``..``, links, special files or
repeated names; no member over a size cap, no more than a total cap in all) before
``safe_extract`` unpacks anything. A member that fails raises UnsafeArchiveError, a file that
isn't an intact archive CorruptArchiveError, each naming the archive."""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

MIB = 1 << 20
CHUNK = 1 << 16  # read from the stream after the last member


class ArchiveError(RuntimeError):
    """An archive that may not be unpacked, with a one-line message naming it."""


class UnsafeArchiveError(ArchiveError):
    """An archive member that would write outside the target folder or isn't a plain file/folder."""


class CorruptArchiveError(ArchiveError):
    """A file that isn't a readable (gzipped) tar archive."""


def _member_problem(member: tarfile.TarInfo, dest: str) -> str | None:
    """Why ``member`` may not be unpacked into ``dest``: what tarfile's data filter refuses (a path
    or link leading out of ``dest``, a device, FIFO or other special file), and what it lets
    through that the project refuses: an absolute name (the filter strips its "/") and a link."""
    if member.name.startswith(("/", "\\")):
        return "an absolute path"
    try:
        tarfile.data_filter(member, dest)
    except tarfile.FilterError as exc:
        return f"unsafe ({exc})"
    if member.issym() or member.islnk():
        return f"a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname!r})"
    return None


def _mib(n: int) -> str:
    return f"{n / MIB:,.1f} MiB"


def _drain(tar: tarfile.TarFile, name: str) -> None:
    """Read the rest of the stream after the last member: the decompressor then checks its
    trailer (gzip's CRC and length), and whatever follows the end-of-archive marker must be zeros
    (else a damaged header cut the member list short)."""
    while block := tar.fileobj.read(CHUNK):
        if block.count(0) != len(block):
            raise CorruptArchiveError(
                f"{name} is damaged: data after the end of the archive (a corrupt member header?)"
            )


def _checked_members(
    tar: tarfile.TarFile,
    name: str,
    max_member_bytes: int | None,
    max_total_bytes: int | None,
    dest: str = os.path.join(os.sep, "unpacked"),  # where check_archive pictures it unpacked
) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    seen: dict[str, tarfile.TarInfo] = {}
    total = 0
    for member in tar:  # one header at a time: a member over the cap is refused before its data is read
        problem = _member_problem(member, dest)
        key = posixpath.normpath(member.name)
        if not problem and key in seen and not (member.isdir() and seen[key].isdir()):
            problem = "in the archive more than once (a later copy would replace the first)"
        if not problem and max_member_bytes is not None and member.size > max_member_bytes:
            problem = (
                f"{_mib(member.size)} unpacked, over the {_mib(max_member_bytes)} cap (data.max_member_mib)"
            )
        if problem:
            raise UnsafeArchiveError(f"refusing to unpack {name}: member {member.name!r} is {problem}")
        seen[key] = member
        total += member.size
        if max_total_bytes is not None and total > max_total_bytes:
            raise UnsafeArchiveError(
                f"refusing to unpack {name}: it unpacks to more than {_mib(max_total_bytes)} "
                "(data.max_unpacked_mib)"
            )
        members.append(member)
    _drain(tar, name)
    return members


@contextlib.contextmanager
def _archive_errors(name: str) -> Iterator[None]:
    try:
        yield
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"refusing to unpack {name}: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        raise CorruptArchiveError(f"{name} is not a readable tar archive: {exc}") from None


def check_archive(
    archive: str | os.PathLike, *, max_member_bytes: int | None = None, max_total_bytes: int | None = None
) -> list[tarfile.TarInfo]:
    """Every member of a tar archive, after reading it to the end of its stream; nothing is
    written. UnsafeArchiveError for a member that is unsafe (see _member_problem), repeated, or
    larger than the caps (checked from its header, before its data is decompressed), and
    CorruptArchiveError for a file that isn't a readable, intact archive, each naming it."""
    archive = Path(archive)
    with _archive_errors(archive.name), tarfile.open(archive, "r:*") as tar:
        return _checked_members(tar, archive.name, max_member_bytes, max_total_bytes)


def safe_extract(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_member_bytes: int | None = None,
    max_total_bytes: int | None = None,
) -> list[str]:
    """Unpack a tar archive into ``dest`` after checking every member and reading the whole
    stream (see check_archive); return the member names. Absolute paths, ``..`` components,
    links, devices, FIFOs, repeated names and members over the caps raise UnsafeArchiveError
    naming the member, before anything is written (tarfile's ``data`` filter, applied to each member
    up front, and again as it unpacks).
    A corrupt archive (a bad CRC too) raises CorruptArchiveError."""
    archive, dest = Path(archive), Path(dest)
    with _archive_errors(archive.name), tarfile.open(archive, "r:*") as tar:
        members = _checked_members(tar, archive.name, max_member_bytes, max_total_bytes, str(dest))
        dest.mkdir(parents=True, exist_ok=True)
        tar.extractall(dest, members=members, filter="data")
    return [member.name for member in members]

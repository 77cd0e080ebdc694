"""The download stage: fetch the MUCT archives (or a mirror of them), or copy a local folder of
photos, and list every photo in a manifest.

Archives are streamed into ``<repo root>/.cache/downloads/<url key>/<name>.part`` and renamed only
when complete, so an interrupted run resumes with an HTTP Range request. An archive is read to the
end of its stream (so that gzip's CRC and length are verified) and every member checked (no
absolute paths, ``..``, links, special files or repeated names; no member larger than
``data.max_member_mib``, no more than ``data.max_unpacked_mib`` in all) before anything is
unpacked, and an archive that fails any check is deleted from the cache. The SHA-256 of each URL's
first good download is pinned in ``.cache/downloads/pins.json``; a later download that differs is
warned about. Every output appears together or not at all (faceswap_ela.outputs)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pandas as pd
import requests
import urllib3
from filelock import FileLock
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util import Retry

from faceswap_ela import muct
from faceswap_ela.images import IMAGE_SUFFIXES, ImageError, probe, walk_photos
from faceswap_ela.outputs import atomic_outputs, write_csv, write_json
from faceswap_ela.parallel import ordered_map
from faceswap_ela.params import DataParams

log = logging.getLogger(__name__)

BACKOFF_S = 1.0  # urllib3's backoff_factor: the second retry waits 2 s, each later one twice as long
RETRY_AFTER_MAX_S = 120.0  # the longest Retry-After obeyed
CHUNK = 1 << 16
# Answers worth another try; every other 4xx is final.
RETRY_STATUS = frozenset({408, 425, 429, *range(500, 600)})
URL_SCHEMES = ("http", "https", "file")
MANIFEST_COLUMNS = ["id", "group", "path", "sha256", "width", "height", "error", "gt_scheme", "gt"]
MIB = 1 << 20
OFFLINE_HINT = (
    "without MUCT, run the pipeline on a local folder of face photos: make repro SOURCE=path/to/photos"
)
PINS = "pins.json"  # in the download cache: url -> sha256 of its first good download


class DownloadError(RuntimeError):
    """An expected failure of the download stage, with a one-line message."""


class UnsafeArchiveError(DownloadError):
    """An archive member that would write outside the target folder or isn't a plain file/folder."""


class CorruptArchiveError(DownloadError):
    """A file that isn't a readable (gzipped) tar archive."""


class _Restart(Exception):
    """The partial file can't be resumed: it was deleted, start again from zero (once, free)."""


class _Retry(Retry):
    """urllib3's Retry, except that a host name that does not resolve fails at once (offline, no
    retry helps) and that a server's Retry-After is capped at RETRY_AFTER_MAX_S."""

    def increment(self, method=None, url=None, *args, error=None, **kwargs):
        if isinstance(error, urllib3.exceptions.NameResolutionError):
            raise urllib3.exceptions.MaxRetryError(kwargs.get("_pool"), url, error) from error
        return super().increment(method, url, *args, error=error, **kwargs)

    def get_retry_after(self, response):
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, RETRY_AFTER_MAX_S)


@dataclass(frozen=True)
class Source:
    """Where the photos come from: archives under ``base_url``, or a local ``folder``."""

    kind: str  # "archives" | "folder"
    base_url: str = ""
    folder: Path | None = None


def resolve_source(data: DataParams, root: Path) -> Source:
    """Interpret ``data.source``: ``muct``, an http(s)/file URL, or a folder (relative to ``root``)."""
    text = data.source.strip()
    if text == "muct":
        base = data.muct_url.strip()
        if urlparse(base).scheme.lower() not in URL_SCHEMES:
            raise DownloadError(f"data.muct_url: {base!r} is not an http(s):// or file:// URL")
        return Source("archives", base_url=base)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in URL_SCHEMES:
            raise DownloadError(f"data.source: unsupported URL scheme {scheme}:// (use http, https or file)")
        return Source("archives", base_url=text)
    folder = Path(text).expanduser()
    if not folder.is_absolute():
        folder = root / folder
    if not folder.is_dir():
        raise DownloadError(
            f"data.source: {text!r} is not 'muct', an http(s):// or file:// URL, or an existing folder "
            f"(looked for {folder})"
        )
    return Source("folder", folder=folder.resolve())


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path(cache_dir: Path, url: str) -> Path:
    """Where the archive at ``url`` is cached: a folder per base URL, so two mirrors never mix."""
    base, _, name = url.rpartition("/")
    key = hashlib.sha256(base.encode()).hexdigest()[:12]
    return cache_dir / key / name


def _bar(name: str, total: int | None, initial: int, progress: bool) -> tqdm:
    return tqdm(
        total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not progress, mininterval=0.5, leave=False,
    )  # fmt: skip


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(match.group(1)) if match else None


def _receive(response: requests.Response, url: str, part: Path, offset: int, progress: bool) -> None:
    """Write the body of an answer to a GET that asked for ``part``'s missing bytes from ``offset``."""
    status = response.status_code
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if status == 206 and offset:
        content_range = response.headers.get("Content-Range")
        if _content_range_start(content_range) != offset:
            raise _Restart(f"server resumed at the wrong offset ({content_range})")
        mode, total = "ab", (offset + length if length is not None else None)
    elif status == 200:
        if offset:
            log.info("%s: server ignored the Range request; restarting from zero", url)
        offset, mode, total = 0, "wb", length
    elif status == 416 and offset:
        raise _Restart("server can't resume this file (HTTP 416)")
    elif status == 404:
        raise DownloadError(f"HTTP 404 {response.reason} for {url} (data.archives lists what to fetch)")
    else:
        raise DownloadError(f"HTTP {status} {response.reason} for {url}")
    with _bar(part.name[: -len(".part")], total, offset, progress) as bar, open(part, mode) as handle:
        # bytes as sent: a server that labels a .tar.gz "Content-Encoding: gzip" mustn't get it unzipped
        for chunk in response.raw.stream(CHUNK, decode_content=False):
            handle.write(chunk)
            bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise urllib3.exceptions.ProtocolError(f"connection ended after {size:,} of {total:,} bytes")


def _download(url: str, part: Path, retry: Retry, timeout_s: float, progress: bool) -> None:
    """GET ``url`` into ``part``: urllib3 retries connection errors, timeouts and RETRY_STATUS
    answers; a transfer that breaks off is resumed with a Range request from what ``part`` holds
    (a retry too, from the same budget); a part the server can't resume starts again (once, free)."""
    restarted = False
    with requests.Session() as session:
        adapter = HTTPAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        while True:
            adapter.max_retries = retry
            offset = part.stat().st_size if part.exists() else 0
            headers = {"Accept-Encoding": "identity"}  # the archive's own bytes, never re-encoded
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                with session.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
                    retry = response.raw.retries or retry
                    _receive(response, url, part, offset, progress)
                return
            except _Restart as exc:
                part.unlink()
                if restarted:
                    raise DownloadError(f"could not download {url}: {exc}") from None
                restarted = True
                log.info("%s: %s; restarting from zero", url, exc)
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as exc:
                retry = retry.increment("GET", url, error=exc)
                log.warning("%s: %s; resuming (retry %d)", url, exc, len(retry.history))
                retry.sleep()


def _copy(url: str, part: Path, progress: bool) -> None:
    """Copy a file:// URL into ``part``, resuming from its size."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"file:// URLs must name a local path, not host {parsed.netloc!r}: {url}")
    source = Path(url2pathname(parsed.path))
    if not source.is_file():
        raise DownloadError(f"not found: {url} ({source} is not a file)")
    total = source.stat().st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:
        offset = 0
    with (
        open(source, "rb") as src,
        open(part, "ab" if offset else "wb") as dst,
        _bar(source.name, total, offset, progress) as bar,
    ):
        src.seek(offset)
        for block in iter(lambda: src.read(CHUNK), b""):
            dst.write(block)
            bar.update(len(block))
    if part.stat().st_size != total:
        raise DownloadError(f"could not copy {url}: copied {part.stat().st_size:,} of {total:,} bytes")


def _cause(exc: BaseException) -> BaseException:
    """The error inside a requests or urllib3 one (after the retries: the last one's)."""
    inner = exc.args[0] if isinstance(exc, requests.RequestException) and exc.args else exc
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        return inner.reason
    return inner if isinstance(inner, BaseException) else exc


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` (http, https or file) to ``dest`` unless it is already there.

    Bytes go to ``dest.part``, renamed only when complete; a partial file is resumed with a Range
    request (a server answering 200 instead restarts from zero). Connection errors, timeouts (of
    ``timeout_s`` each), broken transfers and RETRY_STATUS answers are retried ``retries`` times
    in all, with urllib3's backoff (none before the first retry, then ``backoff_s``, default
    BACKOFF_S, times 2, 4, ...) or the server's Retry-After; a host name that does not resolve and
    any other 4xx fail at once. Raises DownloadError naming the URL."""
    dest = Path(dest)
    if dest.exists():
        return dest
    scheme = urlparse(url).scheme.lower()
    if scheme not in URL_SCHEMES:
        raise DownloadError(f"unsupported URL scheme {scheme!r}: {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    retry = _Retry(
        total=retries, status_forcelist=RETRY_STATUS, respect_retry_after_header=True,
        backoff_factor=BACKOFF_S if backoff_s is None else backoff_s,
    )  # fmt: skip
    with FileLock(dest.with_name(dest.name + ".lock")):
        if dest.exists():  # another process finished it while we waited for the lock
            return dest
        try:
            if scheme == "file":
                _copy(url, part, progress)
            else:
                _download(url, part, retry, timeout_s, progress)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            cause = _cause(exc)
            tries = (
                ""
                if isinstance(cause, urllib3.exceptions.NameResolutionError)
                else f" after {retries + 1} attempts"
            )
            raise DownloadError(
                f"could not download {url}{tries}: {str(cause) or type(cause).__name__}"
            ) from None
        os.replace(part, dest)
    return dest


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


@dataclass
class Photo:
    """One photo in data/raw: its id, path relative to data/raw, and ground truth if any."""

    id: str
    path: str
    file: Path
    gt_scheme: str = ""
    gt: np.ndarray | None = None


def photo_id(relative: PurePosixPath) -> str:
    """A photo's id: its path relative to the photo root, without suffix, "/" replaced by "__"."""
    return relative.with_suffix("").as_posix().replace("/", "__")


def group_of(pattern: re.Pattern[str], file_name: str, fallback: str) -> str:
    """The first non-empty capture group of ``pattern`` searched in ``file_name``, else ``fallback``."""
    match = pattern.search(file_name)
    if match:
        for group in match.groups():
            if group:
                return group
    return fallback


def _image_files(folder: Path) -> list[Path]:
    """Every photo under ``folder`` (hidden files and folders left out) in name order, or
    DownloadError naming each entry that should have been a photo or folder and can't be read."""
    found = walk_photos(folder, skip_hidden=True)
    bad = [f"{path}: {error}" for path, error in found if error is not None]
    if bad:
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DownloadError(f"{len(bad)} entries of {folder} can't be read: {'; '.join(bad[:5])}{more}")
    return [path for path, _ in found]


def copy_folder(folder: Path, photos_dir: Path) -> list[Photo]:
    """Copy a tree of photos (and the ``.pts`` files beside them) into ``photos_dir``."""
    photos = []
    for source in tqdm(_image_files(folder), desc="copy photos", unit="photo", mininterval=1.0):
        relative = PurePosixPath(source.relative_to(folder).as_posix())
        target = photos_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        photo = Photo(photo_id(relative), f"{photos_dir.name}/{relative}", target)
        pts = source.with_suffix(".pts")
        if pts.is_file():
            shutil.copyfile(pts, target.with_suffix(".pts"))
            try:
                photo.gt, photo.gt_scheme = muct.read_pts(pts), "ibug68"
            except (ValueError, OSError) as exc:
                log.warning("ignoring unreadable ground truth: %s", exc)
        photos.append(photo)
    return photos


def _caps(data: DataParams | None) -> dict[str, int | None]:
    if data is None:
        return {"max_member_bytes": None, "max_total_bytes": None}
    return {"max_member_bytes": data.max_member_mib * MIB, "max_total_bytes": data.max_unpacked_mib * MIB}


def _unpack(archive: Path, unpacked: Path, data: DataParams | None) -> dict[str, np.ndarray]:
    """Unpack one archive into ``unpacked``; the landmarks of its muct76-opencv.csv files. An
    archive that fails is deleted from the cache."""
    shapes: dict[str, np.ndarray] = {}
    try:
        safe_extract(archive, unpacked, **_caps(data))
        for csv_path in sorted(unpacked.rglob(muct.LANDMARKS_CSV)):
            try:
                shapes.update(muct.read_landmarks_csv(csv_path))
            except ValueError as exc:
                raise DownloadError(f"{archive.name}: {exc}") from None
    except DownloadError:
        archive.unlink(missing_ok=True)
        raise
    return shapes


def unpack_muct(
    archives: Sequence[Path], work_dir: Path, photos_dir: Path, data: DataParams | None = None
) -> list[Photo]:
    """Unpack MUCT-layout archives: the photos under ``jpg/`` go to ``photos_dir/jpg/``, and the
    landmarks of ``muct76-opencv.csv`` become their ground truth; ``data`` gives the size caps.
    An archive that fails to unpack is deleted (it is a cached download: the next run fetches it
    again) and raises: CorruptArchiveError, UnsafeArchiveError or DownloadError."""
    shapes: dict[str, np.ndarray] = {}
    photos = []
    owner: dict[Path, str] = {}
    for archive in archives:
        unpacked = work_dir / archive.name
        shapes.update(_unpack(archive, unpacked, data))
        jpg_dir = unpacked / "jpg"
        if not jpg_dir.is_dir():
            continue
        for source in _image_files(jpg_dir):
            relative = PurePosixPath(source.relative_to(unpacked).as_posix())
            target = photos_dir / relative
            if target in owner:
                raise DownloadError(f"{relative} is in both {owner[target]} and {archive.name}")
            owner[target] = archive.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            photos.append(
                Photo(photo_id(relative.relative_to("jpg")), f"{photos_dir.name}/{relative}", target)
            )
    if photos and not shapes:
        log.warning("no %s among the archives: the photos have no ground-truth landmarks", muct.LANDMARKS_CSV)
    for photo in photos:
        shape = shapes.get(Path(photo.path).stem)
        if shape is not None:
            photo.gt, photo.gt_scheme = shape, "muct76"
    return photos


def describe(path: str) -> tuple[str, int | None, int | None, str]:
    """(sha256, width, height, error) of one photo; width/height None and the reason in error
    when it can't be decoded."""
    digest = sha256_file(path)
    try:
        width, height = probe(path)
    except ImageError as exc:
        return digest, None, None, str(exc)
    return digest, width, height, ""


def gt_json(points: np.ndarray | None) -> str:
    """Landmarks as compact JSON: [[x, y], ...] with null for a point that isn't visible."""
    if points is None:
        return ""
    rows = [None if np.isnan(p).any() else [round(float(p[0]), 3), round(float(p[1]), 3)] for p in points]
    return json.dumps(rows, separators=(",", ":"))


def build_manifest(photos: Sequence[Photo], group_pattern: str, workers: int = 0) -> pd.DataFrame:
    """One row per photo, sorted by id, with checksum, size and decode errors (see MANIFEST_COLUMNS)."""
    duplicates = sorted(i for i, n in Counter(photo.id for photo in photos).items() if n > 1)
    if duplicates:
        names = ", ".join(duplicates[:10])
        raise DownloadError(f"photo ids must be unique; these name several files: {names}")
    photos = sorted(photos, key=lambda photo: photo.id)
    pattern = re.compile(group_pattern)
    described = ordered_map(describe, [str(p.file) for p in photos], workers=workers, desc="probe photos")
    rows = []
    for photo, (digest, width, height, error) in zip(photos, described, strict=True):
        rows.append(
            {
                "id": photo.id,
                "group": group_of(pattern, Path(photo.path).name, photo.id),
                "path": photo.path,
                "sha256": digest,
                "width": "" if width is None else str(width),
                "height": "" if height is None else str(height),
                "error": error,
                "gt_scheme": photo.gt_scheme,
                "gt": gt_json(photo.gt),
            }
        )
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS, dtype=object)


def read_pins(cache_dir: Path, previous: Path | None = None) -> dict[str, str]:
    """url -> pinned SHA-256: the download cache's pins.json, with the records of a previous
    archives.json (when it is still there) for URLs it doesn't know."""
    pins: dict[str, str] = {}
    sources = [cache_dir / PINS, *([previous] if previous is not None else [])]
    for source in reversed(sources):
        try:
            data = json.loads(source.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            pins.update({k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)})
        elif isinstance(data, list):
            pins.update(
                {r["url"]: r["sha256"] for r in data if isinstance(r, dict) and "url" in r and "sha256" in r}
            )
    return pins


def pin(cache_dir: Path, records: Sequence[dict], pins: dict[str, str]) -> None:
    """Pin in the cache's pins.json the SHA-256 of each URL that ``pins`` doesn't hold yet (its
    first good download); a pin, once made, stays."""
    merged = {**{r["url"]: r["sha256"] for r in records}, **pins}
    if merged != read_pins(cache_dir):
        write_json(cache_dir / PINS, merged)


def download_archives(
    data: DataParams,
    base_url: str,
    cache_dir: Path,
    *,
    backoff_s: float | None = None,
    progress: bool = True,
    pins: dict[str, str] | None = None,
) -> tuple[list[dict], list[Path]]:
    """Fetch every archive of ``data.archives`` from ``base_url`` into the cache, check its
    SHA-256 against ``data.checksums`` and read it through (check_archive, with data's size caps);
    an archive that fails deletes the cached file and raises. One that differs from its pin in
    ``pins`` (url -> sha256) gets a warning, unless data.checksums vouches for it."""
    names = list(data.archives)
    if not names:
        raise DownloadError("data.archives is empty: list the archives to fetch")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DownloadError(f"data.archives lists {', '.join(repeated)} more than once")
    for name in sorted(set(data.checksums) - set(names)):
        log.warning("data.checksums names %s, which data.archives doesn't list", name)
    pins = pins or {}
    caps = _caps(data)
    records, paths = [], []
    for name in names:
        url = muct.archive_url(base_url, name)
        cached = cache_path(cache_dir, url)
        log.info("%s %s", "using the cached copy of" if cached.exists() else "fetching", url)
        try:
            path = fetch(
                url, cached, retries=data.retries, timeout_s=data.timeout_s,
                backoff_s=backoff_s, progress=progress,
            )  # fmt: skip
        except DownloadError as exc:
            if data.source.strip() == "muct":
                raise DownloadError(f"{exc}\n{OFFLINE_HINT}") from None
            raise
        actual, expected = sha256_file(path), data.checksums.get(name)
        if expected and actual != expected:
            path.unlink()
            raise DownloadError(
                f"checksum mismatch for {name}: expected sha256 {expected}, got {actual} "
                f"(from {url}; the cached copy was deleted)"
            )
        if not expected and pins.get(url, actual) != actual:
            log.warning(
                "%s differs from its first download: sha256 %s, pinned %s (in %s). The mirror changed "
                "the file; list the digest you trust in data.checksums to silence this",
                url, actual, pins[url], cache_dir / PINS,
            )  # fmt: skip
        try:
            check_archive(path, **caps)
        except DownloadError as exc:
            path.unlink(missing_ok=True)
            raise type(exc)(f"{exc} (from {url}; the cached copy was deleted)") from None
        records.append({"name": name, "url": url, "size": path.stat().st_size, "sha256": actual})
        paths.append(path)
    return records, paths


def run(
    data: DataParams,
    out_dir: str | os.PathLike,
    metrics_path: str | os.PathLike,
    *,
    root: Path,
    cache_dir: Path | None = None,
    workers: int = 0,
    backoff_s: float | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """The whole stage: write ``out_dir`` (photos/, manifest.csv, archives.json) and the metrics
    JSON together, or nothing at all. Returns the metrics."""
    source = resolve_source(data, root)
    out_dir = Path(out_dir)
    if source.folder is not None and source.folder.is_relative_to(out_dir.resolve()):
        raise DownloadError(f"data.source {source.folder} lies inside the output folder {out_dir}")
    cache_dir = cache_dir if cache_dir is not None else root / ".cache" / "downloads"
    pins = read_pins(cache_dir, out_dir / "archives.json")  # before the old outputs go
    with atomic_outputs(f"{out_dir}/", metrics_path) as (tmp_out, tmp_metrics):
        photos_dir = tmp_out / "photos"
        if source.folder is not None:
            log.info("copying photos from %s", source.folder)
            records: list[dict] = []
            photos = copy_folder(source.folder, photos_dir)
            where = str(source.folder)
        else:
            records, paths = download_archives(
                data, source.base_url, cache_dir, backoff_s=backoff_s, progress=progress, pins=pins
            )
            work_dir = tmp_out / ".unpacked"
            try:
                photos = unpack_muct(paths, work_dir, photos_dir, data)
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)
            where = ", ".join(r["url"] for r in records)
        if not photos:
            raise DownloadError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) found in {where}")
        manifest = build_manifest(photos, data.group_pattern, workers=workers)
        metrics = {
            "photos": len(manifest),
            "unreadable": int((manifest["error"] != "").sum()),
            "with_ground_truth": int((manifest["gt_scheme"] != "").sum()),
            "bytes": sum(photo.file.stat().st_size for photo in photos),
            "archives": len(records),
        }
        write_csv(tmp_out / "manifest.csv", manifest)
        write_json(tmp_out / "archives.json", records)
        write_json(tmp_metrics, metrics)
    if records:
        pin(cache_dir, records, pins)
    log.info(
        "%d photos (%d unreadable, %d with ground truth) in %s",
        metrics["photos"], metrics["unreadable"], metrics["with_ground_truth"], out_dir,
    )  # fmt: skip
    return metrics

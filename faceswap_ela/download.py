"""The download stage: fetch the MUCT archives (or a mirror of them), or copy a local folder of
photos, and list every photo in a manifest.

Archives are fetched (faceswap_ela.fetch: resumed after an interruption, retried) into
``<repo root>/.cache/downloads/<url key>/<name>``, checked against ``data.checksums`` and read
through (faceswap_ela.archives, with the caps ``data.max_member_mib`` and
``data.max_unpacked_mib``) before anything is unpacked; an archive that fails any check, or that
yields neither a photo nor a landmark table, is deleted from the cache. The SHA-256 of each URL's
first good download is pinned in ``.cache/downloads/pins.json``; a later download that differs is
warned about. Every output appears together or not at all (faceswap_ela.outputs).

Nothing is dropped without a warning naming it, counted in the metrics: a photo whose file name is
not UTF-8 text (``skipped_names``: the manifest, a UTF-8 CSV, can't hold it) and ground truth that
can't be read or that can't be a face's landmarks (``refused_ground_truth``: NaN or infinite
coordinates, points far outside the photo, every point the same); the photo stays, without it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from faceswap_ela import manifest, muct
from faceswap_ela.archives import MIB, ArchiveError, CorruptArchiveError, check_archive, safe_extract
from faceswap_ela.fetch import URL_SCHEMES, FetchError, Limits, fetch
from faceswap_ela.images import IMAGE_SUFFIXES, walk_photos
from faceswap_ela.outputs import atomic_outputs, write_csv, write_json
from faceswap_ela.params import DataParams

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "without MUCT, run the pipeline on a local folder of face photos: make repro SOURCE=path/to/photos"
)
PINS = "pins.json"  # in the download cache: url -> sha256 of its first good download
# what the stage leaves out, each with a warning naming it; counted in the metrics
NOTES = ("skipped_names", "refused_ground_truth")


class DownloadError(RuntimeError):
    """An expected failure of the download stage, with a one-line message."""


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


def cache_path(cache_dir: Path, url: str) -> Path:
    """Where the archive at ``url`` is cached: a folder per base URL, so two mirrors never mix."""
    base, _, name = url.rpartition("/")
    key = hashlib.sha256(base.encode()).hexdigest()[:12]
    return cache_dir / key / name


def shown(path: str | os.PathLike) -> str:
    """A path as text any log line or CSV can hold: bytes of its name that aren't UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_text(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # a name that isn't UTF-8, held by Python as surrogate escapes
        return False
    return True


def _image_files(folder: Path, notes: manifest.Notes) -> list[Path]:
    """Every photo under ``folder`` (hidden files and folders left out) in name order, or
    DownloadError naming each entry that should have been a photo or folder and can't be read.
    A photo whose path below ``folder`` isn't UTF-8 text is left out with a warning naming it."""
    found = walk_photos(folder, skip_hidden=True)
    bad = [f"{shown(path)}: {error}" for path, error in found if error is not None]
    if bad:
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DownloadError(
            f"{len(bad)} entries of {shown(folder)} can't be read: {'; '.join(bad[:5])}{more}"
        )
    photos = []
    for path, _ in found:
        if _is_text(path.relative_to(folder)):
            photos.append(path)
            continue
        notes["skipped_names"] = notes.get("skipped_names", 0) + 1
        log.warning(
            "skipping %s: its name is not UTF-8 text, which the manifest can't hold (rename it to keep it)",
            shown(path),
        )
    return photos


def copy_folder(folder: Path, photos_dir: Path, notes: manifest.Notes | None = None) -> list[manifest.Photo]:
    """Copy a tree of photos (and the ``.pts`` files beside them) into ``photos_dir``. What is left
    out (a name that isn't UTF-8, a ``.pts`` that can't be read) is warned about and counted in
    ``notes``."""
    notes = {} if notes is None else notes
    photos = []
    for source in tqdm(_image_files(folder, notes), desc="copy photos", unit="photo", mininterval=1.0):
        relative = PurePosixPath(source.relative_to(folder).as_posix())
        target = photos_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        photo = manifest.Photo(manifest.photo_id(relative), f"{photos_dir.name}/{relative}", target)
        pts = source.with_suffix(".pts")
        if pts.is_file():
            shutil.copyfile(pts, target.with_suffix(".pts"))
            photo.gt_from = str(relative.with_suffix(".pts"))
            try:
                photo.gt, photo.gt_scheme = muct.read_pts(pts), "ibug68"
            except (ValueError, OSError) as exc:
                manifest.refuse_ground_truth(photo, str(exc), notes)
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
    except (DownloadError, ArchiveError):
        archive.unlink(missing_ok=True)
        raise
    return shapes


def unpack_muct(
    archives: Sequence[Path],
    work_dir: Path,
    photos_dir: Path,
    data: DataParams | None = None,
    notes: manifest.Notes | None = None,
) -> list[manifest.Photo]:
    """Unpack MUCT-layout archives: the photos under ``jpg/`` go to ``photos_dir/jpg/``, and the
    landmarks of ``muct76-opencv.csv`` become their ground truth; ``data`` gives the size caps.
    An archive that fails to unpack, or that yields neither a photo nor a landmark table, is
    deleted (it is a cached download: the next run fetches it again) and raises:
    CorruptArchiveError, UnsafeArchiveError (faceswap_ela.archives) or DownloadError. A photo
    left out (a name that isn't UTF-8) is warned about and counted in ``notes``."""
    notes = {} if notes is None else notes
    shapes: dict[str, np.ndarray] = {}
    photos = []
    owner: dict[Path, str] = {}
    for archive in archives:
        unpacked = work_dir / archive.name
        own_shapes = _unpack(archive, unpacked, data)
        shapes.update(own_shapes)
        jpg_dir = unpacked / "jpg"
        sources = _image_files(jpg_dir, notes) if jpg_dir.is_dir() else []
        if not sources and not own_shapes:
            archive.unlink(missing_ok=True)
            raise DownloadError(
                f"{archive.name} holds no photo under jpg/ and no {muct.LANDMARKS_CSV}: not a MUCT "
                "archive (the cached copy was deleted)"
            )
        for source in sources:
            relative = PurePosixPath(source.relative_to(unpacked).as_posix())
            target = photos_dir / relative
            if target in owner:
                raise DownloadError(f"{relative} is in both {owner[target]} and {archive.name}")
            owner[target] = archive.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            photo_id = manifest.photo_id(relative.relative_to("jpg"))
            photos.append(manifest.Photo(photo_id, f"{photos_dir.name}/{relative}", target))
    if photos and not shapes:
        log.warning("no %s among the archives: the photos have no ground-truth landmarks", muct.LANDMARKS_CSV)
    for photo in photos:
        shape = shapes.get(Path(photo.path).stem)
        if shape is not None:
            photo.gt, photo.gt_scheme, photo.gt_from = shape, "muct76", muct.LANDMARKS_CSV
    return photos


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
    limits = Limits(data.deadline_s, data.max_download_mib * MIB, "data.deadline_s", "data.max_download_mib")
    records, paths = [], []
    for name in names:
        url = muct.archive_url(base_url, name)
        cached = cache_path(cache_dir, url)
        log.info("%s %s", "using the cached copy of" if cached.exists() else "fetching", url)
        try:
            path = fetch(
                url, cached, retries=data.retries, timeout_s=data.timeout_s,
                backoff_s=backoff_s, progress=progress, limits=limits,
            )  # fmt: skip
        except FetchError as exc:
            message = str(exc)
            if exc.status == 404:
                message += " (data.archives lists what to fetch)"
            if data.source.strip() == "muct":
                message += f"\n{OFFLINE_HINT}"
            raise DownloadError(message) from None
        actual, expected = manifest.sha256_file(path), data.checksums.get(name)
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
            if not any(member.isfile() for member in check_archive(path, **caps)):
                raise CorruptArchiveError(
                    f"{name} holds no file: an empty archive, or none ({path.stat().st_size:,} bytes)"
                )
        except ArchiveError as exc:
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
    JSON together, or nothing at all. Returns the metrics. Raises DownloadError, or an ArchiveError
    (faceswap_ela.archives) for an archive that may not be unpacked."""
    source = resolve_source(data, root)
    out_dir = Path(out_dir)
    if source.folder is not None and source.folder.is_relative_to(out_dir.resolve()):
        raise DownloadError(f"data.source {source.folder} lies inside the output folder {out_dir}")
    cache_dir = cache_dir if cache_dir is not None else root / ".cache" / "downloads"
    pins = read_pins(cache_dir, out_dir / "archives.json")  # before the old outputs go
    notes: dict[str, int] = dict.fromkeys(NOTES, 0)
    with atomic_outputs(f"{out_dir}/", metrics_path) as (tmp_out, tmp_metrics):
        photos_dir = tmp_out / "photos"
        if source.folder is not None:
            log.info("copying photos from %s", source.folder)
            records: list[dict] = []
            photos = copy_folder(source.folder, photos_dir, notes)
            where = str(source.folder)
        else:
            records, paths = download_archives(
                data, source.base_url, cache_dir, backoff_s=backoff_s, progress=progress, pins=pins
            )
            work_dir = tmp_out / ".unpacked"
            try:
                photos = unpack_muct(paths, work_dir, photos_dir, data, notes)
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)
            where = ", ".join(r["url"] for r in records)
        if not photos:
            raise DownloadError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) found in {where}")
        try:
            table = manifest.build_manifest(photos, data.group_pattern, workers=workers, notes=notes)
        except manifest.ManifestError as exc:
            raise DownloadError(str(exc)) from None
        metrics = {
            "photos": len(table),
            "unreadable": int((table["error"] != "").sum()),
            "with_ground_truth": int((table["gt_scheme"] != "").sum()),
            "bytes": sum(photo.file.stat().st_size for photo in photos),
            "archives": len(records),
            **notes,
        }
        write_csv(tmp_out / "manifest.csv", table)
        write_json(tmp_out / "archives.json", records)
        write_json(tmp_metrics, metrics)
    if records:
        pin(cache_dir, records, pins)
    log.info(
        "%d photos (%d unreadable, %d with ground truth) in %s",
        metrics["photos"], metrics["unreadable"], metrics["with_ground_truth"], out_dir,
    )  # fmt: skip
    return metrics

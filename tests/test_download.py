"""The download stage against a real loopback HTTP server (tests/helpers/sample_data.serve),
file:// mirrors and local folders: outputs, resume, retries, errors, checksums and hostile archives."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faceswap_ela import archives, download, muct
from faceswap_ela import params as P
from faceswap_ela.archives import CorruptArchiveError, UnsafeArchiveError
from faceswap_ela.download import DownloadError
from tests.helpers.sample_data import (
    HOSTILE_KINDS,
    build_archive,
    build_hostile_archive,
    build_muct_archives,
    loopback,
    render_face,
    serve,
    stage_repo,
    write_bad_images,
    write_muct_photos,
)

ROOT = Path(__file__).resolve().parents[1]
A, L = muct.camera_archive("a"), muct.LANDMARKS_ARCHIVE
COLUMNS = ["id", "group", "path", "sha256", "width", "height", "error", "gt_scheme", "gt"]


def _data(source: str, **overrides) -> P.DataParams:
    raw = {"source": source, "archives": [A, L], "retries": 1, "timeout_s": 10, **overrides}
    return P.parse({"data": raw}).data


def _run(repo: Path, data: P.DataParams, **kwargs) -> dict:
    repo.mkdir(parents=True, exist_ok=True)
    kwargs = {"workers": 1, "backoff_s": 0.0, "progress": False, **kwargs}
    return download.run(data, repo / "data" / "raw", repo / "metrics" / "download.json", root=repo, **kwargs)


def _manifest(repo: Path) -> pd.DataFrame:
    return pd.read_csv(repo / "data/raw/manifest.csv", dtype=str, keep_default_na=False)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_no_outputs(repo: Path) -> None:
    assert not (repo / "data" / "raw").exists()
    assert not (repo / "metrics" / "download.json").exists()
    for folder in (repo / "data", repo / "metrics"):  # no temporary leftovers either
        assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


def _requests(log: list, name: str) -> list[tuple[str | None, int]]:
    return [(rng, status) for path, rng, status in log if path == "/" + name]


def _cached(repo: Path, url: str) -> Path:
    return download.cache_path(repo / ".cache" / "downloads", url)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cache_files(repo: Path) -> list[str]:
    cache = repo / ".cache" / "downloads"
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def _copy_mirror(muct_mirror, tmp_path: Path) -> Path:
    mirror = tmp_path / "mirror"
    shutil.copytree(muct_mirror.mirror, mirror)
    return mirror


# ---------------------------------------------------------------- a full download


def test_download_from_loopback_mirror(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    with serve(muct_mirror.mirror) as (url, log):
        metrics = _run(repo, _data(url))
    assert [(p, r, s) for p, r, s in log] == [("/" + A, None, 200), ("/" + L, None, 200)]

    manifest = _manifest(repo)
    assert list(manifest.columns) == COLUMNS
    names = sorted(p.stem for p in muct_mirror.photos)
    assert list(manifest.id) == names
    assert list(manifest.group) == [name[1:4] for name in names]
    assert sorted(set(manifest.group)) == ["000", "001", "002", "003"]
    assert list(manifest.path) == [f"photos/jpg/{name}.jpg" for name in names]
    originals = {p.stem: p for p in muct_mirror.photos}
    for row in manifest.itertuples():
        out = repo / "data/raw" / row.path
        assert out.read_bytes() == originals[row.id].read_bytes()
        assert row.sha256 == _sha(out)
    assert set(manifest.width) == {"480"} and set(manifest.height) == {"640"}
    assert set(manifest.error) == {""}

    shapes = muct.read_landmarks_csv(muct_mirror.csv)
    assert set(manifest.gt_scheme) == {"muct76"}
    for row in manifest.itertuples():
        gt = json.loads(row.gt)
        assert len(gt) == muct.N_POINTS
        expected = shapes[row.id]
        for point, want in zip(gt, expected, strict=True):
            if np.isnan(want).any():
                assert point is None
            else:
                np.testing.assert_allclose(point, want, atol=1e-3)

    records = json.loads((repo / "data/raw/archives.json").read_text())
    assert records == [
        {"name": name, "url": url + name, "size": (muct_mirror.mirror / name).stat().st_size,
         "sha256": _sha(muct_mirror.mirror / name)}
        for name in (A, L)
    ]  # fmt: skip
    on_disk = json.loads((repo / "metrics/download.json").read_text())
    assert (
        on_disk
        == metrics
        == {
            "photos": 12,
            "unreadable": 0,
            "with_ground_truth": 12,
            "bytes": sum(p.stat().st_size for p in muct_mirror.photos),
            "archives": 2,
            "skipped_names": 0,
            "refused_ground_truth": 0,
        }
    )
    # nothing else: no unpacked leftovers, no temporary files
    raw = repo / "data/raw"
    files = sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file())
    assert files == sorted(["manifest.csv", "archives.json", *(f"photos/jpg/{n}.jpg" for n in names)])
    assert sorted(os.listdir(repo / "data")) == ["raw"]


def test_rerun_uses_the_cache_and_writes_the_same_bytes(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    with serve(muct_mirror.mirror) as (url, log):
        _run(repo, _data(url))
        first = (repo / "data/raw/manifest.csv").read_bytes()
        count = len(log)
        _run(repo, _data(url), workers=2)  # a pool of workers gives the same table
        assert len(log) == count  # served from .cache/downloads, no request
    assert (repo / "data/raw/manifest.csv").read_bytes() == first
    assert _cached(repo, url + A).read_bytes() == (muct_mirror.mirror / A).read_bytes()


def test_each_mirror_has_its_own_cache(muct_mirror, tmp_path):
    other = tmp_path / "other"
    photos = write_muct_photos(tmp_path / "few", subjects=2, per_subject=1)
    build_muct_archives(tmp_path / "few", other)
    repo = tmp_path / "repo"
    with serve(muct_mirror.mirror) as (url, _):
        assert _run(repo, _data(url, archives=[A]))["photos"] == 12
    with serve(other) as (url, log):
        metrics = _run(repo, _data(url, archives=[A]))
    assert _requests(log, A) == [(None, 200)]
    assert metrics["photos"] == len(photos) == 2
    assert metrics["with_ground_truth"] == 0  # no landmark archive listed


def test_file_mirror(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    base = muct_mirror.mirror.as_uri() + "/"
    # a partial copy left by an interrupted run is resumed
    part = _cached(repo, base + A).with_name(A + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes((muct_mirror.mirror / A).read_bytes()[:1000])
    metrics = _run(repo, _data(base))
    assert metrics["photos"] == 12 and metrics["with_ground_truth"] == 12
    assert not part.exists()
    assert _cached(repo, base + A).read_bytes() == (muct_mirror.mirror / A).read_bytes()
    records = json.loads((repo / "data/raw/archives.json").read_text())
    assert [r["url"] for r in records] == [base + A, base + L]
    assert records[0]["sha256"] == _sha(muct_mirror.mirror / A)


def test_missing_file_in_file_mirror_is_a_clear_error(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    base = muct_mirror.mirror.as_uri()
    with pytest.raises(DownloadError, match=r"not found: file://.*muct-b-jpg-v1\.tar\.gz"):
        _run(repo, _data(base, archives=[muct.camera_archive("b")]))
    _assert_no_outputs(repo)


# ---------------------------------------------------------------- resume and retries


def test_resume_after_the_server_cut_the_connection(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    size = (muct_mirror.mirror / A).stat().st_size
    cut = size // 2
    with serve(muct_mirror.mirror, cut_after=cut) as (url, log):
        metrics = _run(repo, _data(url, retries=1))
    assert _requests(log, A) == [(None, 200), (f"bytes={cut}-", 206)]
    assert _cached(repo, url + A).read_bytes() == (muct_mirror.mirror / A).read_bytes()
    assert not _cached(repo, url + A).with_name(A + ".part").exists()
    assert metrics["photos"] == 12


def test_resume_a_partial_file_left_in_the_cache(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    original = (muct_mirror.mirror / A).read_bytes()
    with serve(muct_mirror.mirror) as (url, log):
        part = _cached(repo, url + A).with_name(A + ".part")
        part.parent.mkdir(parents=True)
        part.write_bytes(original[:1000])
        _run(repo, _data(url, retries=0))
    assert _requests(log, A) == [("bytes=1000-", 206)]
    assert _cached(repo, url + A).read_bytes() == original


def test_server_ignoring_range_restarts_from_zero(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    original = (muct_mirror.mirror / A).read_bytes()
    with serve(muct_mirror.mirror, ignore_range=True) as (url, log):
        part = _cached(repo, url + A).with_name(A + ".part")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"x" * 1000)  # wrong bytes: only a restart from zero gives the right file
        _run(repo, _data(url, retries=0))
    assert _requests(log, A) == [("bytes=1000-", 200)]
    assert _cached(repo, url + A).read_bytes() == original


def test_a_part_longer_than_the_file_restarts(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    original = (muct_mirror.mirror / L).read_bytes()
    with serve(muct_mirror.mirror) as (url, log):
        part = _cached(repo, url + L).with_name(L + ".part")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"x" * (len(original) + 10))
        _run(repo, _data(url, retries=0))  # the restart from zero is not a retry
    assert _requests(log, L) == [(f"bytes={len(original) + 10}-", 416), (None, 200)]
    assert _cached(repo, url + L).read_bytes() == original


def test_server_errors_are_retried_with_exponential_backoff(muct_mirror, tmp_path, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    repo = tmp_path / "repo"
    with serve(muct_mirror.mirror, fail_first=3) as (url, log):
        _run(repo, _data(url, archives=[A], retries=3), backoff_s=0.25)
    assert _requests(log, A) == [(None, 503), (None, 503), (None, 503), (None, 200)]
    assert waits == [0.5, 1.0]  # urllib3's: none before the first retry, then backoff_s x 2, 4, ...


def test_server_errors_beyond_the_retries_fail(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    with serve(muct_mirror.mirror, fail_first=5) as (url, log), pytest.raises(DownloadError) as err:
        _run(repo, _data(url, archives=[A], retries=2))
    assert f"could not download {url}{A} after 3 attempts" in str(err.value)
    assert "503" in str(err.value)
    assert len(_requests(log, A)) == 3
    _assert_no_outputs(repo)


def test_missing_archive_is_a_clear_error_without_retries(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    missing = muct.camera_archive("b")
    with serve(muct_mirror.mirror) as (url, log), pytest.raises(DownloadError) as err:
        _run(repo, _data(url, archives=[A, missing, L], retries=3))
    assert str(err.value).startswith(f"HTTP 404 Not Found for {url}{missing} ")
    assert _requests(log, missing) == [(None, 404)]
    _assert_no_outputs(repo)


def test_a_name_that_does_not_resolve_fails_at_once_and_suggests_a_local_folder(tmp_path, monkeypatch):
    lookups = []

    def offline(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    repo = tmp_path / "repo"
    with pytest.raises(DownloadError) as err:
        _run(repo, _data("muct", muct_url="https://muct.example/", retries=5), backoff_s=10.0)
    assert lookups == ["muct.example"]
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"could not download https://muct.example/{A}: ") and "resolve" in lines[0]
    assert "make repro SOURCE=" in lines[-1]
    _assert_no_outputs(repo)


def _dripping(handler, stop) -> None:
    """200 with a large Content-Length, then a byte every 0.1 s: never silent for a read timeout."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(10 << 20))
    handler.end_headers()
    with contextlib.suppress(OSError):
        while not stop.wait(0.1):
            handler.wfile.write(b"\0")
            handler.wfile.flush()


def test_a_server_dripping_bytes_is_stopped_by_the_deadline(tmp_path):
    repo = tmp_path / "repo"
    with loopback(_dripping) as (url, _, _):
        start = time.monotonic()
        with pytest.raises(DownloadError) as err:
            _run(repo, _data(url, deadline_s=1.5, timeout_s=5))
        took = time.monotonic() - start
    assert 1.5 <= took < 10, took
    message = str(err.value)
    assert message.startswith(f"refusing {url}{A}: it took longer than 1.5 s (data.deadline_s; ")
    assert "the partial download was deleted" in message
    assert _cache_files(repo) == []  # no part to resume from the dripping server
    _assert_no_outputs(repo)


def _endless(handler, stop) -> None:
    """200 without a Content-Length, then zeros until the client goes (HTTP/1.0: the body ends
    when the connection closes)."""
    handler.send_response(200)
    handler.end_headers()
    block = bytes(1 << 16)
    with contextlib.suppress(OSError):
        while not stop.is_set():
            handler.wfile.write(block)


def _announcing(handler, stop) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(2 << 30))
    handler.end_headers()
    with contextlib.suppress(OSError):
        handler.wfile.write(bytes(1 << 16))
        stop.wait(5)


@pytest.mark.parametrize("handler", [_endless, _announcing])
def test_a_download_over_the_size_cap_is_stopped(handler, tmp_path):
    repo = tmp_path / "repo"
    with loopback(handler) as (url, _, _), pytest.raises(DownloadError) as err:
        _run(repo, _data(url, max_download_mib=1))
    assert str(err.value).startswith(f"refusing {url}{A}: it is larger than 1.0 MiB (data.max_download_mib)")
    assert _cache_files(repo) == []
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) < 2 << 20
    _assert_no_outputs(repo)
    with pytest.raises(P.ParamsError, match="data.max_download_mib"):
        _data("x", max_download_mib=0)
    with pytest.raises(P.ParamsError, match="data.deadline_s"):
        _data("x", deadline_s=0)


def test_unreachable_server_fails_after_the_retries(tmp_path):
    repo = tmp_path / "repo"
    url = f"http://127.0.0.1:{_closed_port()}/"
    with pytest.raises(DownloadError, match=rf"could not download {url}{A} after 3 attempts: .*refused"):
        _run(repo, _data(url, retries=2, timeout_s=5))
    _assert_no_outputs(repo)


# ---------------------------------------------------------------- checksums


def test_matching_checksums_pass(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    sums = {name: _sha(muct_mirror.mirror / name) for name in (A, L)}
    with serve(muct_mirror.mirror) as (url, _):
        assert _run(repo, _data(url, checksums=sums))["photos"] == 12


def test_checksum_mismatch_leaves_nothing(muct_mirror, tmp_path):
    repo = tmp_path / "repo"
    wrong = "0" * 64
    with serve(muct_mirror.mirror) as (url, _), pytest.raises(DownloadError) as err:
        _run(repo, _data(url, checksums={A: wrong}))
    message = str(err.value)
    assert A in message and wrong in message and _sha(muct_mirror.mirror / A) in message
    assert not _cached(repo, url + A).exists()
    _assert_no_outputs(repo)


def test_the_first_download_is_pinned_and_a_changed_one_warned_about(muct_mirror, tmp_path, caplog):
    mirror = _copy_mirror(muct_mirror, tmp_path)
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _):
        _run(repo, _data(url))
        first = json.loads((repo / "data/raw/archives.json").read_text())
        shutil.rmtree(repo / ".cache")
        _run(repo, _data(url))  # the same bytes again: no warning
        build_archive(mirror / A, [(f"jpg/{p.name}", p.read_bytes()) for p in muct_mirror.photos[:2]])
        shutil.rmtree(download.cache_path(repo / ".cache" / "downloads", url + A).parent)
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            assert _run(repo, _data(url))["photos"] == 2
    changed = [r.getMessage() for r in caplog.records if "differs from its first download" in r.getMessage()]
    assert len(changed) == 1 and url + A in changed[0] and first[0]["sha256"] in changed[0]
    assert json.loads((repo / ".cache/downloads/pins.json").read_text())[url + A] == first[0]["sha256"]


# ---------------------------------------------------------------- hostile and broken archives


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_archive_is_refused(kind, tmp_path):
    mirror = tmp_path / "mirror"
    member = build_hostile_archive(mirror / A, kind)
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(UnsafeArchiveError) as err:
        _run(repo, _data(url, archives=[A]))
    assert repr(member) in str(err.value) and A in str(err.value)
    _assert_no_outputs(repo)
    hostile_names = ("evil", "x", "ok.jpg", "link.jpg", "null", "pipe")
    written = [p for p in tmp_path.rglob("*") if p.name in hostile_names]
    assert written == []
    if kind == "absolute":
        assert not Path(member).exists()


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_safe_extract_checks_every_member_before_writing(kind, tmp_path):
    archive = tmp_path / "hostile.tar.gz"
    member = build_hostile_archive(archive, kind)
    with tarfile.open(archive) as tar:  # the harmless member comes first
        assert [m.name for m in tar.getmembers()] == ["jpg/ok.jpg", member]
    target = tmp_path / "out" / "inner"
    with pytest.raises(UnsafeArchiveError, match=f"member {member!r} is "):
        archives.safe_extract(archive, target)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_safe_extract_unpacks_a_plain_archive(muct_mirror, tmp_path):
    names = archives.safe_extract(muct_mirror.mirror / A, tmp_path / "out")
    assert sorted(names) == sorted(f"jpg/{p.name}" for p in muct_mirror.photos)
    first = muct_mirror.photos[0]
    assert (tmp_path / "out/jpg" / first.name).read_bytes() == first.read_bytes()


def test_corrupt_archive_is_a_clear_error_and_leaves_the_cache(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / A).write_bytes(b"<html>this is not an archive</html>")
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(CorruptArchiveError, match=f"{A} is not a readable tar"):
        _run(repo, _data(url, archives=[A]))
    assert not _cached(repo, url + A).exists()  # the next run fetches it again
    _assert_no_outputs(repo)


def test_a_flipped_block_fails_the_gzip_crc(muct_mirror, tmp_path):
    mirror = _copy_mirror(muct_mirror, tmp_path)
    data = bytearray((mirror / A).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    (mirror / A).write_bytes(bytes(data))
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(CorruptArchiveError) as err:
        _run(repo, _data(url))
    assert A in str(err.value) and "the cached copy was deleted" in str(err.value)
    assert _cache_files(repo) == []
    _assert_no_outputs(repo)


def test_a_damaged_header_in_a_plain_tar_loses_no_member_silently(muct_mirror, tmp_path):
    with gzip.open(muct_mirror.mirror / A) as zipped:
        data = bytearray(zipped.read())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        third = tar.getmembers()[3]
    data[third.offset : third.offset + 8] = b"garbage!"  # the member's header: tarfile stops there
    archive = tmp_path / "plain.tar"
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match="plain.tar is damaged"):
        archives.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_gzip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    mirror = tmp_path / "mirror"
    build_archive(mirror / A, [("jpg/i000qa-fn.jpg", 200 << 20)])
    assert (mirror / A).stat().st_size < 400_000
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(UnsafeArchiveError) as err:
        _run(repo, _data(url, archives=[A]))
    message = str(err.value)
    assert "'jpg/i000qa-fn.jpg'" in message and "200.0 MiB" in message and "data.max_member_mib" in message
    assert _cache_files(repo) == []
    _assert_no_outputs(repo)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) < 1 << 20


def test_an_archive_over_the_total_cap_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    build_archive(mirror / A, [(f"jpg/i00{k}qa-fn.jpg", 700 << 10) for k in range(2)])
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(UnsafeArchiveError, match=r"more than 1\.0 MiB"):
        _run(repo, _data(url, archives=[A], max_unpacked_mib=1))
    _assert_no_outputs(repo)
    with pytest.raises(P.ParamsError, match="data.max_member_mib"):
        _data("x", max_member_mib=0)


def test_a_duplicate_member_is_refused_naming_it(muct_mirror, tmp_path):
    first = muct_mirror.photos[0]
    mirror = tmp_path / "mirror"
    members = [(f"jpg/{p.name}", p.read_bytes()) for p in muct_mirror.photos]
    build_archive(mirror / A, [*members, (f"./jpg/{first.name}", b"a replacement photo")])
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(UnsafeArchiveError) as err:
        _run(repo, _data(url, archives=[A]))
    assert f"'./jpg/{first.name}'" in str(err.value) and "more than once" in str(err.value)
    assert _cache_files(repo) == []
    _assert_no_outputs(repo)


def test_an_archive_of_zeros_is_refused_and_not_reused(muct_mirror, tmp_path):
    """A mirror serving 1 MB of zeros under each name: tarfile reads that as an empty archive. It
    is refused and dropped from the cache, so the next run (real archives) fetches them again."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in (A, L):
        (mirror / name).write_bytes(bytes(1 << 20))
    repo = tmp_path / "repo"
    with serve(mirror) as (url, log):
        with pytest.raises(CorruptArchiveError) as err:
            _run(repo, _data(url))
        assert str(err.value) == (
            f"{A} holds no file: an empty archive, or none (1,048,576 bytes) "
            f"(from {url}{A}; the cached copy was deleted)"
        )
        assert _cache_files(repo) == []
        _assert_no_outputs(repo)
        for name in (A, L):
            shutil.copy(muct_mirror.mirror / name, mirror / name)
        assert _run(repo, _data(url))["photos"] == 12
    assert [path for path, _, _ in log] == ["/" + A, "/" + A, "/" + L]


def test_an_archive_without_photos_or_landmarks_is_refused_and_not_reused(muct_mirror, tmp_path):
    mirror = _copy_mirror(muct_mirror, tmp_path)
    build_archive(mirror / L, [("README", b"nothing to see"), ("jpg/notes.txt", b"not a photo")])
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), pytest.raises(DownloadError) as err:
        _run(repo, _data(url))
    assert str(err.value) == (
        f"{L} holds no photo under jpg/ and no {muct.LANDMARKS_CSV}: not a MUCT archive "
        "(the cached copy was deleted)"
    )
    assert _cache_files(repo) == [A]  # the good archive stays
    _assert_no_outputs(repo)


def test_what_failed_to_unpack_is_never_cached(muct_mirror, tmp_path):
    """A mirror that answers every path with an HTML page and 200: nothing of it stays in the
    cache, so the first run after the mirror is fixed succeeds."""
    broken = tmp_path / "broken"
    broken.mkdir()
    page = "<!DOCTYPE html><html><body>" + "Please sign in. " * 200 + "</body></html>\n"
    for name in (A, L):
        (broken / name).write_text(page)
    repo = tmp_path / "repo"
    with serve(broken) as (url, log):
        with pytest.raises(CorruptArchiveError, match=f"{A} is not a readable tar archive"):
            _run(repo, _data(url))
        assert _cache_files(repo) == []
        for name in (A, L):
            shutil.copy(muct_mirror.mirror / name, broken / name)
        assert _run(repo, _data(url))["photos"] == 12
    assert [path for path, _, status in log] == ["/" + A, "/" + A, "/" + L]


# ---------------------------------------------------------------- local folders


def _face_jpeg(path: Path, name: str = "grace_hopper") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_face(name)).save(path, format="JPEG", quality=90)
    return path


def test_local_folder_source(tmp_path):
    repo = tmp_path / "repo"
    src = repo / "faces"
    helen = _face_jpeg(src / "a" / "100032540_1.jpg")
    points = np.random.default_rng(1).uniform(0, 400, (68, 2)).round(3)
    muct.write_pts(helen.with_suffix(".pts"), points)
    _face_jpeg(src / "b" / "c" / "200_1.png", "astronaut")
    _face_jpeg(src / "b" / "i005qa-fn.jpg")
    bad = write_bad_images(src / "bad")
    (src / "notes.txt").write_text("not a photo")
    _face_jpeg(src / ".hidden" / "skip_me.jpg")
    images = [p for p in src.rglob("*") if p.suffix in (".jpg", ".png") and ".hidden" not in p.parts]

    metrics = _run(repo, _data("faces"))  # relative: resolved against the repo root
    manifest = _manifest(repo).set_index("id")
    assert len(manifest) == len(images) == 12  # nothing lost
    assert manifest.index.is_monotonic_increasing
    row = manifest.loc["a__100032540_1"]
    assert (row.group, row.path, row.gt_scheme) == ("100032540", "photos/a/100032540_1.jpg", "ibug68")
    np.testing.assert_allclose(json.loads(row["gt"]), points)
    assert (repo / "data/raw/photos/a/100032540_1.pts").read_bytes() == helen.with_suffix(".pts").read_bytes()
    assert manifest.loc["b__c__200_1", "group"] == "200"
    assert manifest.loc["b__i005qa-fn", "group"] == "005"
    assert manifest.loc["bad__huge", "group"] == "bad__huge"  # no match: the id
    unusable = {"zero_byte", "truncated", "random_bytes", "huge"}
    for kind, path in bad.items():
        entry = manifest.loc[f"bad__{path.stem}"]
        if kind in unusable:
            assert entry.error and entry.width == "" and entry.height == "", kind
        else:
            assert entry.error == "" and int(entry.width) > 0 and int(entry.height) > 0, kind
    assert "empty" in manifest.loc["bad__zero_byte", "error"]
    assert "too large" in manifest.loc["bad__huge", "error"]
    for entry in manifest.itertuples():
        copied = repo / "data/raw" / entry.path
        assert copied.read_bytes() == (src / entry.path.removeprefix("photos/")).read_bytes()
        assert entry.sha256 == _sha(copied)
    assert json.loads((repo / "data/raw/archives.json").read_text()) == []
    assert metrics == {
        "photos": 12,
        "unreadable": 4,
        "with_ground_truth": 1,
        "bytes": sum(p.stat().st_size for p in images),
        "archives": 0,
        "skipped_names": 0,
        "refused_ground_truth": 0,
    }


NOT_UTF8 = os.fsdecode(b"caf\xe9_1.jpg")  # Latin-1, as an old camera or a Windows zip names it


def test_a_photo_named_in_bytes_that_are_not_utf8_is_skipped_naming_it(tmp_path, caplog):
    repo = tmp_path / "repo"
    _face_jpeg(repo / "faces" / "ok_1.jpg")
    _face_jpeg(repo / "faces" / "sub" / NOT_UTF8)
    with caplog.at_level(logging.WARNING):
        metrics = _run(repo, _data("faces"))
    assert list(_manifest(repo).id) == ["ok_1"]
    assert metrics["photos"] == 1 and metrics["skipped_names"] == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"skipping {repo / 'faces' / 'sub'}/caf\\xe9_1.jpg: its name is not UTF-8 text")


def test_a_photo_named_in_bytes_that_are_not_utf8_in_an_archive_is_skipped(muct_mirror, tmp_path, caplog):
    mirror = _copy_mirror(muct_mirror, tmp_path)
    photos = [(f"jpg/{p.name}", p.read_bytes()) for p in muct_mirror.photos]
    build_archive(mirror / A, [*photos, (f"jpg/{NOT_UTF8}", photos[0][1])])
    repo = tmp_path / "repo"
    with serve(mirror) as (url, _), caplog.at_level(logging.WARNING):
        metrics = _run(repo, _data(url))
    assert metrics["photos"] == 12 and metrics["skipped_names"] == 1
    assert sum("caf\\xe9_1.jpg: its name is not UTF-8 text" in r.getMessage() for r in caplog.records) == 1


def _pts_text(points: np.ndarray) -> str:
    return "version: 1\nn_points: 68\n{\n" + "".join(f"{x} {y}\n" for x, y in points) + "}\n"


def test_ground_truth_that_cannot_be_landmarks_is_refused_naming_the_file(tmp_path, caplog):
    repo = tmp_path / "repo"
    good = np.random.default_rng(2).uniform(50, 300, (68, 2)).round(3)
    bad = {
        "nan_1": (good.copy(), "point 5 is NaN"),
        "inf_1": (good.copy(), "point 5 is infinite"),
        "huge_1": (good.copy(), "a point at (1e+308, "),
        "same_1": (np.tile([120.0, 140.0], (68, 1)), "all 68 points are the same point (120, 140)"),
    }
    bad["nan_1"][0][5, 0], bad["inf_1"][0][5, 1], bad["huge_1"][0][5, 0] = np.nan, np.inf, 1e308
    for stem, (points, _) in {**bad, "good_1": (good, "")}.items():
        (_face_jpeg(repo / "faces" / f"{stem}.jpg")).with_suffix(".pts").write_text(_pts_text(points))
    _face_jpeg(repo / "faces" / "latin_1.jpg").with_suffix(".pts").write_bytes(b"version: 1\n\xff\xfe{}")
    with caplog.at_level(logging.WARNING):
        metrics = _run(repo, _data("faces"))
    manifest = _manifest(repo).set_index("id")
    assert list(manifest.index[manifest.gt_scheme != ""]) == ["good_1"]
    assert manifest.loc["nan_1", "gt"] == "" and len(manifest) == 6  # the photos stay
    assert metrics["with_ground_truth"] == 1 and metrics["refused_ground_truth"] == 5
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(warnings) == 5
    for stem, (_, reason) in bad.items():
        (line,) = [w for w in warnings if w.startswith(f"refusing the ground truth of photos/{stem}.jpg ")]
        assert f"({stem}.pts): {reason}" in line
    (latin,) = [w for w in warnings if "latin_1" in w]
    assert str(repo / "faces" / "latin_1.pts") in latin and "not UTF-8 text" in latin


def test_duplicate_ids_are_refused(tmp_path):
    repo = tmp_path / "repo"
    _face_jpeg(repo / "faces" / "x" / "a.jpg")
    _face_jpeg(repo / "faces" / "x" / "a.png")
    with pytest.raises(DownloadError, match="unique.*x__a"):
        _run(repo, _data("faces"))
    _assert_no_outputs(repo)


def test_entries_of_a_folder_source_that_cannot_be_read_are_named(tmp_path):
    repo = tmp_path / "repo"
    src = repo / "faces"
    _face_jpeg(src / "a.jpg")
    (src / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(src / "pipe.png")
    (src / "sub").mkdir()
    (src / "sub" / "up").symlink_to(src)
    with pytest.raises(DownloadError) as err:
        _run(repo, _data("faces"))
    message = str(err.value)
    assert message.startswith(f"3 entries of {src} can't be read: ")
    assert f"{src / 'gone.jpg'}: broken symbolic link" in message
    assert f"{src / 'pipe.png'}: not a regular file (a FIFO)" in message
    assert f"{src / 'sub' / 'up'}: symbolic link loop" in message
    _assert_no_outputs(repo)


def test_empty_folder_is_a_clear_error(tmp_path):
    repo = tmp_path / "repo"
    (repo / "faces").mkdir(parents=True)
    with pytest.raises(DownloadError, match="no photos"):
        _run(repo, _data("faces"))
    _assert_no_outputs(repo)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no/such/folder", "data.source: 'no/such/folder' is not"),
        ("ftp://host/x/", "unsupported URL scheme ftp"),
    ],
)
def test_bad_source_is_a_clear_error(source, message, tmp_path):
    with pytest.raises(DownloadError, match=message):
        _run(tmp_path / "repo", _data(source))
    _assert_no_outputs(tmp_path / "repo")


# ---------------------------------------------------------------- the real MUCT sample


def test_muct_sample_over_loopback(shared_datasets, tmp_path):
    sample = shared_datasets / "muct-sample"
    if not (sample / A).is_file() or not (sample / L).is_file():
        pytest.skip(f"{sample} lacks {A} or {L}")
    repo = tmp_path / "repo"
    with serve(sample) as (url, _):
        metrics = _run(repo, _data(url), workers=2)
    manifest = _manifest(repo)
    assert metrics["photos"] == len(manifest) == 21
    assert sorted(set(manifest.group)) == [f"{i:03d}" for i in range(7)]
    assert set(manifest.gt_scheme) == {"muct76"} and metrics["with_ground_truth"] == 21
    assert {len(json.loads(gt)) for gt in manifest["gt"]} == {68}  # this copy keeps 68 of the 76 points
    assert set(manifest.width) == {"480"} and set(manifest.height) == {"640"}
    assert (manifest.error == "").all()


# ---------------------------------------------------------------- the stage script


def _stage(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "download.py")],
        cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_stage_script_downloads_from_a_mirror(muct_mirror, tmp_path):
    with serve(muct_mirror.mirror) as (url, _):
        repo = stage_repo(tmp_path, source=url, archives=[A, L], retries=1)
        proc = _stage(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_manifest(repo)) == 12
    assert json.loads((repo / "metrics/download.json").read_text())["photos"] == 12
    assert _cached(repo, url + A).is_file()


def test_stage_resolves_a_relative_folder_against_dvc_root(tmp_path):
    parent = tmp_path / "parent"
    _face_jpeg(parent / "faces" / "100_1.jpg")
    run_dir = stage_repo(tmp_path, source="faces")  # like `dvc exp run --temp`: a copy elsewhere
    proc = _stage(run_dir, DVC_ROOT=str(parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(_manifest(run_dir).id) == ["100_1"]


def test_stage_checksum_mismatch_exits_nonzero(muct_mirror, tmp_path):
    wrong = "f" * 64
    with serve(muct_mirror.mirror) as (url, _):
        repo = stage_repo(tmp_path, source=url, archives=[A], retries=0, checksums={A: wrong})
        proc = _stage(repo)
    assert proc.returncode == 1
    actual = _sha(muct_mirror.mirror / A)
    assert f"checksum mismatch for {A}: expected sha256 {wrong}, got {actual}" in proc.stderr
    assert "Traceback" not in proc.stderr
    _assert_no_outputs(repo)
    assert not _cached(repo, url + A).exists()


def test_stage_refuses_a_corrupt_archive_in_one_line(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / A).write_bytes(b"<html>this is not an archive</html>")
    with serve(mirror) as (url, _):
        repo = stage_repo(tmp_path, source=url, archives=[A], retries=0)
        proc = _stage(repo)
    assert proc.returncode == 1
    assert f"{A} is not a readable tar archive" in proc.stderr and "Traceback" not in proc.stderr
    _assert_no_outputs(repo)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("retries", -1, "data.retries"),
        ("retrys", 3, "data.retrys"),
        ("checksums", {A: "abc"}, "data.checksums"),
    ],
)
def test_stage_rejects_bad_params(key, value, named, tmp_path):
    repo = stage_repo(tmp_path, **{key: value})
    proc = _stage(repo)
    assert proc.returncode == 2
    assert named in proc.stderr and "Traceback" not in proc.stderr
    _assert_no_outputs(repo)
